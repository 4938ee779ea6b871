// Model components on their own: numerical gradient checks in double precision (router + MoE +
// CoE layer), agreement between expert dispatch implementations, dense layers, checkpointing.
#include "coe/io/hf_checkpoint.h"
#include "coe/model/autocast.h"
#include "coe/model/causal_lm.h"
#include "coe/model/coe_layer.h"
#include "coe/model/experts.h"

#include "support/tiny_model.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>
#include <torch/cuda.h>

#include <limits>
#include <string>
#include <vector>

namespace {

// The tiny model at half width (cheap float64 finite differences), with two CoE iterations and
// large weights (routing decisions far from ties).
coe::ModelConfig tiny_config() {
  coe::ModelConfig c = coe::test::tiny_model_config();
  c.vocab_size = 50;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.moe_intermediate_size = 8;
  c.num_attention_heads = 2;
  c.kv_lora_rank = 8;
  c.qk_nope_head_dim = 4;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 4;
  c.n_routed_experts = 6;
  c.inner_iter = 2;
  c.initializer_range = 0.3;
  return c;
}

// Central differences on a sample of entries of every parameter and of the input, compared with
// autograd, all in float64.
void gradient_check(coe::CoeLayerImpl& layer, const coe::ModelConfig& config) {
  layer.to(at::kDouble);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : layer.parameters()) p.normal_(p.dim() == 1 ? 1.0 : 0.0, 0.3);
  }
  layer.train();
  torch::manual_seed(7);
  const int64_t B = 2, S = 5;
  at::Tensor x = torch::randn({B, S, config.hidden_size}, at::kDouble).requires_grad_(true);
  at::Tensor probe = torch::randn({B, S, config.hidden_size}, at::kDouble);
  auto rope = coe::rotary_tables(config, S, torch::kCPU);
  auto loss_fn = [&]() {
    coe::LayerOutput out = layer.forward(x, rope);
    at::Tensor loss = (out.hidden * probe).sum();
    if (out.router_losses.aux_loss.defined())
      loss = loss + out.router_losses.aux_loss * 100.0;  // make the aux path visible
    if (out.router_losses.z_loss.defined()) loss = loss + out.router_losses.z_loss * 100.0;
    return loss;
  };
  at::Tensor loss = loss_fn();
  loss.backward();

  std::vector<std::pair<std::string, at::Tensor>> tensors{{"input", x}};
  for (auto& p : layer.named_parameters()) tensors.emplace_back(p.key(), p.value());
  torch::NoGradGuard no_grad;
  const double eps = 1e-6;
  int compared = 0;
  for (auto& [name, t] : tensors) {
    at::Tensor flat = t.view(-1);
    at::Tensor grad = t.grad().view(-1);
    const int64_t n = flat.numel();
    for (int64_t i = 0; i < std::min<int64_t>(n, 12); ++i) {
      const int64_t j = (i * 7919) % n;
      const double saved = flat[j].item<double>();
      flat[j] = saved + eps;
      const double up = loss_fn().item<double>();
      flat[j] = saved - eps;
      const double down = loss_fn().item<double>();
      flat[j] = saved;
      const double numeric = (up - down) / (2 * eps);
      const double analytic = grad[j].item<double>();
      EXPECT_NEAR(analytic, numeric, 1e-6 + 1e-5 * std::abs(numeric)) << name << "[" << j << "]";
      ++compared;
    }
  }
  EXPECT_GT(compared, 100);
}

}  // namespace

TEST(GradientCheck, CoeLayerIndependentGatesInnerResidualSeqAux) {
  coe::ModelConfig c = tiny_config();
  torch::manual_seed(1);
  coe::CoeLayer layer(c, 0);
  ASSERT_TRUE(layer->is_moe());
  gradient_check(*layer, c);
}

TEST(GradientCheck, GroupLimitedNormalisedTokenAuxAddInputOuterResidualSharedGate) {
  coe::ModelConfig c = tiny_config();
  c.topk_method = coe::TopkMethod::kGroupLimitedGreedy;
  c.n_group = 3;
  c.topk_group = 2;
  c.num_experts_per_tok = 3;
  c.norm_topk_prob = true;
  c.seq_aux = false;
  c.use_igate = false;
  c.inner_residual = coe::InnerResidual::kInput;
  c.outer_residual = true;
  c.q_lora_rank = 6;
  c.rope_scaling = coe::RopeScaling{"yarn", 4.0, 16, 32, 1, 0.707, 0.707};
  torch::manual_seed(2);
  coe::CoeLayer layer(c, 0);
  gradient_check(*layer, c);
}

