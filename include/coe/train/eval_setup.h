#pragma once
// What coe-eval and coe-generate resolve the same way before they run a checkpoint: which
// tokenizer, text format and row length apply (the checkpoint's run config, with flags on top),
// that the tokenizer is the one the model was trained with, and the loaded model.
#include "coe/data/data_config.h"
#include "coe/model/config.h"
#include "coe/train/train_config.h"

#include <c10/core/Device.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace coe {

class CausalLMImpl;
class Tokenizer;

// Flags that override the run config (empty / 0: not given).
struct TextOverrides {
  std::string tokenizer;
  std::vector<std::string> text_keys;
  std::string template_text;
  int64_t max_length = 0;
};

// How records become text and tokens for a checkpoint.
struct TextSettings {
  std::string tokenizer;
  TextConfig text;
  int64_t max_length = 512;
  std::string origin;  // where the defaults came from, for messages
};

// A checkpoint resolved for inference: its directory, run config (nullopt for one coe-train did
// not write) and model config.
struct CheckpointSetup {
  std::string dir;
  std::optional<TrainConfig> run;
  ModelConfig model;
};

// find_checkpoint + read_run_config + config.json.
CheckpointSetup resolve_checkpoint(const std::string& path);

// The run's tokenizer, text format and max_length, with the overrides on top. A checkpoint without
// a run config (an HF folder) defaults to its own tokenizer.json, else to the byte tokenizer when
// its vocabulary is the byte tokenizer's; else it throws naming --tokenizer. (`tool` names the
// program in the origin, e.g. "coe-eval's defaults".)
TextSettings resolve_text_settings(const TextOverrides& overrides, const CheckpointSetup& checkpoint,
                                   const std::string& tool);

// Throws when `tokenizer` cannot be the one the model was trained with: a vocabulary larger than
// the model's, or a different tokenizer than the run config's (a different vocabulary scores and
// generates garbage without failing).
void check_vocabulary(const Tokenizer& tokenizer, const TextSettings& settings, const CheckpointSetup& checkpoint);

// The checkpoint's model on `device` in eval mode with the device's expert dispatch; on the CPU
// the host memory is checked first.
std::shared_ptr<CausalLMImpl> load_model_for_inference(const CheckpointSetup& checkpoint, const c10::Device& device);

}  // namespace coe
