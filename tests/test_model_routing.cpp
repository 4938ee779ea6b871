// The routing extensions on their own: sigmoid scoring and DeepSeek-V3's weights on a
// hand-checked case, bias-corrected (noaux_tc) and group-limited selection, the router z-loss
// against a float64 computation written out by hand, the balancing bias moving toward balance on
// a crafted batch, expert-load counting (not doubled by activation checkpointing), and the bias
// in HF checkpoints.
#include "coe/eval/evaluate.h"
#include "coe/io/hf_checkpoint.h"
#include "coe/model/causal_lm.h"
#include "coe/model/config.h"
#include "coe/model/moe.h"
#include "coe/model/router.h"
#include "coe/util/config_reader.h"

#include "support/expect_error.h"
#include "support/test_env.h"
#include "support/tiny_model.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include <cmath>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

// Four experts, three tokens, each token a one-hot input picking one column of the router
// weight, so every logit is chosen by hand:
//   token a: sigmoid scores 0.90 0.75 0.50 0.25
//   token b: sigmoid scores 0.50 0.50 0.90 0.75
//   token c: sigmoid scores 0.95 0.10 0.80 0.70  (best single expert in group {0,1}, best pair in {2,3})
coe::ModelConfig four_experts() {
  coe::ModelConfig c = coe::test::tiny_model_config();
  c.hidden_size = 3;
  c.n_routed_experts = 4;
  c.num_experts_per_tok = 2;
  c.scoring_func = coe::ScoringFunc::kSigmoid;
  c.aux_loss_alpha = 0;
  return c;
}

const double kScores[3][4] = {{0.90, 0.75, 0.50, 0.25}, {0.50, 0.50, 0.90, 0.75}, {0.95, 0.10, 0.80, 0.70}};

coe::Router hand_router(const coe::ModelConfig& c) {
  coe::Router r(c);
  torch::NoGradGuard no_grad;
  for (int64_t tok = 0; tok < 3; ++tok)
    for (int64_t e = 0; e < 4; ++e) {
      const double s = kScores[tok][e];
      r->weight[e][tok] = std::log(s / (1 - s));  // the logit whose sigmoid is s
    }
  return r;
}

at::Tensor three_tokens() { return at::eye(3).view({1, 3, 3}); }

// Token `tok`'s chosen experts (sorted) and their weights in that order.
std::pair<std::vector<int64_t>, std::vector<double>> chosen(const coe::Routing& r, int64_t tok) {
  std::vector<std::pair<int64_t, double>> pairs;
  for (int64_t k = 0; k < r.topk_idx.size(1); ++k)
    pairs.emplace_back(r.topk_idx[tok][k].item<int64_t>(), r.topk_weight[tok][k].item<double>());
  std::sort(pairs.begin(), pairs.end());
  std::pair<std::vector<int64_t>, std::vector<double>> out;
  for (auto& [e, w] : pairs) out.first.push_back(e), out.second.push_back(w);
  return out;
}

void expect_choice(const coe::Routing& r, int64_t tok, const std::vector<int64_t>& experts,
                   const std::vector<double>& weights) {
  SCOPED_TRACE("token " + std::to_string(tok));
  const auto [e, w] = chosen(r, tok);
  EXPECT_EQ(e, experts);
  ASSERT_EQ(w.size(), weights.size());
  for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(w[i], weights[i], 1e-6) << "expert " << e[i];
}

}  // namespace

TEST(SigmoidRouting, HandCheckedScoresAndDeepSeekV3Weights) {
  coe::ModelConfig c = four_experts();
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  coe::Router router = hand_router(c);
  router->eval();
  const coe::Routing r = router->forward(three_tokens());
  for (int64_t tok = 0; tok < 3; ++tok)
    for (int64_t e = 0; e < 4; ++e) EXPECT_NEAR(r.scores[tok][e].item<double>(), kScores[tok][e], 1e-6);
  // Normalised, then scaled (DeepSeek-V3): 0.90 / 1.65 * 2.5 and 0.75 / 1.65 * 2.5.
  expect_choice(r, 0, {0, 1}, {0.9 / 1.65 * 2.5, 0.75 / 1.65 * 2.5});
  expect_choice(r, 1, {2, 3}, {0.9 / 1.65 * 2.5, 0.75 / 1.65 * 2.5});
  expect_choice(r, 2, {0, 2}, {0.95 / 1.75 * 2.5, 0.8 / 1.75 * 2.5});

  // Without norm_topk_prob the sigmoid scores are only scaled.
  c.norm_topk_prob = false;
  coe::Router unnormalised = hand_router(c);
  expect_choice(unnormalised->forward(three_tokens()), 0, {0, 1}, {0.9 * 2.5, 0.75 * 2.5});
  // Top-1: nothing to normalise (as DeepSeek-V3: top_k > 1 and norm_topk_prob).
  c.norm_topk_prob = true;
  c.num_experts_per_tok = 1;
  coe::Router top1 = hand_router(c);
  expect_choice(top1->forward(three_tokens()), 1, {2}, {0.9 * 2.5});
}

