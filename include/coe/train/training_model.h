#pragma once
// The model a run trains and its optimizer, built one way for coe-train, coe-bench and
// coe-memory --measure: weights drawn from torch's generator seeded with trainer.seed, moved to
// the device, in training mode, with the run's expert dispatch and activation checkpointing, and
// the optimizer step over the job's ranks (DistributedOptimizer: AdamW or ZeRO-1 over its
// parameters' optim.decay groups, gradients reduced with trainer.dist_bucket_mb / dist_overlap).
#include "coe/distributed/context.h"
#include "coe/model/causal_lm.h"
#include "coe/train/distributed_optimizer.h"
#include "coe/train/train_config.h"

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>

namespace coe {

struct TrainingModel {
  CausalLM model{nullptr};
  std::unique_ptr<DistributedOptimizer> optimizer;
  std::string dispatch;  // the expert dispatch trainer.expert_dispatch resolved to
  int64_t params = 0;    // of the whole model (a rank of expert parallelism holds fewer)
};

// config.model.vocab_size must be resolved (model_vocab.h). `layout` (ParallelLayout::create over
// `job`) places this rank's part: with the experts split, the whole model is initialised (the
// same weights as one process) and this rank keeps its experts, reached through an
// ExpertParallelDispatch over the layout's expert group. One process: a default DistContext and
// its layout.
TrainingModel build_model_and_optimizer(const TrainConfig& config, const c10::Device& device, DistContext& job,
                                        ParallelLayout layout);

}  // namespace coe
