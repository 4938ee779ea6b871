// coe-generate: text from a checkpoint, with the compressed MLA key/value cache.
//
//   coe-generate --checkpoint DIR --prompt "How many eggs ...?"      streams the answer to stdout
//   coe-generate --checkpoint DIR --input records.jsonl [--output OUT.jsonl]
//
// A prompt is rendered in the run's text format (its config.yaml, like coe-eval) up to where the
// answer begins: --prompt fills the format's first key, a record of --input its own keys
// (text_keys [question, answer]: "question : <question> answer :"). --raw sends the text as is.
// Prefill and decode throughput go to stderr (and --json).
#include "cli.h"
#include "coe/data/jsonl.h"
#include "coe/data/text_template.h"
#include "coe/eval/generate.h"
#include "coe/model/causal_lm.h"
#include "coe/model/kv_cache.h"
#include "coe/tokenizer/tokenizer.h"
#include "coe/train/device.h"
#include "coe/train/eval_setup.h"
#include "coe/util/clock.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/host_runtime.h"

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <c10/core/Device.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

struct Flags {
  std::string checkpoint, prompt, input, output, json_out, tokenizer, template_text,
      prompt_key = "prompt", device = "cpu", prefill_attention = "expanded", decode_attention = "absorbed";
  std::vector<std::string> text_keys, stop;
  bool raw = false, ignore_eos = false;
  int64_t max_new_tokens = 256, batch = 8, max_records = -1, top_k = 0;
  double temperature = 0.0, top_p = 1.0;
  uint64_t seed = 0;
};

struct Prompt {
  std::string where, text;
  std::vector<int32_t> ids;
};

std::string rate(int64_t tokens, double seconds) { return seconds > 0 ? fmt::format("{:.1f}", tokens / seconds) : "-"; }

