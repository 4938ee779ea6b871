#include "coe/eval/device_batch.h"

#include "coe/util/error.h"
#include "coe/util/ignore_label.h"

#include <ATen/ATen.h>

namespace coe {

int64_t count_loss_tokens(const TokenBatch& batch) {
  int64_t n = 0;
  for (int64_t b = 0; b < batch.batch_size; ++b) {
    const int32_t* row = batch.labels.data() + b * batch.seq_len;
    for (int64_t s = 1; s < batch.seq_len; ++s) n += row[s] != kIgnoreLabel;
  }
  return n;
}

DeviceBatch to_device(const TokenBatch& batch, const c10::Device& device) {
  const size_t expected = static_cast<size_t>(batch.batch_size * batch.seq_len);
  if (batch.input_ids.size() != expected || batch.labels.size() != expected)
    fail("batch: {} ids / {} labels for {} rows of {} tokens", batch.input_ids.size(), batch.labels.size(),
         batch.batch_size, batch.seq_len);
  // ids and labels in one int64 tensor, one copy. For CUDA it is pinned and copied asynchronously:
  // a copy from pageable memory would make the host wait for all queued GPU work (once per
  // micro-batch); the pinned block is not reused before the copy is done (caching host allocator).
  const bool cuda = device.is_cuda();
  at::Tensor host =
      at::empty({2, batch.batch_size, batch.seq_len}, at::TensorOptions().dtype(at::kLong).pinned_memory(cuda));
  int64_t k = 0;
  for (const auto* v : {&batch.input_ids, &batch.labels})
    host[k++].copy_(at::from_blob(const_cast<int32_t*>(v->data()), {batch.batch_size, batch.seq_len}, at::kInt));
  const at::Tensor on_device = host.to(device, /*non_blocking=*/cuda);
  return {on_device[0], on_device[1]};
}

}  // namespace coe