TEST(GradientCheck, SigmoidBiasCorrectedGroupsZLossSeqAux) {
  // DeepSeek-V3's gate: sigmoid scores, bias-corrected group-limited choice, normalised and scaled
  // weights, the sequence-wise aux loss on normalised sigmoid scores, and the router z-loss.
  coe::ModelConfig c = tiny_config();
  c.scoring_func = coe::ScoringFunc::kSigmoid;
  c.topk_method = coe::TopkMethod::kNoauxTc;
  c.n_group = 3;
  c.topk_group = 2;
  c.num_experts_per_tok = 3;
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  c.aux_loss_alpha = 0.01;
  c.router_z_loss_alpha = 0.01;
  torch::manual_seed(3);
  coe::CoeLayer layer(c, 0);
  {
    torch::NoGradGuard no_grad;
    for (auto& b : layer->buffers()) b.normal_(0.0, 0.2);
  }
  gradient_check(*layer, c);
}

namespace {

// Output and gradients (input and the three expert stacks) of one dispatch on a fixed problem.
struct DispatchRun {
  at::Tensor y;
  std::vector<at::Tensor> grads;
};

DispatchRun run_dispatch(const coe::ExpertDispatch& dispatch, coe::RoutedExperts& experts, const at::Tensor& x0,
                         const at::Tensor& idx, const at::Tensor& w) {
  at::Tensor x = x0.detach().clone().requires_grad_(true);
  for (auto& p : experts->parameters())
    if (p.grad().defined()) p.grad().zero_();
  DispatchRun r;
  r.y = dispatch.run(x, idx, w, experts->weights());
  r.y.pow(2).sum().backward();
  r.grads.push_back(x.grad().clone());
  for (auto& p : experts->parameters()) r.grads.push_back(p.grad().clone());
  return r;
}

// T tokens routed to K of E experts, experts 0 and E-1 receiving none.
struct RoutingProblem {
  at::Tensor x, idx, w;
};
RoutingProblem routing_problem(int64_t T, int64_t H, int64_t E, int64_t K, at::ScalarType dtype) {
  RoutingProblem p;
  p.x = torch::randn({T, H}, dtype);
  p.idx = std::get<1>(torch::rand({T, E - 2}).topk(K, -1)) + 1;
  p.w = torch::rand({T, K}, dtype);
  return p;
}

void expect_same_as_masked(const coe::ExpertDispatch& fast, at::ScalarType dtype, double rtol, double atol) {
  SCOPED_TRACE(fast.name());
  torch::manual_seed(3);
  const int64_t T = 37, H = 12, I = 6, E = 9, K = 3;
  coe::RoutedExperts experts(E, H, I, 0.5);
  experts->to(dtype);
  const RoutingProblem p = routing_problem(T, H, E, K, dtype);
  const DispatchRun got = run_dispatch(fast, experts, p.x, p.idx, p.w);
  const DispatchRun want = run_dispatch(coe::MaskedDispatch(), experts, p.x, p.idx, p.w);

  EXPECT_EQ(got.y.scalar_type(), dtype);
  EXPECT_TRUE(at::allclose(got.y, want.y, rtol, atol)) << (got.y - want.y).abs().max().item<double>();
  for (size_t i = 0; i < got.grads.size(); ++i)
    EXPECT_TRUE(at::allclose(got.grads[i], want.grads[i], rtol * 10, atol)) << "gradient " << i;
  EXPECT_EQ(got.grads[1][0].abs().sum().item<double>(), 0.0) << "an expert without tokens gets no gradient";
  EXPECT_EQ(got.grads[3][E - 1].abs().sum().item<double>(), 0.0) << "an expert without tokens gets no gradient";
}

}  // namespace

TEST(ExpertDispatch, SegmentedAgreesWithMaskedIncludingEmptyExperts) {
  expect_same_as_masked(coe::SegmentedDispatch(), at::kFloat, 1e-5, 1e-5);
  expect_same_as_masked(coe::SegmentedDispatch(), at::kDouble, 1e-12, 1e-12);
}