int run(const Flags& f) {
  if (f.prompt.empty() == f.input.empty()) coe::fail("--prompt / --input: give exactly one");
  if (!f.output.empty() && f.input.empty()) coe::fail("--output: only with --input (--prompt streams to stdout)");
  if (f.max_records >= 0 && f.input.empty()) coe::fail("--max-records: only with --input");
  if (f.prompt_key != "prompt" && (f.input.empty() || !f.raw)) coe::fail("--prompt-key: only with --raw --input");
  if (f.max_new_tokens < 1) coe::fail("--max-new-tokens {}: must be at least 1", f.max_new_tokens);
  if (f.batch < 1) coe::fail("--batch {}: must be at least 1", f.batch);
  if (!(f.temperature >= 0)) coe::fail("--temperature {}: must be >= 0 (0: greedy)", f.temperature);
  if (f.top_k < 0) coe::fail("--top-k {}: must be >= 0 (0: no limit)", f.top_k);
  if (!(f.top_p > 0 && f.top_p <= 1)) coe::fail("--top-p {}: must be in (0, 1]", f.top_p);
  coe::GenerateOptions options;
  options.max_new_tokens = f.max_new_tokens;
  options.sampling = {f.temperature, f.top_k, f.top_p, f.seed};
  options.stop_at_eos = !f.ignore_eos;
  options.prefill_mode = coe::parse_mla_decode(f.prefill_attention, "--prefill-attention");
  options.decode_mode = coe::parse_mla_decode(f.decode_attention, "--decode-attention");
  for (const auto& s : f.stop) {
    if (s.empty()) coe::fail("--stop: empty stop string");
    options.stop.push_back(coe::cli::unescape(s));
  }

  const c10::Device device = coe::resolve_device(f.device, "--device");
  const coe::CheckpointSetup checkpoint = coe::resolve_checkpoint(f.checkpoint);
  coe::TextOverrides overrides;
  overrides.tokenizer = f.tokenizer;
  overrides.text_keys = f.text_keys;
  overrides.template_text = f.template_text;
  const coe::TextSettings text = coe::resolve_text_settings(overrides, checkpoint, "coe-generate");
  const auto tokenizer = coe::load_tokenizer(text.tokenizer);
  coe::check_vocabulary(*tokenizer, text, checkpoint);
  const coe::TextTemplate format(text.text.text_keys, text.text.template_text);
  const std::string answer_key = format.keys().back();

  // Prompts, rendered and tokenized, each checked against the position limit.
  std::vector<Prompt> prompts;
  const int64_t max_pos = checkpoint.model.max_position_embeddings;
  auto add = [&](std::string where, std::string prompt_text) {
    Prompt p{std::move(where), std::move(prompt_text), {}};
    p.ids = tokenizer->encode(p.text);
    if (p.ids.empty()) coe::fail("{}: the prompt is empty", p.where);
    if (static_cast<int64_t>(p.ids.size()) >= max_pos)
      coe::fail("{}: the prompt has {} tokens, no room for a new one under the model's max_position_embeddings {}",
                p.where, p.ids.size(), max_pos);
    prompts.push_back(std::move(p));
  };
  if (!f.prompt.empty()) {
    if (f.raw) {
      add("--prompt", f.prompt);
    } else {
      try {
        add("--prompt", format.render_prompt(nlohmann::json{{format.keys().front(), f.prompt}}, answer_key));
      } catch (const coe::Error& e) {
        coe::fail("--prompt: {} (the text format needs more than one key filled: pass --raw or --input)", e.what());
      }
    }
  } else {
    const coe::RecordFile file(f.input);
    const int64_t n = f.max_records < 0 ? file.size() : std::min(file.size(), f.max_records);
    for (int64_t i = 0; i < n; ++i) {
      const std::string where = fmt::format("{}:{}", f.input, file.line(i));
      const nlohmann::json record = file.parse(i);
      try {
        if (f.raw) {
          const auto it = record.find(f.prompt_key);
          if (it == record.end()) coe::fail("record has no key '{}' (--prompt-key)", f.prompt_key);
          add(where, coe::value_to_text(*it));
        } else {
          add(where, format.render_prompt(record, answer_key));
        }
      } catch (const coe::Error& e) {
        if (std::string(e.what()).rfind(where, 0) == 0) throw;
        coe::fail("{}: {}", where, e.what());
      }
    }
    if (prompts.empty()) coe::fail("--input {}: no records", f.input);
  }

  const std::shared_ptr<coe::CausalLMImpl> model = coe::load_model_for_inference(checkpoint, device);
  coe::GenerateStats stats;
  const auto start = coe::Clock::now();
  std::vector<std::string> finish;
  if (!f.prompt.empty()) {
    const auto out =
        coe::generate(*model, *tokenizer, {prompts[0].ids}, options, {}, &stats, [](int64_t, const std::string& piece) {
          std::fwrite(piece.data(), 1, piece.size(), stdout);
          std::fflush(stdout);
        });
    std::fputc('\n', stdout);
    std::fflush(stdout);  // before the statistics on stderr
    finish.push_back(coe::to_string(out[0].finish));
  } else {
    std::unique_ptr<coe::AtomicFile> file;
    if (!f.output.empty()) file = std::make_unique<coe::AtomicFile>(f.output);
    for (size_t begin = 0; begin < prompts.size(); begin += static_cast<size_t>(f.batch)) {
      const size_t end = std::min(prompts.size(), begin + static_cast<size_t>(f.batch));
      std::vector<std::vector<int32_t>> ids;
      std::vector<uint64_t> streams;
      for (size_t i = begin; i < end; ++i) {
        ids.push_back(prompts[i].ids);
        streams.push_back(i);  // a record's draws do not depend on its batch
      }
      const auto out = coe::generate(*model, *tokenizer, ids, options, streams, &stats);
      std::string lines;
      for (size_t i = begin; i < end; ++i) {
        const coe::Generation& g = out[i - begin];
        finish.push_back(coe::to_string(g.finish));
        nlohmann::ordered_json j = {{"index", i},
                                    {"where", prompts[i].where},
                                    {"prompt", prompts[i].text},
                                    {"generation", g.text},
                                    {"finish_reason", coe::to_string(g.finish)},
                                    {"prompt_tokens", prompts[i].ids.size()},
                                    {"new_tokens", g.tokens.size()},
                                    {"tokens", g.tokens}};
        // Invalid UTF-8 (a byte tokenizer's, a character cut by max_new_tokens) is written as U+FFFD.
        lines += j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
      }
      if (file) {
        file->write(lines);
      } else {
        std::fwrite(lines.data(), 1, lines.size(), stdout);
        std::fflush(stdout);
      }
    }
    if (file) file->commit();
  }
  const double seconds = coe::seconds_since(start);
  const int64_t cache_bytes = coe::KvCache::bytes_per_token(checkpoint.model, 4);
  fmt::print(
      stderr,
      "prefill  {} prompt tokens in {:.3f} s: {} tokens/s ({} attention)\n"
      "decode   {} tokens in {} steps, {:.3f} s: {} tokens/s ({} attention, batch {}; KV cache {} bytes/token)\n",
      stats.prompt_tokens, stats.prefill_s, rate(stats.prompt_tokens, stats.prefill_s),
      coe::to_string(options.prefill_mode), stats.decode_tokens, stats.decode_steps, stats.decode_s,
      rate(stats.decode_tokens, stats.decode_s), coe::to_string(options.decode_mode),
      std::min<int64_t>(f.batch, static_cast<int64_t>(prompts.size())), cache_bytes);
  if (!f.json_out.empty()) {
    auto per_s = [](int64_t n, double s) { return s > 0 ? n / s : 0.0; };
    const nlohmann::ordered_json j = {
        {"checkpoint", checkpoint.dir},
        {"tokenizer", text.tokenizer},
        {"prompts", prompts.size()},
        {"batch", std::min<int64_t>(f.batch, static_cast<int64_t>(prompts.size()))},
        {"max_new_tokens", f.max_new_tokens},
        {"sampling", {{"temperature", f.temperature}, {"top_k", f.top_k}, {"top_p", f.top_p}, {"seed", f.seed}}},
        {"stop_at_eos", options.stop_at_eos},
        {"prefill_attention", coe::to_string(options.prefill_mode)},
        {"decode_attention", coe::to_string(options.decode_mode)},
        {"kv_cache_bytes_per_token", cache_bytes},
        {"finish_reasons", finish},
        {"prompt_tokens", stats.prompt_tokens},
        {"decode_tokens", stats.decode_tokens},
        {"decode_steps", stats.decode_steps},
        {"prefill_s", stats.prefill_s},
        {"decode_s", stats.decode_s},
        {"prefill_tokens_per_s", per_s(stats.prompt_tokens, stats.prefill_s)},
        {"decode_tokens_per_s", per_s(stats.decode_tokens, stats.decode_s)},
        {"seconds", seconds}};
    coe::write_file_atomic(f.json_out, j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n");
  }
  return 0;
}

}  // namespace

