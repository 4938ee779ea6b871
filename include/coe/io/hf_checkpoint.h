#pragma once
// HF-layout checkpoints: a directory with config.json and model.safetensors (or shards listed in
// model.safetensors.index.json), using the reference's parameter names, so coe and the reference
// code load each other's weights.
#include "coe/model/causal_lm.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace coe {

// Reference names for a model's tensors: stacked experts [E, ...] become
// "...mlp.experts.<e>.{gate,up,down}_proj.weight". Works for parameters and for their gradients
// (pass `grads = true` to map each parameter's .grad()).
std::map<std::string, at::Tensor> hf_state_dict(const CausalLMImpl& model, bool grads = false);

// Copies reference-named tensors into the model. Missing, unexpected or wrong-shaped tensors are
// errors naming the tensor and `source`.
void load_hf_state_dict(CausalLMImpl& model, const std::map<std::string, at::Tensor>& tensors,
                        const std::string& source);

// All tensors of a checkpoint directory (single file or sharded).
std::map<std::string, at::Tensor> read_hf_weights(const std::string& dir);

// config.json + weights -> a ready model (float32, CPU).
CausalLM load_hf_checkpoint(const std::string& dir);

// Writes config.json and model.safetensors into `dir` (created if needed), tensors in `dtype`.
void save_hf_checkpoint(const CausalLMImpl& model, const std::string& dir, at::ScalarType dtype = at::kFloat);
// The same from a model's hf_state_dict (a whole model gathered from the ranks that hold its parts).
void save_hf_checkpoint(const ModelConfig& config, const std::map<std::string, at::Tensor>& tensors,
                        const std::string& dir, at::ScalarType dtype = at::kFloat);

// The HF name of expert `expert` of a stacked-experts parameter ("…mlp.experts.gate_proj", 5 ->
// "…mlp.experts.5.gate_proj.weight"); "" when `param` is not a stacked-experts parameter.
std::string hf_expert_name(const std::string& param, int64_t expert);

// Writes `tensors` into `dir` as transformers does: model.safetensors when they fit in
// `max_shard_bytes`, else model-0000i-of-0000n.safetensors shards (in name order, each at most
// `max_shard_bytes` unless one tensor alone is larger) listed in model.safetensors.index.json.
// Returns the files written.
std::vector<std::string> save_hf_weights(const std::string& dir, const std::map<std::string, at::Tensor>& tensors,
                                         int64_t max_shard_bytes);

// A folder transformers 5 loads (AutoModelForCausalLM.from_pretrained): config.json of `type`
// (model_config_to_hf_json), the weights in `dtype` (float32 or bfloat16) under the names that type
// uses, generation_config.json with the token ids, and for model_type coe the Python of
// coe's transformers model (configuration_coe.py, modeling_coe.py, compiled into coe).
struct HfExportOptions {
  HfModelType type = HfModelType::kCoe;
  at::ScalarType dtype = at::kFloat;
  int64_t max_shard_bytes = 5'000'000'000;                          // transformers' default shard size, 5 GB
  std::optional<int64_t> bos_token_id, eos_token_id, pad_token_id;  // the tokenizer's
};
// Returns the files written (names inside `dir`).
std::vector<std::string> save_hf_export(const CausalLMImpl& model, const std::string& dir,
                                        const HfExportOptions& options);

}  // namespace coe
