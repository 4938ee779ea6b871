#pragma once
// Training checkpoints: <out_dir>/step-N/ holding
//   config.json, model.safetensors  the model in HF layout (save_hf_checkpoint, float32)
//   optimizer.safetensors           AdamW moments and per-parameter step counts
//   rng.safetensors                 torch's CPU generator state ("cpu"), and "cuda:<i>" when used
//   config.yaml                     the resolved run configuration
//   tokenizer.json                  a copy of the run's tokenizer (or vocab.json + merges.txt; none
//                                   for "byte"), so the checkpoint does not depend on its path
//   state.json                      the manifest: step, tokens seen, losses, scheduler, data loader,
//                                   and an xxh64 checksum of every other file (verified on load)
//   .coe-checkpoint                 coe's marker: only directories carrying it are ever deleted
// A checkpoint is written into step-N.tmp and renamed to step-N once every file is complete (and
// flushed), so an interrupted save never leaves a step-N directory: a step-N directory with a
// state.json is complete. Pruning renames a checkpoint to step-N.deleting before removing it, so
// a killed prune leaves no incomplete step-N either.
#include "coe/train/adamw.h"
#include "coe/train/train_config.h"
#include "coe/train/train_state.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace coe {

class CausalLMImpl;

struct CheckpointInfo {
  int64_t step = 0;
  std::string dir;
};

// Complete checkpoints in `out_dir`, oldest first (empty when the directory does not exist).
std::vector<CheckpointInfo> list_checkpoints(const std::string& out_dir);
std::optional<CheckpointInfo> latest_checkpoint(const std::string& out_dir);

// The model and optimizer tensors a checkpoint holds: always the whole model's, in the layout of
// one process (hf_state_dict, AdamW::state()), whatever the run's parallelism.
struct CheckpointTensors {
  std::map<std::string, at::Tensor> weights;    // HF names (hf_state_dict)
  std::map<std::string, at::Tensor> optimizer;  // "<param>.exp_avg", ".exp_avg_sq", ".step"
  AdamWOptions optimizer_options;
};

// Writes <out_dir>/step-<state.step> atomically (replacing an existing one of the same step) and
// returns its path, with a copy of the tokenizer `tokenizer_spec` names (tokenizer.json, or
// vocab.json and merges.txt; nothing for "byte"), checksummed like the other files. `cuda_device`
// >= 0 also saves that device's generator state. (The trainer checks AdamW::first_non_finite()
// first: a diverged state is never saved as a checkpoint.)
std::string write_checkpoint(const std::string& out_dir, const TrainState& state, const ModelConfig& model_config,
                             const CheckpointTensors& tensors, const std::string& config_yaml,
                             const std::string& tokenizer_spec, int cuda_device = -1);

// Reads and checks a checkpoint's state.json (its own checksum from version 3 on, and the step
// against a step-N directory name), and verifies every file against its checksum (a coe::Error
// naming the file on a mismatch). Version-1 checkpoints carry no checksums.
TrainState read_checkpoint_state(const std::string& dir);

// The newest complete checkpoint of `out_dir` before `step` that read_checkpoint_state accepts
// (manifest and every file intact), or nullopt: what to resume from when a newer one is damaged.
std::optional<CheckpointInfo> newest_intact_checkpoint_before(const std::string& out_dir, int64_t step);

// Loads weights, optimizer state and RNG state (CUDA's when `cuda_device` >= 0 and saved) from a
// checkpoint directory into an already constructed model (a rank of expert parallelism takes its
// experts) and through `load_optimizer` (given the whole model's optimizer tensors and the file
// they came from); returns its state.json.
using OptimizerStateLoader =
    std::function<void(const std::map<std::string, at::Tensor>& tensors, const std::string& source)>;
TrainState read_checkpoint(const std::string& dir, CausalLMImpl& model, const OptimizerStateLoader& load_optimizer,
                           int cuda_device = -1);

// Deletes all but the newest `keep_last` complete checkpoints (keep_last 0: keeps all). Only
// directories carrying coe's marker are deleted.
void prune_checkpoints(const std::string& out_dir, int64_t keep_last);

// Removes what interrupted saves and prunes left behind: step-N.tmp and step-N.deleting
// directories, and step-N directories without a state.json, each only when it carries coe's
// marker. Call it only while holding the run directory's lock (no other writer is alive).
// Returns the removed paths.
std::vector<std::string> remove_stale_checkpoints(const std::string& out_dir);
// Removes the temporaries a killed write_file_atomic leaves in a run directory ("<file>.tmp-<pid>"
// of config.yaml, metrics.jsonl, val.jsonl, final.json, init_from.txt and the tokenizer's copy:
// coe's names only). Call it
// holding the directory's lock. Returns the paths removed.
std::vector<std::string> remove_stale_run_files(const std::string& out_dir);

// A checkpoint directory to evaluate: `path` itself when it holds config.json (a coe checkpoint,
// the reference's, an HF download), else the newest complete step-N of the run directory `path`.
// A coe checkpoint's files are verified against its manifest's checksums.
std::string find_checkpoint(const std::string& path);

// The tokenizer stored in a checkpoint directory (write_checkpoint's copy, or an HF folder's
// tokenizer.json): the directory itself as a load_tokenizer spec; nullopt when it holds none.
std::optional<std::string> stored_tokenizer(const std::string& checkpoint_dir);

// The run configuration a coe-train checkpoint was trained with (its config.yaml), nullopt for a
// checkpoint without one (the reference's, an HF download). Errors name the file.
std::optional<TrainConfig> read_run_config(const std::string& checkpoint_dir);

// Moves the complete checkpoints newer than `step` into `dest_dir` (created), keeping their
// names; returns the moved paths. For resuming from an older step: the abandoned branch is kept
// aside instead of being mixed with the new one.
std::vector<std::string> move_checkpoints_after(const std::string& out_dir, int64_t step, const std::string& dest_dir);

}  // namespace coe
