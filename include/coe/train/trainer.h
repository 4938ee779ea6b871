#pragma once
// The training loop of coe-train. One Trainer = one run directory (trainer.out_dir):
//
//   <out_dir>/config.yaml      resolved configuration of the latest invocation
//   <out_dir>/metrics.jsonl    one JSON object per optimizer step
//   <out_dir>/val.jsonl        one JSON object per validation
//   <out_dir>/step-N/          checkpoints (checkpoint.h)
//   <out_dir>/final.json       summary, written when total_steps is reached
//   <out_dir>/prepared/        the prepared dataset when data.prepared_dir is not set
//
// Construction does the setup (threads, device, data preparation, model, optimizer, loaders and
// the resume); run() is the loop: for each step, draw the global batch, accumulate gradients over
// its micro-batches, clip, check for non-finite values, update, log; validate and checkpoint at
// their intervals; stop cleanly on SIGINT/SIGTERM. See docs/training.md.
#include "coe/data/loader.h"
#include "coe/model/causal_lm.h"
#include "coe/train/adamw.h"
#include "coe/train/checkpoint.h"
#include "coe/train/lr_schedule.h"
#include "coe/train/train_config.h"

#include <c10/core/Device.h>

#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

namespace coe {

struct TrainOptions {
  // Continue from the newest complete checkpoint in out_dir; an error when there is none
  // (trainer.resume: auto is the lenient form that starts fresh instead).
  bool resume = false;
  // Stop after this many steps of this invocation (saving a checkpoint), < 0: no limit. For
  // time-sliced jobs and tests; the schedule still spans trainer.total_steps.
  int64_t max_steps = -1;
  // Install SIGINT/SIGTERM handlers during run(): finish the step, save, return kInterrupted.
  bool handle_signals = true;
  // Log progress lines through spdlog's default logger.
  bool console = true;
};

enum class TrainStatus {
  kCompleted,    // reached trainer.total_steps; final checkpoint and final.json written
  kInterrupted,  // SIGINT/SIGTERM: checkpoint of the last completed step written
  kStopped,      // TrainOptions::max_steps reached: checkpoint written
  kNonFinite,    // non-finite loss or gradient norm: stopped before the update, nothing saved
};
const char* to_string(TrainStatus status);

struct TrainResult {
  TrainStatus status = TrainStatus::kCompleted;
  int64_t step = 0;         // optimizer steps completed
  std::string message;      // kNonFinite: the step, values and the located layer, one line
  std::string checkpoint;   // newest checkpoint written or resumed from ("" if none)
  std::optional<double> final_val_loss, best_val_loss;
  double last_loss = 0.0;   // training loss of the last completed step
  int64_t tokens = 0;       // positions processed over the whole run (all invocations)
  double tokens_per_s = 0;  // training throughput of this invocation (steps only, no validation)
  int64_t params = 0;
};

class Trainer {
 public:
  explicit Trainer(TrainConfig config, TrainOptions options = {});

  TrainResult run();

  const TrainConfig& config() const { return config_; }  // resolved (vocab, prepared_dir filled in)
  CausalLMImpl& model() { return *model_; }
  const TrainState& state() const { return state_; }
  const std::string& out_dir() const { return out_dir_; }
  const LrSchedule& schedule() const { return schedule_; }
  // Whether run() will start from a checkpoint, and which.
  const std::string& resumed_from() const { return resumed_from_; }

 private:
  struct StepStats;
  std::optional<double> validate();
  std::string save();
  void log_step(const StepStats& s);
  void write_final(const TrainResult& r);

  TrainConfig config_;
  TrainOptions options_;
  std::string out_dir_, config_yaml_, resumed_from_;
  c10::Device device_{c10::kCPU};
  bool bf16_ = false;
  CausalLM model_{nullptr};
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<Loader> train_loader_;
  std::unique_ptr<SequentialLoader> val_loader_;
  LrSchedule schedule_;
  TrainState state_;
  int64_t params_ = 0;
  int64_t last_saved_step_ = -1;
  std::ofstream metrics_, val_log_;
  // Console window (since the last log line).
  double window_time_ = 0;
  int64_t window_steps_ = 0, window_tokens_ = 0;
};

// coe-train's exit status for a result: 0 completed, interrupted (signal) or stopped
// (max_steps), 3 non-finite loss. Errors (exceptions) exit 1.
int exit_code(TrainStatus status);

}  // namespace coe
