#include "coe/model/moe.h"

#include <ATen/ATen.h>

namespace coe {
namespace {

thread_local int load_pause_depth = 0;

}  // namespace

ExpertLoadPause::ExpertLoadPause() { ++load_pause_depth; }
ExpertLoadPause::~ExpertLoadPause() { --load_pause_depth; }
bool ExpertLoadPause::active() { return load_pause_depth > 0; }

MoeBlockImpl::MoeBlockImpl(const ModelConfig& c)
    : dispatch_(default_dispatch()), iterations_(c.inner_iter), experts_(c.n_routed_experts) {
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
  if (track_load_ && is_training() && !ExpertLoadPause::active()) {
    torch::NoGradGuard no_grad;
    if (!load_.defined()) load_ = at::zeros({iterations_, experts_}, x.options().dtype(at::kLong));
    // scatter_add, not bincount: bincount reads the largest index on the host.
    const at::Tensor idx = routing.topk_idx.reshape(-1);
    load_[iteration].scatter_add_(0, idx, at::ones_like(idx));
  }
  at::Tensor flat = x.reshape({-1, x.size(-1)});
  at::Tensor y = dispatch_->run(flat, routing.topk_idx, routing.topk_weight, experts->weights()).view(x.sizes());
  if (shared_experts) y = y + shared_experts(x);
  return {y, std::move(routing)};
}

torch::Tensor MoeBlockImpl::take_load(const c10::Device& device) {
  at::Tensor out =
      load_.defined() ? load_ : at::zeros({iterations_, experts_}, at::TensorOptions(device).dtype(at::kLong));
  load_ = at::Tensor();
  return out;
}

void MoeBlockImpl::update_router_bias(const torch::Tensor& load, double rate) {
  if (gates) {
    for (int64_t t = 0; t < iterations_; ++t) router(t)->update_bias(load[t], rate);
  } else {
    shared_gate->update_bias(load.sum(0), rate);
  }
}

}  // namespace coe