TEST(SigmoidRouting, SoftmaxKeepsTheReferenceRuleNormaliseOrScale) {
  // The DeepSeek-V2 reference: with norm_topk_prob the weights are normalised and not scaled.
  coe::ModelConfig c = four_experts();
  c.scoring_func = coe::ScoringFunc::kSoftmax;
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  coe::Router router = hand_router(c);
  const coe::Routing r = router->forward(three_tokens());
  const auto [experts, weights] = chosen(r, 0);
  EXPECT_EQ(experts, (std::vector<int64_t>{0, 1}));
  EXPECT_NEAR(weights[0] + weights[1], 1.0, 1e-6);
}

TEST(NoauxTcRouting, BiasChoosesTheExpertsButNotTheWeights) {
  coe::ModelConfig c = four_experts();
  c.topk_method = coe::TopkMethod::kNoauxTc;
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  coe::Router router = hand_router(c);
  ASSERT_TRUE(router->e_score_correction_bias.defined());
  EXPECT_EQ(router->e_score_correction_bias.abs().sum().item<double>(), 0.0) << "the bias starts at zero";
  EXPECT_EQ(router->parameters().size(), 1u) << "the bias is a buffer, not a parameter";
  // Zero bias: the same choice as greedy.
  expect_choice(router->forward(three_tokens()), 0, {0, 1}, {0.9 / 1.65 * 2.5, 0.75 / 1.65 * 2.5});
  {
    torch::NoGradGuard no_grad;
    router->e_score_correction_bias.copy_(at::tensor({0.0, 0.0, 0.3, 0.0}));
  }
  // Token a: biased 0.90 0.75 0.80 0.25 picks {0, 2}; their weights are the unbiased 0.90 and 0.50.
  const coe::Routing r = router->forward(three_tokens());
  expect_choice(r, 0, {0, 2}, {0.9 / 1.4 * 2.5, 0.5 / 1.4 * 2.5});
  expect_choice(r, 1, {2, 3}, {0.9 / 1.65 * 2.5, 0.75 / 1.65 * 2.5});
  // The scores reported for statistics are the unbiased ones.
  EXPECT_NEAR(r.scores[0][2].item<double>(), 0.5, 1e-6);
}

TEST(NoauxTcRouting, GroupsRankByTheSumOfTheirTwoBestBiasedScores) {
  coe::ModelConfig c = four_experts();
  c.norm_topk_prob = true;
  c.n_group = 2;  // groups {0, 1} and {2, 3}
  c.topk_group = 1;
  // group_limited_greedy ranks groups by their best expert: token c (0.95 in group 0) stays there.
  c.topk_method = coe::TopkMethod::kGroupLimitedGreedy;
  expect_choice(hand_router(c)->forward(three_tokens()), 2, {0, 1}, {0.95 / 1.05, 0.10 / 1.05});
  // noaux_tc ranks by the best two: group 1 (0.80 + 0.70) beats group 0 (0.95 + 0.10).
  c.topk_method = coe::TopkMethod::kNoauxTc;
  coe::Router router = hand_router(c);
  expect_choice(router->forward(three_tokens()), 2, {2, 3}, {0.8 / 1.5, 0.7 / 1.5});
  expect_choice(router->forward(three_tokens()), 0, {0, 1}, {0.9 / 1.65, 0.75 / 1.65});
  // A bias of 0.6 on group 1 moves token a there (0.5 + 0.6 + 0.25 + 0.6 > 0.9 + 0.75), weights unbiased.
  {
    torch::NoGradGuard no_grad;
    router->e_score_correction_bias.copy_(at::tensor({0.0, 0.0, 0.6, 0.6}));
  }
  expect_choice(router->forward(three_tokens()), 0, {2, 3}, {0.5 / 0.75, 0.25 / 0.75});
}

