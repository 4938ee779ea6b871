#include "coe/train/training_model.h"

#include "coe/model/experts.h"
#include "coe/train/expert_parallel.h"

#include <ATen/ATen.h>

namespace coe {

CausalLM build_training_model(const TrainConfig& config, const c10::Device& device, const ParallelLayout* layout,
                              std::string* dispatch_name) {
  at::manual_seed(config.trainer.seed);
  CausalLM model(config.model);
  std::shared_ptr<ExpertDispatch> dispatch = make_dispatch(config.trainer.expert_dispatch);
  if (layout && layout->experts_split()) {
    model->keep_experts(layout->first_expert, layout->experts_per_rank);
    dispatch = std::make_shared<ExpertParallelDispatch>(layout->expert_group, config.model.n_routed_experts, dispatch);
  }
  model->to(device);
  model->train();
  model->set_activation_checkpointing(config.trainer.activation_checkpointing);
  model->set_dispatch(dispatch);
  if (dispatch_name) *dispatch_name = dispatch->name();
  return model;
}

TrainingModel build_model_and_optimizer(const TrainConfig& config, const c10::Device& device) {
  TrainingModel t;
  t.model = build_training_model(config, device, nullptr, &t.dispatch);
  for (const auto& p : t.model->parameters()) t.params += p.numel();
  t.optimizer =
      std::make_unique<AdamW>(optimizer_parameters(*t.model, config.optim.decay), AdamWOptions::from(config.optim));
  return t;
}

}  // namespace coe
