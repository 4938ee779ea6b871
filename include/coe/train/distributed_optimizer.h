#pragma once
// DistributedOptimizer: how the ranks of a job share one optimizer step (docs/distributed.md),
// for the three layouts of the parallel: section and their combinations:
//
//   data parallel     every rank holds the whole model; gradients all-reduced (GradReducer,
//                     overlapped with backward); AdamW on every rank
//   expert parallel   groups of E consecutive ranks split the routed experts (rank q of a group:
//                     experts [q N/E, (q+1) N/E), tokens exchanged by ExpertParallelDispatch);
//                     expert gradients all-reduced over the W/E ranks holding the same experts,
//                     the rest over all W
//   sharded (ZeRO-1)  ShardedAdamW: gradients reduce-scattered, moments split, parameters
//                     all-gathered, within each parameter's data-parallel group
//
// Whatever the layout, checkpoints hold the whole model in one process's layout: full_state()
// gathers it, load_state() takes this rank's part, so a run resumes under any layout.
#include "coe/distributed/context.h"
#include "coe/distributed/grad_reducer.h"
#include "coe/model/causal_lm.h"
#include "coe/train/adamw.h"
#include "coe/train/checkpoint.h"
#include "coe/train/train_config.h"

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace coe {

class ShardedAdamW;  // train/sharded_adamw.h

// Which ranks share what: the groups a rank belongs to (collective to create: every rank of the job).
struct ParallelLayout {
  int64_t expert_parallel = 1;  // E
  int64_t first_expert = 0, experts_per_rank = 0;
  std::shared_ptr<DistContext> expert_group;  // the E ranks exchanging tokens (this rank's expert-parallel group)
  std::shared_ptr<DistContext> expert_data;   // the W/E ranks holding this rank's experts

  // Checks E against the world size (an error naming parallel.expert_parallel and `source`; the
  // config checked it against n_routed_experts) and creates the groups.
  static ParallelLayout create(DistContext& job, const ParallelConfig& parallel, const ModelConfig& model,
                               const std::string& source);
  bool experts_split() const { return expert_parallel > 1; }
};

class DistributedOptimizer {
 public:
  // `model` already holds this rank's experts (CausalLMImpl::keep_experts) when experts are split.
  DistributedOptimizer(DistContext& job, ParallelLayout layout, const ParallelConfig& parallel, CausalLM model,
                       std::vector<NamedParameter> params, AdamWOptions options, GradReducerOptions reducer);
  ~DistributedOptimizer();

  // Before each backward of an accumulation (`last`: the final one).
  void before_backward(bool last);
  // After the last backward: gradients summed over the ranks (or reduce-scattered), the global
  // norm over the whole model's gradients, clipped to max_norm (> 0). Returns the norm (float32 scalar).
  at::Tensor reduce_and_clip(double max_norm);
  void step(double lr);
  void zero_grad();
  // Collective: the first non-finite parameter or moment on any rank, "" if none.
  std::string first_non_finite();
  // Collective: every rank starts from rank 0's parameters (experts: from the first rank holding them).
  void broadcast_parameters(double bucket_mb);
  // Collective: the name of a parameter whose replicas differ between ranks, "" if none.
  std::string first_mismatch();
  // Collective: the whole model's weights and optimizer state (meaningful on job rank 0).
  CheckpointTensors full_state();
  // This rank's part of a whole model's optimizer state (read_checkpoint's loader).
  void load_state(const std::map<std::string, at::Tensor>& tensors, const std::string& source);

  const std::vector<NamedParameter>& parameters() const;
  const ParallelLayout& layout() const { return layout_; }
  bool sharded() const { return static_cast<bool>(sharded_); }
  // Communication summary of the gradient reduction (data-parallel reducers).
  const GradReducerStats* reducer_stats() const;
  int64_t reducer_buckets() const;

 private:
  DistContext& job_;
  ParallelLayout layout_;
  CausalLM model_;
  std::vector<bool> split_expert_;  // per parameter: experts split over the expert group
  std::unique_ptr<AdamW> adamw_;
  std::unique_ptr<ShardedAdamW> sharded_;
  std::unique_ptr<GradReducer> dense_reducer_, expert_reducer_;
};

}  // namespace coe
