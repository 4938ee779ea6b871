// coe-memory: parameter counts per component and the training-memory estimate of a run config
// (weights, gradients, AdamW moments, activations with and without checkpointing) per rank of a
// job laid out by --world-size / --expert-parallel / --shard-optimizer, optionally beside a
// measurement of real training steps (one process). See docs/memory.md.
//
//   coe-memory CONFIG.yaml [--set k=v ...] [--micro-batch M] [--seq S] [--checkpointing | --no-checkpointing]
//              [--dtype float32|bfloat16] [--attention auto|fused|materialized]
//              [--world-size W] [--expert-parallel EP] [--shard-optimizer | --no-shard-optimizer]
//              [--measure] [--json OUT]
//   coe-memory --compare A.yaml B.yaml [same options]
#include "cli.h"
#include "coe/distributed/context.h"
#include "coe/distributed/env.h"
#include "coe/model/causal_lm.h"
#include "coe/model/chunked_loss.h"
#include "coe/train/adamw.h"
#include "coe/train/device.h"
#include "coe/train/distributed_optimizer.h"
#include "coe/train/memory_model.h"
#include "coe/train/model_vocab.h"
#include "coe/train/train_config.h"
#include "coe/train/train_step.h"
#include "coe/train/training_model.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"

#include <ATen/ATen.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>

namespace fs = std::filesystem;

namespace {

// ---- exact CPU peak: a counting wrapper around the c10 CPU allocator ------------------------
// Every CPU tensor's storage comes from c10::GetCPUAllocator(); the wrapper keeps the live byte
// count and its maximum. It covers tensor storage only (not the allocator's own slack, MKL/oneDNN
// scratch buffers or anything outside torch). Both the const (libtorch < 2.3) and the non-const
// (>= 2.3) allocate() signatures are defined, and copy_data (pure virtual from 2.3), so the class
// is concrete under either.
class CountingCpuAllocator final : public c10::Allocator {
 public:
  explicit CountingCpuAllocator(c10::Allocator* base) : base_(base) {}

  c10::DataPtr allocate(size_t n) const { return wrap(n); }
  c10::DataPtr allocate(size_t n) { return wrap(n); }
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }
  void copy_data(void* dest, const void* src, std::size_t count) { std::memcpy(dest, src, count); }

  int64_t current() const { return current_.load(); }
  int64_t peak() const { return peak_.load(); }
  void reset_peak() { peak_.store(current_.load()); }

 private:
  struct Context {
    c10::DataPtr inner;
    int64_t bytes;
    const CountingCpuAllocator* owner;
  };
  static void release(void* ctx) {
    auto* c = static_cast<Context*>(ctx);
    c->owner->current_.fetch_sub(c->bytes);
    delete c;  // frees the storage through the wrapped allocator's deleter
  }
  c10::DataPtr wrap(size_t n) const {
    c10::DataPtr inner = base_->allocate(n);
    void* data = inner.get();
    const c10::Device device = inner.device();
    auto* ctx = new Context{std::move(inner), static_cast<int64_t>(n), this};
    const int64_t now = current_.fetch_add(static_cast<int64_t>(n)) + static_cast<int64_t>(n);
    int64_t seen = peak_.load();
    while (now > seen && !peak_.compare_exchange_weak(seen, now)) {
    }
    return c10::DataPtr(data, ctx, &CountingCpuAllocator::release, device);
  }

  c10::Allocator* base_;
  mutable std::atomic<int64_t> current_{0}, peak_{0};
};

CountingCpuAllocator* g_counting = nullptr;  // installed by --measure on CPU; never destroyed

struct Options {
  std::vector<std::string> overrides;
  int64_t micro_batch = 0, seq = 0;
  std::optional<bool> checkpointing;
  std::string dtype, attention = "auto";
  int64_t world_size = 0, expert_parallel = 0;  // 0: not given
  std::optional<bool> shard_optimizer;
  bool measure = false;
  int64_t measure_steps = 3, measure_accumulation = 2;
};

struct Loaded {
  coe::TrainConfig config;
  coe::MemoryOptions memory;
};

