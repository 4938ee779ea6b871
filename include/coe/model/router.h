#pragma once
// The MoE router (the reference's MoEGate): float32 softmax scores, greedy or group-limited
// top-k, optional renormalisation or routed scaling, and the load-balancing aux loss.
#include "coe/model/config.h"

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace coe {

struct Routing {
  torch::Tensor topk_idx;     // [T, K] int64
  torch::Tensor topk_weight;  // [T, K] float32
  torch::Tensor aux_loss;     // scalar (alpha already applied); undefined outside training or alpha = 0
  torch::Tensor scores;       // [T, E] softmax scores (for routing statistics)
};

class RouterImpl : public torch::nn::Module {
 public:
  explicit RouterImpl(const ModelConfig& config);
  void reset_parameters();
  // x [B, S, hidden]
  Routing forward(const torch::Tensor& x);
  torch::Tensor weight;  // [n_routed_experts, hidden]

 private:
  int64_t experts_, top_k_, n_group_, topk_group_;
  bool group_limited_, norm_topk_prob_, seq_aux_;
  double scaling_, alpha_;
};
TORCH_MODULE(Router);

}  // namespace coe
