// coe-bench: full training steps (forward, backward, clipping, AdamW) of a run config's model on
// random tokens. Reports tokens/s, step time, model FLOPs utilisation and peak memory.
// With --decode: incremental decoding with the MLA cache instead (prefill, then one token per
// step), once with kv_b_proj absorbed and once expanded, and the cache's bytes per token.
#include "cli.h"
#include "coe/model/causal_lm.h"
#include "coe/model/flops.h"
#include "coe/model/kv_cache.h"
#include "coe/train/adamw.h"
#include "coe/train/device.h"
#include "coe/train/memory_model.h"
#include "coe/train/model_vocab.h"
#include "coe/train/train_config.h"
#include "coe/train/train_step.h"
#include "coe/train/training_model.h"
#include "coe/util/clock.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/host_runtime.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <random>

namespace {

using coe::seconds_since;

// Prefill `prompt_len` random tokens for `batch` rows, then decode `new_tokens` greedy tokens one
// step at a time, in each MLA mode; random weights drawn from the config (throughput does not
// depend on them).
void decode_bench(const coe::TrainConfig& cfg, const std::string& config_path, const c10::Device& device, int64_t batch,
                  int64_t prompt_len, int64_t new_tokens, const std::string& json_out,
                  const std::vector<std::string>& overrides) {
  const coe::ModelConfig& m = cfg.model;
  if (prompt_len + new_tokens > m.max_position_embeddings)
    coe::fail("--prompt-len {} + --new-tokens {} exceed model.max_position_embeddings {}", prompt_len, new_tokens,
              m.max_position_embeddings);
  const int64_t cache_bytes = coe::KvCache::bytes_per_token(m, 4);
  if (!device.is_cuda())
    coe::check_host_memory(4 * coe::count_parameters(m).total() + 2 * cache_bytes * batch * (prompt_len + new_tokens),
                           config_path + ": this benchmark", "use a smaller model, --batch or --prompt-len");
  torch::manual_seed(static_cast<int64_t>(cfg.trainer.seed));
  coe::CausalLM model(m);
  model->to(device);
  model->eval();
  const auto dispatch = coe::make_dispatch(cfg.trainer.expert_dispatch);
  model->set_dispatch(dispatch);
  const at::Tensor prompt =
      at::randint(m.vocab_size, {batch, prompt_len}, at::TensorOptions().dtype(at::kLong)).to(device);

  auto run = [&](coe::MlaDecode mode, int64_t steps, double* prefill_s, double* decode_s) {
    coe::KvCache cache(m, batch, prompt_len + steps, model->lm_head_weight().options());
    cache.mode = mode;
    coe::synchronize(device);
    auto t0 = coe::Clock::now();
    at::Tensor next = model->forward_cached(prompt, cache).argmax(-1);
    coe::synchronize(device);
    *prefill_s = seconds_since(t0);
    t0 = coe::Clock::now();
    for (int64_t i = 0; i < steps; ++i) next = model->forward_cached(next.view({batch, 1}), cache).argmax(-1);
    coe::synchronize(device);
    *decode_s = seconds_since(t0);
  };
  // Per-head keys and values of every layer, what a standard multi-head attention cache holds.
  const int64_t mha_bytes = m.num_hidden_layers * m.num_attention_heads * (m.q_head_dim() + m.v_head_dim) * 4;
  fmt::print("config           {}\n", config_path);
  fmt::print("model            vocab {}, {} layers, hidden {}, {} heads, kv_lora_rank {}, expert dispatch {}\n",
             m.vocab_size, m.num_hidden_layers, m.hidden_size, m.num_attention_heads, m.kv_lora_rank, dispatch->name());
  fmt::print("decode           batch {}, prompt {} tokens, {} new tokens, {} threads\n", batch, prompt_len, new_tokens,
             at::get_num_threads());
  fmt::print("KV cache         {} bytes/token in float32 (latent {} + rope key {} per layer); per-head K and V "
             "would take {} ({:.1f}x)\n",
             cache_bytes, m.kv_lora_rank, m.qk_rope_head_dim, mha_bytes, static_cast<double>(mha_bytes) / cache_bytes);
  nlohmann::json modes = nlohmann::json::object();
  for (const coe::MlaDecode mode : {coe::MlaDecode::kAbsorbed, coe::MlaDecode::kExpanded}) {
    double prefill_s = 0, decode_s = 0;
    run(mode, std::min<int64_t>(new_tokens, 4), &prefill_s, &decode_s);  // warm-up: allocator, kernels
    run(mode, new_tokens, &prefill_s, &decode_s);
    const double prefill_rate = batch * prompt_len / prefill_s, decode_rate = batch * new_tokens / decode_s;
    fmt::print("{:<16} prefill {:.0f} tokens/s ({:.1f} ms), decode {:.1f} tokens/s ({:.2f} ms/step)\n",
               coe::to_string(mode), prefill_rate, 1e3 * prefill_s, decode_rate, 1e3 * decode_s / new_tokens);
    modes[coe::to_string(mode)] = {{"prefill_tokens_per_s", prefill_rate},
                                   {"decode_tokens_per_s", decode_rate},
                                   {"prefill_s", prefill_s},
                                   {"decode_s", decode_s}};
  }
  if (!json_out.empty()) {
    const nlohmann::json j = {{"mode", "decode"},
                              {"batch", batch},
                              {"prompt_len", prompt_len},
                              {"new_tokens", new_tokens},
                              {"kv_cache_bytes_per_token", cache_bytes},
                              {"mha_cache_bytes_per_token", mha_bytes},
                              {"attention", modes},
                              {"device", device.str()},
                              {"expert_dispatch", dispatch->name()},
                              {"threads", at::get_num_threads()},
                              {"config", config_path},
                              {"overrides", overrides}};
    coe::write_file_atomic(json_out, j.dump(2) + "\n");
  }
}

}  // namespace

