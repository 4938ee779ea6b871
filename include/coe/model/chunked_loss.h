#pragma once
// Fused lm_head + cross-entropy over chunks of tokens: the [tokens, vocab] logits never exist at
// once (32,768 x 102,400 fp32 logits would be 13.4 GB). The gradient with respect to the hidden
// states and the head weight is computed in the same pass, chunk by chunk, so backward is a scale.
#include <ATen/core/Tensor.h>

namespace coe {

// hidden [N, H], weight [V, H], labels [N] int64 (-100 = ignored) -> mean cross-entropy over the
// counted labels (float32 scalar), differentiable in hidden and weight. Logits are computed in
// float32 per chunk of `chunk_tokens` rows.
at::Tensor chunked_linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                        int64_t chunk_tokens = 2048);

}  // namespace coe
