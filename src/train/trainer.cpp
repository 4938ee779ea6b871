#include "coe/train/trainer.h"

#include "coe/data/prepare.h"
#include "coe/data/prepared.h"
#include "coe/distributed/rank_device.h"
#include "coe/eval/evaluate.h"
#include "coe/model/flops.h"
#include "coe/tokenizer/tokenizer.h"
#include "coe/train/device.h"
#include "coe/train/init_from.h"
#include "coe/train/memory_model.h"
#include "coe/train/run_lock.h"
#include "coe/train/run_logger.h"
#include "coe/train/signals.h"
#include "coe/train/train_step.h"
#include "coe/train/training_model.h"
#include "coe/util/clock.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/format.h"
#include "coe/util/run_files.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

namespace fs = std::filesystem;

namespace coe {

const char* to_string(TrainStatus status) {
  switch (status) {
    case TrainStatus::kCompleted: return "completed";
    case TrainStatus::kInterrupted: return "interrupted";
    case TrainStatus::kStopped: return "stopped";
    case TrainStatus::kNonFinite: return "non-finite";
  }
  return "?";
}

int exit_code(TrainStatus status) { return status == TrainStatus::kNonFinite ? 3 : 0; }

// ---- setup phases --------------------------------------------------------------------------

Trainer::Trainer(TrainConfig config, TrainOptions options) : config_(std::move(config)), options_(options) {
  // Absolute, like every path a config file wrote: config.yaml names the same directories wherever
  // it is read from (the default out_dir and --out are relative to the working directory).
  config_.trainer.out_dir = fs::absolute(config_.trainer.out_dir).lexically_normal().string();
  out_dir_ = config_.trainer.out_dir;
  if (config_.trainer.threads > 0) at::set_num_threads(config_.trainer.threads);
  resolve_device();
  join_job();
  choose_checkpoint();
  prepare_data();
  build_model();
  restore();
  open_run_files();
}

Trainer::~Trainer() = default;

// The device and precision; a data-parallel rank takes cuda:LOCAL_RANK.
void Trainer::resolve_device() {
  const TrainerConfig& tc = config_.trainer;
  device_ = coe::resolve_device(tc.device, config_.source + ": trainer.device");
  if (device_.is_cuda() && options_.dist_env.distributed())
    device_ = rank_device(options_.dist_env, c10::Device(tc.device), config_.source);
  bf16_ = tc.dtype == "bfloat16";  // autocast on the device, CUDA or CPU
}

// Data parallelism: the split of the global batch is checked before any network activity, then
// the job is joined (every rank, or an error naming the missing one).
void Trainer::join_job() {
  const TrainerConfig& tc = config_.trainer;
  const DistEnv& env = options_.dist_env;
  const int64_t world = env.distributed() ? env.world_size : 1;
  if (world > 1 && tc.global_batch % (world * tc.micro_batch) != 0) {
    const char* world_var = env.launcher == "slurm" ? "SLURM_NTASKS" : "WORLD_SIZE";
    fail("{}: trainer.global_batch {} is not divisible by {} {} x trainer.micro_batch {} (each rank reads "
         "global_batch / {} sequences per step, in micro-batches of micro_batch)",
         config_.source, tc.global_batch, world_var, world, tc.micro_batch, world_var);
  }
  if (world > 1) {
    DistOptions dopt;
    dopt.timeout_s = tc.dist_timeout_s;
    dopt.device = device_;
    dist_ = std::make_unique<DistContext>(env, dopt);
  } else {
    dist_ = std::make_unique<DistContext>();
  }
  console_ = options_.console && dist_->is_main();
}

// Rank 0 locks out_dir, removes what interrupted saves left, and picks the checkpoint to resume
// (or none) before anything is written into out_dir; the other ranks learn its choice.
void Trainer::choose_checkpoint() {
  dist_->main_first("choosing the checkpoint to resume", [&] {
    const TrainerConfig& tc = config_.trainer;
    // Held until this process ends: nobody else writes into out_dir meanwhile, so whatever an
    // interrupted save or prune left behind is provably stale.
    run_lock_ = std::make_unique<RunDirLock>(out_dir_);
    for (const auto& path : remove_stale_run_files(out_dir_))
      if (console_) spdlog::info("removed {} (left behind by a killed write)", path);
    for (const auto& path : remove_stale_checkpoints(out_dir_))
      if (console_) spdlog::info("removed {} (left behind by an interrupted save or prune)", path);
    const auto existing = latest_checkpoint(out_dir_);
    if (options_.resume || tc.resume == "auto") {
      if (existing) {
        verify_newest_checkpoint(*existing);
        resumed_from_ = existing->dir;
      } else if (options_.resume) {
        fail("--resume: no complete checkpoint (step-N/ with state.json) in {}", out_dir_);
      }
    } else if (tc.resume != "never") {
      if (!fs::exists(fs::path(tc.resume) / "state.json"))
        fail("{}: trainer.resume: '{}' is not a complete checkpoint directory (no state.json)", config_.source,
             tc.resume);
      // A checkpoint of a branch an earlier resume set aside continues that branch, whose logs are
      // in its own folder: resumed here, its steps would be spliced onto this branch's logs.
      fs::path branch = fs::path(tc.resume).lexically_normal();
      if (branch.filename().empty()) branch = branch.parent_path();
      branch = branch.parent_path();
      if (branch.filename().string().rfind("abandoned-after-step-", 0) == 0)
        fail("{}: trainer.resume: {} lies in {}, a branch an earlier resume set aside; resuming it into {} would mix "
             "the two branches' logs. To continue that branch, make its folder the run directory: --out {} --resume",
             config_.source, tc.resume, branch.string(), out_dir_, branch.string());
      resumed_from_ = tc.resume;
      set_aside_newer_branch(read_checkpoint_state(resumed_from_).step);
    } else if (existing) {
      fail("{} already holds checkpoints (newest: {}); pass --resume (or trainer.resume: auto) to continue, or "
           "choose another trainer.out_dir",
           out_dir_, existing->dir);
    }
  });
  resumed_from_ = dist_->broadcast_string(resumed_from_, "the checkpoint to resume");
  if (!dist_->is_main() && !resumed_from_.empty() && !fs::exists(fs::path(resumed_from_) / "state.json"))
    fail("rank {} does not see {}, the checkpoint rank 0 resumes from (trainer.out_dir must be on a filesystem "
         "every rank sees)",
         dist_->rank(), resumed_from_);
}

// --resume continues the newest checkpoint, which must be intact: when it is damaged or edited, the
// error names the newest intact one and how to resume from it (the damaged one is then set aside
// with the rest of that branch).
void Trainer::verify_newest_checkpoint(const CheckpointInfo& newest) {
  try {
    read_checkpoint_state(newest.dir);
  } catch (const Error& e) {
    const auto older = newest_intact_checkpoint_before(out_dir_, newest.step);
    if (!older) throw;
    fail("{}; the newest intact checkpoint is {}: resume from it with --set trainer.resume={} (the damaged one "
         "moves to {}/abandoned-after-step-{}-<time>/)",
         first_line(e), older->dir, older->dir, out_dir_, older->step);
  }
}

// Resuming from step N while the run directory holds newer checkpoints starts a new branch of the
// run: the abandoned one (its newer checkpoints, final.json and the logs as they were) moves to
// <out_dir>/abandoned-after-step-N-<UTC time>/, and the logs are cut back to step N.
void Trainer::set_aside_newer_branch(int64_t step) {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
  const fs::path aside = fs::path(out_dir_) / fmt::format("abandoned-after-step-{}-{}", step, stamp);
  const auto moved = move_checkpoints_after(out_dir_, step, aside.string());
  if (moved.empty()) return;
  for (const char* log : {"metrics.jsonl", "val.jsonl"})
    if (fs::exists(fs::path(out_dir_) / log)) fs::copy_file(fs::path(out_dir_) / log, aside / log);
  if (fs::is_directory(fs::path(out_dir_) / "tb"))
    fs::copy(fs::path(out_dir_) / "tb", aside / "tb", fs::copy_options::recursive);
  if (fs::exists(fs::path(out_dir_) / "final.json"))
    fs::rename(fs::path(out_dir_) / "final.json", aside / "final.json");
  spdlog::warn(
      "resuming from step {} starts a new branch: {} newer checkpoint(s) and the logs as they were moved to {}", step,
      moved.size(), aside.string());
}

// Rank 0 prepares (or reuses) the dataset while the others wait; then the loaders, and the
// model's vocabulary when the config leaves it to the tokenizer.
void Trainer::prepare_data() {
  const TrainerConfig& tc = config_.trainer;
  if (config_.data.prepared_dir.empty()) config_.data.prepared_dir = (fs::path(out_dir_) / "prepared").string();
  PrepareOptions prep;
  if (console_) prep.log = [](const std::string& line) { spdlog::info("data: {}", line); };
  PrepareResult prepared;
  dist_->main_first("preparing the dataset", [&] {
    check_data_inputs(config_.data, config_.source);
    prepared = prepare_dataset(config_.data, prep);
  });
  prepared.dir = dist_->broadcast_string(prepared.dir, "the prepared dataset directory");
  if (!dist_->is_main()) {
    nlohmann::json manifest;
    try {
      manifest = read_manifest(prepared.dir);
    } catch (const std::exception& e) {
      fail("rank {} cannot read the dataset rank 0 prepared ({}): data.prepared_dir must be on a filesystem every "
           "rank sees",
           dist_->rank(), e.what());
    }
    const auto splits = manifest.value("splits", nlohmann::json::object());
    if (splits.contains("val")) prepared.val_records = splits["val"].value("records", int64_t{0});
  }
  auto train_split = open_split(prepared.dir, "train");
  if (!config_.model_vocab_given) {
    config_.model.vocab_size = train_split->vocab_size();
    config_.model_vocab_given = true;
  } else if (config_.model.vocab_size < train_split->vocab_size()) {
    fail("{}: model.vocab_size {} is smaller than the vocabulary of data.tokenizer '{}' ({})", config_.source,
         config_.model.vocab_size, config_.data.tokenizer, train_split->vocab_size());
  }
  config_.model.validate(config_.source);
  // Rank r reads global_batch / W rows of every global batch (rows r, r + W, ... of it).
  const int64_t rank = dist_->rank(), world = dist_->world_size();
  train_loader_ = std::make_unique<Loader>(train_split,
                                           loader_options(config_.data, tc.global_batch / world, tc.seed, rank, world));
  if (prepared.val_records > 0) {
    // val_batches counts val_micro_batch-sized batches of the whole evaluation, shared by the ranks.
    const int64_t max_records = tc.val_batches > 0 ? tc.val_batches * tc.val_micro_batch : -1;
    val_loader_ = std::make_unique<SequentialLoader>(
        open_split(prepared.dir, "val"), loader_options(config_.data, tc.val_micro_batch, tc.seed, rank, world),
        max_records);
  } else if (tc.val_interval > 0) {
    fail("{}: trainer.val_interval is {} but the data has no validation split (set data.val_count, "
         "data.val_fraction or data.val_files)",
         config_.source, tc.val_interval);
  }
}

// The model (initialised from the seeded generator, after a memory check on CPU), AdamW, the
// schedule, and the resolved configuration every rank must agree on.
void Trainer::build_model() {
  const TrainerConfig& tc = config_.trainer;
  // Expert parallelism splits the experts (and ZeRO the optimizer state) over the ranks.
  ParallelLayout layout = ParallelLayout::create(*dist_, config_.parallel, config_.model, config_.source);
  if (tc.memory_check && !device_.is_cuda()) {
    MemoryOptions memory = memory_options(config_);
    memory.world_size = dist_->world_size();  // this rank's part of the model
    check_host_memory(estimate_memory(config_.model, memory).total_bytes(), config_.source + ": this run",
                      "use a smaller model or trainer.micro_batch, or set trainer.memory_check: false to try anyway");
  }
  TrainingModel built = build_model_and_optimizer(config_, device_, *dist_, std::move(layout));
  model_ = built.model;
  optimizer_ = std::move(built.optimizer);
  expert_dispatch_ = built.dispatch;
  params_ = built.params;
  // The counts behind noaux_tc's bias updates and the load statistics of metrics.jsonl.
  model_->set_expert_load_tracking(true);
  if (!tc.init_from.empty()) {
    if (resumed_from_.empty()) {
      init_from_ = std::make_unique<InitFromReport>(
          init_from_checkpoint(*model_, tc.init_from, config_.source + ": trainer.init_from"));
    } else if (console_) {
      spdlog::info("trainer.init_from is not applied: the run resumes from {}, which holds its weights", resumed_from_);
    }
  }
  schedule_ = LrSchedule::from_config(config_.optim, tc.total_steps);
  state_.scheduler = schedule_.to_json();
  flops_per_token_ = training_flops_per_token(config_.model, config_.data.max_length).total();
  config_yaml_ = train_config_to_yaml(config_);
  // Every rank must run the same configuration (the same file and --set overrides).
  const std::string main_yaml = dist_->broadcast_string(config_yaml_, "the resolved configuration");
  if (main_yaml != config_yaml_)
    fail("the resolved configuration differs from rank 0's: {}; every rank must run the same config file with the "
         "same --set overrides",
         fmt::format("{}", fmt::join(changed_config_keys(main_yaml, config_yaml_), ", ")));
}

// Weights, AdamW state, RNG and data position from the chosen checkpoint; then every rank starts
// from rank 0's parameters and the gradient reducer hooks in.
void Trainer::restore() {
  const TrainerConfig& tc = config_.trainer;
  if (!resumed_from_.empty()) {
    const fs::path saved_config = fs::path(resumed_from_) / "config.yaml";
    if (dist_->is_main() && fs::exists(saved_config)) {
      std::ifstream in(saved_config);
      const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      const auto changed = changed_config_keys(text, config_yaml_);
      if (!changed.empty())
        spdlog::warn("resume: the configuration differs from the checkpoint's config.yaml in {}",
                     fmt::format("{}", fmt::join(changed, ", ")));
    }
    state_ = read_checkpoint(
        resumed_from_, *model_,
        [&](const std::map<std::string, at::Tensor>& tensors, const std::string& source) {
          optimizer_->load_state(tensors, source);
        },
        device_.is_cuda() ? device_.index() : -1);
    state_.scheduler = schedule_.to_json();  // informational: this run's schedule, not the saved one
    train_loader_->restore(LoaderState::from_json(state_.loader));
    last_saved_step_ = state_.step;
    if (!state_.expert_load_window.empty()) {
      const std::vector<int64_t> expected{static_cast<int64_t>(model_->moe_layers().size()), config_.model.inner_iter,
                                          config_.model.n_routed_experts};
      if (expected == state_.expert_load_shape) {
        load_window_ = at::tensor(state_.expert_load_window, at::TensorOptions().dtype(at::kLong))
                           .view(state_.expert_load_shape)
                           .to(device_);
      } else if (console_) {
        spdlog::warn("resume: the checkpoint's expert-load window has shape [{}], this model's [{}]: the first load "
                     "statistics after the resume cover only the steps trained from here",
                     fmt::format("{}", fmt::join(state_.expert_load_shape, ", ")),
                     fmt::format("{}", fmt::join(expected, ", ")));
      }
    }
  }
  // Every rank starts from rank 0's parameters (the same seed gives the same initialisation on
  // identical builds; the broadcast makes it so everywhere, also after a resume).
  optimizer_->broadcast_parameters(tc.dist_bucket_mb);
}

// Rank 0 alone writes the run directory: the resolved config and the logs, cut back to the step
// resumed from.
void Trainer::open_run_files() {
  if (!dist_->is_main()) return;
  write_file_atomic(fs::path(out_dir_) / "config.yaml", config_yaml_);
  // A copy of the tokenizer beside config.yaml (every checkpoint holds one too), as an HF folder.
  for (const auto& f : tokenizer_files(config_.data.tokenizer))
    write_file_atomic(fs::path(out_dir_) / f.stored_name, read_text(f.path));
  if (init_from_) {
    write_file_atomic(fs::path(out_dir_) / "init_from.txt", init_from_->table());
    if (console_)
      spdlog::info("{}\n  (every row: {})", init_from_->summary(), (fs::path(out_dir_) / "init_from.txt").string());
  }
  ProgressInfo progress;
  progress.total_steps = config_.trainer.total_steps;
  progress.flops_per_token = flops_per_token_;
  progress.peak_tflops = config_.trainer.peak_tflops;
  progress.device = device_;
  // A run resumed after its last step trains nothing: no new event file for it.
  const bool tensorboard = config_.trainer.tensorboard && state_.step < config_.trainer.total_steps;
  logger_ = RunLogger(out_dir_, state_.step, tensorboard, console_, progress);
  logger_.log_config(config_yaml_, state_.step);
}

// ---- the loop ---------------------------------------------------------------------------------

TrainResult Trainer::run() {
  const TrainerConfig& tc = config_.trainer;
  if (options_.handle_signals) signals_ = std::make_unique<StopSignalGuard>();
  result_ = TrainResult{};
  result_.params = params_;
  result_.checkpoint = resumed_from_;
  run_steps_ = 0;
  run_start_ = Clock::now();
  log_start();
  auto due = [&](int64_t interval) { return interval > 0 && state_.step % interval == 0; };

  while (state_.step < tc.total_steps) {
    const StepStats s = train_step();
    if (!s.finite) return finish(TrainStatus::kNonFinite);
    log_step(s);
    if (due(tc.val_interval)) run_validation();
    if (state_.step == tc.total_steps) break;  // the final checkpoint follows the final validation
    if (due(tc.save_interval) && !save_checkpoint()) return finish(TrainStatus::kNonFinite);
    if (const auto reason = stop_reason(s)) {
      if (last_saved_step_ != state_.step && !save_checkpoint()) return finish(TrainStatus::kNonFinite);
      if (console_ && *reason == TrainStatus::kInterrupted) spdlog::info("resume with --resume");
      return finish(*reason);
    }
  }

  // End of training: the final validation (unless it ran at this step, in this or an earlier
  // invocation), the final checkpoint (holding that validation), the summary.
  if (run_steps_ == 0 && console_)
    spdlog::info("the run is already complete at step {} ({}); writing its summary", state_.step, resumed_from_);
  if (state_.val_step != state_.step) run_validation();
  if (last_saved_step_ != state_.step && !save_checkpoint()) return finish(TrainStatus::kNonFinite);
  return finish(TrainStatus::kCompleted);
}

// One optimizer step: forward and backward over this rank's micro-batches of one global batch,
// clip, check the loss and the gradient norm, update. A non-finite value stops before the update
// (the last checkpoint stays as it was); data parallel, the values are the same on every rank, so
// all stop there. Every collective is written out; with one process each is the identity (the
// context's all-reduces return their input, the reducer does nothing).
Trainer::StepStats Trainer::train_step() {
  const TrainerConfig& tc = config_.trainer;
  StepStats s;
  s.step = state_.step + 1;
  s.lr = schedule_.at(s.step);
  const auto t0 = Clock::now();

  const std::vector<TokenBatch> micro = split_micro_batches(train_loader_->next(), tc.micro_batch);
  optimizer_->zero_grad();
  // The loss is normalised over the counted tokens (and the router losses over the rows) of the
  // whole global batch: the ranks' host counts are summed before any backward.
  const BatchCounts local = count_batches(micro);
  const auto counts = dist_->all_reduce_sum(std::vector<int64_t>{local.loss_tokens, local.rows, local.tokens},
                                            "token count all-reduce");
  s.loss_tokens = counts[0];
  s.tokens = counts[2];
  AccumulationOptions acc_options;
  acc_options.bf16_autocast = bf16_;
  acc_options.global_loss_tokens = counts[0];
  acc_options.global_rows = counts[1];
  acc_options.before_backward = [this](size_t, bool last) { optimizer_->before_backward(last); };
  const AccumulationResult acc = accumulate_gradients(*model_, micro, device_, acc_options);
  // Each router's expert load over the whole global batch: one small all-reduce.
  at::Tensor load = model_->take_expert_load();
  if (load.defined()) dist_->all_reduce_sum(load, "expert load all-reduce");
  // Every gradient summed over the ranks that hold its parameter (or its shard, sharded), then
  // the global norm and clipping.
  const at::Tensor grad_norm = optimizer_->reduce_and_clip(config_.optim.clip_grad);
  const auto& params = optimizer_->parameters();

  // One host copy: the loss, each router loss, the gradient norm.
  std::vector<at::Tensor> scalars{acc.loss};
  for (const auto& term : RouterLosses::kTerms) scalars.push_back((acc.router_losses.*term.value).to(at::kFloat));
  scalars.push_back(grad_norm);
  const at::Tensor host = at::stack(scalars).to(at::kCPU);
  const float* v = host.data_ptr<float>();
  s.grad_norm = v[RouterLosses::kCount + 1];
  // The ranks' shares of the losses, and whether any rank was asked to stop (so that all stop
  // after the same step).
  std::vector<double> shares(v, v + RouterLosses::kCount + 1);
  shares.push_back(signals_ && StopSignalGuard::received() != 0 ? 1.0 : 0.0);
  const auto sums = dist_->all_reduce_sum(shares, "metrics all-reduce");
  s.loss = sums[0];
  for (size_t i = 0; i < RouterLosses::kCount; ++i) s.router_losses[i] = sums[1 + i];
  s.stop_requested = sums[RouterLosses::kCount + 1] > 0;
  if (dist_->distributed() && optimizer_->reducer_stats()) s.comm_wait_s = optimizer_->reducer_stats()->wait_s;

  bool finite = std::isfinite(s.loss) && std::isfinite(s.grad_norm);
  std::string values = fmt::format("loss {}", s.loss);
  for (size_t i = 0; i < RouterLosses::kCount; ++i) {
    finite = finite && std::isfinite(s.router_losses[i]);
    values += fmt::format(", {} {}", RouterLosses::kTerms[i].name, s.router_losses[i]);
  }
  if (!finite) {
    // (Its extra forwards would need every rank of an expert group; they are not run there.)
    const std::string where = optimizer_->layout().experts_split()
                                  ? std::string("run the checkpoint on one process to find the layer")
                                  : diagnose_non_finite(*model_, params, micro, device_, bf16_);
    result_.message = fmt::format("non-finite values at step {} ({}, grad_norm {}): {}; {}", s.step, values,
                                  s.grad_norm, where, last_good_checkpoint());
    s.finite = false;
    return s;
  }

  optimizer_->step(s.lr);
  if (load.defined()) {
    // Aux-loss-free balancing: after the update, each correction bias moves against its
    // experts' load error over this global batch (the same on every rank).
    if (config_.model.uses_score_correction_bias() && tc.router_bias_update_rate > 0)
      model_->update_router_bias(load, tc.router_bias_update_rate);
    load_window_ = load_window_.defined() ? load_window_ + load : load;
  }
  synchronize(device_);  // CUDA: the step's kernels are done before the clock is read
  s.seconds = seconds_since(t0);
  ++run_steps_;
  state_.step = s.step;
  state_.tokens_seen += s.tokens;
  state_.loss_tokens_seen += s.loss_tokens;
  state_.elapsed_s += s.seconds;
  state_.last_train_loss = s.loss;
  return s;
}

// Why the loop should end after this step, besides reaching total_steps: --max-steps, or a stop
// signal (data parallel: received by any rank before the step's metrics all-reduce; one process
// also sees a signal that came later).
std::optional<TrainStatus> Trainer::stop_reason(const StepStats& step) const {
  if (options_.max_steps >= 0 && run_steps_ >= options_.max_steps) {
    if (console_) spdlog::info("stopped after {} steps of this run (step {})", run_steps_, state_.step);
    return TrainStatus::kStopped;
  }
  const bool signalled = step.stop_requested || (!dist_->distributed() && signals_ && StopSignalGuard::received() != 0);
  if (!signalled) return std::nullopt;
  if (console_) {
    const int sig = StopSignalGuard::received();
    spdlog::warn("{}: saving step {} and stopping",
                 sig == SIGINT    ? "SIGINT received"
                 : sig == SIGTERM ? "SIGTERM received"
                                  : "another rank received a stop signal",
                 state_.step);
  }
  return TrainStatus::kInterrupted;
}

// Each rank evaluates its share of the validation records; the loss is token-weighted over all.
std::optional<double> Trainer::run_validation() {
  if (!val_loader_) return std::nullopt;
  const auto t0 = Clock::now();
  EvalOptions options;
  options.bf16_autocast = bf16_;
  if (const auto& group = optimizer_->layout().expert_group) {
    // Ranks exchanging tokens run as many forwards as the one with the most batches.
    const at::Tensor n = group->all_gather(
        at::full({1}, val_loader_->num_batches(), at::TensorOptions().dtype(at::kLong).device(device_)),
        "validation batch count all-gather");
    options.lockstep_forwards = n.max().item<int64_t>();
  }
  EvalReport r = evaluate(*model_, *val_loader_, device_, options);
  r.loss_sum = dist_->all_reduce_sum(std::vector<double>{r.loss_sum}, "validation loss all-reduce")[0];
  const auto counts = dist_->all_reduce_sum(std::vector<int64_t>{r.tokens, r.rows}, "validation count all-reduce");
  r.tokens = counts[0];
  r.rows = counts[1];
  if (r.tokens == 0) fail("{}: the validation records hold no token that counts in the loss", config_.source);
  r.val_loss = r.loss_sum / static_cast<double>(r.tokens);
  state_.last_val_loss = r.val_loss;
  state_.val_step = state_.step;
  if (!state_.best_val_loss || r.val_loss < *state_.best_val_loss) state_.best_val_loss = r.val_loss;
  ValRow row;
  row.step = state_.step;
  row.val_loss = r.val_loss;
  row.tokens = r.tokens;
  row.rows = r.rows;
  row.batches = r.batches;
  row.seconds = seconds_since(t0);
  logger_.log_validation(row);
  return r.val_loss;
}

// A checkpoint of the current state, unless an update made it non-finite: then nothing is saved
// and the last good checkpoint stays the newest. Every rank decides alike (their parameters are
// equal).
bool Trainer::save_checkpoint() {
  if (const std::string bad = optimizer_->first_non_finite(); !bad.empty()) {
    result_.message = fmt::format("non-finite values in {} after the update of step {}; not saved; {}", bad,
                                  state_.step, last_good_checkpoint());
    return false;
  }
  state_.loader = train_loader_->state().to_json();
  state_.expert_load_shape.clear();
  state_.expert_load_window.clear();
  if (load_window_.defined()) {
    const at::Tensor host = load_window_.to(at::kCPU).contiguous();
    state_.expert_load_shape = host.sizes().vec();
    state_.expert_load_window.assign(host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + host.numel());
  }
  state_.scheduler["last_lr"] = schedule_.at(std::max<int64_t>(state_.step, 1));
  const auto t0 = Clock::now();
  // The checkpoint stands for every rank: their parameters must all be rank 0's.
  if (const std::string bad = optimizer_->first_mismatch(); !bad.empty())
    fail("data parallelism: at step {} parameter '{}' differs between the ranks (their updates diverged); not "
         "saving",
         state_.step, bad);
  // The whole model and optimizer state, gathered from the ranks that hold its parts.
  const CheckpointTensors tensors = optimizer_->full_state();
  std::string dir;
  // Rank 0 writes while the others wait, so the checkpoint is complete before anyone goes on.
  dist_->main_first(fmt::format("writing checkpoint step-{}", state_.step), [&] {
    dir = write_checkpoint(out_dir_, state_, config_.model, tensors, config_yaml_, config_.data.tokenizer,
                           device_.is_cuda() ? device_.index() : -1);
    prune_checkpoints(out_dir_, config_.trainer.keep_last);
  });
  dir = dist_->broadcast_string(dir, "the checkpoint directory");
  last_saved_step_ = state_.step;
  result_.checkpoint = dir;
  if (console_) spdlog::info("saved {} ({:.1f}s)", dir, seconds_since(t0));
  return true;
}

std::string Trainer::last_good_checkpoint() const {
  return last_saved_step_ >= 0 ? fmt::format("the last good checkpoint is step-{}", last_saved_step_)
                               : std::string("no checkpoint was written");
}

void Trainer::log_start() const {
  if (!console_) return;
  const TrainerConfig& tc = config_.trainer;
  const int64_t world = dist_->world_size();
  const int64_t rank_rows = tc.global_batch / world;
  const int64_t accumulation = tc.accumulation_steps(world);
  spdlog::info("model: {} parameters | {} layers, hidden {}, {} routed experts (top-{}), inner_iter {} | "
               "{} expert dispatch",
               format_count(static_cast<double>(params_)), config_.model.num_hidden_layers, config_.model.hidden_size,
               config_.model.n_routed_experts, config_.model.num_experts_per_tok, config_.model.inner_iter,
               expert_dispatch_);
  spdlog::info("train: {} steps x {} sequences of {} tokens ({} micro-batches of {}{}) | warmup {} | {} lr {:.3e} | "
               "device {} {} | {} threads",
               tc.total_steps, tc.global_batch, config_.data.max_length, accumulation, tc.micro_batch,
               dist_->distributed() ? " per rank" : "", schedule_.warmup_steps, to_string(schedule_.kind), schedule_.lr,
               device_.str(), tc.dtype, at::get_num_threads());
  if (dist_->distributed())
    spdlog::info("data parallel: {} ranks ({}), timeout {} s | each rank: {} of the {} sequences per step, {} "
                 "micro-batches of {} | {} gradient buckets of <= {} MB, {}",
                 world, dist_->backend(), tc.dist_timeout_s, rank_rows, tc.global_batch, accumulation, tc.micro_batch,
                 optimizer_->reducer_buckets(), tc.dist_bucket_mb,
                 tc.dist_overlap ? "all-reduced during the last backward" : "all-reduced after backward");
  const ParallelLayout& layout = optimizer_->layout();
  if (layout.experts_split() || optimizer_->sharded())
    spdlog::info("{}{}",
                 layout.experts_split()
                     ? fmt::format("expert parallel: groups of {} ranks, {} experts per rank "
                                   "(rank 0: experts {}-{}) | ",
                                   layout.expert_parallel, layout.experts_per_rank, layout.first_expert,
                                   layout.first_expert + layout.experts_per_rank - 1)
                     : std::string(),
                 optimizer_->sharded() ? "optimizer states sharded (ZeRO-1: gradients reduce-scattered, parameters "
                                         "all-gathered)"
                                       : "optimizer states replicated");
  if (!resumed_from_.empty()) spdlog::info("resumed from {} (step {})", resumed_from_, state_.step);
}

std::vector<std::pair<std::string, LoadStats>> Trainer::take_load_statistics() {
  std::vector<std::pair<std::string, LoadStats>> out;
  const at::Tensor window = std::move(load_window_);
  load_window_ = at::Tensor();
  if (!window.defined() || !dist_->is_main()) return out;    // the other ranks only restart their window
  const at::Tensor host = window.to(at::kCPU).contiguous();  // the one host sync of the window
  const auto layers = model_->moe_layers();
  const int64_t C = host.size(1), E = host.size(2);
  const int64_t* counts = host.data_ptr<int64_t>();
  for (size_t i = 0; i < layers.size(); ++i)
    for (int64_t t = 0; t < C; ++t) {
      const int64_t* row = counts + (static_cast<int64_t>(i) * C + t) * E;
      const LoadStats b = load_balance(std::vector<int64_t>(row, row + E));
      out.emplace_back(fmt::format("layer{}_iter{}", layers[i], t), LoadStats{b.max_over_mean, b.cv});
    }
  return out;
}

void Trainer::log_step(const StepStats& s) {
  const int64_t total = config_.trainer.total_steps;
  const bool log_line = s.step % config_.trainer.log_interval == 0 || s.step == total || s.step == 1;
  MetricsRow row;
  row.step = s.step;
  row.loss = s.loss;
  for (size_t i = 0; i < RouterLosses::kCount; ++i)
    if (RouterLosses::logged(RouterLosses::kTerms[i], config_.model))
      row.router_losses.emplace_back(RouterLosses::kTerms[i].name, s.router_losses[i]);
  row.lr = s.lr;
  row.grad_norm = s.grad_norm;
  row.tokens = s.tokens;
  row.loss_tokens = s.loss_tokens;
  row.tokens_per_s = s.seconds > 0 ? static_cast<double>(s.tokens) / s.seconds : 0.0;
  row.time = state_.elapsed_s;
  if (s.comm_wait_s >= 0) row.comm_wait_s = s.comm_wait_s;
  // At a log line: the expert load of the steps since the previous one (every rank restarts its
  // window; rank 0 writes it).
  if (log_line) row.router = take_load_statistics();
  logger_.log_step(std::move(row), s.seconds, log_line);
}

// Fills the result from the run's state, so a run resumed after its last step (a requeued job, a
// kill before final.json) reports the same numbers as the invocation that trained it; writes
// final.json on completion; every rank ends here after the same step and leaves the job together.
TrainResult Trainer::finish(TrainStatus status) {
  result_.status = status;
  result_.step = state_.step;
  result_.tokens = state_.tokens_seen;
  result_.tokens_per_s = state_.elapsed_s > 0 ? static_cast<double>(state_.tokens_seen) / state_.elapsed_s : 0.0;
  result_.last_loss = state_.last_train_loss.value_or(0.0);
  result_.final_val_loss = state_.last_val_loss;
  result_.best_val_loss = state_.best_val_loss;
  if (status == TrainStatus::kCompleted && dist_->is_main()) {
    FinalSummary summary;
    summary.steps = result_.step;
    summary.final_val_loss = result_.final_val_loss;
    summary.best_val_loss = result_.best_val_loss;
    summary.final_train_loss = result_.last_loss;
    summary.tokens = result_.tokens;
    summary.tokens_per_s = result_.tokens_per_s;
    summary.params = result_.params;
    summary.elapsed_s = state_.elapsed_s;
    summary.checkpoint = result_.checkpoint;
    if (dist_->distributed()) summary.world_size = dist_->world_size();
    write_file_atomic(fs::path(out_dir_) / "final.json", summary.to_json().dump(2) + "\n");
  }
  logger_.flush();
  dist_->finish();
  signals_.reset();
  if (status == TrainStatus::kCompleted && console_) {
    spdlog::info("done: {} steps | train loss {:.4f} | val loss {} (best {}) | {} tok/s | {}", result_.step,
                 result_.last_loss,
                 result_.final_val_loss ? fmt::format("{:.4f}", *result_.final_val_loss) : std::string("-"),
                 result_.best_val_loss ? fmt::format("{:.4f}", *result_.best_val_loss) : std::string("-"),
                 format_count(result_.tokens_per_s), format_duration(seconds_since(run_start_)));
    if (dist_->distributed() && optimizer_->reducer_stats()) {
      const auto& st = *optimizer_->reducer_stats();
      spdlog::info("gradient all-reduce: {} buckets per step, {} of them started during backward (last step) | "
                   "{:.2f} s waited for communication in {} steps",
                   st.buckets, st.launched_by_hooks, st.total_wait_s, st.reductions);
    }
  }
  return result_;
}

}  // namespace coe
