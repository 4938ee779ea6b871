#pragma once
// The MoE router (the reference's MoEGate, extended with DeepSeek-V3's gate): float32 scores
// (softmax or sigmoid of the logits), greedy, group-limited or bias-corrected (noaux_tc) top-k,
// the gate weights of the chosen experts (normalised / scaled), the load-balancing aux loss and
// the router z-loss. docs/model.md gives the formulas.
#include "coe/model/config.h"

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <cstddef>

namespace coe {

// The routers' training losses, one value from a router up to the trainer's logs: each is a
// scalar with its alpha applied, undefined where there is none (outside training, alpha = 0).
// A new router loss is a member, a line in kTerms and its formula in RouterImpl::forward; the
// model, the step, metrics.jsonl, TensorBoard and the console then carry it by themselves.
struct RouterLosses {
  torch::Tensor aux_loss;  // load balancing (DeepSeek-V2's sequence- or token-level loss)
  torch::Tensor z_loss;    // router z-loss (ST-MoE): mean squared logsumexp of the logits

  struct Term {
    const char* name;  // "<tag>_loss": metrics.jsonl key, TensorBoard's train/<name>,
                       // "<tag>" on the console line
    torch::Tensor RouterLosses::*value;
    double ModelConfig::*alpha;  // its weight in the model config
    bool always_logged;          // false: logged only while its alpha is > 0
  };
  static constexpr size_t kCount = 2;
  static const std::array<Term, kCount> kTerms;

  // Adds term by term (undefined + t = t).
  RouterLosses& operator+=(const RouterLosses& other);
  // Their sum, in kTerms order; undefined when no term is.
  torch::Tensor total() const;
  // Every term defined: absent ones become zero scalars like `like` (float32 or float64).
  RouterLosses or_zeros(const torch::Tensor& like) const;
  // Whether a term is logged for a model (always_logged or alpha > 0).
  static bool logged(const Term& term, const ModelConfig& config) {
    return term.always_logged || config.*term.alpha > 0;
  }
};

struct Routing {
  torch::Tensor topk_idx;     // [T, K] int64
  torch::Tensor topk_weight;  // [T, K] float32
  torch::Tensor scores;       // [T, E] softmax / sigmoid scores, without the correction bias (statistics)
  RouterLosses router_losses;
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
  at::Tensor experts_of_best_groups(const at::Tensor& group_scores) const;

  enum class Selection { kGreedy, kGroupLimited, kBiasCorrected };
  int64_t experts_, top_k_, n_group_, topk_group_;
  Selection selection_;
  bool sigmoid_, norm_topk_prob_, seq_aux_;
  double scaling_, alpha_, z_alpha_;
};
TORCH_MODULE(Router);

}  // namespace coe
