#pragma once
// The language-modelling loss, in one place. Fused lm_head + cross-entropy over chunks of tokens:
// the [tokens, vocab] logits never exist at once (32,768 x 102,400 fp32 logits would be 13.4 GB).
// The gradient with respect to the hidden states and the head weight is computed in the same
// pass, chunk by chunk, so backward is a scale. And the same loss from materialised logits.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>

namespace coe {

// hidden [N, H], weight [V, H], labels [N] int64 (kIgnoreLabel = ignored) -> mean cross-entropy over the
// counted labels (float32 scalar), differentiable in hidden and weight. Logits are computed in
// float32 per chunk of `chunk_tokens` rows (<= 0: default_loss_chunk_tokens for hidden's device).
at::Tensor chunked_linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                        int64_t chunk_tokens = 0);

// Next-token cross-entropy from logits [B, S, V] and labels [B, S] (kIgnoreLabel = ignored):
// position t predicts labels[:, t + 1]. Per token [B, S - 1] (0 where ignored), and the mean over
// the counted labels (at::cross_entropy_loss's own mean, differentiable in logits).
at::Tensor shifted_cross_entropy_per_token(const at::Tensor& logits, const at::Tensor& labels);
at::Tensor shifted_cross_entropy(const at::Tensor& logits, const at::Tensor& labels);

// Rows per chunk: 2048 on CUDA (large GEMMs; the caching allocator reuses the buffer). On CPU a
// chunk's logits are kept under 24 MiB: glibc's heap reuses blocks up to 32 MiB, and a larger
// buffer is a fresh mmap each chunk whose page faults cost more than the GEMM (a 50k vocabulary
// with 2048-row chunks trained 3x slower than with 125-row ones).
int64_t default_loss_chunk_tokens(int64_t vocab_size, const c10::Device& device);

}  // namespace coe
