// coe's AdamW: bit-identical to libtorch's AdamW, decay groups, and its state round trip through
// safetensors.
#include "coe/io/safetensors.h"
#include "coe/model/causal_lm.h"
#include "coe/train/adamw.h"

#include "support/test_env.h"
#include "support/tiny_model.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include <filesystem>

namespace {

TEST(AdamW, MatchesLibtorchAdamW) {
  at::manual_seed(3);
  at::Tensor w1 = at::randn({4, 5}).requires_grad_(true);
  at::Tensor w2 = w1.detach().clone().requires_grad_(true);
  at::Tensor n1 = at::randn({5}).requires_grad_(true);  // a "norm": decayed only with decay=all
  at::Tensor n2 = n1.detach().clone().requires_grad_(true);
  coe::AdamWOptions o;
  o.beta1 = 0.9;
  o.beta2 = 0.95;
  o.eps = 1e-8;
  o.weight_decay = 0.1;
  coe::AdamW ours({{"w", w1, true}, {"n", n1, false}}, o);
  torch::optim::AdamW decayed({w2}, torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1));
  torch::optim::AdamW plain({n2}, torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.0));
  for (int step = 0; step < 5; ++step) {
    const double lr = 1e-2 * (step + 1) / 5.0;
    static_cast<torch::optim::AdamWOptions&>(decayed.param_groups()[0].options()).lr(lr);
    static_cast<torch::optim::AdamWOptions&>(plain.param_groups()[0].options()).lr(lr);
    at::Tensor g = at::randn({4, 5}), h = at::randn({5});
    w1.mutable_grad() = g.clone();
    w2.mutable_grad() = g.clone();
    n1.mutable_grad() = h.clone();
    n2.mutable_grad() = h.clone();
    ours.step(lr);
    decayed.step();
    plain.step();
    ASSERT_TRUE(at::equal(w1, w2)) << "step " << step;
    ASSERT_TRUE(at::equal(n1, n2)) << "step " << step;
  }
}

TEST(AdamW, DecayModesAndStateRoundTrip) {
  at::manual_seed(5);
  coe::CausalLM model(coe::test::tiny_model_config());
  auto all = coe::optimizer_parameters(*model, coe::DecayMode::kAll);
  auto some = coe::optimizer_parameters(*model, coe::DecayMode::kNoNormsBiases);
  ASSERT_EQ(all.size(), some.size());
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_TRUE(all[i].decay);
    const bool is_norm = all[i].name.find("norm") != std::string::npos;
    EXPECT_EQ(some[i].decay, !is_norm) << all[i].name;
  }

  coe::AdamW opt(all, {});
  for (auto& p : all) p.param.mutable_grad() = at::randn_like(p.param);
  opt.step(1e-3);
  const auto dir = coe::test::make_temp_dir("adamw");
  const std::string file = (dir / "opt.safetensors").string();
  coe::save_safetensors(file, opt.state());

  coe::AdamW restored(coe::optimizer_parameters(*model, coe::DecayMode::kAll), {});
  restored.load_state(coe::load_safetensors(file).tensors, file);
  const auto a = opt.state(), b = restored.state();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_TRUE(at::equal(t, b.at(name))) << name;

  auto broken = opt.state();
  broken.erase(broken.begin());
  try {
    restored.load_state(broken, "x.safetensors");
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("x.safetensors: missing optimizer tensor"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