Loaded load(const std::string& path, const Options& opt) {
  Loaded r;
  r.config = coe::load_train_config(path, opt.overrides);
  coe::TrainConfig& c = r.config;
  coe::resolve_model_vocab(c);
  c.model.validate(path);
  coe::MemoryOptions& m = r.memory;
  m = coe::memory_options(c);
  if (opt.micro_batch > 0) m.micro_batch = opt.micro_batch;
  if (opt.seq > 0) m.seq_len = opt.seq;
  if (opt.checkpointing) m.checkpointing = *opt.checkpointing;
  if (!opt.dtype.empty()) {
    std::string dtype = opt.dtype;
    if (dtype == "bf16") dtype = "bfloat16";
    if (dtype == "fp32") dtype = "float32";
    if (dtype != "float32" && dtype != "bfloat16") coe::fail("--dtype: expected float32 or bfloat16, got '{}'", dtype);
    m.bf16 = dtype == "bfloat16";
  }
  if (opt.attention == "fused") m.fused_attention = true;
  else if (opt.attention == "materialized" || opt.attention == "materialised") m.fused_attention = false;
  else if (opt.attention != "auto")
    coe::fail("--attention: expected auto, fused or materialized, got '{}'", opt.attention);
  // The layout: --expert-parallel / --shard-optimizer override the config's parallel: section;
  // --world-size defaults to the fewest ranks the layout runs on (memory_options).
  const std::string ep_name = opt.expert_parallel > 0
                                  ? fmt::format("--expert-parallel {}", opt.expert_parallel)
                                  : fmt::format("parallel.expert_parallel {} ({})", m.expert_parallel, path);
  if (opt.expert_parallel > 0) m.expert_parallel = m.world_size = opt.expert_parallel;
  if (opt.world_size > 0) m.world_size = opt.world_size;
  // --measure as the ranks of a job (torchrun): the job's world size.
  const coe::DistEnv env = coe::dist_env_from_process();
  if (opt.measure && env.distributed()) {
    if (opt.world_size > 0 && opt.world_size != env.world_size)
      coe::fail("--world-size {} but this is rank {} of {} (WORLD_SIZE)", opt.world_size, env.rank, env.world_size);
    m.world_size = env.world_size;
  }
  if (opt.shard_optimizer) m.shard_optimizer = *opt.shard_optimizer;
  if (m.world_size % m.expert_parallel != 0)
    coe::fail("{} does not divide --world-size {} (groups of expert-parallel ranks)", ep_name, m.world_size);
  if (c.model.n_routed_experts % m.expert_parallel != 0)
    coe::fail("{} does not divide model.n_routed_experts {} ({}): each rank holds n_routed_experts / EP experts",
              ep_name, c.model.n_routed_experts, path);
  if (opt.measure && m.world_size > 1 && !env.distributed())
    coe::fail("--measure runs the ranks it is started as, here one, not --world-size {}; per-rank measurement: start "
              "coe-memory --measure as {} ranks with torchrun --no-python (docs/distributed.md)",
              m.world_size, m.world_size);
  if (m.seq_len > c.model.max_position_embeddings)
    coe::fail("{}: sequence length {} exceeds model.max_position_embeddings {}", path, m.seq_len,
              c.model.max_position_embeddings);
  return r;
}

struct Measurement {
  int64_t peak_bytes = 0;
  std::string source;
  int64_t saved_bytes = -1;   // allocator growth over one training-mode forward (CPU only)
  int64_t vmhwm_growth = -1;  // CPU: VmHWM after - before (best effort)
  int64_t steps = 0, accumulation = 0;
  // Started as the ranks of a job: every rank's peak, saved activations and VmHWM growth (rank 0's
  // copy; the others return theirs only).
  std::vector<int64_t> rank_peaks, rank_saved;
  int rank = 0;
};

