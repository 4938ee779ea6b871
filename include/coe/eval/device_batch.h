#pragma once
// A batch of the data library (TokenBatch, host int32) as the model takes it: what evaluation and
// the training step both feed the model.
#include "coe/data/batch.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>

namespace coe {

// Labels that count in the loss: labels[b, s] != kIgnoreLabel for s >= 1 (the model shifts).
// Counted on the host, so no device synchronisation.
int64_t count_loss_tokens(const TokenBatch& batch);

// int64 [B, S] tensors on `device`.
struct DeviceBatch {
  at::Tensor input_ids, labels;
};
DeviceBatch to_device(const TokenBatch& batch, const c10::Device& device);

}  // namespace coe
