#pragma once
// The DeepSeek-V2 MoE block as one CoE iteration: route, run K routed experts, add the shared
// experts. A CoE layer calls it C times; with use_igate every iteration has its own router.
#include "coe/model/config.h"
#include "coe/model/experts.h"
#include "coe/model/layers.h"
#include "coe/model/router.h"

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <memory>

namespace coe {

struct MoeOutput {
  torch::Tensor y;         // [B, S, H]
  torch::Tensor aux_loss;  // scalar or undefined
  torch::Tensor topk_idx;  // [B*S, K]
  torch::Tensor scores;    // [B*S, E]
};

class MoeBlockImpl : public torch::nn::Module {
 public:
  explicit MoeBlockImpl(const ModelConfig& config);
  MoeOutput forward(const torch::Tensor& x, int64_t iteration);
  Router router(int64_t iteration) const;
  void set_dispatch(std::shared_ptr<ExpertDispatch> dispatch) { dispatch_ = std::move(dispatch); }

  // Registered as "gate" (a list of routers with use_igate, else one router), "experts" and
  // "shared_experts", matching the reference's parameter names.
  torch::nn::ModuleList gates{nullptr};
  Router shared_gate{nullptr};
  RoutedExperts experts{nullptr};
  SwiGluMlp shared_experts{nullptr};

 private:
  std::shared_ptr<ExpertDispatch> dispatch_;
};
TORCH_MODULE(MoeBlock);

}  // namespace coe