TEST(RouterZLoss, ValueAndGradientMatchAFloat64ComputationByHand) {
  coe::ModelConfig c = coe::test::tiny_model_config();
  c.hidden_size = 8;
  c.n_routed_experts = 6;
  c.num_experts_per_tok = 2;
  c.aux_loss_alpha = 0;
  c.router_z_loss_alpha = 0.01;
  torch::manual_seed(11);
  coe::Router router(c);
  {
    torch::NoGradGuard no_grad;
    router->weight.normal_(0.0, 1.5);  // logits of several units: the squares matter
  }
  const int64_t B = 2, S = 5, T = B * S, E = 6, H = 8;
  const at::Tensor x = torch::randn({B, S, H});
  router->train();
  const coe::Routing r = router->forward(x);
  ASSERT_TRUE(r.router_losses.z_loss.defined());
  EXPECT_FALSE(r.router_losses.aux_loss.defined()) << "alpha 0: no aux loss; the z-loss is reported on its own";
  r.router_losses.z_loss.backward();
  const at::Tensor grad = router->weight.grad();

  // float64, loop by loop: z = alpha / T * sum_t lse_t^2, lse_t = log sum_e exp(l_te),
  // dz/dW_eh = alpha / T * sum_t 2 lse_t softmax(l_t)_e x_th.
  const at::Tensor xd = x.reshape({T, H}).to(at::kDouble), wd = router->weight.detach().to(at::kDouble);
  const auto* xp = xd.data_ptr<double>();
  const auto* wp = wd.data_ptr<double>();
  double z = 0;
  std::vector<double> dw(static_cast<size_t>(E * H), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> l(static_cast<size_t>(E), 0.0);
    double m = -1e300;
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t h = 0; h < H; ++h) l[e] += xp[t * H + h] * wp[e * H + h];
      m = std::max(m, l[e]);
    }
    double sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += std::exp(l[e] - m);
    const double lse = m + std::log(sum);
    z += lse * lse;
    for (int64_t e = 0; e < E; ++e)
      for (int64_t h = 0; h < H; ++h)
        dw[e * H + h] += 2 * lse * std::exp(l[e] - m) / sum * xp[t * H + h] * 0.01 / double(T);
  }
  z *= 0.01 / double(T);
  EXPECT_GT(z, 1e-3);
  EXPECT_NEAR(r.router_losses.z_loss.item<double>(), z, 1e-6 * z);
  double worst = 0, scale = 0;
  for (int64_t i = 0; i < E * H; ++i) {
    worst = std::max(worst, std::abs(grad.view(-1)[i].item<double>() - dw[i]));
    scale = std::max(scale, std::abs(dw[i]));
  }
  EXPECT_LT(worst, 1e-5 * scale) << "largest gradient " << scale;

  // Outside training there is no z-loss.
  router->eval();
  EXPECT_FALSE(router->forward(x).router_losses.z_loss.defined());
}

TEST(RouterZLoss, ModelReportsItApartFromTheAuxLoss) {
  coe::ModelConfig c = coe::test::tiny_model_config();
  c.inner_iter = 2;
  torch::manual_seed(4);
  coe::CausalLM without(c);
  c.router_z_loss_alpha = 0.001;
  torch::manual_seed(4);
  coe::CausalLM with(c);
  without->train();
  with->train();
  const at::Tensor ids = torch::randint(0, c.vocab_size, {2, 16});
  const coe::LmOutput a = without->forward(ids, ids);
  const coe::LmOutput b = with->forward(ids, ids);
  EXPECT_TRUE(at::equal(a.router_losses.aux_loss, b.router_losses.aux_loss)) << "the z-loss is not part of aux_loss";
  EXPECT_TRUE(at::equal(a.loss, b.loss));
  EXPECT_EQ(a.router_losses.z_loss.item<double>(), 0.0);
  // 2 layers x 2 iterations of routers, each alpha * mean(lse^2), lse near log(8) for small logits.
  EXPECT_GT(b.router_losses.z_loss.item<double>(), 0.5 * 4 * 0.001 * std::log(8.0) * std::log(8.0));
  EXPECT_LT(b.router_losses.z_loss.item<double>(), 2.0 * 4 * 0.001 * std::log(8.0) * std::log(8.0));
}

