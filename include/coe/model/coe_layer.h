#pragma once
// One decoder layer: MLA attention, then the Chain-of-Experts feed-forward
//   x(0) = norm(h);  x(t) = MoE_t(x(t-1)) + r(t);  out = x(C) (+ h with outer_residual)
// where r is x(t-1) (inner residual), x(0) (add-input) or 0. Dense layers (first_k_dense_replace,
// moe_layer_freq) run their MLP once with the same residual wiring.
#include "coe/model/attention.h"
#include "coe/model/config.h"
#include "coe/model/layers.h"
#include "coe/model/moe.h"

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <vector>

namespace coe {

struct RoutingTrace {
  int64_t layer = 0, iteration = 0;
  torch::Tensor topk_idx;  // [B*S, K]
  torch::Tensor scores;    // [B*S, E] router scores (softmax or sigmoid)
};

struct LayerOutput {
  torch::Tensor hidden;
  RouterLosses router_losses;  // summed over the iterations; terms undefined when there is none
};

class CoeLayerImpl : public torch::nn::Module {
 public:
  CoeLayerImpl(const ModelConfig& config, int64_t layer_index);
  // `routing` (optional) receives one trace per MoE iteration.
  LayerOutput forward(const torch::Tensor& h, const RotaryTables& rope, std::vector<RoutingTrace>* routing = nullptr);
  // Incremental decoding (MlaAttentionImpl::forward_cached for the arguments); the C iterations
  // act on each token alone, so the layer keeps nothing beyond the attention's cache.
  torch::Tensor forward_cached(const torch::Tensor& h, const RotaryTables& rope, MlaLayerCache& cache, int64_t start,
                               const torch::Tensor& allowed, MlaDecode mode);
  bool is_moe() const { return !moe.is_empty(); }

  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  MlaAttention self_attn{nullptr};
  MoeBlock moe{nullptr};     // registered as "mlp" in MoE layers
  SwiGluMlp dense{nullptr};  // registered as "mlp" in dense layers

 private:
  // The C-iteration chain after attention; `attended` = h + attention.
  LayerOutput feed_forward(const torch::Tensor& attended, std::vector<RoutingTrace>* routing);

  int64_t layer_index_, inner_iter_;
  InnerResidual inner_residual_;
  bool outer_residual_;
};
TORCH_MODULE(CoeLayer);

}  // namespace coe
