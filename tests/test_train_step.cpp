// The pieces of one optimizer step: gradient accumulation equals one big batch, clipping, and
// AdamW against libtorch's own AdamW, with an exact state round trip.
#include "coe/io/safetensors.h"
#include "coe/model/causal_lm.h"
#include "coe/train/adamw.h"
#include "coe/train/train_step.h"

#include "support/test_env.h"
#include "support/tiny_model.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include <cstdio>
#include <filesystem>

namespace {

coe::ModelConfig tiny_config(bool seq_aux) {
  coe::ModelConfig c = coe::test::tiny_model_config();
  c.aux_loss_alpha = 0.01;  // large enough that a wrong aux weighting shows
  c.seq_aux = seq_aux;
  return c;
}

// 8 rows of 24 tokens; row r keeps 24 - 2r labels (the rest -100), so micro-batches count
// different numbers of tokens.
coe::TokenBatch make_batch() {
  coe::TokenBatch b;
  b.batch_size = 8;
  b.seq_len = 24;
  at::manual_seed(7);
  at::Tensor ids = at::randint(0, 256, {8, 24}, at::kInt);
  const int32_t* p = ids.data_ptr<int32_t>();
  b.input_ids.assign(p, p + 8 * 24);
  b.labels = b.input_ids;
  for (int64_t r = 0; r < 8; ++r)
    for (int64_t s = 24 - 2 * r; s < 24; ++s) b.labels[r * 24 + s] = coe::kIgnoreLabel;
  b.record_index.assign(8, -1);
  b.lengths.assign(8, 24);
  return b;
}

std::map<std::string, at::Tensor> grads_of(const coe::CausalLMImpl& model) {
  std::map<std::string, at::Tensor> out;
  for (const auto& item : model.named_parameters(true))
    out[item.key()] = item.value().grad().defined() ? item.value().grad().clone() : at::zeros_like(item.value());
  return out;
}

TEST(TrainStep, TokenCountsAndSlicing) {
  coe::TokenBatch b = make_batch();
  // Row r counts labels at positions 1 .. 23 - 2r.
  int64_t expected = 0;
  for (int64_t r = 0; r < 8; ++r) expected += 23 - 2 * r;
  EXPECT_EQ(coe::count_loss_tokens(b), expected);
  auto micro = coe::split_micro_batches(b, 3);
  ASSERT_EQ(micro.size(), 3u);
  EXPECT_EQ(micro[2].batch_size, 2);
  EXPECT_EQ(micro[1].input_ids[0], b.input_ids[3 * 24]);
  int64_t sum = 0;
  for (const auto& m : micro) sum += coe::count_loss_tokens(m);
  EXPECT_EQ(sum, expected);
}

class Accumulation : public ::testing::TestWithParam<bool> {};

// 4 micro-batches of 2 rows give the gradients of one batch of 8 (seq_aux: exactly up to float32
// rounding; token-level aux loss: only approximately, see train_step.h).
TEST_P(Accumulation, FourMicroBatchesEqualOneBatch) {
  const bool seq_aux = GetParam();
  at::manual_seed(1);
  coe::CausalLM model(tiny_config(seq_aux));
  const coe::TokenBatch batch = make_batch();
  const c10::Device cpu(c10::kCPU);
  auto params = coe::optimizer_parameters(*model, coe::DecayMode::kAll);
  coe::AdamW opt(params, {});

  // Reference: the model's own loss on the whole batch, plus its aux loss.
  opt.zero_grad();
  model->train();
  const coe::DeviceBatch db = coe::to_device(batch, cpu);
  coe::LmOutput big = model->forward(db.input_ids, db.labels);
  (big.loss + big.router_losses.aux_loss).backward();
  const auto g_big = grads_of(*model);

  opt.zero_grad();
  coe::AccumulationResult acc = coe::accumulate_gradients(*model, coe::split_micro_batches(batch, 2), cpu);
  const auto g_acc = grads_of(*model);
  EXPECT_EQ(acc.loss_tokens, coe::count_loss_tokens(batch));
  EXPECT_EQ(acc.rows, 8);
  EXPECT_EQ(acc.tokens, 8 * 24);
  EXPECT_NEAR(acc.loss.item<float>(), big.loss.item<float>(), 1e-5);

  double max_rel = 0;
  for (const auto& [name, g] : g_big) {
    const at::Tensor d = (g_acc.at(name) - g).abs().max();
    const double scale = g.abs().max().item<double>() + 1e-12;
    max_rel = std::max(max_rel, d.item<double>() / scale);
    if (seq_aux) {
      EXPECT_TRUE(at::allclose(g_acc.at(name), g, /*rtol=*/1e-4, /*atol=*/1e-6)) << name;
    }
  }
  std::printf("seq_aux=%d: max relative gradient difference, 4 micro-batches vs one batch: %.3g\n", seq_aux, max_rel);
  if (seq_aux) {
    EXPECT_NEAR(acc.router_losses.aux_loss.item<float>(), big.router_losses.aux_loss.item<float>(), 1e-6);
    EXPECT_LT(max_rel, 1e-4);
  }

  // The naive mean of micro-batch means weighs tokens wrongly when their counts differ.
  opt.zero_grad();
  for (const auto& mb : coe::split_micro_batches(batch, 2)) {
    const coe::DeviceBatch m = coe::to_device(mb, cpu);
    coe::LmOutput out = model->forward(m.input_ids, m.labels);
    ((out.loss + out.router_losses.aux_loss) / 4.0).backward();
  }
  const auto g_naive = grads_of(*model);
  double naive_rel = 0;
  for (const auto& [name, g] : g_big)
    naive_rel =
        std::max(naive_rel, (g_naive.at(name) - g).abs().max().item<double>() / (g.abs().max().item<double>() + 1e-12));
  EXPECT_GT(naive_rel, 1e-3) << "the test batch does not distinguish token weighting";
}

INSTANTIATE_TEST_SUITE_P(SeqAux, Accumulation, ::testing::Values(true, false));

TEST(TrainStep, ClipGradNorm) {
  at::Tensor a = at::zeros({3}, at::kFloat).requires_grad_(true);
  at::Tensor b = at::zeros({2, 2}, at::kFloat).requires_grad_(true);
  a.mutable_grad() = at::tensor({3.0f, 0.0f, 0.0f});
  b.mutable_grad() = at::full({2, 2}, 2.0f);  // norm 4
  std::vector<coe::NamedParameter> params{{"a", a, true}, {"b", b, true}};
  at::Tensor norm = coe::clip_grad_norm(params, 1.0);
  EXPECT_FLOAT_EQ(norm.item<float>(), 5.0f);
  const float coef = 1.0f / (5.0f + 1e-6f);
  EXPECT_FLOAT_EQ(a.grad()[0].item<float>(), 3.0f * coef);
  EXPECT_FLOAT_EQ(b.grad()[1][1].item<float>(), 2.0f * coef);
  // Below the threshold: unchanged, norm still reported.
  norm = coe::clip_grad_norm(params, 10.0);
  EXPECT_NEAR(norm.item<float>(), 1.0f, 1e-6);
  EXPECT_FLOAT_EQ(a.grad()[0].item<float>(), 3.0f * coef);
  // Disabled: only the norm.
  EXPECT_NEAR(coe::clip_grad_norm(params, 0.0).item<float>(), 1.0f, 1e-6);
}

// Our AdamW against torch::optim::AdamW: the same algorithm, so identical bits.
}  // namespace
