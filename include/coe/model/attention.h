#pragma once
// Multi-head latent attention (DeepSeek-V2): queries from hidden (optionally through a low-rank
// q-LoRA with its own RMSNorm), keys/values from a compressed latent of rank kv_lora_rank plus
// one shared rope key per position.
#include "coe/model/config.h"
#include "coe/model/kv_cache.h"
#include "coe/model/layers.h"

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

namespace coe {

class MlaAttentionImpl : public torch::nn::Module {
 public:
  explicit MlaAttentionImpl(const ModelConfig& config);
  // x [B, S, hidden] -> [B, S, hidden]; causal.
  torch::Tensor forward(const torch::Tensor& x, const RotaryTables& rope);
  // One step of incremental decoding: x [B, S, hidden] holds the tokens of slots
  // [start, start + S); their latents and rope keys are written into `cache`, and they attend to
  // slots [0, start + S) where `allowed` [B, 1, S, start + S] is true. `rope` holds each new
  // token's own cos / sin, [B, 1, S, rope_dim].
  torch::Tensor forward_cached(const torch::Tensor& x, const RotaryTables& rope, MlaLayerCache& cache, int64_t start,
                               const torch::Tensor& allowed, MlaDecode mode);

  torch::nn::Linear q_proj{nullptr}, q_a_proj{nullptr}, q_b_proj{nullptr};
  RMSNorm q_a_layernorm{nullptr};
  torch::nn::Linear kv_a_proj_with_mqa{nullptr}, kv_b_proj{nullptr}, o_proj{nullptr};
  RMSNorm kv_a_layernorm{nullptr};
  // forward()'s attention. kSdpa: at::scaled_dot_product_attention. kExplicit: the reference's
  // masked softmax, which the tests hold SDPA to. kAuto: SDPA where torch has a fused kernel for
  // these head dims (CUDA; the CPU's flash kernel needs query, key and value of one head dim), else
  // the explicit softmax: on the CPU it beats SDPA's math path, and at 2 threads also the flash
  // kernel on zero-padded values (docs/performance.md).
  enum class Backend { kAuto, kSdpa, kExplicit };
  Backend backend = Backend::kAuto;
  // Whether forward() runs SDPA for tensors on `device`.
  bool uses_sdpa(const c10::Device& device) const;

 private:
  int64_t heads_, nope_, rope_, v_, kv_rank_;
  double scale_;
};
TORCH_MODULE(MlaAttention);

// Backend::kAuto's rule (the memory model estimates by it too): SDPA where torch has a fused kernel
// for these head dims, on CUDA, and on the CPU when query/key and value share one head dim.
inline bool auto_attention_uses_sdpa(int64_t qk_head_dim, int64_t v_head_dim, bool cuda) {
  return cuda || qk_head_dim == v_head_dim;
}

}  // namespace coe
