// coe-eval: validation loss, perplexity, next-token accuracy, loss per record type and routing
// statistics of a checkpoint on a prepared split or a raw JSON/JSONL file; with --task, the
// answer accuracy of greedy generations on math word problems (GSM8K, MetaMathQA).
//
// For a coe-train checkpoint the tokenizer, the text keys / template and the row length default
// to the run's own (its config.yaml); flags override them. Raw records are scored in batches of
// similar length, each padded only to its longest record.
#include "cli.h"
#include "coe/data/prepare.h"
#include "coe/data/prepared.h"
#include "coe/eval/evaluate.h"
#include "coe/eval/task_eval.h"
#include "coe/model/causal_lm.h"
#include "coe/tokenizer/tokenizer.h"
#include "coe/train/device.h"
#include "coe/train/eval_setup.h"
#include "coe/train/memory_model.h"
#include "coe/util/clock.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/host_runtime.h"
#include "coe/util/random.h"

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <ATen/ATen.h>
#include <c10/core/Device.h>

#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>

namespace fs = std::filesystem;

namespace {

struct Flags {
  std::string checkpoint, data, tokenizer, split_name, json_out, routing_out, device = "cpu", template_text,
                                                                              truncation = "right";
  std::vector<std::string> text_keys;
  int64_t batch = 8, max_length = 0, max_records = -1;
  // --task
  std::string task, question_key, answer_key, shots_from, shot_separator = R"(\n\n)", samples_out;
  std::vector<std::string> stop;
  int64_t shots = 0, max_new_tokens = 256;
  uint64_t seed = 1234;

