#pragma once
// coe-export: a checkpoint (coe's, the reference's or an HF folder) as a folder that Hugging Face
// transformers loads with AutoModelForCausalLM / AutoTokenizer (docs/interop.md).
#include "coe/model/config.h"

#include <cstdint>
#include <string>
#include <vector>

namespace coe {

struct HfExportSettings {
  std::string dtype = "float32";            // float32 | bfloat16
  int64_t max_shard_bytes = 5'000'000'000;  // above it, sharded with model.safetensors.index.json
  std::string tokenizer;                    // a load_tokenizer spec; "": the checkpoint's
};

struct HfExportResult {
  std::string checkpoint;  // the checkpoint directory read
  HfModelType type = HfModelType::kCoe;
  std::string why_not_native;  // for model_type coe: why transformers' DeepSeek classes do not fit
  std::string tokenizer;       // the spec exported; "" when the checkpoint names none
  std::vector<std::string> files;
};

// Exports the checkpoint `path` names (find_checkpoint: a checkpoint directory, or a run
// directory's newest) into `out_dir`, which must not exist or be empty; the folder is written
// beside it and renamed into place once complete. The tokenizer is `settings.tokenizer`, else the
// checkpoint's copy (or an HF folder's tokenizer.json), else its run config's, else the byte
// tokenizer when the vocabulary is its size; without one only the model is exported.
HfExportResult export_hf_folder(const std::string& path, const std::string& out_dir, const HfExportSettings& settings);

}  // namespace coe
