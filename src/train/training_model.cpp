#include "coe/train/training_model.h"

#include "coe/model/experts.h"

#include <ATen/ATen.h>

namespace coe {

TrainingModel build_model_and_optimizer(const TrainConfig& config, const c10::Device& device) {
  TrainingModel t;
  at::manual_seed(config.trainer.seed);
  t.model = CausalLM(config.model);
  t.model->to(device);
  t.model->train();
  t.model->set_activation_checkpointing(config.trainer.activation_checkpointing);
  const auto dispatch = make_dispatch(config.trainer.expert_dispatch);
  t.model->set_dispatch(dispatch);
  t.dispatch = dispatch->name();
  for (const auto& p : t.model->parameters()) t.params += p.numel();
  t.optimizer =
      std::make_unique<AdamW>(optimizer_parameters(*t.model, config.optim.decay), AdamWOptions::from(config.optim));
  return t;
}

}  // namespace coe
