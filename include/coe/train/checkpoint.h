#pragma once
// Training checkpoints: <out_dir>/step-N/ holding
//   config.json, model.safetensors  the model in HF layout (io::save_hf_checkpoint, float32)
//   optimizer.safetensors           AdamW moments and per-parameter step counts
//   rng.safetensors                 torch's CPU generator state ("cpu"), and "cuda:<i>" when used
//   state.json                      step, tokens seen, validation losses, scheduler, data loader
//   config.yaml                     the resolved run configuration
// A checkpoint is written into step-N.tmp and renamed to step-N once every file is complete (and
// flushed), so an interrupted save never leaves a step-N directory: a step-N directory with a
// state.json is complete.
#include "coe/train/adamw.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace coe {

class CausalLMImpl;

inline constexpr int kCheckpointFormatVersion = 1;

struct CheckpointInfo {
  int64_t step = 0;
  std::string dir;
};

// Complete checkpoints in `out_dir`, oldest first (empty when the directory does not exist).
std::vector<CheckpointInfo> list_checkpoints(const std::string& out_dir);
std::optional<CheckpointInfo> latest_checkpoint(const std::string& out_dir);

// Everything of a run's progress that is not a tensor (state.json).
struct TrainState {
  int64_t step = 0;              // optimizer steps completed
  int64_t tokens_seen = 0;       // positions processed (rows * seq_len)
  int64_t loss_tokens_seen = 0;  // labels that counted in the loss
  double elapsed_s = 0.0;        // training wall time so far, over all resumed runs
  std::optional<double> last_val_loss, best_val_loss;
  nlohmann::json loader;         // LoaderState::to_json()
  nlohmann::json scheduler;      // informational: kind, lr, min_lr, warmup_steps, total_steps, last lr

  nlohmann::ordered_json to_json() const;
  static TrainState from_json(const nlohmann::json& json, const std::string& source);
};

// Writes <out_dir>/step-<state.step> atomically (replacing an existing one of the same step) and
// returns its path. `cuda_device` >= 0 also saves that device's generator state.
std::string write_checkpoint(const std::string& out_dir, const TrainState& state, const CausalLMImpl& model,
                             const AdamW& optimizer, const std::string& config_yaml, int cuda_device = -1);

// Loads weights, optimizer state and RNG state (CUDA's when `cuda_device` >= 0 and saved) from a
// checkpoint directory into an already constructed model / optimizer; returns its state.json.
TrainState read_checkpoint(const std::string& dir, CausalLMImpl& model, AdamW& optimizer, int cuda_device = -1);

// Deletes all but the newest `keep_last` complete checkpoints (keep_last 0: keeps all), and stale
// step-N.tmp directories of interrupted saves.
void prune_checkpoints(const std::string& out_dir, int64_t keep_last);

}  // namespace coe
