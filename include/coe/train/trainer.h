#pragma once
// The training loop of coe-train. One Trainer = one run directory (trainer.out_dir):
//
//   <out_dir>/config.yaml      resolved configuration of the latest invocation
//   <out_dir>/metrics.jsonl    one JSON object per optimizer step
//   <out_dir>/val.jsonl        one JSON object per validation
//   <out_dir>/tb/              TensorBoard event files, one per invocation (trainer.tensorboard)
//   <out_dir>/init_from.txt    with trainer.init_from: what the warm start copied (init_from.h)
//   <out_dir>/step-N/          checkpoints (checkpoint.h)
//   <out_dir>/final.json       summary, written when total_steps is reached
//   <out_dir>/prepared/        the prepared dataset when data.prepared_dir is not set
//   <out_dir>/.coe-lock        flock(2)ed by the one process training into out_dir (run_lock.h)
//   <out_dir>/abandoned-after-step-N-<time>/  a branch left by resuming from an older step-N
//
// Construction runs the setup phases in order: resolve the device, join the data-parallel job,
// choose the checkpoint to resume (locking out_dir), prepare the data, build the model and
// optimizer, restore the checkpoint, open the run directory's files. run() is the loop: each
// train_step() draws the global batch, accumulates gradients over its micro-batches, clips,
// checks for non-finite values and updates (then moves the routers' correction biases with
// topk_method noaux_tc); then the step is logged, validation and checkpoints
// come at their intervals, and stop_reason() ends the loop on SIGINT/SIGTERM or --max-steps. See
// docs/training.md.
//
// Data parallelism (docs/distributed.md): with TrainOptions::dist_env naming a job of W > 1 ranks,
// each process is one rank. Construction joins the job (c10d TCPStore + Gloo/NCCL process group),
// rank 0 prepares the data and decides the resume while the others wait, and rank 0's parameters
// are broadcast. Each step a rank reads its 1/W of the global batch, the ranks' token and row
// counts are summed so that the loss is normalised over the whole global batch, gradients are
// summed in buckets (grad_reducer.h), and every rank applies the same update. Rank 0 alone writes
// the run directory; every rank can resume from it.
#include "coe/data/loader.h"
#include "coe/distributed/context.h"
#include "coe/distributed/env.h"
#include "coe/distributed/grad_reducer.h"
#include "coe/model/causal_lm.h"
#include "coe/train/adamw.h"
#include "coe/train/checkpoint.h"
#include "coe/train/distributed_optimizer.h"
#include "coe/train/lr_schedule.h"
#include "coe/train/run_logger.h"
#include "coe/train/train_config.h"
#include "coe/util/clock.h"
#include "coe/util/file_io.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace coe {

class RunDirLock;
class StopSignalGuard;
struct InitFromReport;

struct TrainOptions {
  // Continue from the newest complete checkpoint in out_dir; an error when there is none
  // (trainer.resume: auto is the lenient form that starts fresh instead).
  bool resume = false;
  // Stop after this many steps of this invocation (saving a checkpoint), < 0: no limit. For
  // time-sliced jobs and tests; the schedule still spans trainer.total_steps.
  int64_t max_steps = -1;
  // Install SIGINT/SIGTERM handlers during run(): finish the step, save, return kInterrupted.
  bool handle_signals = true;
  // Log progress lines through spdlog's default logger (rank 0 only in a data-parallel job).
  bool console = true;
  // The data-parallel job this process is a rank of (coe-train: dist_env_from_process()).
  // The default is the single process: no store, no process group, no communication.
  DistEnv dist_env;
};

enum class TrainStatus {
  kCompleted,    // reached trainer.total_steps; final checkpoint and final.json written
  kInterrupted,  // SIGINT/SIGTERM: checkpoint of the last completed step written
  kStopped,      // TrainOptions::max_steps reached: checkpoint written
  kNonFinite,    // non-finite loss, gradient norm, weights or moments: stopped, that state not saved
};
const char* to_string(TrainStatus status);

struct TrainResult {
  TrainStatus status = TrainStatus::kCompleted;
  int64_t step = 0;        // optimizer steps completed
  std::string message;     // kNonFinite: the step, values and the located layer, one line (not logged:
                           // the caller prints it once)
  std::string checkpoint;  // newest checkpoint written or resumed from ("" if none)
  std::optional<double> final_val_loss, best_val_loss;
  double last_loss = 0.0;   // training loss of the last completed step
  int64_t tokens = 0;       // positions processed over the whole run (all invocations)
  double tokens_per_s = 0;  // training throughput over the whole run (steps only, no validation)
  int64_t params = 0;
};

