#include "coe/model/router.h"

#include "coe/model/layers.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <cmath>
#include <limits>

namespace coe {

const std::array<RouterLosses::Term, RouterLosses::kCount> RouterLosses::kTerms{{
    {"aux_loss", &RouterLosses::aux_loss, &ModelConfig::aux_loss_alpha, /*always_logged=*/true},
    {"z_loss", &RouterLosses::z_loss, &ModelConfig::router_z_loss_alpha, /*always_logged=*/false},
}};

RouterLosses& RouterLosses::operator+=(const RouterLosses& other) {
  for (const Term& term : kTerms) {
    const at::Tensor& add = other.*term.value;
    if (!add.defined()) continue;
    at::Tensor& sum = this->*term.value;
    sum = sum.defined() ? sum + add : add;
  }
  return *this;
}

torch::Tensor RouterLosses::total() const {
  at::Tensor sum;
  for (const Term& term : kTerms) {
    const at::Tensor& t = this->*term.value;
    if (t.defined()) sum = sum.defined() ? sum + t : t;
  }
  return sum;
}

RouterLosses RouterLosses::or_zeros(const torch::Tensor& like) const {
  RouterLosses out = *this;
  for (const Term& term : kTerms)
    if (!(out.*term.value).defined()) out.*term.value = at::zeros({}, like.options());
  return out;
}

RouterImpl::RouterImpl(const ModelConfig& c)
    : experts_(c.n_routed_experts),
      top_k_(c.num_experts_per_tok),
      n_group_(c.n_group),
      topk_group_(c.topk_group),
      selection_(c.topk_method == TopkMethod::kGroupLimitedGreedy ? Selection::kGroupLimited
                 : c.topk_method == TopkMethod::kNoauxTc          ? Selection::kBiasCorrected
                                                                  : Selection::kGreedy),
      sigmoid_(c.scoring_func == ScoringFunc::kSigmoid),
      norm_topk_prob_(c.norm_topk_prob),
      seq_aux_(c.seq_aux),
      scaling_(c.routed_scaling_factor),
      alpha_(c.aux_loss_alpha),
      z_alpha_(c.router_z_loss_alpha) {
  weight = register_parameter("weight", torch::empty({c.n_routed_experts, c.hidden_size}));
  if (selection_ == Selection::kBiasCorrected)
    e_score_correction_bias = register_buffer("e_score_correction_bias", torch::zeros({c.n_routed_experts}));
  reset_parameters();
}

void RouterImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (e_score_correction_bias.defined()) e_score_correction_bias.zero_();
}

void RouterImpl::update_bias(const torch::Tensor& load, double rate) {
  if (!e_score_correction_bias.defined()) return;
  torch::NoGradGuard no_grad;
  // In float64: the sign of (mean - load) is exact for integer counts, so an expert at the mean
  // stays where it is.
  const at::Tensor l = load.to(e_score_correction_bias.device(), at::kDouble);
  const at::Tensor step = (l.mean() - l).sign() * rate;
  e_score_correction_bias.add_(step.to(e_score_correction_bias.scalar_type()));
}

// [T, E] bool: the experts of each token's topk_group best groups, from group_scores [T, G].
at::Tensor RouterImpl::experts_of_best_groups(const at::Tensor& group_scores) const {
  const int64_t T = group_scores.size(0);
  const at::Tensor group_idx = std::get<1>(group_scores.topk(topk_group_, -1, true, false));
  const at::Tensor group_mask =
      at::zeros({T, n_group_}, group_scores.options().dtype(at::kBool)).scatter_(1, group_idx, true);
  return group_mask.unsqueeze(-1).expand({T, n_group_, experts_ / n_group_}).reshape({T, -1});
}

Routing RouterImpl::forward(const torch::Tensor& x) {
  const int64_t B = x.size(0), S = x.size(1), T = B * S;
  const auto acc = accumulate_dtype(x);
  at::Tensor logits = at::linear(x.reshape({T, x.size(2)}).to(acc), weight.to(acc));
  at::Tensor scores = sigmoid_ ? logits.sigmoid() : logits.softmax(-1, acc);  // [T, E]

  Routing r;
  r.scores = scores;
  switch (selection_) {
    case Selection::kGreedy:
      std::tie(r.topk_weight, r.topk_idx) = scores.topk(top_k_, -1, /*largest=*/true, /*sorted=*/false);
      break;
    case Selection::kGroupLimited: {
      // Groups rank by their best expert's score; the others' scores become 0.
      const at::Tensor group_scores = std::get<0>(scores.view({T, n_group_, -1}).max(-1));  // [T, G]
      const at::Tensor masked = scores.masked_fill(experts_of_best_groups(group_scores).logical_not(), 0.0);
      std::tie(r.topk_weight, r.topk_idx) = masked.topk(top_k_, -1, true, false);
      break;
    }
    case Selection::kBiasCorrected: {
      // DeepSeek-V3: the bias only decides which experts are chosen; their gate weights are the
      // unbiased scores. Groups rank by the sum of their two best biased scores.
      at::Tensor choice = scores.detach() + e_score_correction_bias.to(acc).unsqueeze(0);
      if (n_group_ > 1) {
        const at::Tensor group_scores = std::get<0>(choice.view({T, n_group_, -1}).topk(2, -1)).sum(-1);  // [T, G]
        // -inf, not 0: biased scores may be negative.
        choice = choice.masked_fill(experts_of_best_groups(group_scores).logical_not(),
                                    -std::numeric_limits<double>::infinity());
      }
      r.topk_idx = std::get<1>(choice.topk(top_k_, -1, true, false));
      r.topk_weight = scores.gather(1, r.topk_idx);
      break;
    }
  }
  if (sigmoid_) {
    // DeepSeek-V3: normalise the chosen sigmoid scores (norm_topk_prob), then always scale.
    if (top_k_ > 1 && norm_topk_prob_) r.topk_weight = r.topk_weight / (r.topk_weight.sum(-1, true) + 1e-20);
    r.topk_weight = r.topk_weight * scaling_;
  } else {
    // DeepSeek-V2 (the reference): normalise or scale.
    if (top_k_ > 1 && norm_topk_prob_) r.topk_weight = r.topk_weight / (r.topk_weight.sum(-1, true) + 1e-20);
    else r.topk_weight = r.topk_weight * scaling_;
  }

  if (is_training() && alpha_ > 0.0) {
    const auto opts = scores.options();
    // The balance loss needs a distribution over experts per token: sigmoid scores are
    // normalised to sum to 1 first (DeepSeek-V3's complementary sequence-wise loss).
    const at::Tensor probs = sigmoid_ ? scores / (scores.sum(-1, true) + 1e-20) : scores;
    at::Tensor idx = r.topk_idx.view({B, -1});
    if (seq_aux_) {
      // Per sequence: fraction of routed slots per expert (scaled so uniform = 1) times mean score.
      at::Tensor ce = at::zeros({B, experts_}, opts)
                          .scatter_add_(1, idx, at::ones({B, S * top_k_}, opts))
                          .div_(static_cast<double>(S * top_k_) / experts_);
      r.router_losses.aux_loss = (ce * probs.view({B, S, -1}).mean(1)).sum(1).mean() * alpha_;
    } else {
      at::Tensor fi = at::one_hot(idx.reshape(-1), experts_).to(acc).mean(0) * static_cast<double>(experts_);
      r.router_losses.aux_loss = (probs.mean(0) * fi).sum() * alpha_;
    }
  }
  if (is_training() && z_alpha_ > 0.0) r.router_losses.z_loss = logits.logsumexp(-1).square().mean() * z_alpha_;
  return r;
}

}  // namespace coe
