#pragma once
// The pieces of one optimizer step, usable on their own (tests, notebooks, other drivers):
// host batches -> device tensors, gradient accumulation over micro-batches, global-norm clipping,
// evaluation, and locating the first non-finite layer.
//
// Accumulation semantics. A global batch of R rows is split into micro-batches; micro-batch i has
// r_i rows and n_i counted labels (labels[:, 1:] != -100, counted on the host from the TokenBatch,
// so no device synchronisation), N = sum n_i. Each micro-batch backpropagates
//     loss_i * n_i / N  +  aux_i * r_i / R
// so the LM gradient is exactly that of the mean loss over all counted tokens of the global batch
// (as if it had been one batch), whatever the padding. The aux term is the row-weighted mean of
// the micro-batches' aux losses: exact for seq_aux routers (their loss is a mean over sequences);
// for token-level aux loss (seq_aux: false) the load statistics are per micro-batch, so the
// result approximates the big-batch loss (the mean of the fractions' products differs from the
// product of the means), as under any gradient accumulation.
#include "coe/data/batch.h"
#include "coe/data/loader.h"
#include "coe/train/adamw.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

namespace coe {

class CausalLMImpl;

// Labels that count in the loss: labels[b, s] != kIgnoreLabel for s >= 1 (the model shifts).
int64_t count_loss_tokens(const TokenBatch& batch);
// Rows [first, first + count) of `batch`.
TokenBatch slice_rows(const TokenBatch& batch, int64_t first, int64_t count);
// Consecutive micro-batches of `micro_batch` rows (the last one shorter if it does not divide).
std::vector<TokenBatch> split_micro_batches(const TokenBatch& batch, int64_t micro_batch);

// int64 [B, S] tensors on `device`.
struct DeviceBatch {
  at::Tensor input_ids, labels;
};
DeviceBatch to_device(const TokenBatch& batch, const c10::Device& device);

struct AccumulationResult {
  at::Tensor loss;          // scalar float32 on the device, detached: mean LM loss over the N tokens
  at::Tensor aux_loss;      // scalar float32 on the device, detached: row-weighted mean aux loss
  int64_t loss_tokens = 0;  // N
  int64_t tokens = 0;       // positions processed: sum r_i * seq_len
  int64_t rows = 0;         // R
};

// Forward and backward of every micro-batch (model in training mode); gradients add up in each
// parameter's .grad() (call AdamW::zero_grad() first). `bf16_autocast`: forward under CUDA
// autocast to bfloat16 (backward outside it, as torch recommends).
AccumulationResult accumulate_gradients(CausalLMImpl& model, const std::vector<TokenBatch>& micro_batches,
                                        const c10::Device& device, bool bf16_autocast = false);

// Global L2 norm of the gradients before clipping (float32 scalar on the device); when
// max_norm > 0 scales every gradient by min(1, max_norm / (norm + 1e-6)) as
// torch.nn.utils.clip_grad_norm_. No host synchronisation.
at::Tensor clip_grad_norm(const std::vector<NamedParameter>& params, double max_norm);

struct EvalResult {
  double loss = 0.0;   // mean LM loss over all counted tokens (token-weighted across batches)
  int64_t tokens = 0;  // counted tokens
  int64_t rows = 0;
  int64_t batches = 0;
};
// One pass of `loader` (reset first) in eval mode without gradients; restores training mode.
EvalResult evaluate(CausalLMImpl& model, SequentialLoader& loader, const c10::Device& device, bool bf16_autocast = false);

// After a non-finite loss or gradient norm: the first parameter holding a non-finite value, else
// the first decoder layer whose forward output (or aux loss) on these micro-batches is non-finite,
// else a note that the forward is finite (the overflow is in backward). One line. Costs one extra
// forward per micro-batch; only meant for the failure path.
std::string diagnose_non_finite(CausalLMImpl& model, const std::vector<NamedParameter>& params,
                                const std::vector<TokenBatch>& micro_batches, const c10::Device& device,
                                bool bf16_autocast = false);

}  // namespace coe