  coe::TextOverrides overrides() const { return {tokenizer, text_keys, template_text, max_length}; }
};

struct DataSource {
  std::shared_ptr<const coe::PreparedSplit> split;
  std::string temp_dir;  // made by mkdtemp when the data was prepared on the fly; removed on exit
  ~DataSource() {
    std::error_code ec;
    if (!temp_dir.empty()) fs::remove_all(temp_dir, ec);
  }
};

void open_data(DataSource& src, const Flags& f, const coe::TextSettings& s) {
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

void run_loss_eval(const Flags& f) {
  const auto start = std::chrono::steady_clock::now();
  const c10::Device device = coe::resolve_device(f.device, "--device");
  const coe::Truncation truncation = coe::parse_truncation(f.truncation);
  const coe::CheckpointSetup checkpoint = coe::resolve_checkpoint(f.checkpoint);
  const std::string& ckpt = checkpoint.dir;
  const coe::ModelConfig& model_config = checkpoint.model;
  const coe::TextSettings text = coe::resolve_text_settings(f.overrides(), checkpoint, "coe-eval");
  if (text.max_length > model_config.max_position_embeddings)
    coe::fail("--max-length {} exceeds the model's max_position_embeddings {} ({})", text.max_length,
              model_config.max_position_embeddings, (fs::path(ckpt) / "config.json").string());

  DataSource source;
  if (!fs::is_directory(f.data)) coe::check_vocabulary(*coe::load_tokenizer(text.tokenizer), text, checkpoint);
  open_data(source, f, text);
  if (source.split->vocab_size() > model_config.vocab_size)
    coe::fail("--data {}: its tokenizer's vocabulary {} exceeds the model's vocab_size {}", f.data,
              source.split->vocab_size(), model_config.vocab_size);

  const std::shared_ptr<coe::CausalLMImpl> model = coe::load_model_for_inference(checkpoint, device);

  coe::LoaderOptions opts;
  opts.batch_size = f.batch;
  opts.max_length = text.max_length;
  opts.truncation = truncation;
  opts.shuffle = false;
  opts.length_buckets = true;
  coe::SequentialLoader loader(source.split, opts, f.max_records);
  const auto scoring_start = std::chrono::steady_clock::now();
  coe::EvalReport report = coe::evaluate(*model, loader, device, {/*bf16_autocast=*/false, source.split.get()});
  const auto now = std::chrono::steady_clock::now();
  const double seconds = std::chrono::duration<double>(now - start).count();
  const double scoring_seconds = std::chrono::duration<double>(now - scoring_start).count();
  const double records_per_s = scoring_seconds > 0 ? report.records / scoring_seconds : 0.0;
  if (report.tokens > 0 && !std::isfinite(report.val_loss))
    coe::fail("{}: the loss on {} is {} (not finite): the checkpoint's weights are non-finite or its forward "
              "overflows; no report written",
              ckpt, f.data, report.val_loss);

  fmt::print("checkpoint   {}\ndata         {} ({} records, {} scored tokens)\n", ckpt, f.data, report.records,
             report.tokens);
  fmt::print("val_loss     {:.4f}\nperplexity   {:.3f}\naccuracy     {:.4f}\n", report.val_loss, report.perplexity,
             report.accuracy);
  for (const auto& [type, t] : report.per_type)
    fmt::print("  type {:<20} loss {:.4f} ({} tokens)\n", type.empty() ? "(none)" : type, t.loss, t.tokens);
  if (!report.routing.empty()) fmt::print("routing      layer iter  imbalance  cv     entropy\n");
  for (const auto& r : report.routing)
    fmt::print("             {:>5} {:>4}  {:>9.3f}  {:.3f}  {:.3f}\n", r.layer, r.iteration, r.load_imbalance,
               r.load_cv, r.router_entropy);
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
    coe::RoutingReport routing = report.routing_report();
    const int64_t N = c.n_routed_experts, K = c.num_experts_per_tok, C = c.inner_iter;
    if (N > 0 && C * K <= N)
      routing.combinatorial_bound = coe::CombinatorialBound{
          fmt::format("C({},{})^{} / C({},{})", N, K, C, N, C * K), coe::combinatorial_ratio(N, K, C),
          "ordered expert-set sequences over C iterations vs unordered sets of C*K experts"};
    nlohmann::json r = report.to_json(/*with_coactivation=*/true);
    routing.write_to(r, /*with_coactivation=*/true);
    coe::write_file_atomic(f.routing_out, r.dump(2) + "\n");
  }
}

// Generation statistics as the reports print them.
nlohmann::ordered_json generation_json(const coe::GenerateStats& g) {
  auto rate = [](int64_t n, double s) { return s > 0 ? n / s : 0.0; };
  return {{"prompt_tokens", g.prompt_tokens},
          {"decode_tokens", g.decode_tokens},
          {"prefill_s", g.prefill_s},
          {"decode_s", g.decode_s},
          {"prefill_tokens_per_s", rate(g.prompt_tokens, g.prefill_s)},
          {"decode_tokens_per_s", rate(g.decode_tokens, g.decode_s)}};
}

void run_task_eval(const Flags& f) {
  const auto start = coe::Clock::now();
  if (!f.routing_out.empty()) coe::fail("--routing: not with --task (routing statistics come from scoring the loss)");
  if (f.max_length > 0)
    coe::fail("--max-length: not with --task (prompts and answers are bounded by max_position_embeddings)");
  const coe::MathTask task = coe::parse_math_task(f.task, "--task");
  if (f.max_new_tokens < 1) coe::fail("--max-new-tokens {}: must be at least 1", f.max_new_tokens);
  if (f.shots < 0) coe::fail("--shots {}: must be >= 0", f.shots);
  const c10::Device device = coe::resolve_device(f.device, "--device");
  const coe::CheckpointSetup checkpoint = coe::resolve_checkpoint(f.checkpoint);
  const coe::TextSettings text = coe::resolve_text_settings(f.overrides(), checkpoint, "coe-eval");
  const auto tokenizer = coe::load_tokenizer(text.tokenizer);
  coe::check_vocabulary(*tokenizer, text, checkpoint);

  const std::vector<coe::SourceRecord> records = coe::read_source_records(f.data, f.split_name, f.max_records);
  if (records.empty()) coe::fail("--data {}: no records to evaluate", f.data);
  const std::string question_key = f.question_key.empty() ? coe::default_question_key(task) : f.question_key;
  const std::string answer_key = f.answer_key.empty() ? coe::default_answer_key(task) : f.answer_key;
  coe::MathTaskPrompter prompter(task, coe::TextTemplate(text.text.text_keys, text.text.template_text), question_key,
                                 answer_key);
  std::string shots_from = f.shots_from;
  if (f.shots > 0) {
    if (shots_from.empty()) {
      if (!checkpoint.run || checkpoint.run->data.train_files.size() != 1)
        coe::fail("--shots {}: name the file to draw exemplars from with --shots-from (the checkpoint's run config "
                  "has no single training file)",
                  f.shots);
      shots_from = checkpoint.run->data.train_files.front();
    }
    const auto pool = coe::read_source_records(shots_from, "", -1);
    if (static_cast<int64_t>(pool.size()) < f.shots)
      coe::fail("--shots {}: {} holds only {} records", f.shots, shots_from, pool.size());
    std::vector<coe::SourceRecord> exemplars;
    const std::vector<int64_t> pick = coe::shuffled_indices(static_cast<int64_t>(pool.size()), f.seed);
    for (int64_t k = 0; k < f.shots; ++k) exemplars.push_back(pool[static_cast<size_t>(pick[static_cast<size_t>(k)])]);
    prompter.set_shots(exemplars, coe::cli::unescape(f.shot_separator));
  }

  coe::GenerateOptions options;
  options.max_new_tokens = f.max_new_tokens;
  for (const auto& s : f.stop) options.stop.push_back(coe::cli::unescape(s));
  if (const std::string next = prompter.next_text_prefix(); !next.empty()) options.stop.push_back(next);

  const std::shared_ptr<coe::CausalLMImpl> model = coe::load_model_for_inference(checkpoint, device);
  coe::GenerateStats stats;
  const bool tty = ::isatty(STDERR_FILENO);
  const auto samples = coe::run_math_task(*model, *tokenizer, prompter, records, options, f.batch, &stats,
                                          [&](int64_t done, int64_t total) {
                                            if (tty) fmt::print(stderr, "\r{} / {} records", done, total);
                                          });
  if (tty) fmt::print(stderr, "\n");
  const coe::TaskScore score = coe::score(samples);
  const double seconds = coe::seconds_since(start);
  std::map<std::string, int64_t> finish;
  int64_t new_tokens = 0;
  for (const auto& s : samples) {
    ++finish[coe::to_string(s.finish)];
    new_tokens += s.new_tokens;
  }

  nlohmann::ordered_json j;
  j["task"] = coe::to_string(task);
  const nlohmann::ordered_json score_json = score.to_json();
  for (const auto& [k, v] : score_json.items()) j[k] = v;
  j["checkpoint"] = checkpoint.dir;
  j["data"] = f.data;
  j["tokenizer"] = text.tokenizer;
  j["text"] = {{"text_keys", text.text.text_keys},
               {"template", text.text.template_text ? nlohmann::json(*text.text.template_text) : nlohmann::json()},
               {"from", text.origin}};
  j["question_key"] = question_key;
  j["answer_key"] = answer_key;
  j["shots"] = f.shots;
  j["shots_from"] = f.shots > 0 ? nlohmann::ordered_json(shots_from) : nlohmann::ordered_json();
  j["decoding"] = "greedy";
  j["max_new_tokens"] = f.max_new_tokens;
  j["stop"] = options.stop;
  j["example_prompt"] = samples.front().prompt;
  j["finish_reasons"] = finish;
  j["mean_new_tokens"] = static_cast<double>(new_tokens) / static_cast<double>(samples.size());
  j["generation"] = generation_json(stats);
  j["seconds"] = seconds;

  const auto& gen = j["generation"];
  fmt::print("checkpoint   {}\ntask         {} on {} ({} records), {} shots, greedy, at most {} new tokens\n",
             checkpoint.dir, j["task"].get<std::string>(), f.data, score.records, f.shots, f.max_new_tokens);
  fmt::print("accuracy     {:.4f} ({} / {}), 95% interval [{:.4f}, {:.4f}] (Wilson)\n", j["accuracy"].get<double>(),
             score.correct, score.records, j["accuracy_ci95"][0].get<double>(), j["accuracy_ci95"][1].get<double>());
  fmt::print("last number  {:.4f} ({} / {}) when the last number of the generation counts\n",
             j["accuracy_last_number"].get<double>(), score.correct_last, score.records);
  fmt::print("answered     {} / {} generations hold '{}'\n", score.answered, score.records, coe::answer_marker(task));
  fmt::print("generation   prefill {:.0f} tokens/s, decode {:.1f} tokens/s, {:.1f} new tokens per record\n",
             gen["prefill_tokens_per_s"].get<double>(), gen["decode_tokens_per_s"].get<double>(),
             j["mean_new_tokens"].get<double>());
  fmt::print("time         {:.1f} s\n", seconds);
  // Generations are bytes; invalid UTF-8 (a byte tokenizer's, a character cut by max_new_tokens)
  // is written as U+FFFD.
  const auto replace = nlohmann::ordered_json::error_handler_t::replace;
  if (!f.json_out.empty()) coe::write_file_atomic(f.json_out, j.dump(2, ' ', false, replace) + "\n");
  if (!f.samples_out.empty()) {
    std::string lines;
    for (const auto& s : samples) lines += s.to_json().dump(-1, ' ', false, replace) + "\n";
    coe::write_file_atomic(f.samples_out, lines);
  }
}

}  // namespace

