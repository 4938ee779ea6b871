#include "coe/train/training_model.h"

#include "coe/model/experts.h"
#include "coe/train/expert_parallel.h"
#include "coe/train/memory_model.h"

#include <ATen/ATen.h>

namespace coe {

TrainingModel build_model_and_optimizer(const TrainConfig& config, const c10::Device& device, DistContext& job,
                                        ParallelLayout layout) {
  TrainingModel t;
  at::manual_seed(config.trainer.seed);
  t.model = CausalLM(config.model);
  std::shared_ptr<ExpertDispatch> dispatch = make_dispatch(config.trainer.expert_dispatch);
  if (layout.experts_split()) {
    t.model->keep_experts(layout.first_expert, layout.experts_per_rank);
    dispatch = std::make_shared<ExpertParallelDispatch>(layout.expert_group, config.model.n_routed_experts, dispatch);
  }
  t.model->to(device);
  t.model->train();
  t.model->set_activation_checkpointing(config.trainer.activation_checkpointing);
  t.model->set_dispatch(dispatch);
  t.dispatch = dispatch->name();
  t.params = count_parameters(config.model).total();
  GradReducerOptions reducer;
  reducer.bucket_mb = config.trainer.dist_bucket_mb;
  reducer.overlap = config.trainer.dist_overlap;
  t.optimizer = std::make_unique<DistributedOptimizer>(job, std::move(layout), config.parallel, t.model,
                                                       optimizer_parameters(*t.model, config.optim.decay),
                                                       AdamWOptions::from(config.optim), reducer);
  return t;
}

}  // namespace coe
