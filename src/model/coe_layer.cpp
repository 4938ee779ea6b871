#include "coe/model/coe_layer.h"

#include <ATen/ATen.h>

namespace coe {

CoeLayerImpl::CoeLayerImpl(const ModelConfig& c, int64_t layer_index)
    : layer_index_(layer_index),
      inner_iter_(c.inner_iter),
      inner_residual_(c.inner_residual),
      outer_residual_(c.outer_residual) {
  self_attn = register_module("self_attn", MlaAttention(c));
  if (c.is_moe_layer(layer_index)) moe = register_module("mlp", MoeBlock(c));
  else dense = register_module("mlp", SwiGluMlp(c.hidden_size, c.intermediate_size));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

LayerOutput CoeLayerImpl::forward(const torch::Tensor& h, const RotaryTables& rope,
                                  std::vector<RoutingTrace>* routing) {
  return feed_forward(h + self_attn(input_layernorm(h), rope), routing);
}

torch::Tensor CoeLayerImpl::forward_cached(const torch::Tensor& h, const RotaryTables& rope, MlaLayerCache& cache,
                                           int64_t start, const torch::Tensor& allowed, MlaDecode mode) {
  return feed_forward(h + self_attn->forward_cached(input_layernorm(h), rope, cache, start, allowed, mode), nullptr)
      .hidden;
}

LayerOutput CoeLayerImpl::feed_forward(const torch::Tensor& attended, std::vector<RoutingTrace>* routing) {
  const at::Tensor x0 = post_attention_layernorm(attended);
  at::Tensor x = x0;
  LayerOutput out;
  const int64_t iterations = is_moe() ? inner_iter_ : 1;
  for (int64_t t = 0; t < iterations; ++t) {
    at::Tensor f;
    if (is_moe()) {
      MoeOutput m = moe(x, t);
      f = m.y;
      out.router_losses += m.routing.router_losses;
      if (routing) routing->push_back({layer_index_, t, m.routing.topk_idx, m.routing.scores.detach()});
    } else {
      f = dense(x);
    }
    switch (inner_residual_) {
      case InnerResidual::kPrevious: x = f + x; break;
      case InnerResidual::kInput: x = f + x0; break;
      case InnerResidual::kNone: x = f; break;
    }
  }
  out.hidden = outer_residual_ ? attended + x : x;
  return out;
}

}  // namespace coe