class Trainer {
 public:
  explicit Trainer(TrainConfig config, TrainOptions options = {});
  ~Trainer();

  TrainResult run();

  const TrainConfig& config() const { return config_; }  // resolved (vocab, prepared_dir filled in)
  CausalLMImpl& model() { return *model_; }
  DistributedOptimizer& optimizer() { return *optimizer_; }
  const TrainState& state() const { return state_; }
  const std::string& out_dir() const { return out_dir_; }
  const LrSchedule& schedule() const { return schedule_; }
  // Whether run() will start from a checkpoint, and which.
  const std::string& resumed_from() const { return resumed_from_; }
  // This process's place in the data-parallel job (rank 0 of 1 for a single process).
  DistContext& dist() { return *dist_; }

 private:
  // What one optimizer step did, for the logs.
  struct StepStats {
    int64_t step = 0;
    double loss = 0, lr = 0, grad_norm = 0, seconds = 0;
    std::array<double, RouterLosses::kCount> router_losses{};  // in RouterLosses::kTerms order
    int64_t tokens = 0, loss_tokens = 0;
    double comm_wait_s = -1;      // data parallel: waiting for the gradient all-reduce (< 0: not logged)
    bool finite = true;           // false: the update was not applied (result_.message says why)
    bool stop_requested = false;  // data parallel: some rank received a stop signal
  };

  // Setup phases, in the order the constructor runs them.
  void resolve_device();
  void join_job();
  void choose_checkpoint();
  void verify_newest_checkpoint(const CheckpointInfo& newest);
  void set_aside_newer_branch(int64_t step);
  void prepare_data();
  void build_model();
  void restore();
  void open_run_files();

  // The loop.
  StepStats train_step();
  std::optional<TrainStatus> stop_reason(const StepStats& step) const;
  std::optional<double> run_validation();
  bool save_checkpoint();  // false: the state is not finite (result_.message says so), nothing saved
  std::string last_good_checkpoint() const;
  void log_start() const;
  void log_step(const StepStats& s);
  // The load statistics of the window since the last log line, per MoE layer and CoE iteration
  // ("layer0_iter0", ...); restarts the window. Empty without MoE layers and on ranks other than 0.
  std::vector<std::pair<std::string, LoadStats>> take_load_statistics();
  TrainResult finish(TrainStatus status);

  TrainConfig config_;
  TrainOptions options_;
  // Declared before the model and the reducer: destroyed after them (the reducer's hooks refer to
  // the context and sit on the model's parameters).
  std::unique_ptr<DistContext> dist_;
  std::unique_ptr<RunDirLock> run_lock_;  // rank 0: held for the trainer's lifetime
  bool console_ = true;                   // options_.console on rank 0
  std::string out_dir_, config_yaml_, resumed_from_;
  c10::Device device_{c10::kCPU};
  bool bf16_ = false;
  std::string prepared_dir_;
  int64_t val_records_ = 0;
  CausalLM model_{nullptr};
  // The optimizer step over the ranks (data/expert parallel, sharded or not; one process: AdamW).
  std::unique_ptr<DistributedOptimizer> optimizer_;
  std::unique_ptr<Loader> train_loader_;
  std::unique_ptr<SequentialLoader> val_loader_;
  LrSchedule schedule_;
  TrainState state_;
  int64_t params_ = 0;
  double flops_per_token_ = 0;   // training FLOPs per token, for the MFU of the progress line
  std::string expert_dispatch_;  // the dispatch trainer.expert_dispatch resolved to
  int64_t last_saved_step_ = -1;
  RunLogger logger_;  // metrics.jsonl, val.jsonl, TensorBoard, the console (silent but on rank 0)
  std::unique_ptr<InitFromReport> init_from_;  // the warm start of a fresh run with trainer.init_from
  // Expert load ([MoE layers, C, E] int64, on the device, over the global batch) counted since the
  // last log line; undefined until a step counted some.
  at::Tensor load_window_;

  // run()'s state.
  std::unique_ptr<StopSignalGuard> signals_;
  TrainResult result_;
  int64_t run_steps_ = 0;  // steps of this invocation
  Clock::time_point run_start_;
};

// coe-train's exit status for a result: 0 completed, interrupted (signal) or stopped
// (max_steps), 3 non-finite values. Errors (exceptions) exit 1.
int exit_code(TrainStatus status);

}  // namespace coe
