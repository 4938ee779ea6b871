#pragma once
// Small building blocks of the DeepSeek-V2 decoder: RMSNorm, rotary tables, SwiGLU MLP.
#include "coe/model/config.h"

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

namespace coe {

// The dtype for numerically sensitive math (norms, softmax, routing, weighted sums): float32 as
// the reference, or float64 when the model runs in double (numerical gradient checks).
inline at::ScalarType accumulate_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// y = w * x / sqrt(mean(x^2) + eps), computed in float32 like the reference.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

// cos/sin tables [seq_len, rope_dim] for default, linear, dynamic-NTK and YaRN rope, exactly as
// the reference builds them (float32, duplicated halves; YaRN's mscale folded in).
struct RotaryTables {
  torch::Tensor cos, sin;
};
RotaryTables rotary_tables(const ModelConfig& config, int64_t seq_len, const torch::Device& device);

// Applies rope to x [B, heads, S, d] with the reference's interleaved layout: pairs (2i, 2i+1)
// are first de-interleaved into halves, then rotated with rotate_half.
torch::Tensor apply_rotary(const torch::Tensor& x, const RotaryTables& tables);

// down(silu(gate(x)) * up(x)): dense layers and shared experts.
class SwiGluMlpImpl : public torch::nn::Module {
 public:
  SwiGluMlpImpl(int64_t hidden, int64_t intermediate);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(SwiGluMlp);

}  // namespace coe