TEST(Balancing, BiasMovesTowardBalanceOnACraftedBatch) {
  // 64 tokens that all prefer expert 0 (sigmoid score 0.95 for every token; the other experts'
  // scores spread over about 0.3 .. 0.7 from token to token), top-1.
  coe::ModelConfig c = coe::test::tiny_model_config();
  c.hidden_size = 4;
  c.n_routed_experts = 4;
  c.num_experts_per_tok = 1;
  c.scoring_func = coe::ScoringFunc::kSigmoid;
  c.topk_method = coe::TopkMethod::kNoauxTc;
  c.aux_loss_alpha = 0;
  coe::Router router(c);
  {
    torch::NoGradGuard no_grad;
    router->weight.zero_();
    router->weight[0][0] = 3.0;
    for (int64_t e = 1; e < 4; ++e) router->weight[e][e] = 0.5;
  }
  torch::manual_seed(5);
  at::Tensor x = torch::randn({1, 64, 4});
  x.select(2, 0).fill_(1.0);
  auto load_of = [&] {
    const coe::Routing r = router->forward(x);
    return at::zeros({4}, at::kLong).scatter_add_(0, r.topk_idx.reshape(-1), at::ones({64}, at::kLong));
  };
  auto imbalance = [](const at::Tensor& load) {
    return coe::load_balance(std::vector<int64_t>(load.data_ptr<int64_t>(), load.data_ptr<int64_t>() + 4))
        .max_over_mean;
  };
  at::Tensor load = load_of();
  ASSERT_EQ(load[0].item<int64_t>(), 64) << "the crafted batch is all on expert 0";
  EXPECT_DOUBLE_EQ(imbalance(load), 4.0);
  // One update: the overloaded expert down by gamma, the idle ones up by gamma.
  const double gamma = 0.01;
  router->update_bias(load, gamma);
  EXPECT_TRUE(at::allclose(router->e_score_correction_bias, at::tensor({-0.01f, 0.01f, 0.01f, 0.01f})));
  // An expert exactly at the mean load stays where it is.
  coe::Router at_mean(c);
  at_mean->update_bias(at::tensor({16, 16, 20, 12}, at::kLong), 0.05);
  EXPECT_TRUE(at::allclose(at_mean->e_score_correction_bias, at::tensor({0.0f, 0.0f, -0.05f, 0.05f})));

  std::vector<double> history;
  for (int step = 0; step < 200; ++step) {
    load = load_of();
    history.push_back(imbalance(load));
    router->update_bias(load, gamma);
  }
  // Monotone while expert 0 is overloaded (its bias falls by gamma per step), then near balance.
  EXPECT_LT(history[100], 2.0);
  double worst_late = 0;
  for (size_t i = 150; i < history.size(); ++i) worst_late = std::max(worst_late, history[i]);
  EXPECT_LT(worst_late, 1.5) << "max/mean load over the last 50 updates (from 4.0)";
  EXPECT_LT(router->e_score_correction_bias[0].item<double>(), -0.2);
  // The gate weights stay the unbiased sigmoid scores of the chosen experts.
  const coe::Routing r = router->forward(x);
  EXPECT_TRUE(at::allclose(r.topk_weight, r.scores.gather(1, r.topk_idx)));
}

TEST(Balancing, SharedGateBalancesAllIterationsTogether) {
  coe::ModelConfig c = coe::test::tiny_model_config();
  c.topk_method = coe::TopkMethod::kNoauxTc;
  c.inner_iter = 2;
  c.use_igate = false;
  coe::MoeBlock block(c);
  // Expert 0 over the mean at iteration 0, under it at iteration 1, balanced in sum.
  at::Tensor load = at::zeros({2, c.n_routed_experts}, at::kLong) + 10;
  load[0][0] = 20;
  load[1][0] = 0;
  block->update_router_bias(load, 0.1);
  const at::Tensor bias = block->router(0)->e_score_correction_bias;
  EXPECT_NEAR(bias[0].item<double>(), 0.0, 1e-7);
  EXPECT_NEAR(bias[1].item<double>(), 0.0, 1e-7);
  // Independent gates: each iteration's bias follows its own load.
  c.use_igate = true;
  coe::MoeBlock igate(c);
  igate->update_router_bias(load, 0.1);
  EXPECT_NEAR(igate->router(0)->e_score_correction_bias[0].item<double>(), -0.1, 1e-7);
  EXPECT_NEAR(igate->router(1)->e_score_correction_bias[0].item<double>(), 0.1, 1e-7);
}

