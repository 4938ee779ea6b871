#pragma once
// HF-layout checkpoints: a directory with config.json and model.safetensors (or shards listed in
// model.safetensors.index.json), using the reference's parameter names, so coe and the reference
// code load each other's weights.
#include "coe/model/causal_lm.h"

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

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

}  // namespace coe
