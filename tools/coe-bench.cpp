// coe-bench: full training steps (forward, backward, clipping, AdamW) of a run config's model on
// random tokens. Reports tokens/s, step time, model FLOPs utilisation and peak memory.
#include "coe/model/causal_lm.h"
#include "coe/model/flops.h"
#include "coe/train/adamw.h"
#include "coe/train/memory_model.h"
#include "coe/train/model_vocab.h"
#include "coe/train/train_config.h"
#include "coe/train/train_step.h"
#include "coe/train/device.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/host_runtime.h"
#include "cli.h"

#include <CLI/CLI.hpp>
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <random>

int main(int argc, char** argv) {
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
  if (const int status = coe::cli::parse(app, argc, argv); status >= 0) return status;
  coe::tune_host_allocator();

  try {
    if (!json_out.empty()) coe::check_writable(json_out, "--json");
    if (micro_batch > 0) overrides.push_back(fmt::format("trainer.micro_batch={}", micro_batch));
    coe::TrainConfig cfg = coe::load_train_config(config_path, overrides);
    coe::resolve_model_vocab(cfg);  // the model coe-train would build: the tokenizer's vocabulary
    const coe::TrainerConfig& t = cfg.trainer;
    const int64_t seq_len = seq > 0 ? seq : cfg.data.max_length;
    const c10::Device device = coe::resolve_device(t.device, config_path + ": trainer.device");
    const bool bf16 = t.dtype == "bfloat16";
    if (bf16 && !device.is_cuda()) coe::fail("{}: trainer.dtype: bfloat16 needs a CUDA device", config_path);
    if (t.threads > 0) at::set_num_threads(t.threads);
    if (cfg.model.max_position_embeddings < seq_len)
      coe::fail("{}: sequence length {} exceeds model.max_position_embeddings {}", config_path, seq_len,
                cfg.model.max_position_embeddings);

    if (!device.is_cuda()) {
      coe::MemoryOptions mo = coe::memory_options(cfg);
      mo.seq_len = seq_len;
      coe::check_host_memory(coe::estimate_memory(cfg.model, mo).total_bytes(), config_path + ": this benchmark",
                             "use a smaller model or --micro-batch");
    }
    torch::manual_seed(static_cast<int64_t>(t.seed));
    coe::CausalLM model(cfg.model);
    model->to(device);
    model->train();
    model->set_activation_checkpointing(t.activation_checkpointing);
    const auto dispatch = coe::make_dispatch(t.expert_dispatch, device);
    model->set_dispatch(dispatch);
    coe::AdamW optimizer(coe::optimizer_parameters(*model, cfg.optim.decay), coe::AdamWOptions::from(cfg.optim));
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
      coe::clip_grad_norm(optimizer.parameters(), cfg.optim.clip_grad);
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
               cfg.model.num_hidden_layers, cfg.model.hidden_size, dispatch->name());
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
                          {"expert_dispatch", dispatch->name()},
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