static int tool_main(int argc, char** argv) {
  CLI::App app{"coe-eval: evaluate a coe / reference checkpoint on validation data"};
  Flags f;
  app.add_option("--checkpoint", f.checkpoint, "checkpoint dir (config.json + model.safetensors) or run dir")
      ->required();
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
  app.add_option("--task", f.task,
                 "answer accuracy of greedy generations: gsm8k | metamathqa-answers (--data: raw records or a "
                 "prepared split made from them)");
  app.add_option("--question-key", f.question_key,
                 "--task: the records' question key (default: question for gsm8k, query for metamathqa-answers)");
  app.add_option("--answer-key", f.answer_key,
                 "--task: the records' solution key (default: answer for gsm8k, response for metamathqa-answers)");
  app.add_option("--max-new-tokens", f.max_new_tokens, "--task: tokens generated per record at most")
      ->capture_default_str();
  app.add_option("--shots", f.shots, "--task: exemplars (question + solution) before every prompt")
      ->capture_default_str();
  app.add_option("--shots-from", f.shots_from,
                 "--task: raw file to draw exemplars from (default: the run config's training file)");
  app.add_option("--shot-separator", f.shot_separator, "--task: text after each exemplar")->capture_default_str();
  app.add_option("--seed", f.seed, "--task: seed of the exemplar draw")->capture_default_str();
  app.add_option("--stop", f.stop, "--task: extra stop string (repeatable; \\n and \\t understood)");
  app.add_option("--samples", f.samples_out,
                 "--task: write one JSON line per record (prompt, generation, extracted, gold, correct)");
  if (const int status = coe::cli::parse(app, argc, argv); status >= 0) return status;
  coe::tune_host_allocator();

  try {
    if (!f.json_out.empty()) coe::check_writable(f.json_out, "--json");
    if (!f.routing_out.empty()) coe::check_writable(f.routing_out, "--routing");
    if (!f.samples_out.empty()) coe::check_writable(f.samples_out, "--samples");
    if (f.task.empty()) {
      for (const auto& [flag, given] : {std::pair<const char*, bool>{"--samples", !f.samples_out.empty()},
                                        {"--shots", f.shots > 0},
                                        {"--shots-from", !f.shots_from.empty()},
                                        {"--question-key", !f.question_key.empty()},
                                        {"--answer-key", !f.answer_key.empty()},
                                        {"--stop", !f.stop.empty()}})
        if (given) coe::fail("{}: only with --task", flag);
      run_loss_eval(f);
    } else {
      run_task_eval(f);
    }
  } catch (const std::exception& e) {
    return coe::cli::report(e);
  }
  return 0;
}

int main(int argc, char** argv) { return coe::cli::exit_status(tool_main(argc, argv)); }
