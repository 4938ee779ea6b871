// coe-eval: validation loss, perplexity, next-token accuracy, loss per record type and routing
// statistics of a checkpoint on a prepared split or a raw JSON/JSONL file.
#include "coe/data/prepare.h"
#include "coe/data/prepared.h"
#include "coe/io/hf_checkpoint.h"
#include "coe/train/eval_report.h"
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
#include <iostream>

namespace fs = std::filesystem;

namespace {

// A checkpoint directory (config.json + weights), or a run directory: its newest step-N.
std::string resolve_checkpoint(const std::string& path) {
  if (fs::exists(fs::path(path) / "config.json")) return path;
  if (!fs::is_directory(path)) coe::fail("{}: no such checkpoint directory", path);
  std::string best;
  long best_step = -1;
  for (const auto& entry : fs::directory_iterator(path)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.rfind("step-", 0) != 0 || name.find('.') != std::string::npos) continue;
    if (!fs::exists(entry.path() / "config.json")) continue;
    long step = std::strtol(name.c_str() + 5, nullptr, 10);
    if (step > best_step) best_step = step, best = entry.path().string();
  }
  if (best.empty()) coe::fail("{}: neither a checkpoint (config.json) nor a run directory with step-N checkpoints", path);
  return best;
}

struct DataSource {
  std::shared_ptr<const coe::PreparedSplit> split;
  std::string temp_dir;  // made by mkdtemp when the data was prepared on the fly; removed on exit
};

void remove_temp_dir(const std::string& dir) {
  std::error_code ec;
  if (!dir.empty()) fs::remove_all(dir, ec);
}

DataSource open_data(const std::string& data, const std::string& split_name, const std::string& tokenizer,
                     const std::vector<std::string>& text_keys, const std::string& template_text,
                     int64_t max_length) {
  DataSource src;
  if (fs::is_directory(data)) {
    if (fs::exists(fs::path(data) / "meta.json")) {
      src.split = coe::PreparedSplit::open(data);
    } else {
      std::string name = split_name;
      if (name.empty()) name = fs::exists(fs::path(data) / "val") ? "val" : "train";
      src.split = coe::open_split(data, name);
    }
    return src;
  }
  if (!fs::exists(data)) coe::fail("{}: no such file or prepared dataset", data);
  coe::DataConfig cfg;
  cfg.train_files = {data};
  cfg.tokenizer = tokenizer;
  if (!text_keys.empty()) cfg.text.text_keys = text_keys;
  if (!template_text.empty()) cfg.text.template_text = template_text;
  cfg.max_length = max_length;
  // mkdtemp: a fresh directory of our own (mode 0700), not a predictable name in a shared /tmp that
  // someone could have created first; removing it on exit removes only what coe-eval wrote.
  std::string tmpl = (fs::temp_directory_path() / "coe-eval-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr)
    coe::fail("{}: cannot create a temporary directory: {}", tmpl, std::strerror(errno));
  src.temp_dir = tmpl;
  cfg.prepared_dir = (fs::path(src.temp_dir) / "data").string();
  try {
    coe::prepare_dataset(cfg);
    src.split = coe::open_split(cfg.prepared_dir, "train");
  } catch (...) {
    remove_temp_dir(src.temp_dir);
    throw;
  }
  return src;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"coe-eval: evaluate a coe / reference checkpoint on validation data"};
  std::string checkpoint, data, tokenizer = "byte", split_name, json_out, routing_out, device_name = "cpu",
                                template_text, truncation = "right";
  std::vector<std::string> text_keys;
  int64_t batch = 8, max_length = 512, max_records = -1;
  app.add_option("--checkpoint", checkpoint, "checkpoint dir (config.json + model.safetensors) or run dir")->required();
  app.add_option("--data", data, "prepared dataset dir, split dir, or a raw JSON/JSONL file")->required();
  app.add_option("--tokenizer", tokenizer, "for raw files: 'byte' or a tokenizer.json")->capture_default_str();
  app.add_option("--text-keys", text_keys, "for raw files: record keys forming the text")->delimiter(',');
  app.add_option("--template", template_text, "for raw files: text template with {key} fields");
  app.add_option("--split", split_name, "split of a prepared dataset (default: val if present, else train)");
  app.add_option("--batch", batch, "rows per batch")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--max-length", max_length, "row length")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--truncation", truncation, "records longer than max-length: error | left | right")
      ->capture_default_str();
  app.add_option("--max-records", max_records, "score only the first N records (-1: all)")->capture_default_str();
  app.add_option("--device", device_name, "cpu | cuda | cuda:N")->capture_default_str();
  app.add_option("--json", json_out, "write the report as one JSON object");
  app.add_option("--routing", routing_out, "write routing statistics with co-activation matrices (JSON)");
  if (const int status = coe::cli::parse(app, argc, argv); status >= 0) return status;
  coe::tune_host_allocator();

  DataSource source;
  try {
    const auto start = std::chrono::steady_clock::now();
    const std::string ckpt = resolve_checkpoint(checkpoint);
    c10::Device device(device_name);
    coe::CausalLM model = coe::io::load_hf_checkpoint(ckpt);
    model->to(device);
    model->set_dispatch(coe::make_dispatch("auto", device));
    source = open_data(data, split_name, tokenizer, text_keys, template_text, max_length);
    if (source.split->vocab_size() > model->config().vocab_size)
      coe::fail("{}: tokenizer vocabulary {} exceeds the model's vocab_size {}", source.split->dir(),
                source.split->vocab_size(), model->config().vocab_size);

    coe::LoaderOptions opts;
    opts.batch_size = batch;
    opts.max_length = max_length;
    opts.truncation = coe::parse_truncation(truncation);
    opts.shuffle = false;
    coe::SequentialLoader loader(source.split, opts, max_records);
    coe::EvalReport report = coe::evaluate_report(*model, loader, *source.split, device);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    fmt::print("checkpoint   {}\ndata         {} ({} records, {} scored tokens)\n", ckpt, source.split->dir(),
               report.records, report.tokens);
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
    fmt::print("time         {:.1f} s\n", seconds);

    nlohmann::json j = report.to_json();
    j["checkpoint"] = ckpt;
    j["data"] = source.split->dir();
    j["seconds"] = seconds;
    if (!json_out.empty()) coe::write_file_atomic(json_out, j.dump(2) + "\n");
    if (!routing_out.empty()) {
      const coe::ModelConfig& c = model->config();
      nlohmann::json r = report.to_json(/*with_coactivation=*/true);
      const int64_t N = c.n_routed_experts, K = c.num_experts_per_tok, C = c.inner_iter;
      if (N > 0 && C * K <= N) {
        const double log_ratio = C * coe::log_binomial(N, K) - coe::log_binomial(N, C * K);
        r["combinatorial_bound"] = {
            {"formula", fmt::format("C({},{})^{} / C({},{})", N, K, C, N, C * K)},
            {"value", std::exp(log_ratio)},
            {"note", "ordered expert-set sequences over C iterations vs unordered sets of C*K experts"}};
      }
      coe::write_file_atomic(routing_out, r.dump(2) + "\n");
    }
  } catch (const std::exception& e) {
    remove_temp_dir(source.temp_dir);
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  remove_temp_dir(source.temp_dir);
  return 0;
}
