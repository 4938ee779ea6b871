// coe-eval: validation loss, perplexity, next-token accuracy, loss per record type and routing
// statistics of a checkpoint on a prepared split or a raw JSON/JSONL file.
//
// For a coe-train checkpoint the tokenizer, the text keys / template and the row length default
// to the run's own (its config.yaml); flags override them. Raw records are scored in batches of
// similar length, each padded only to its longest record.
#include "coe/data/prepare.h"
#include "coe/data/prepared.h"
#include "coe/data/tokenizer.h"
#include "coe/io/hf_checkpoint.h"
#include "coe/train/checkpoint.h"
#include "coe/train/device.h"
#include "coe/train/eval_report.h"
#include "coe/train/memory_model.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/host_runtime.h"
#include "cli.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <ATen/ATen.h>
#include <c10/core/Device.h>

#include <stdlib.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>

namespace fs = std::filesystem;

namespace {

struct Flags {
  std::string checkpoint, data, tokenizer, split_name, json_out, routing_out, device = "cpu", template_text,
      truncation = "right";
  std::vector<std::string> text_keys;
  int64_t batch = 8, max_length = 0, max_records = -1;
};

// How raw records become rows: the run's data settings, with the flags given on top.
struct TextSettings {
  std::string tokenizer;
  coe::TextConfig text;
  int64_t max_length = 512;
  std::string origin;  // where the defaults came from, for messages
};

TextSettings text_settings(const Flags& f, const std::optional<coe::TrainConfig>& run, const std::string& ckpt,
                           const coe::ModelConfig& model) {
  TextSettings s;
  if (run) {
    s.tokenizer = run->data.tokenizer;
    s.text = run->data.text;
    s.max_length = run->data.max_length;
    s.origin = (fs::path(ckpt) / "config.yaml").string();
  } else if (f.tokenizer.empty() && model.vocab_size != coe::ByteTokenizer::kVocab) {
    coe::fail("--tokenizer: {} has no run config (config.yaml) naming its tokenizer, and its vocab_size {} is not the "
              "byte tokenizer's; pass the tokenizer it was trained with",
              ckpt, model.vocab_size);
  } else {
    s.tokenizer = "byte";
    s.origin = "coe-eval's defaults";
  }
  if (!f.tokenizer.empty()) s.tokenizer = f.tokenizer;
  if (!f.text_keys.empty()) {
    s.text.text_keys = f.text_keys;
    s.text.template_text.reset();
  }
  if (!f.template_text.empty()) s.text.template_text = f.template_text;
  if (f.max_length > 0) s.max_length = f.max_length;
  return s;
}

// The tokenizer must be the one the model was trained with: a different vocabulary scores
// garbage without failing.
void check_vocabulary(const coe::Tokenizer& tok, const TextSettings& s, const std::optional<coe::TrainConfig>& run,
                      const coe::ModelConfig& model) {
  if (tok.vocab_size() > model.vocab_size)
    coe::fail("--tokenizer {}: vocabulary {} exceeds the model's vocab_size {}", s.tokenizer, tok.vocab_size(),
              model.vocab_size);
  if (run && s.tokenizer != run->data.tokenizer) {
    const auto trained = coe::load_tokenizer(run->data.tokenizer);
    if (trained->fingerprint() != tok.fingerprint())
      coe::fail("--tokenizer {}: not the tokenizer the model was trained with ({} in {})", s.tokenizer,
                run->data.tokenizer, s.origin);
  }
}

struct DataSource {
  std::shared_ptr<const coe::PreparedSplit> split;
  std::string temp_dir;  // made by mkdtemp when the data was prepared on the fly; removed on exit
  ~DataSource() {
    std::error_code ec;
    if (!temp_dir.empty()) fs::remove_all(temp_dir, ec);
  }
};

void open_data(DataSource& src, const Flags& f, const TextSettings& s) {
  if (fs::is_directory(f.data)) {
    if (fs::exists(fs::path(f.data) / "meta.json")) {
      src.split = coe::PreparedSplit::open(f.data);
    } else {
      std::string name = f.split_name;
      if (name.empty()) name = fs::exists(fs::path(f.data) / "val") ? "val" : "train";
      src.split = coe::open_split(f.data, name);
    }
    return;
  }
  if (!fs::exists(f.data)) coe::fail("--data {}: no such file or prepared dataset", f.data);
  coe::DataConfig cfg;
  cfg.train_files = {f.data};
  cfg.tokenizer = s.tokenizer;
  cfg.text = s.text;
  cfg.max_length = s.max_length;
  // mkdtemp: a fresh directory of our own (mode 0700), not a predictable name in a shared /tmp that
  // someone could have created first; removing it on exit removes only what coe-eval wrote.
  std::string tmpl = (fs::temp_directory_path() / "coe-eval-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr)
    coe::fail("{}: cannot create a temporary directory: {}", tmpl, std::strerror(errno));
  src.temp_dir = tmpl;
  cfg.prepared_dir = (fs::path(src.temp_dir) / "data").string();
  coe::prepare_dataset(cfg);
  src.split = coe::open_split(cfg.prepared_dir, "train");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"coe-eval: evaluate a coe / reference checkpoint on validation data"};
  Flags f;
  app.add_option("--checkpoint", f.checkpoint, "checkpoint dir (config.json + model.safetensors) or run dir")->required();
  app.add_option("--data", f.data, "prepared dataset dir, split dir, or a raw JSON/JSONL file")->required();
  app.add_option("--tokenizer", f.tokenizer,
                 "for raw files: 'byte' or a tokenizer.json (default: the checkpoint's run config)");
  app.add_option("--text-keys", f.text_keys, "for raw files: record keys forming the text (default: the run's)")
      ->delimiter(',');
  app.add_option("--template", f.template_text, "for raw files: text template with {key} fields (default: the run's)");
  app.add_option("--split", f.split_name, "split of a prepared dataset (default: val if present, else train)");
  app.add_option("--batch", f.batch, "rows per batch")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--max-length", f.max_length, "row length (default: the run's data.max_length, else 512)")
      ->check(CLI::PositiveNumber);
  app.add_option("--truncation", f.truncation, "records longer than max-length: error | left | right")
      ->capture_default_str();
  app.add_option("--max-records", f.max_records, "score only the first N records (-1: all)")->capture_default_str();
  app.add_option("--device", f.device, "cpu | cuda | cuda:N")->capture_default_str();
  app.add_option("--json", f.json_out, "write the report as one JSON object");
  app.add_option("--routing", f.routing_out, "write routing statistics with co-activation matrices (JSON)");
  if (const int status = coe::cli::parse(app, argc, argv); status >= 0) return status;
  coe::tune_host_allocator();

  try {
    const auto start = std::chrono::steady_clock::now();
    if (!f.json_out.empty()) coe::check_writable(f.json_out, "--json");
    if (!f.routing_out.empty()) coe::check_writable(f.routing_out, "--routing");
    const c10::Device device = coe::resolve_device(f.device, "--device");
    const coe::Truncation truncation = coe::parse_truncation(f.truncation);
    const std::string ckpt = coe::find_checkpoint(f.checkpoint);
    const std::optional<coe::TrainConfig> run = coe::read_run_config(ckpt);
    const coe::ModelConfig model_config = coe::load_model_config((fs::path(ckpt) / "config.json").string());
    const TextSettings text = text_settings(f, run, ckpt, model_config);
    if (text.max_length > model_config.max_position_embeddings)
      coe::fail("--max-length {} exceeds the model's max_position_embeddings {} ({})", text.max_length,
                model_config.max_position_embeddings, (fs::path(ckpt) / "config.json").string());
    if (!device.is_cuda())  // float32 weights, plus as much again for the load and the forward
      coe::check_host_memory(8 * coe::count_parameters(model_config).total(), ckpt + ": loading the model",
                             "evaluate on a machine with more memory");

    DataSource source;
    if (!fs::is_directory(f.data)) check_vocabulary(*coe::load_tokenizer(text.tokenizer), text, run, model_config);
    open_data(source, f, text);
    if (source.split->vocab_size() > model_config.vocab_size)
      coe::fail("--data {}: its tokenizer's vocabulary {} exceeds the model's vocab_size {}", f.data,
                source.split->vocab_size(), model_config.vocab_size);

    coe::CausalLM model = coe::io::load_hf_checkpoint(ckpt);
    model->to(device);
    model->set_dispatch(coe::make_dispatch("auto", device));

    coe::LoaderOptions opts;
    opts.batch_size = f.batch;
    opts.max_length = text.max_length;
    opts.truncation = truncation;
    opts.shuffle = false;
    opts.length_buckets = true;
    coe::SequentialLoader loader(source.split, opts, f.max_records);
    const auto scoring_start = std::chrono::steady_clock::now();
    coe::EvalReport report = coe::evaluate_report(*model, loader, *source.split, device);
    const auto now = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(now - start).count();
    const double scoring_seconds = std::chrono::duration<double>(now - scoring_start).count();
    const double records_per_s = scoring_seconds > 0 ? report.records / scoring_seconds : 0.0;

    fmt::print("checkpoint   {}\ndata         {} ({} records, {} scored tokens)\n", ckpt, f.data, report.records,
               report.tokens);
    fmt::print("val_loss     {:.4f}\nperplexity   {:.3f}\naccuracy     {:.4f}\n", report.val_loss, report.perplexity,
               report.accuracy);
    for (const auto& [type, t] : report.per_type)
      fmt::print("  type {:<20} loss {:.4f} ({} tokens)\n", type.empty() ? "(none)" : type, t.loss, t.tokens);
    if (!report.routing.empty()) fmt::print("routing      layer iter  imbalance  cv     entropy\n");
    for (const auto& r : report.routing)
      fmt::print("             {:>5} {:>4}  {:>9.3f}  {:.3f}  {:.3f}\n", r.layer, r.iteration, r.load_imbalance, r.load_cv,
                 r.router_entropy);
    for (const auto& c : report.chains)
      if (c.iterations > 1)
        fmt::print("chain        layer {}: {} distinct expert sets over {} iterations, {:.2f} unique experts/token\n",
                   c.layer, c.distinct_expert_sets, c.iterations, c.mean_unique_experts);
    fmt::print("time         {:.1f} s ({:.1f} records/s scored)\n", seconds, records_per_s);

    nlohmann::json j = report.to_json();
    j["checkpoint"] = ckpt;
    j["data"] = f.data;
    j["tokenizer"] = fs::is_directory(f.data) ? nlohmann::json(nullptr) : nlohmann::json(text.tokenizer);
    j["max_length"] = text.max_length;
    j["seconds"] = seconds;
    j["records_per_s"] = records_per_s;
    if (!f.json_out.empty()) coe::write_file_atomic(f.json_out, j.dump(2) + "\n");
    if (!f.routing_out.empty()) {
      const coe::ModelConfig& c = model->config();
      nlohmann::json r = report.to_json(/*with_coactivation=*/true);
      const int64_t N = c.n_routed_experts, K = c.num_experts_per_tok, C = c.inner_iter;
      if (N > 0 && C * K <= N) {
        r["combinatorial_bound"] = {
            {"formula", fmt::format("C({},{})^{} / C({},{})", N, K, C, N, C * K)},
            {"value", coe::combinatorial_ratio(N, K, C)},
            {"note", "ordered expert-set sequences over C iterations vs unordered sets of C*K experts"}};
      }
      coe::write_file_atomic(f.routing_out, r.dump(2) + "\n");
    }
  } catch (const std::exception& e) {
    return coe::cli::report(e);
  }
  return 0;
}
