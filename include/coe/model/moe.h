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
  torch::Tensor y;  // [B, S, H]
  Routing routing;  // of the B*S tokens, with the router's losses
};

// While one is alive on this thread, MoE blocks record no expert load: activation checkpointing's
// backward runs a layer's forward again, and that routing was counted the first time.
class ExpertLoadPause {
 public:
  ExpertLoadPause();
  ~ExpertLoadPause();
  ExpertLoadPause(const ExpertLoadPause&) = delete;
  ExpertLoadPause& operator=(const ExpertLoadPause&) = delete;
  static bool active();
};

class MoeBlockImpl : public torch::nn::Module {
 public:
  explicit MoeBlockImpl(const ModelConfig& config);
  MoeOutput forward(const torch::Tensor& x, int64_t iteration);
  Router router(int64_t iteration) const;
  void set_dispatch(std::shared_ptr<ExpertDispatch> dispatch) { dispatch_ = std::move(dispatch); }

  // Expert load: while tracking, every forward in training mode adds the token slots each expert
  // receives at iteration t to row t of an int64 [C, E] count on the device (no host sync).
  void set_load_tracking(bool on) { track_load_ = on; }
  // The counts since the last call (zeros when nothing was recorded), on `device` if none exist
  // yet; the count restarts.
  torch::Tensor take_load(const c10::Device& device);
  // Aux-loss-free balancing: each router's bias moves against its load (RouterImpl::update_bias);
  // `load` [C, E] as take_load returns it. A shared router (use_igate: false) balances the load of
  // all iterations together.
  void update_router_bias(const torch::Tensor& load, double rate);

  // Registered as "gate" (a list of routers with use_igate, else one router), "experts" and
  // "shared_experts", matching the reference's parameter names.
  torch::nn::ModuleList gates{nullptr};
  Router shared_gate{nullptr};
  RoutedExperts experts{nullptr};
  SwiGluMlp shared_experts{nullptr};

 private:
  std::shared_ptr<ExpertDispatch> dispatch_;
  int64_t iterations_, experts_;
  bool track_load_ = false;
  torch::Tensor load_;  // [C, E] int64, created by the first counted forward
};
TORCH_MODULE(MoeBlock);

}  // namespace coe
