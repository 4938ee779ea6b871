#include "coe/model/layers.h"

#include <ATen/ATen.h>

#include <cmath>

namespace coe {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  auto h = x.to(accumulate_dtype(x));
  h = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return weight * h.to(x.scalar_type());
}

namespace {

// Inverse of the rotation count -> dimension relation (YaRN paper, eq. 17).
double yarn_correction_dim(double rotations, int64_t dim, double base, int64_t max_pos) {
  return (dim * std::log(max_pos / (rotations * 2 * M_PI))) / (2 * std::log(base));
}

at::Tensor base_inv_freq(int64_t dim, double base, const at::TensorOptions& f32) {
  return 1.0 / at::pow(base, at::arange(0, dim, 2, f32) / static_cast<double>(dim));
}

}  // namespace

RotaryTables rotary_tables(const ModelConfig& c, int64_t seq_len, const torch::Device& device) {
  const int64_t dim = c.qk_rope_head_dim;
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  at::Tensor inv_freq = base_inv_freq(dim, c.rope_theta, f32);
  at::Tensor t = at::arange(seq_len, f32);
  double mscale = 1.0;
  if (c.rope_scaling) {
    const RopeScaling& r = *c.rope_scaling;
    if (r.type == "linear") {
      t = t / r.factor;
    } else if (r.type == "dynamic") {
      if (seq_len > c.max_position_embeddings) {
        double base = c.rope_theta * std::pow(r.factor * seq_len / c.max_position_embeddings - (r.factor - 1),
                                              static_cast<double>(dim) / (dim - 2));
        inv_freq = base_inv_freq(dim, base, f32);
      }
    } else {  // yarn
      at::Tensor freq_extra = inv_freq;
      at::Tensor freq_inter = 1.0 / (r.factor * at::pow(c.rope_theta, at::arange(0, dim, 2, f32) / double(dim)));
      double low = std::floor(yarn_correction_dim(r.beta_fast, dim, c.rope_theta, r.original_max_position_embeddings));
      double high = std::ceil(yarn_correction_dim(r.beta_slow, dim, c.rope_theta, r.original_max_position_embeddings));
      low = std::max(low, 0.0);
      high = std::min(high, static_cast<double>(dim - 1));
      if (low == high) high += 0.001;  // prevent a singular ramp
      at::Tensor ramp = at::clamp((at::arange(dim / 2, f32) - low) / (high - low), 0, 1);
      at::Tensor extra_mask = 1.0 - ramp;
      inv_freq = freq_inter * (1 - extra_mask) + freq_extra * extra_mask;
      mscale = r.attention_factor();
    }
  }
  at::Tensor freqs = at::outer(t, inv_freq);
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  if (mscale != 1.0) return {emb.cos() * mscale, emb.sin() * mscale};
  return {emb.cos(), emb.sin()};
}

torch::Tensor apply_rotary(const torch::Tensor& x, const RotaryTables& tables) {
  const auto sizes = x.sizes();
  const int64_t d = sizes[3];
  at::Tensor deinterleaved = x.reshape({sizes[0], sizes[1], sizes[2], d / 2, 2}).transpose(4, 3).reshape(sizes);
  at::Tensor x1 = deinterleaved.narrow(-1, 0, d / 2);
  at::Tensor x2 = deinterleaved.narrow(-1, d / 2, d / 2);
  at::Tensor rotated = at::cat({-x2, x1}, -1);
  at::Tensor cos = tables.cos.to(x.scalar_type()), sin = tables.sin.to(x.scalar_type());
  return deinterleaved * cos + rotated * sin;
}

SwiGluMlpImpl::SwiGluMlpImpl(int64_t hidden, int64_t intermediate) {
  auto linear = [](int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
  };
  gate_proj = register_module("gate_proj", linear(hidden, intermediate));
  up_proj = register_module("up_proj", linear(hidden, intermediate));
  down_proj = register_module("down_proj", linear(intermediate, hidden));
}

torch::Tensor SwiGluMlpImpl::forward(const torch::Tensor& x) { return down_proj(at::silu(gate_proj(x)) * up_proj(x)); }

}  // namespace coe