TEST(ExpertLoad, CountsEveryIterationOnceEvenWithActivationCheckpointing) {
  coe::ModelConfig c = coe::test::tiny_model_config();
  c.inner_iter = 2;
  c.first_k_dense_replace = 1;  // layer 0 dense: the counts are of layer 1 only
  c.num_hidden_layers = 3;
  torch::manual_seed(6);
  coe::CausalLM model(c);
  model->train();
  EXPECT_EQ(model->moe_layers(), (std::vector<int64_t>{1, 2}));
  const at::Tensor ids = torch::randint(0, c.vocab_size, {2, 12});
  // Without tracking nothing is counted.
  model->forward(ids, ids);
  EXPECT_EQ(model->take_expert_load().sum().item<int64_t>(), 0);

  model->set_expert_load_tracking(true);
  coe::ForwardOptions record;
  record.record_routing = true;
  const coe::LmOutput out = model->forward(ids, ids, record);
  out.loss.backward();
  const at::Tensor load = model->take_expert_load();
  ASSERT_EQ(load.sizes().vec(), (std::vector<int64_t>{2, 2, c.n_routed_experts}));
  EXPECT_EQ(load.scalar_type(), at::kLong);
  ASSERT_EQ(out.routing.size(), 4u);
  for (const auto& trace : out.routing) {
    const int64_t row = trace.layer - 1;
    const at::Tensor expected = at::zeros({c.n_routed_experts}, at::kLong)
                                    .scatter_add_(0, trace.topk_idx.reshape(-1), at::ones({24 * 2}, at::kLong));
    EXPECT_TRUE(at::equal(load[row][trace.iteration], expected))
        << "layer " << trace.layer << " iteration " << trace.iteration;
  }
  EXPECT_EQ(model->take_expert_load().sum().item<int64_t>(), 0) << "taking the counts restarts them";

  // Checkpointing recomputes each layer in backward: the counts are the same, not doubled.
  model->set_activation_checkpointing(true);
  model->zero_grad();
  model->forward(ids, ids).loss.backward();
  EXPECT_TRUE(at::equal(model->take_expert_load(), load));
  // Evaluation forwards are not training steps.
  model->eval();
  model->forward(ids, ids);
  EXPECT_EQ(model->take_expert_load().sum().item<int64_t>(), 0);
}