static int tool_main(int argc, char** argv) {
  CLI::App app{"coe-bench: training-step throughput on random tokens"};
  std::string config_path, json_out;
  std::vector<std::string> overrides;
  int64_t steps = 10, warmup = 3, micro_batch = 0, seq = 0;
  double peak_tflops = 0;
  app.add_option("config", config_path, "run config (YAML)")->required();
  app.add_option("--set", overrides, "override a config key: section.key=value (repeatable)");
  app.add_option("--steps", steps, "timed optimizer steps")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "untimed steps first")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--micro-batch", micro_batch, "override trainer.micro_batch");
  app.add_option("--seq", seq, "sequence length (default: data.max_length)");
  app.add_option("--peak-tflops", peak_tflops,
                 "the device's dense peak for MFU (default: 989 for CUDA bf16 = H100 SXM; none on CPU)");
  app.add_option("--json", json_out, "write {tokens_per_s, step_ms, mfu, peak_bytes, config}");
  bool decode = false;
  int64_t decode_batch = 1, prompt_len = 128, new_tokens = 64;
  app.add_flag("--decode", decode, "measure incremental decoding with the KV cache (absorbed and expanded MLA)");
  app.add_option("--batch", decode_batch, "--decode: rows decoded together")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--prompt-len", prompt_len, "--decode: prompt tokens per row")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--new-tokens", new_tokens, "--decode: decode steps")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  if (const int status = coe::cli::parse(app, argc, argv); status >= 0) return status;
  coe::tune_host_allocator();

  try {
    if (!json_out.empty()) coe::check_writable(json_out, "--json");
    if (micro_batch > 0) overrides.push_back(fmt::format("trainer.micro_batch={}", micro_batch));
    coe::TrainConfig cfg = coe::load_train_config(config_path, overrides);
    // One process: the whole model on this device, whatever the config's parallel: section says.
    cfg.parallel = coe::ParallelConfig{};
    coe::resolve_model_vocab(cfg);  // the model coe-train would build: the tokenizer's vocabulary
    const coe::TrainerConfig& t = cfg.trainer;
    const int64_t seq_len = seq > 0 ? seq : cfg.data.max_length;
    const c10::Device device = coe::resolve_device(t.device, config_path + ": trainer.device");
    const bool bf16 = t.dtype == "bfloat16";
    if (t.threads > 0) at::set_num_threads(t.threads);
    if (decode) {
      decode_bench(cfg, config_path, device, decode_batch, prompt_len, new_tokens, json_out, overrides);
      return 0;
    }
    if (cfg.model.max_position_embeddings < seq_len)
      coe::fail("{}: sequence length {} exceeds model.max_position_embeddings {}", config_path, seq_len,
                cfg.model.max_position_embeddings);

    if (!device.is_cuda()) {
      coe::MemoryOptions mo = coe::memory_options(cfg);
      mo.seq_len = seq_len;
      coe::check_host_memory(coe::estimate_memory(cfg.model, mo).total_bytes(), config_path + ": this benchmark",
                             "use a smaller model or --micro-batch");
    }
    coe::DistContext single;
    coe::TrainingModel built = coe::build_model_and_optimizer(
        cfg, device, single, coe::ParallelLayout::create(single, cfg.parallel, cfg.model, config_path));
    coe::CausalLM& model = built.model;
    coe::DistributedOptimizer& optimizer = *built.optimizer;
    std::mt19937_64 rng(t.seed);

    const coe::FlopsPerToken flops = coe::training_flops_per_token(cfg.model, seq_len);
    const int64_t tokens_per_step = t.global_batch * seq_len;
    std::vector<double> step_ms;
    coe::reset_peak_memory(device);
    for (int64_t s = 0; s < warmup + steps; ++s) {
      coe::TokenBatch batch = coe::random_token_batch(t.global_batch, seq_len, cfg.model.vocab_size, rng);
      auto micro = coe::split_micro_batches(batch, t.micro_batch);
      coe::synchronize(device);
      const auto start = std::chrono::steady_clock::now();
      optimizer.zero_grad();
      coe::accumulate_gradients(*model, micro, device, bf16);
      optimizer.reduce_and_clip(cfg.optim.clip_grad);
      optimizer.step(cfg.optim.lr);
      coe::synchronize(device);
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      if (s >= warmup) step_ms.push_back(ms);
    }
    std::vector<double> sorted = step_ms;
    std::sort(sorted.begin(), sorted.end());
    const double median_ms = sorted[sorted.size() / 2];
    const double tokens_per_s = tokens_per_step / (median_ms / 1000.0);
    if (peak_tflops <= 0 && device.is_cuda() && bf16) peak_tflops = 989.0;
    const double achieved_tflops = tokens_per_s * flops.total() / 1e12;
    const double mfu = peak_tflops > 0 ? achieved_tflops / peak_tflops : 0.0;
    const coe::PeakMemory peak = coe::peak_memory(device);
    const std::string blas = device.is_cpu() ? coe::blas_library() : std::string();

    fmt::print("config           {}\n", config_path);
    fmt::print("device           {} ({}, activation checkpointing {})\n", device.str(), t.dtype,
               t.activation_checkpointing ? "on" : "off");
    if (device.is_cpu())
      fmt::print("cpu runtime      {} threads, BLAS {}\n", at::get_num_threads(),
                 blas.empty() ? std::string("unknown") : blas);
    fmt::print("model            vocab {}, {} layers, hidden {}, expert dispatch {}\n", cfg.model.vocab_size,
               cfg.model.num_hidden_layers, cfg.model.hidden_size, built.dispatch);
    fmt::print("batch            {} x {} tokens (micro-batch {}, {} accumulation steps)\n", t.global_batch, seq_len,
               t.micro_batch, t.accumulation_steps());
    fmt::print("step time        {:.1f} ms median of {} (min {:.1f}, max {:.1f})\n", median_ms, step_ms.size(),
               sorted.front(), sorted.back());
    fmt::print("tokens/s         {:.0f}\n", tokens_per_s);
    fmt::print("model FLOPs      {:.3f} GFLOP/token -> {:.2f} TFLOP/s", flops.total() / 1e9, achieved_tflops);
    if (peak_tflops > 0) fmt::print(", MFU {:.1f}% of {:.0f}", 100 * mfu, peak_tflops);
    fmt::print("\npeak memory      {:.3f} GiB ({})\n", peak.bytes / double(1ull << 30), peak.source);

    if (!json_out.empty()) {
      nlohmann::json j = {{"tokens_per_s", tokens_per_s},
                          {"step_ms", median_ms},
                          {"step_ms_all", step_ms},
                          {"mfu", mfu},
                          {"tflops", achieved_tflops},
                          {"flops_per_token", flops.total()},
                          {"peak_bytes", peak.bytes},
                          {"peak_source", peak.source},
                          {"device", device.str()},
                          {"dtype", t.dtype},
                          {"expert_dispatch", built.dispatch},
                          {"global_batch", t.global_batch},
                          {"micro_batch", t.micro_batch},
                          {"seq_len", seq_len},
                          {"vocab_size", cfg.model.vocab_size},
                          {"threads", at::get_num_threads()},
                          {"blas", blas},
                          {"config", config_path},
                          {"overrides", overrides}};
      coe::write_file_atomic(json_out, j.dump(2) + "\n");
    }
  } catch (const std::exception& e) {
    return coe::cli::report(e);
  }
  return 0;
}

int main(int argc, char** argv) { return coe::cli::exit_status(tool_main(argc, argv)); }