TEST(ExpertDispatch, GroupedAgreesWithMaskedForEveryAlignment) {
  for (int64_t align : {1, 3, 8}) {
    SCOPED_TRACE("align " + std::to_string(align));
    expect_same_as_masked(coe::GroupedDispatch(align), at::kFloat, 1e-5, 1e-5);
    expect_same_as_masked(coe::GroupedDispatch(align), at::kDouble, 1e-12, 1e-12);
  }
}

TEST(ExpertDispatch, GroupedLayoutPadsEveryGroupAndKeepsEachPairOnce) {
  torch::manual_seed(4);
  const int64_t T = 23, E = 7, K = 2, align = 8;
  at::Tensor idx = std::get<1>(torch::rand({T, E - 1}).topk(K, -1));  // expert 6 gets no token
  const coe::GroupedLayout layout = coe::grouped_layout(idx, E, align);
  ASSERT_EQ(layout.rows(), T * K + E * align);
  ASSERT_EQ(layout.offs.scalar_type(), at::kInt);
  ASSERT_EQ(layout.offs.numel(), E);

  // Expected group sizes, counted here on the host.
  std::vector<int64_t> count(E, 0);
  for (int64_t p = 0; p < T * K; ++p) ++count[idx.reshape(-1)[p].item<int64_t>()];
  std::vector<int64_t> end(E);
  int64_t prev = 0;
  for (int64_t e = 0; e < E; ++e) {
    end[e] = layout.offs[e].item<int64_t>();
    const int64_t size = end[e] - prev;
    EXPECT_EQ(size % align, 0) << "expert " << e;
    EXPECT_GE(size, std::max<int64_t>(count[e], align)) << "expert " << e;
    EXPECT_LT(size, std::max<int64_t>(count[e], 1) + align) << "expert " << e << ": no more padding than needed";
    prev = end[e];
  }
  EXPECT_LE(end[E - 1], layout.rows());

  std::vector<int> seen(layout.rows(), 0);
  for (int64_t p = 0; p < T * K; ++p) {
    const int64_t row = layout.row_of_pair[p].item<int64_t>();
    const int64_t e = idx.reshape(-1)[p].item<int64_t>();
    ASSERT_GE(row, e == 0 ? 0 : end[e - 1]) << "pair " << p;
    ASSERT_LT(row, end[e]) << "pair " << p;
    EXPECT_EQ(layout.token_of_row[row].item<int64_t>(), p / K) << "pair " << p;
    ++seen[row];
  }
  int64_t padding = 0;
  for (int64_t row = 0; row < layout.rows(); ++row) {
    EXPECT_LE(seen[row], 1) << "row " << row << " holds two pairs";
    if (!seen[row]) {
      EXPECT_EQ(layout.token_of_row[row].item<int64_t>(), T) << "padding row " << row << " reads the zero row";
      ++padding;
    }
  }
  EXPECT_EQ(padding, layout.rows() - T * K);
}

// at::_grouped_mm leaves the output rows past offs[-1] uninitialised, in forward and in the input
// gradient. A GEMM that puts NaN there must not change any output or gradient.
TEST(ExpertDispatch, GroupedNeverReadsTheRowsTheGemmLeavesUnspecified) {
  auto poisoned = [](const at::Tensor& a, const at::Tensor& b, const at::Tensor& offs) {
    const int64_t used = offs[-1].item<int64_t>(), tail = a.size(0) - used;
    at::Tensor out = coe::grouped_mm_loop(a, b, offs).narrow(0, 0, used);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    // NaN in forward, and NaN into the gradient of a's tail rows in backward.
    at::Tensor junk = (a.narrow(0, used, tail).sum(-1, true) * nan).expand({tail, b.size(2)});
    return at::cat({out, junk}, 0);
  };
  torch::manual_seed(5);
  const int64_t T = 19, H = 8, I = 4, E = 6, K = 2;
  coe::RoutedExperts experts(E, H, I, 0.5);
  const RoutingProblem p = routing_problem(T, H, E, K, at::kFloat);
  const DispatchRun got = run_dispatch(coe::GroupedDispatch(8, poisoned), experts, p.x, p.idx, p.w);
  const DispatchRun want = run_dispatch(coe::GroupedDispatch(8), experts, p.x, p.idx, p.w);
  EXPECT_TRUE(at::equal(got.y, want.y));
  for (size_t i = 0; i < got.grads.size(); ++i) EXPECT_TRUE(at::equal(got.grads[i], want.grads[i])) << "gradient " << i;
}