static int tool_main(int argc, char** argv) {
  CLI::App app{"coe-generate: generate text from a coe / reference checkpoint with a KV cache"};
  Flags f;
  app.add_option("--checkpoint", f.checkpoint, "checkpoint dir (config.json + model.safetensors) or run dir")
      ->required();
  app.add_option("--prompt", f.prompt, "one prompt: the question, put into the run's text format (streams the answer)")
      ->check(coe::cli::non_empty());
  app.add_option("--input", f.input, "JSON / JSONL records, each rendered in the run's text format up to its answer");
  app.add_option("--output", f.output, "with --input: write the JSONL here (default: stdout)");
  app.add_flag("--raw", f.raw, "use the prompt text as is (--input: the records' --prompt-key field)");
  app.add_option("--prompt-key", f.prompt_key, "with --raw --input: the field holding the prompt")
      ->capture_default_str();
  app.add_option("--tokenizer", f.tokenizer, "'byte' or a tokenizer.json (default: the checkpoint's run config)");
  app.add_option("--text-keys", f.text_keys, "record keys of the text format (default: the run's)")->delimiter(',');
  app.add_option("--template", f.template_text, "text template with {key} fields (default: the run's)");
  app.add_option("--max-new-tokens", f.max_new_tokens, "tokens generated per prompt at most")->capture_default_str();
  app.add_option("--temperature", f.temperature, "0: greedy; else sample from softmax(logits / T)")
      ->capture_default_str();
  app.add_option("--top-k", f.top_k, "sample among the k most likely tokens (0: all)")->capture_default_str();
  app.add_option("--top-p", f.top_p, "sample among the most likely tokens whose probability reaches p")
      ->capture_default_str();
  app.add_option("--seed", f.seed, "sampling seed (record i draws from its own stream)")->capture_default_str();
  app.add_option("--stop", f.stop, "stop string, not part of the output (repeatable; \\n and \\t understood)");
  app.add_flag("--ignore-eos", f.ignore_eos, "do not stop at EOS (fixed-length throughput measurements)");
  app.add_option("--batch", f.batch, "prompts generated together (--input)")->capture_default_str();
  app.add_option("--max-records", f.max_records, "--input: only the first N records (-1: all)")->capture_default_str();
  app.add_option("--device", f.device, "cpu | cuda | cuda:N")->capture_default_str();
  app.add_option("--prefill-attention", f.prefill_attention, "MLA in the prefill: absorbed | expanded")
      ->capture_default_str();
  app.add_option("--decode-attention", f.decode_attention, "MLA in decode steps: absorbed | expanded")
      ->capture_default_str();
  app.add_option("--json", f.json_out, "write the run's statistics as one JSON object");
  if (const int status = coe::cli::parse(app, argc, argv); status >= 0) return status;
  coe::tune_host_allocator();
  try {
    return run(f);
  } catch (const std::exception& e) {
    return coe::cli::report(e);
  }
}

int main(int argc, char** argv) { return coe::cli::exit_status(tool_main(argc, argv)); }