// Real optimizer steps (the trainer's accumulate_gradients / clip_grad_norm / AdamW) on random
// tokens with the estimate's shapes.
Measurement measure(const Loaded& l, const Options& opt) {
  const coe::TrainConfig& cfg = l.config;
  const coe::MemoryOptions& mo = l.memory;
  const c10::Device device = coe::resolve_device(cfg.trainer.device, cfg.source + ": trainer.device");
  if (mo.fused_attention != coe::memory_options(cfg).fused_attention)
    coe::fail("--measure: this run's attention is {} (--attention auto); --attention {} is an estimate only",
              mo.fused_attention ? "SDPA's math path" : "fused", mo.fused_attention ? "fused" : "materialized");
  if (cfg.trainer.threads > 0) at::set_num_threads(cfg.trainer.threads);
  if (!device.is_cuda())
    coe::check_host_memory(coe::estimate_memory(cfg.model, mo).total_bytes(), cfg.source + ": --measure",
                           "measure a smaller configuration, or only estimate it (without --measure)");
  Measurement r;
  r.steps = opt.measure_steps;
  r.accumulation = opt.measure_accumulation;
  const int64_t hwm_before = coe::proc_status_kib("VmHWM") * 1024;

  coe::TrainConfig measured = cfg;  // the estimate's layout and checkpointing (flags may differ from the config)
  measured.trainer.activation_checkpointing = mo.checkpointing;
  measured.parallel.expert_parallel = mo.expert_parallel;
  measured.parallel.shard_optimizer = mo.shard_optimizer;
  // Started by a launcher: the ranks of a job, each with its part of the model (the trainer's
  // layout, gradient reduction and optimizer); else one process.
  const coe::DistEnv env = coe::dist_env_from_process();
  coe::DistOptions dist_options;
  dist_options.timeout_s = cfg.trainer.dist_timeout_s;
  dist_options.device = device;
  std::unique_ptr<coe::DistContext> job =
      env.distributed() ? std::make_unique<coe::DistContext>(env, dist_options) : std::make_unique<coe::DistContext>();
  r.rank = job->rank();
  coe::TrainingModel built = coe::build_model_and_optimizer(
      measured, device, *job, coe::ParallelLayout::create(*job, measured.parallel, cfg.model, cfg.source));
  coe::CausalLM& model = built.model;
  coe::DistributedOptimizer& optimizer = *built.optimizer;
  std::mt19937_64 rng(cfg.trainer.seed + static_cast<uint64_t>(job->rank()));
  auto batch = [&] { return coe::random_token_batch(mo.micro_batch, mo.seq_len, cfg.model.vocab_size, rng); };

  // Saved activations: allocator growth over one training-mode forward (CPU: exact storage bytes).
  if (g_counting) {
    const coe::DeviceBatch db = coe::to_device(batch(), device);
    const int64_t before = g_counting->current();
    coe::ForwardOptions fo;
    fo.return_logits = false;
    coe::LmOutput out = model->forward(db.input_ids, db.labels, fo);
    r.saved_bytes = g_counting->current() - before;
  }

  coe::reset_peak_memory(device);
  if (g_counting) g_counting->reset_peak();
  for (int64_t s = 0; s < opt.measure_steps; ++s) {
    std::vector<coe::TokenBatch> micro;
    for (int64_t i = 0; i < opt.measure_accumulation; ++i) micro.push_back(batch());
    optimizer.zero_grad();
    coe::AccumulationOptions acc;
    acc.bf16_autocast = mo.bf16;
    const coe::BatchCounts local = coe::count_batches(micro);
    const auto counts = job->all_reduce_sum(std::vector<int64_t>{local.loss_tokens, local.rows}, "count all-reduce");
    acc.global_loss_tokens = counts[0];
    acc.global_rows = counts[1];
    acc.before_backward = [&](size_t, bool last) { optimizer.before_backward(last); };
    coe::accumulate_gradients(*model, micro, device, acc);
    optimizer.reduce_and_clip(cfg.optim.clip_grad);
    optimizer.step(cfg.optim.lr);
  }
  coe::synchronize(device);
  if (device.is_cuda()) {
    const coe::PeakMemory p = coe::peak_memory(device);
    r.peak_bytes = p.bytes;
    r.source = "CUDA caching allocator: peak allocated bytes";
  } else {
    r.peak_bytes = g_counting ? g_counting->peak() : 0;
    r.source = "CPU: peak live tensor storage through c10's CPU allocator (counting wrapper)";
    r.vmhwm_growth = coe::proc_status_kib("VmHWM") * 1024 - hwm_before;
  }
  if (job->distributed()) {
    const at::Tensor all = job->all_gather(
        at::tensor(std::vector<int64_t>{r.peak_bytes, r.saved_bytes}, at::TensorOptions().dtype(at::kLong)).to(device),
        "measurement all-gather");
    const at::Tensor host = all.to(at::kCPU).contiguous();
    for (int64_t q = 0; q < host.size(0); ++q) {
      r.rank_peaks.push_back(host[q][0].item<int64_t>());
      r.rank_saved.push_back(host[q][1].item<int64_t>());
    }
    job->finish();
  }
  return r;
}