// The GPU path: bf16 autocast on CUDA, at::_grouped_mm, against the float32 CPU reference (relative Frobenius error of
// the output and of every gradient).
TEST(ExpertDispatch, GroupedUnderCudaAutocastMatchesTheFloat32Reference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(6);
  const int64_t T = 512, H = 256, I = 128, E = 16, K = 4;
  coe::RoutedExperts experts(E, H, I, 0.05);
  const RoutingProblem p = routing_problem(T, H, E, K, at::kFloat);
  const DispatchRun want = run_dispatch(coe::MaskedDispatch(), experts, p.x, p.idx, p.w);

  const torch::Device cuda(torch::kCUDA);
  for (auto& param : experts->parameters()) param.mutable_grad() = at::Tensor();  // CPU grads stay behind
  experts->to(cuda);
  EXPECT_EQ(coe::native_grouped_mm_applies(torch::zeros({8, H}, torch::dtype(at::kBFloat16).device(cuda)),
                                           torch::zeros({E, H, I}, torch::dtype(at::kBFloat16).device(cuda))),
            true);
  DispatchRun got;
  {
    coe::AutocastGuard autocast(c10::kCUDA, true, at::kBFloat16);
    got = run_dispatch(coe::GroupedDispatch(), experts, p.x.to(cuda), p.idx.to(cuda), p.w.to(cuda));
  }
  auto rel = [](const at::Tensor& a, const at::Tensor& b) {
    const at::Tensor x = a.to(at::kCPU, at::kDouble), y = b.to(at::kCPU, at::kDouble);
    return ((x - y).norm() / y.norm()).item<double>();
  };
  EXPECT_EQ(got.y.scalar_type(), at::kFloat);
  EXPECT_LE(rel(got.y, want.y), 1e-2);
  for (size_t i = 0; i < got.grads.size(); ++i) EXPECT_LE(rel(got.grads[i], want.grads[i]), 2e-2) << "gradient " << i;
}

TEST(ExpertDispatch, MakeDispatchNamesEachImplementation) {
  EXPECT_EQ(coe::make_dispatch("auto")->name(), "grouped");
  EXPECT_EQ(coe::make_dispatch("grouped")->name(), "grouped");
  EXPECT_EQ(coe::make_dispatch("segmented")->name(), "segmented");
  EXPECT_EQ(coe::make_dispatch("masked")->name(), "masked");
  try {
    coe::make_dispatch("fastest");
    ADD_FAILURE() << "no error for an unknown dispatch";
  } catch (const std::exception& e) {
    EXPECT_STREQ(e.what(), "unknown expert dispatch 'fastest' (auto | grouped | segmented | masked)");
  }
}

TEST(Model, DenseLayersRunTheirMlpOnceAndUseReferenceNames) {
  coe::ModelConfig c = tiny_config();
  c.num_hidden_layers = 4;
  c.first_k_dense_replace = 1;
  c.moe_layer_freq = 2;  // layers 0 (dense: first_k), 1 (dense: freq), 2 (MoE), 3 (dense)
  torch::manual_seed(4);
  coe::CausalLM model(c);
  auto names = coe::hf_state_dict(*model);
  EXPECT_TRUE(names.count("model.layers.0.mlp.gate_proj.weight"));
  EXPECT_TRUE(names.count("model.layers.1.mlp.down_proj.weight"));
  EXPECT_TRUE(names.count("model.layers.2.mlp.experts.5.up_proj.weight"));
  EXPECT_TRUE(names.count("model.layers.2.mlp.gate.1.weight"));
  EXPECT_TRUE(names.count("model.layers.3.mlp.up_proj.weight"));
  EXPECT_EQ(names.at("model.layers.0.mlp.gate_proj.weight").size(0), c.intermediate_size);
  at::Tensor ids = torch::randint(0, c.vocab_size, {2, 7}, at::kLong);
  model->train();
  coe::LmOutput out = model->forward(ids, ids, {true, true});
  (out.loss + out.router_losses.aux_loss).backward();
  EXPECT_TRUE(std::isfinite(out.loss.item<double>()));
  ASSERT_EQ(out.routing.size(), 2u) << "one MoE layer with C = 2 iterations";
  EXPECT_EQ(out.routing[0].layer, 2);
  EXPECT_GT(out.router_losses.aux_loss.item<double>(), 0.0);
}

