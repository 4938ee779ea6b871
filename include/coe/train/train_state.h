#pragma once
// A checkpoint's state.json: everything of a run's progress that is not a tensor. Torch-free (the
// fuzz target fuzz/fuzz_state_json.cpp compiles it alone); the checkpoint's directory, its files
// and their checksums are train/checkpoint.h's.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace coe {

// 2: checksums of the other files, last_train_loss and val_step.
// 3: state_checksum, the manifest's checksum of itself (versions 1 and 2 are still read).
inline constexpr int kCheckpointFormatVersion = 3;

// The files of a checkpoint that state.json's checksums cover.
inline constexpr const char* kCheckpointFiles[] = {"config.json", "model.safetensors", "optimizer.safetensors",
                                                   "rng.safetensors", "config.yaml"};

struct TrainState {
  int64_t step = 0;                       // optimizer steps completed
  int64_t tokens_seen = 0;                // positions processed (rows * seq_len)
  int64_t loss_tokens_seen = 0;           // labels that counted in the loss
  double elapsed_s = 0.0;                 // training wall time so far, over all resumed runs
  std::optional<double> last_train_loss;  // training loss of step `step`
  std::optional<double> last_val_loss, best_val_loss;
  std::optional<int64_t> val_step;  // the step last_val_loss was measured at
  nlohmann::json loader;            // LoaderState::to_json()
  nlohmann::json scheduler;         // informational: kind, lr, min_lr, warmup_steps, total_steps, last lr
  // Expert load counted since the last log line (the load statistics of metrics.jsonl), so that a
  // resumed run logs the same numbers: [MoE layers, C, E] flattened row-major; empty when none.
  std::vector<int64_t> expert_load_shape, expert_load_window;
  std::map<std::string, std::string> checksums;  // file name -> "xxh64:<hex>" (filled by write_checkpoint)
  std::string torch_version;                     // informational: the libtorch that wrote it

  // The manifest, ending with "state_checksum": the xxh64 of every other field (state_checksum_of),
  // so that an edited step, cursor or token count is found like a damaged weight file.
  nlohmann::ordered_json to_json() const;
  // Checks every field's type and range, and (version 3) the manifest's own checksum; errors name
  // `source` and the field.
  static TrainState from_json(const nlohmann::json& json, const std::string& source);
};

// "xxh64:<hex>" of a manifest without its "state_checksum" field: the hash of its canonical JSON
// (keys sorted, no spaces, numbers as nlohmann writes them), so whitespace and key order do not
// matter, every value does.
std::string state_checksum_of(nlohmann::json manifest);

}  // namespace coe
