#include "coe/model/moe.h"

#include <ATen/ATen.h>

namespace coe {

MoeBlockImpl::MoeBlockImpl(const ModelConfig& c) : dispatch_(default_dispatch()) {
  if (c.use_igate) {
    gates = register_module("gate", torch::nn::ModuleList());
    for (int64_t t = 0; t < c.inner_iter; ++t) gates->push_back(Router(c));
  } else {
    shared_gate = register_module("gate", Router(c));
  }
  experts = register_module(
      "experts", RoutedExperts(c.n_routed_experts, c.hidden_size, c.moe_intermediate_size, c.initializer_range));
  if (c.n_shared_experts > 0)
    shared_experts =
        register_module("shared_experts", SwiGluMlp(c.hidden_size, c.moe_intermediate_size * c.n_shared_experts));
}

Router MoeBlockImpl::router(int64_t iteration) const { return gates ? gates->ptr<RouterImpl>(iteration) : shared_gate; }

MoeOutput MoeBlockImpl::forward(const torch::Tensor& x, int64_t iteration) {
  Routing routing = router(iteration)->forward(x);
  at::Tensor flat = x.reshape({-1, x.size(-1)});
  at::Tensor y = dispatch_->run(flat, routing.topk_idx, routing.topk_weight, experts->weights()).view(x.sizes());
  if (shared_experts) y = y + shared_experts(x);
  return {y, routing.aux_loss, routing.topk_idx, routing.scores};
}

}  // namespace coe
