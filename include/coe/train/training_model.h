#pragma once
// The model a run trains and its optimizer, built one way for coe-train, coe-bench and
// coe-memory --measure: weights drawn from torch's generator seeded with trainer.seed, moved to
// the device, in training mode, with the run's expert dispatch and activation checkpointing, and
// AdamW over its parameters (optim.decay groups).
#include "coe/model/causal_lm.h"
#include "coe/train/adamw.h"
#include "coe/train/distributed_optimizer.h"
#include "coe/train/train_config.h"

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>

namespace coe {

struct TrainingModel {
  CausalLM model{nullptr};
  std::unique_ptr<AdamW> optimizer;
  std::string dispatch;  // the expert dispatch trainer.expert_dispatch resolved to
  int64_t params = 0;
};

// config.model.vocab_size must be resolved (model_vocab.h).
TrainingModel build_model_and_optimizer(const TrainConfig& config, const c10::Device& device);

// The model alone, as build_model_and_optimizer makes it; with `layout` splitting the experts,
// the whole model is initialised (the same weights as one process) and this rank keeps its
// experts, reached through an ExpertParallelDispatch over the layout's expert group.
// `dispatch_name` receives the dispatch's name.
CausalLM build_training_model(const TrainConfig& config, const c10::Device& device, const ParallelLayout* layout,
                              std::string* dispatch_name);

}  // namespace coe
