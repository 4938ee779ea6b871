#pragma once
// The MoE router (the reference's MoEGate, extended with DeepSeek-V3's gate): float32 scores
// (softmax or sigmoid of the logits), greedy, group-limited or bias-corrected (noaux_tc) top-k,
// the gate weights of the chosen experts (normalised / scaled), the load-balancing aux loss and
// the router z-loss. docs/model.md gives the formulas.
#include "coe/model/config.h"

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace coe {

struct Routing {
  torch::Tensor topk_idx;     // [T, K] int64
  torch::Tensor topk_weight;  // [T, K] float32
  torch::Tensor aux_loss;     // scalar (alpha already applied); undefined outside training or alpha = 0
  torch::Tensor z_loss;       // scalar (alpha already applied); undefined outside training or alpha = 0
  torch::Tensor scores;       // [T, E] softmax / sigmoid scores, without the correction bias (statistics)
};

class RouterImpl : public torch::nn::Module {
 public:
  explicit RouterImpl(const ModelConfig& config);
  void reset_parameters();
  // x [B, S, hidden]
  Routing forward(const torch::Tensor& x);
  // Auxiliary-loss-free balancing (DeepSeek-V3 §2.1.2): e_score_correction_bias +=
  // rate * sign(mean(load) - load), i.e. up for an expert below the mean load, down above it.
  // `load` [E]: token slots this router sent to each expert over a whole global batch. No-op
  // without noaux_tc.
  void update_bias(const torch::Tensor& load, double rate);

  torch::Tensor weight;  // [n_routed_experts, hidden]
  // [n_routed_experts] buffer (noaux_tc only, else undefined): added to the scores to choose the
  // experts, never to the gate weights; not trained by the optimizer. Starts at zero.
  torch::Tensor e_score_correction_bias;

 private:
  enum class Selection { kGreedy, kGroupLimited, kBiasCorrected };
  int64_t experts_, top_k_, n_group_, topk_group_;
  Selection selection_;
  bool sigmoid_, norm_topk_prob_, seq_aux_;
  double scaling_, alpha_, z_alpha_;
};
TORCH_MODULE(Router);

}  // namespace coe