TEST(Model, ActivationCheckpointingGivesTheSameGradients) {
  coe::ModelConfig c = tiny_config();
  torch::manual_seed(5);
  coe::CausalLM model(c);
  model->train();
  at::Tensor ids = torch::randint(0, c.vocab_size, {2, 9}, at::kLong);
  auto run = [&](bool checkpointing) {
    model->zero_grad();
    model->set_activation_checkpointing(checkpointing);
    coe::LmOutput out = model->forward(ids, ids);
    (out.loss + out.router_losses.aux_loss).backward();
    return std::make_pair(out.loss.item<double>() + out.router_losses.aux_loss.item<double>(),
                          coe::hf_state_dict(*model, true));
  };
  auto [loss_plain, grads_plain] = run(false);
  auto [loss_ckpt, grads_ckpt] = run(true);
  EXPECT_DOUBLE_EQ(loss_plain, loss_ckpt);
  for (const auto& [name, g] : grads_plain) EXPECT_TRUE(at::allclose(g, grads_ckpt.at(name), 1e-5, 1e-7)) << name;
}

TEST(Model, TiedEmbeddingsShareOneMatrix) {
  coe::ModelConfig c = tiny_config();
  c.tie_word_embeddings = true;
  coe::CausalLM model(c);
  auto names = coe::hf_state_dict(*model);
  EXPECT_FALSE(names.count("lm_head.weight"));
  EXPECT_TRUE(model->lm_head_weight().is_same(model->embed_tokens->weight));
}

TEST(Model, InitialisationFollowsTheReference) {
  coe::ModelConfig c = tiny_config();
  c.initializer_range = 0.02;
  c.hidden_size = 64;
  torch::manual_seed(6);
  coe::CausalLM model(c);
  auto t = coe::hf_state_dict(*model);
  EXPECT_NEAR(t.at("model.layers.0.mlp.experts.0.gate_proj.weight").std().item<double>(), 0.02, 0.004);
  EXPECT_NEAR(t.at("model.embed_tokens.weight").std().item<double>(), 0.02, 0.002);
  EXPECT_TRUE(at::equal(t.at("model.norm.weight"), torch::ones({64})));
  // kaiming_uniform(a = sqrt(5)) on [E, H]: U(-1/sqrt(H), 1/sqrt(H)).
  at::Tensor gate = t.at("model.layers.0.mlp.gate.0.weight");
  EXPECT_LE(gate.abs().max().item<double>(), 1.0 / 8.0 + 1e-6);
  EXPECT_GT(gate.abs().max().item<double>(), 0.1);
}

TEST(ChunkedLoss, MatchesFullLogitsLossAndGradients) {
  coe::ModelConfig c = tiny_config();
  c.vocab_size = 97;
  torch::manual_seed(8);
  coe::CausalLM model(c);
  model->train();
  at::Tensor ids = torch::randint(0, c.vocab_size, {3, 11}, at::kLong);
  at::Tensor labels = ids.clone();
  labels.narrow(1, 8, 3).fill_(-100);  // padding tail
  auto run = [&](bool full) {
    model->zero_grad();
    coe::ForwardOptions o;
    o.return_logits = full;
    o.loss_chunk_tokens = 7;  // several chunks, the last one partial
    coe::LmOutput out = model->forward(ids, labels, o);
    EXPECT_EQ(out.logits.defined(), full);
    (out.loss + out.router_losses.aux_loss).backward();
    return std::make_pair(out.loss.item<double>(), coe::hf_state_dict(*model, true));
  };
  auto [full_loss, full_grads] = run(true);
  auto [chunk_loss, chunk_grads] = run(false);
  EXPECT_NEAR(full_loss, chunk_loss, 1e-6);
  for (const auto& [name, g] : full_grads) EXPECT_TRUE(at::allclose(g, chunk_grads.at(name), 1e-4, 1e-7)) << name;
}