TEST(Balancing, CheckpointsRoundTripTheBiasUnderItsHfName) {
  coe::ModelConfig c = coe::test::tiny_model_config();
  c.topk_method = coe::TopkMethod::kNoauxTc;
  c.scoring_func = coe::ScoringFunc::kSigmoid;
  c.norm_topk_prob = true;
  c.inner_iter = 2;
  torch::manual_seed(8);
  coe::CausalLM model(c);
  {
    torch::NoGradGuard no_grad;
    for (auto& b : model->buffers()) b.normal_(0.0, 0.1);
  }
  const auto named = coe::hf_state_dict(*model);
  for (const char* name :
       {"model.layers.0.mlp.gate.0.e_score_correction_bias", "model.layers.1.mlp.gate.1.e_score_correction_bias"})
    EXPECT_TRUE(named.count(name)) << name;
  EXPECT_EQ(coe::hf_state_dict(*model, /*grads=*/true).count("model.layers.0.mlp.gate.0.e_score_correction_bias"), 0u)
      << "a buffer has no gradient";
  // Not parameters: not trained, not in the parameter count.
  int64_t params = 0;
  for (const auto& p : model->parameters()) params += p.numel();
  c.topk_method = coe::TopkMethod::kGreedy;
  coe::CausalLM greedy(c);
  int64_t greedy_params = 0;
  for (const auto& p : greedy->parameters()) greedy_params += p.numel();
  EXPECT_EQ(params, greedy_params);

  const fs::path dir = coe::test::make_temp_dir("bias-roundtrip");
  coe::save_hf_checkpoint(*model, dir.string());
  coe::CausalLM loaded = coe::load_hf_checkpoint(dir.string());
  const auto a = model->named_buffers(true), b = loaded->named_buffers(true);
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 4u);
  for (const auto& item : a) EXPECT_TRUE(at::equal(item.value(), b[item.key()])) << item.key();
  EXPECT_EQ(coe::to_string(loaded->config().topk_method), std::string("noaux_tc"));
  EXPECT_EQ(coe::to_string(loaded->config().scoring_func), std::string("sigmoid"));
  // Same logits (the bias decides the routing).
  model->eval();
  loaded->eval();
  const at::Tensor ids = torch::randint(0, c.vocab_size, {1, 10});
  EXPECT_TRUE(at::equal(model->forward(ids).logits, loaded->forward(ids).logits));

  // A shared gate's bias: model.layers.N.mlp.gate.e_score_correction_bias.
  c.topk_method = coe::TopkMethod::kNoauxTc;
  c.use_igate = false;
  coe::CausalLM shared(c);
  EXPECT_TRUE(coe::hf_state_dict(*shared).count("model.layers.0.mlp.gate.e_score_correction_bias"));
  // A checkpoint without the bias does not load into a noaux_tc model.
  const fs::path greedy_dir = coe::test::make_temp_dir("bias-missing");
  coe::save_hf_checkpoint(*greedy, greedy_dir.string());
  auto weights = coe::read_hf_weights(greedy_dir.string());
  coe::test::expect_error([&] { coe::load_hf_state_dict(*model, weights, "ckpt"); },
                          {"ckpt", "missing tensor", "e_score_correction_bias"});
  fs::remove_all(dir);
  fs::remove_all(greedy_dir);
}

TEST(RoutingConfig, BadValuesAreOneLineErrorsNamingTheKey) {
  auto with = [](auto&& change) {
    coe::ModelConfig c = coe::test::tiny_model_config();
    change(c);
    return [c] { c.validate("run.yaml"); };
  };
  // A name outside an enum's table cannot reach a ModelConfig: reading it fails.
  auto read = [](const std::string& yaml) {
    return [yaml] {
      coe::ConfigReader reader(YAML::Load(yaml), "run.yaml");
      coe::parse_model_config(reader);
    };
  };
  coe::test::expect_error(read("scoring_func: softplus"),
                          {"run.yaml", "scoring_func", "unknown scoring function 'softplus'", "softmax | sigmoid"});
  coe::test::expect_error(read("topk_method: noaux"), {"topk_method", "unknown method 'noaux'", "noaux_tc"});
  coe::test::expect_error(with([](coe::ModelConfig& c) { c.router_z_loss_alpha = -0.1; }),
                          {"router_z_loss_alpha", "must be >= 0"});
  coe::test::expect_error(with([](coe::ModelConfig& c) {
                            c.topk_method = coe::TopkMethod::kNoauxTc;
                            c.n_group = 8;  // one expert per group: no best two
                            c.topk_group = 2;
                          }),
                          {"n_group", "two best experts", "leaves 1 per group"});
  coe::test::expect_error(with([](coe::ModelConfig& c) {
                            c.topk_method = coe::TopkMethod::kNoauxTc;
                            c.n_group = 4;
                            c.topk_group = 5;
                          }),
                          {"topk_group", "must be in [1, n_group=4]"});
  coe::test::expect_error(with([](coe::ModelConfig& c) {
                            c.topk_method = coe::TopkMethod::kNoauxTc;
                            c.n_group = 0;
                          }),
                          {"n_group", "must be >= 1"});
  // Valid: noaux_tc with softmax scores (DeepSeek-V3's inference gate allows both), and grouped.
  EXPECT_NO_THROW(with([](coe::ModelConfig& c) { c.topk_method = coe::TopkMethod::kNoauxTc; })());
  EXPECT_NO_THROW(with([](coe::ModelConfig& c) {
    c.topk_method = coe::TopkMethod::kNoauxTc;
    c.scoring_func = coe::ScoringFunc::kSigmoid;
    c.n_group = 4;
    c.topk_group = 2;
  })());
}
