#pragma once
// The pieces of one optimizer step, usable on their own (tests, notebooks, other drivers):
// host batches -> device tensors, gradient accumulation over micro-batches, global-norm clipping,
// and locating the first non-finite layer. (Evaluation: evaluate.h.)
//
// Accumulation semantics. A global batch of R rows is split into micro-batches; micro-batch i has
// r_i rows and n_i counted labels (labels[:, 1:] != kIgnoreLabel, counted on the host from the TokenBatch,
// so no device synchronisation), N = sum n_i. Each micro-batch backpropagates
//     loss_i * n_i / N  +  (sum of its router losses) * r_i / R
// so the LM gradient is exactly that of the mean loss over all counted tokens of the global batch
// (as if it had been one batch), whatever the padding. The aux term is the row-weighted mean of
// the micro-batches' router losses: exact for seq_aux routers (their loss is a mean over sequences)
// and for the router z-loss (a mean over tokens, and every row has the same length);
// for token-level aux loss (seq_aux: false) the load statistics are per micro-batch, so the
// result approximates the big-batch loss (the mean of the fractions' products differs from the
// product of the means), as under any gradient accumulation.
//
// Data parallelism (docs/distributed.md): each rank passes the counts of the whole global batch
// (N and R summed over all ranks) as AccumulationOptions::global_loss_tokens / global_rows, so that
// the gradients summed over the ranks are exactly those of one process holding the global batch.
#include "coe/data/batch.h"
#include "coe/data/loader.h"
#include "coe/eval/device_batch.h"
#include "coe/model/router.h"
#include "coe/train/adamw.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace coe {

class CausalLMImpl;

// Rows [first, first + count) of `batch`.
TokenBatch slice_rows(const TokenBatch& batch, int64_t first, int64_t count);
// Consecutive micro-batches of `micro_batch` rows (the last one shorter if it does not divide).
std::vector<TokenBatch> split_micro_batches(const TokenBatch& batch, int64_t micro_batch);

struct AccumulationResult {
  // Scalars float32 on the device, detached: mean LM loss over the N tokens, and the row-weighted
  // mean of each router loss. With global counts (AccumulationOptions) they are this rank's
  // share: their sums over the ranks are the global batch's values.
  at::Tensor loss;
  RouterLosses router_losses;  // every term defined
  int64_t loss_tokens = 0;     // this call's counted labels (N when not distributed)
  int64_t tokens = 0;          // positions processed: sum r_i * seq_len
  int64_t rows = 0;            // this call's rows (R when not distributed)
};

// What a rank's micro-batches hold: counted labels (N), rows (R) and positions; summed over the
// ranks they are AccumulationOptions' normalisers.
struct BatchCounts {
  int64_t loss_tokens = 0, rows = 0, tokens = 0;
};
BatchCounts count_batches(const std::vector<TokenBatch>& micro_batches);

struct AccumulationOptions {
  bool bf16_autocast = false;  // forward under the device's autocast (CUDA or CPU) to bfloat16
  // The normalisers N and R: counted labels and rows of the whole global batch, over all ranks.
  // 0: this call's own (a single process).
  int64_t global_loss_tokens = 0;
  int64_t global_rows = 0;
  // Called before each micro-batch's backward with its index and whether it is the last
  // micro-batch (data parallelism: arms the gradient reducer's hooks for the last backward).
  std::function<void(size_t index, bool last)> before_backward;
};

// Forward and backward of every micro-batch (model in training mode); gradients add up in each
// parameter's .grad() (call AdamW::zero_grad() first). `bf16_autocast`: forward under the device's
// autocast to bfloat16 (backward outside it, as torch recommends).
AccumulationResult accumulate_gradients(CausalLMImpl& model, const std::vector<TokenBatch>& micro_batches,
                                        const c10::Device& device, bool bf16_autocast = false);
AccumulationResult accumulate_gradients(CausalLMImpl& model, const std::vector<TokenBatch>& micro_batches,
                                        const c10::Device& device, const AccumulationOptions& options);

// Global L2 norm of the gradients before clipping (float32 scalar on the device); when
// max_norm > 0 scales every gradient by min(1, max_norm / (norm + 1e-6)) as
// torch.nn.utils.clip_grad_norm_. No host synchronisation.
at::Tensor clip_grad_norm(const std::vector<NamedParameter>& params, double max_norm);
// The clipping itself, given the global norm `total` (float32 scalar on the gradients' device):
// with max_norm > 0 scales every tensor of `grads` by min(1, max_norm / (total + 1e-6)). For the
// layouts where the norm is summed over ranks (expert parallelism, ZeRO-1).
void scale_to_max_norm(const std::vector<at::Tensor>& grads, const at::Tensor& total, double max_norm);

// After a non-finite loss or gradient norm: the first parameter holding a non-finite value, else
// the first decoder layer whose forward output (or aux loss) on these micro-batches is non-finite,
// else a note that the forward is finite (the overflow is in backward). One line. Costs one extra
// forward per micro-batch; only meant for the failure path.
std::string diagnose_non_finite(CausalLMImpl& model, const std::vector<NamedParameter>& params,
                                const std::vector<TokenBatch>& micro_batches, const c10::Device& device,
                                bool bf16_autocast = false);

}  // namespace coe