std::string measurement_text(const Measurement& m, const coe::MemoryEstimate& e) {
  const int64_t est = e.total_bytes();
  std::string out =
      fmt::format("\nmeasured ({} optimizer steps of {} micro-batches, random tokens)\n", m.steps, m.accumulation);
  out += fmt::format("  {:<58} {:>11}   ({})\n", "peak", coe::format_bytes(m.peak_bytes), m.source);
  out += fmt::format("  {:<58} {:>11}   error of the estimate {:+.1f}%\n", "estimate", coe::format_bytes(est),
                     m.peak_bytes > 0 ? 100.0 * double(est - m.peak_bytes) / double(m.peak_bytes) : 0.0);
  if (m.saved_bytes >= 0) {
    const int64_t es = e.activations().saved_bytes;
    out += fmt::format("  {:<58} {:>11}   estimate {} ({:+.1f}%)\n", "activations saved by one forward (measured)",
                       coe::format_bytes(m.saved_bytes), coe::format_bytes(es),
                       m.saved_bytes > 0 ? 100.0 * double(es - m.saved_bytes) / double(m.saved_bytes) : 0.0);
  }
  if (m.vmhwm_growth >= 0)
    out += fmt::format("  {:<58} {:>11}   (best effort: resident-set high-water mark, includes allocator slack)\n",
                       "VmHWM growth of the process over the measurement", coe::format_bytes(m.vmhwm_growth));
  if (!m.rank_peaks.empty()) {
    out += fmt::format("  per rank ({} ranks; the estimate is {} for every rank, balanced routing assumed):\n",
                       m.rank_peaks.size(), coe::format_bytes(est));
    for (size_t q = 0; q < m.rank_peaks.size(); ++q)
      out += fmt::format("    rank {:<3} peak {:>11}   error of the estimate {:+.1f}%   saved by one forward {}\n", q,
                         coe::format_bytes(m.rank_peaks[q]),
                         m.rank_peaks[q] > 0 ? 100.0 * double(est - m.rank_peaks[q]) / double(m.rank_peaks[q]) : 0.0,
                         m.rank_saved[q] >= 0 ? coe::format_bytes(m.rank_saved[q]) : std::string("-"));
  }
  return out;
}

}  // namespace

