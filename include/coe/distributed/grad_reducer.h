#pragma once
// GradReducer: sums every parameter's gradient over the ranks of a DistContext, in flat float32
// buckets of ~bucket_mb MB, overlapped with the last backward pass of an accumulation.
//
// Buckets hold the parameters in reverse registration order (the order backward produces their
// gradients). During the accumulation's last backward (arm(true)), a post-hook on each parameter's
// gradient accumulator counts it ready; when a bucket's parameters are all ready and every earlier
// bucket has been launched, the bucket is copied into its flat buffer and its all-reduce starts
// asynchronously (Gloo's threads / NCCL's stream) while backward goes on with earlier layers.
// Launching strictly in bucket order keeps the collectives in the same order on every rank,
// whatever the routing did. finish() launches what the hooks did not (parameters without a
// gradient in the last micro-batch), waits for all, and writes the sums back into .grad().
//
// Exactness: a parameter's gradient is summed as float32 (master gradients are float32, also under
// bf16 autocast). A parameter with no gradient on a rank contributes zeros, and one with no
// gradient on any rank keeps an undefined .grad() (a per-parameter count travels in the bucket), so
// AdamW skips it exactly as a single process would.
//
// Overlap needs each parameter's accumulator to run once per backward (true for coe's models, also
// with activation checkpointing: a layer's parameters accumulate once, inside its recomputation).
// Should one run again after its bucket was sent, backward throws an error that names
// trainer.dist_overlap (false: every bucket is sent after backward) rather than use a stale sum.
//
// With one process (a context that is not distributed) it holds no bucket and every call does
// nothing: the trainer's step calls it the same way whatever the world size.
#include "coe/distributed/context.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace coe {

struct GradReducerOptions {
  double bucket_mb = 25;  // trainer.dist_bucket_mb
  bool overlap = true;    // launch buckets from backward hooks (else all after backward)
};

struct GradReducerStats {
  int64_t buckets = 0;
  int64_t launched_by_hooks = 0;  // in the last finish(): buckets launched during backward
  double wait_s = 0;              // in the last finish(): time spent waiting for communication
  double total_wait_s = 0;        // summed over all finish() calls
  int64_t reductions = 0;         // finish() calls
};

class GradReducer {
 public:
  // `params`: the model's parameters (every rank the same list, same order). With a single-process
  // context the reducer does nothing.
  GradReducer(DistContext& context, std::vector<at::Tensor> params, GradReducerOptions options = {});
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // Before each backward of an accumulation: `last` is true for the final one, whose gradient
  // accumulations launch the buckets.
  void arm(bool last);
  // After the last backward: every gradient is the sum over ranks (undefined where no rank had one).
  void finish();

  const GradReducerStats& stats() const { return stats_; }
  int64_t num_buckets() const;

 private:
  struct Bucket;
  struct Hook;
  void on_accumulated(size_t param);
  void launch(size_t bucket);
  void launch_ready_prefix();

  DistContext& ctx_;
  std::vector<at::Tensor> params_;
  GradReducerOptions options_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;                    // parameter -> bucket
  std::vector<int> fired_;                           // parameter -> accumulations seen in the armed backward
  std::vector<std::shared_ptr<void>> accumulators_;  // keep the hooked gradient accumulators alive
  std::vector<uintptr_t> hook_keys_;
  bool armed_ = false;
  size_t next_launch_ = 0;
  GradReducerStats stats_;
};

}  // namespace coe
