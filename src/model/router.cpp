#include "coe/model/router.h"

#include "coe/model/layers.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <cmath>

namespace coe {

RouterImpl::RouterImpl(const ModelConfig& c)
    : experts_(c.n_routed_experts),
      top_k_(c.num_experts_per_tok),
      n_group_(c.n_group),
      topk_group_(c.topk_group),
      group_limited_(c.topk_method == "group_limited_greedy"),
      norm_topk_prob_(c.norm_topk_prob),
      seq_aux_(c.seq_aux),
      scaling_(c.routed_scaling_factor),
      alpha_(c.aux_loss_alpha) {
  weight = register_parameter("weight", torch::empty({c.n_routed_experts, c.hidden_size}));
  reset_parameters();
}

void RouterImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
}

Routing RouterImpl::forward(const torch::Tensor& x) {
  const int64_t B = x.size(0), S = x.size(1), T = B * S;
  const auto acc = accumulate_dtype(x);
  at::Tensor logits = at::linear(x.reshape({T, x.size(2)}).to(acc), weight.to(acc));
  at::Tensor scores = logits.softmax(-1, acc);  // [T, E]

  Routing r;
  r.scores = scores;
  if (!group_limited_) {
    std::tie(r.topk_weight, r.topk_idx) = scores.topk(top_k_, -1, /*largest=*/true, /*sorted=*/false);
  } else {
    // Keep only the experts of the topk_group groups with the highest best-expert score.
    at::Tensor group_scores = std::get<0>(scores.view({T, n_group_, -1}).max(-1));  // [T, G]
    at::Tensor group_idx = std::get<1>(group_scores.topk(topk_group_, -1, true, false));
    at::Tensor group_mask = at::zeros_like(group_scores).scatter_(1, group_idx, 1.0);
    at::Tensor score_mask = group_mask.unsqueeze(-1).expand({T, n_group_, experts_ / n_group_}).reshape({T, -1});
    at::Tensor masked = scores.masked_fill(score_mask.logical_not(), 0.0);
    std::tie(r.topk_weight, r.topk_idx) = masked.topk(top_k_, -1, true, false);
  }
  if (top_k_ > 1 && norm_topk_prob_) r.topk_weight = r.topk_weight / (r.topk_weight.sum(-1, true) + 1e-20);
  else r.topk_weight = r.topk_weight * scaling_;

  if (is_training() && alpha_ > 0.0) {
    const auto opts = scores.options();
    at::Tensor idx = r.topk_idx.view({B, -1});
    if (seq_aux_) {
      // Per sequence: fraction of routed slots per expert (scaled so uniform = 1) times mean score.
      at::Tensor ce = at::zeros({B, experts_}, opts)
                          .scatter_add_(1, idx, at::ones({B, S * top_k_}, opts))
                          .div_(static_cast<double>(S * top_k_) / experts_);
      r.aux_loss = (ce * scores.view({B, S, -1}).mean(1)).sum(1).mean() * alpha_;
    } else {
      at::Tensor fi = at::one_hot(idx.reshape(-1), experts_).to(acc).mean(0) * static_cast<double>(experts_);
      r.aux_loss = (scores.mean(0) * fi).sum() * alpha_;
    }
  }
  return r;
}

}  // namespace coe