static int tool_main(int argc, char** argv) {
  CLI::App app{"coe-memory: parameter counts and training-memory estimate of a run config (docs/memory.md)"};
  std::string config_path, json_out;
  std::vector<std::string> compare;
  Options opt;
  bool ckpt = false, no_ckpt = false;
  app.add_option("config", config_path, "run config (YAML)");
  app.add_option("--set", opt.overrides, "override a config key: section.key=value (repeatable)")->take_all();
  app.add_option("--micro-batch", opt.micro_batch, "rows per micro-batch (default: trainer.micro_batch)");
  app.add_option("--seq", opt.seq, "sequence length (default: data.max_length)");
  app.add_flag("--checkpointing", ckpt, "activation checkpointing on (default: trainer.activation_checkpointing)");
  app.add_flag("--no-checkpointing", no_ckpt, "activation checkpointing off");
  app.add_option("--dtype", opt.dtype, "float32 | bfloat16 (default: trainer.dtype)");
  app.add_option("--attention", opt.attention,
                 "auto | fused | materialized (auto: what SDPA runs on the config's device)")
      ->capture_default_str();
  bool shard = false, no_shard = false;
  app.add_option("--world-size", opt.world_size,
                 "ranks of the job; the estimate is per rank (default: the expert-parallel size, 1 without)")
      ->check(CLI::PositiveNumber);
  app.add_option("--expert-parallel", opt.expert_parallel,
                 "ranks splitting the routed experts; divides --world-size and n_routed_experts (default: "
                 "parallel.expert_parallel)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--shard-optimizer", shard, "AdamW's moments sharded, ZeRO-1 (default: parallel.shard_optimizer)");
  app.add_flag("--no-shard-optimizer", no_shard, "AdamW's moments replicated on every rank");
  app.add_flag("--measure", opt.measure, "also run real training steps (one process) and report the allocator's peak");
  app.add_option("--measure-steps", opt.measure_steps, "optimizer steps for --measure")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--measure-accumulation", opt.measure_accumulation, "micro-batches per step for --measure")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--json", json_out, "write the result as one JSON object");
  app.add_option("--compare", compare, "compare two run configs: A.yaml B.yaml")->expected(2);
  if (const int status = coe::cli::parse(app, argc, argv); status >= 0) return status;
  if (ckpt && no_ckpt) {
    std::fprintf(stderr, "error: --checkpointing and --no-checkpointing exclude each other\n");
    return 1;
  }
  if (ckpt) opt.checkpointing = true;
  if (no_ckpt) opt.checkpointing = false;
  if (shard && no_shard) {
    std::fprintf(stderr, "error: --shard-optimizer and --no-shard-optimizer exclude each other\n");
    return 1;
  }
  if (shard) opt.shard_optimizer = true;
  if (no_shard) opt.shard_optimizer = false;
  if (compare.empty() == config_path.empty()) {
    std::fprintf(stderr, "error: give either CONFIG.yaml or --compare A.yaml B.yaml\n");
    return 1;
  }

  try {
    if (opt.measure) {
      if (!compare.empty()) coe::fail("--measure applies to a single config, not --compare");
      // Install the counting allocator before any tensor exists.
      g_counting = new CountingCpuAllocator(c10::GetCPUAllocator());
      c10::SetCPUAllocator(g_counting, /*priority=*/1);
    }
    if (!json_out.empty()) coe::check_writable(json_out, "--json");
    if (!compare.empty()) {
      const Loaded a = load(compare[0], opt), b = load(compare[1], opt);
      const coe::MemoryEstimate ea = coe::estimate_memory(a.config.model, a.memory);
      const coe::MemoryEstimate eb = coe::estimate_memory(b.config.model, b.memory);
      fmt::print("{}\n{}\n", coe::format_memory_report(ea, "A: " + compare[0]),
                 coe::format_memory_report(eb, "B: " + compare[1]));
      fmt::print("== comparison ==\n{}", coe::format_memory_comparison(ea, compare[0], eb, compare[1]));
      if (!json_out.empty()) {
        nlohmann::json ja = coe::memory_to_json(ea), jb = coe::memory_to_json(eb);
        ja["config"] = compare[0];
        jb["config"] = compare[1];
        nlohmann::json rel;
        for (const char* key :
             {"params_total", "params_active_per_token", "states_bytes", "activations_peak_bytes", "estimate_bytes"}) {
          const double x = ja[key].get<double>(), y = jb[key].get<double>();
          rel[key] = x != 0 ? (y - x) / x : 0.0;
        }
        coe::write_file_atomic(json_out,
                               nlohmann::json{{"a", ja}, {"b", jb}, {"relative_difference", rel}}.dump(2) + "\n");
      }
      return 0;
    }

    const Loaded l = load(config_path, opt);
    const coe::MemoryEstimate e = coe::estimate_memory(l.config.model, l.memory);
    // Started as the ranks of a job, rank 0 alone reports (and writes --json).
    const bool reports = coe::dist_env_from_process().rank == 0 || !opt.measure;
    if (reports) fmt::print("{}", coe::format_memory_report(e, config_path));
    nlohmann::json j = coe::memory_to_json(e);
    j["config"] = config_path;
    if (opt.measure) {
      const Measurement m = measure(l, opt);
      if (!reports) return 0;
      fmt::print("{}", measurement_text(m, e));
      if (!m.rank_peaks.empty()) {
        j["measured_peak_bytes_per_rank"] = m.rank_peaks;
        j["measured_saved_activations_bytes_per_rank"] = m.rank_saved;
      }
      j["measured_peak_bytes"] = m.peak_bytes;
      j["measured_source"] = m.source;
      j["measured_device"] = l.config.trainer.device;
      j["measure_steps"] = m.steps;
      j["measure_accumulation"] = m.accumulation;
      j["estimate_error"] = m.peak_bytes > 0 ? double(e.total_bytes() - m.peak_bytes) / double(m.peak_bytes) : 0.0;
      if (m.saved_bytes >= 0) j["measured_saved_activations_bytes"] = m.saved_bytes;
      if (m.vmhwm_growth >= 0) j["cpu_vmhwm_growth_bytes"] = m.vmhwm_growth;
    }
    if (!json_out.empty()) coe::write_file_atomic(json_out, j.dump(2) + "\n");
  } catch (const std::exception& e) {
    return coe::cli::report(e);
  }
  return 0;
}

int main(int argc, char** argv) { return coe::cli::exit_status(tool_main(argc, argv)); }
