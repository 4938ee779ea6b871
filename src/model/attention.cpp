#include "coe/model/attention.h"

#include <ATen/ATen.h>

#include <limits>

namespace coe {

MlaAttentionImpl::MlaAttentionImpl(const ModelConfig& c)
    : heads_(c.num_attention_heads),
      nope_(c.qk_nope_head_dim),
      rope_(c.qk_rope_head_dim),
      v_(c.v_head_dim),
      kv_rank_(c.kv_lora_rank),
      scale_(c.softmax_scale()) {
  auto linear = [](int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
  };
  const int64_t q_dim = heads_ * c.q_head_dim();
  if (c.q_lora_rank) {
    q_a_proj = register_module("q_a_proj", linear(c.hidden_size, *c.q_lora_rank));
    // The reference builds this norm with the default eps (1e-6), not rms_norm_eps.
    q_a_layernorm = register_module("q_a_layernorm", RMSNorm(*c.q_lora_rank, 1e-6));
    q_b_proj = register_module("q_b_proj", linear(*c.q_lora_rank, q_dim));
  } else {
    q_proj = register_module("q_proj", linear(c.hidden_size, q_dim));
  }
  kv_a_proj_with_mqa = register_module("kv_a_proj_with_mqa", linear(c.hidden_size, kv_rank_ + rope_));
  kv_a_layernorm = register_module("kv_a_layernorm", RMSNorm(kv_rank_, 1e-6));
  kv_b_proj = register_module("kv_b_proj", linear(kv_rank_, heads_ * (nope_ + v_)));
  o_proj = register_module("o_proj", linear(heads_ * v_, c.hidden_size));
}

bool MlaAttentionImpl::uses_sdpa(const c10::Device& device) const {
  if (backend != Backend::kAuto) return backend == Backend::kSdpa;
  return auto_attention_uses_sdpa(nope_ + rope_, v_, device.is_cuda());
}

torch::Tensor MlaAttentionImpl::forward(const torch::Tensor& x, const RotaryTables& rope) {
  const int64_t B = x.size(0), S = x.size(1);
  at::Tensor q = q_proj ? q_proj(x) : q_b_proj(q_a_layernorm(q_a_proj(x)));
  q = q.view({B, S, heads_, nope_ + rope_}).transpose(1, 2);  // [B, H, S, nope+rope]
  at::Tensor q_nope = q.narrow(-1, 0, nope_);
  at::Tensor q_pe = q.narrow(-1, nope_, rope_);

  at::Tensor compressed = kv_a_proj_with_mqa(x);
  at::Tensor kv_latent = compressed.narrow(-1, 0, kv_rank_);
  at::Tensor k_pe = compressed.narrow(-1, kv_rank_, rope_).view({B, S, 1, rope_}).transpose(1, 2);  // [B,1,S,r]
  at::Tensor kv = kv_b_proj(kv_a_layernorm(kv_latent)).view({B, S, heads_, nope_ + v_}).transpose(1, 2);
  at::Tensor k_nope = kv.narrow(-1, 0, nope_);
  at::Tensor value = kv.narrow(-1, nope_, v_);

  q_pe = apply_rotary(q_pe, rope);
  k_pe = apply_rotary(k_pe, rope);
  at::Tensor query = at::cat({q_nope, q_pe}, -1);
  at::Tensor key = at::cat({k_nope, k_pe.expand({B, heads_, S, rope_})}, -1);

  at::Tensor out;
  if (uses_sdpa(x.device())) {
    out = at::scaled_dot_product_attention(query, key, value.contiguous(), /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                           /*is_causal=*/true, scale_);
  } else {
    at::Tensor scores = at::matmul(query, key.transpose(2, 3)) * scale_;
    at::Tensor causal = at::ones({S, S}, at::TensorOptions().dtype(at::kBool).device(x.device())).triu(1);
    scores = scores.masked_fill(causal, -std::numeric_limits<float>::infinity());
    at::Tensor probs = at::softmax(scores, -1, accumulate_dtype(scores)).to(query.scalar_type());
    out = at::matmul(probs, value);
  }
  out = out.transpose(1, 2).reshape({B, S, heads_ * v_});
  return o_proj(out);
}

torch::Tensor MlaAttentionImpl::forward_cached(const torch::Tensor& x, const RotaryTables& rope, MlaLayerCache& cache,
                                               int64_t start, const torch::Tensor& allowed, MlaDecode mode) {
  const int64_t B = x.size(0), S = x.size(1), T = start + S;
  at::Tensor q = q_proj ? q_proj(x) : q_b_proj(q_a_layernorm(q_a_proj(x)));
  q = q.view({B, S, heads_, nope_ + rope_}).transpose(1, 2);  // [B, H, S, nope+rope]
  const at::Tensor q_nope = q.narrow(-1, 0, nope_);
  const at::Tensor q_pe = apply_rotary(q.narrow(-1, nope_, rope_), rope);

  const at::Tensor compressed = kv_a_proj_with_mqa(x);
  cache.latent.narrow(1, start, S).copy_(kv_a_layernorm(compressed.narrow(-1, 0, kv_rank_)));
  const at::Tensor k_pe_new = compressed.narrow(-1, kv_rank_, rope_).view({B, S, 1, rope_}).transpose(1, 2);
  cache.rope_key.narrow(1, start, S).copy_(apply_rotary(k_pe_new, rope).squeeze(1));
  const at::Tensor latent = cache.latent.narrow(1, 0, T).unsqueeze(1);  // [B, 1, T, rank]
  const at::Tensor k_pe = cache.rope_key.narrow(1, 0, T).unsqueeze(1);  // [B, 1, T, rope]

  auto attend = [&](const at::Tensor& scores) {
    at::Tensor masked = (scores * scale_).masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
    return at::softmax(masked, -1, accumulate_dtype(masked)).to(x.scalar_type());
  };
  at::Tensor out;  // [B, H, S, v]
  if (mode == MlaDecode::kAbsorbed) {
    // kv_b_proj.weight [H*(nope+v), rank] = per head [W_UK; W_UV]: q_nope . (W_UK c) = (W_UK^T q_nope) . c,
    // and W_UV is applied once to the attention-weighted latent instead of to every position.
    const at::Tensor w = kv_b_proj->weight.view({heads_, nope_ + v_, kv_rank_});
    const at::Tensor w_uk = w.narrow(1, 0, nope_);         // [H, nope, rank]
    const at::Tensor w_uv = w.narrow(1, nope_, v_);        // [H, v, rank]
    const at::Tensor q_latent = at::matmul(q_nope, w_uk);  // [B, H, S, rank]
    const at::Tensor probs =
        attend(at::matmul(q_latent, latent.transpose(2, 3)) + at::matmul(q_pe, k_pe.transpose(2, 3)));
    out = at::matmul(at::matmul(probs, latent), w_uv.transpose(1, 2));
  } else {
    const at::Tensor kv = kv_b_proj(latent.squeeze(1)).view({B, T, heads_, nope_ + v_}).transpose(1, 2);
    const at::Tensor key = at::cat({kv.narrow(-1, 0, nope_), k_pe.expand({B, heads_, T, rope_})}, -1);
    const at::Tensor query = at::cat({q_nope, q_pe}, -1);
    out = at::matmul(attend(at::matmul(query, key.transpose(2, 3))), kv.narrow(-1, nope_, v_));
  }
  return o_proj(out.transpose(1, 2).reshape({B, S, heads_ * v_}));
}

}  // namespace coe
