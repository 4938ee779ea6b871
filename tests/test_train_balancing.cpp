// The research switches in the training loop, on a tiny model and real GSM8K text: aux-loss-free
// balancing (bias counted over the whole global batch, saved in the checkpoint, bit-exact resume),
// the router z-loss and expert-load statistics in metrics.jsonl and TensorBoard, and warm starts
// from a checkpoint of another configuration (trainer.init_from).
#include "coe/io/hf_checkpoint.h"
#include "coe/io/safetensors.h"
#include "coe/train/checkpoint.h"
#include "coe/train/trainer.h"
#include "coe/util/error.h"

#include "support/expect_error.h"
#include "support/test_env.h"
#include "support/tfevents_reader.h"
#include "support/tiny_model.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <torch/autograd.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using coe::test::read_jsonl;

// DeepSeek-V3's routing on the tiny CoE: sigmoid scores, bias-corrected top-k, no aux loss, a
// z-loss; two iterations with independent gates.
const std::vector<std::string> kAuxFree{"model.topk_method=noaux_tc",          "model.scoring_func=sigmoid",
                                        "model.norm_topk_prob=true",           "model.aux_loss_alpha=0",
                                        "model.router_z_loss_alpha=0.001",     "model.inner_iter=2",
                                        "trainer.router_bias_update_rate=0.01"};

class Research : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    spdlog::set_level(spdlog::level::warn);
    root_ = coe::test::make_temp_dir("research");
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  static coe::TrainConfig config(const std::string& run, std::vector<std::string> overrides, int steps = 8) {
    const fs::path yaml = root_ / (run + ".yaml");
    std::ofstream(yaml) << coe::test::tiny_gsm8k_run_yaml(root_ / "gsm8k-byte", root_ / run, steps);
    return coe::load_train_config(yaml.string(), overrides);
  }

  static coe::TrainOptions quiet() {
    coe::TrainOptions o;
    o.handle_signals = false;
    return o;
  }

  // The routers' correction biases of a model, by HF name.
  static std::map<std::string, at::Tensor> biases(const coe::CausalLMImpl& model) {
    std::map<std::string, at::Tensor> out;
    for (const auto& [name, t] : coe::hf_state_dict(model))
      if (name.find("e_score_correction_bias") != std::string::npos) out[name] = t.clone();
    return out;
  }

  // A checkpoint directory (config.json + model.safetensors) of a freshly initialised model.
  static fs::path source_checkpoint(const std::string& name, coe::ModelConfig c, uint64_t seed) {
    c.vocab_size = 259;  // the byte tokenizer's
    torch::manual_seed(seed);
    coe::CausalLM model(c);
    const fs::path dir = root_ / name;
    coe::save_hf_checkpoint(*model, dir.string());
    return dir;
  }

  static fs::path root_;
};

fs::path Research::root_;

TEST_F(Research, AuxFreeRunLogsLoadAndZLossAndResumesBitExact) {
  std::vector<std::string> common = kAuxFree;
  common.insert(common.end(), {"trainer.log_interval=3", "trainer.val_interval=4", "trainer.save_interval=0"});
  {
    coe::Trainer straight(config("aux-free", common), quiet());
    ASSERT_EQ(straight.run().status, coe::TrainStatus::kCompleted);
  }
  {
    coe::TrainOptions o = quiet();
    o.max_steps = 4;  // between two log lines (3 and 6): the load window crosses the checkpoint
    coe::Trainer first(config("aux-free-resumed", common), o);
    ASSERT_EQ(first.run().status, coe::TrainStatus::kStopped);
  }
  at::manual_seed(12345);
  {
    coe::TrainOptions o = quiet();
    o.resume = true;
    coe::Trainer second(config("aux-free-resumed", common), o);
    ASSERT_EQ(second.run().status, coe::TrainStatus::kCompleted);
  }
  const auto a = read_jsonl(root_ / "aux-free" / "metrics.jsonl");
  const auto b = read_jsonl(root_ / "aux-free-resumed" / "metrics.jsonl");
  ASSERT_EQ(a.size(), 8u);
  ASSERT_EQ(b.size(), 8u);
  for (size_t i = 0; i < 8; ++i) {
    const int64_t step = static_cast<int64_t>(i) + 1;
    SCOPED_TRACE("step " + std::to_string(step));
    for (const char* key : {"loss", "aux_loss", "z_loss", "grad_norm"}) EXPECT_EQ(b[i][key], a[i][key]) << key;
    EXPECT_GT(a[i]["z_loss"].get<double>(), 0.0);
    EXPECT_EQ(a[i]["aux_loss"].get<double>(), 0.0);
    // The load statistics come with the log lines (steps 1, 3, 6 and the last), the same after the resume.
    const bool log_line = step == 1 || step % 3 == 0 || step == 8;
    ASSERT_EQ(a[i].contains("router"), log_line);
    if (!log_line) continue;
    EXPECT_EQ(b[i]["router"], a[i]["router"]);
    const auto& router = a[i]["router"];
    ASSERT_EQ(router.size(), 4u);
    for (const char* key : {"layer0_iter0", "layer0_iter1", "layer1_iter0", "layer1_iter1"}) {
      ASSERT_TRUE(router.contains(key)) << key;
      EXPECT_GE(router[key]["max_over_mean"].get<double>(), 1.0);
      EXPECT_LE(router[key]["max_over_mean"].get<double>(), 4.0);  // at most E / K: one expert in every top-2
      EXPECT_GE(router[key]["cv"].get<double>(), 0.0);
    }
  }
  // The bias is in the checkpoint under its HF name, moved by +-gamma per step.
  const auto ta = coe::load_safetensors((root_ / "aux-free" / "step-8" / "model.safetensors").string()).tensors;
  const auto tb = coe::load_safetensors((root_ / "aux-free-resumed" / "step-8" / "model.safetensors").string()).tensors;
  ASSERT_EQ(ta.size(), tb.size());
  for (const auto& [name, t] : ta) EXPECT_TRUE(at::equal(t, tb.at(name))) << name;
  int n_bias = 0;
  for (const auto& [name, t] : ta) {
    if (name.find("e_score_correction_bias") == std::string::npos) continue;
    ++n_bias;
    EXPECT_GT(t.abs().max().item<double>(), 0.0) << name << " never moved";
    EXPECT_LE(t.abs().max().item<double>(), 8 * 0.01 + 1e-6) << name;
    const at::Tensor steps = t.to(at::kDouble) / 0.01;
    EXPECT_LT((steps - steps.round()).abs().max().item<double>(), 1e-3) << name << ": a sum of +-gamma steps";
  }
  EXPECT_EQ(n_bias, 4);
  EXPECT_TRUE(ta.count("model.layers.1.mlp.gate.1.e_score_correction_bias"));

  // TensorBoard: train/z_loss every step, the load statistics at the log lines.
  const auto scalars = coe::test::union_of_scalars(root_ / "aux-free" / "tb");
  EXPECT_TRUE(scalars.count({"train/z_loss", 2}));
  EXPECT_TRUE(scalars.count({"router/layer1_iter1/max_over_mean", 6}));
  EXPECT_TRUE(scalars.count({"router/layer0_iter0/cv", 8}));
  EXPECT_FALSE(scalars.count({"router/layer0_iter0/cv", 2}));
  EXPECT_FLOAT_EQ(scalars.at({"router/layer0_iter1/max_over_mean", 3}),
                  a[2]["router"]["layer0_iter1"]["max_over_mean"].get<float>());
}

TEST_F(Research, BiasUpdateCountsTheWholeGlobalBatch) {
  // One step of 8 rows, in micro-batches of 4 or in one: the routing of step 1 is the same, so
  // the load over the global batch, and with it the bias, must be too (per micro-batch updates
  // would move some experts by 2 gamma).
  std::map<std::string, at::Tensor> by_micro[2];
  int i = 0;
  for (const char* micro : {"trainer.micro_batch=4", "trainer.micro_batch=8"}) {
    std::vector<std::string> o = kAuxFree;
    o.insert(o.end(), {micro, "optim.warmup_steps=1"});
    coe::Trainer t(config(std::string("one-step-") + std::to_string(i), o, 1), quiet());
    ASSERT_EQ(t.run().status, coe::TrainStatus::kCompleted);
    by_micro[i++] = biases(t.model());
  }
  ASSERT_EQ(by_micro[0].size(), 4u);
  for (const auto& [name, t] : by_micro[0]) {
    EXPECT_TRUE(at::equal(t, by_micro[1].at(name))) << name;
    for (int64_t e = 0; e < t.numel(); ++e) {
      const double v = t[e].item<double>();
      EXPECT_TRUE(std::abs(v) < 1e-9 || std::abs(std::abs(v) - 0.01) < 1e-6) << name << "[" << e << "] = " << v;
    }
  }
}

TEST_F(Research, GreedyRunsLogLoadButHaveNoBiasOrZLoss) {
  coe::Trainer t(config("greedy", {"trainer.log_interval=2"}, 2), quiet());
  ASSERT_EQ(t.run().status, coe::TrainStatus::kCompleted);
  EXPECT_TRUE(biases(t.model()).empty());
  const auto m = read_jsonl(root_ / "greedy" / "metrics.jsonl");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_FALSE(m[0].contains("z_loss"));
  EXPECT_TRUE(m[1]["router"].contains("layer1_iter0"));
}

TEST_F(Research, WarmStartMoeToMoeGivesTheSourceLogits) {
  const fs::path src = source_checkpoint("src-moe", coe::test::tiny_model_config(), 21);
  // Another seed: without the warm start the weights would differ.
  coe::Trainer t(config("warm-moe", {"trainer.seed=99", "trainer.init_from=" + src.string()}), quiet());
  coe::CausalLM source = coe::load_hf_checkpoint(src.string());
  source->eval();
  t.model().eval();
  const at::Tensor ids = torch::randint(0, 259, {2, 32});
  EXPECT_TRUE(at::equal(t.model().forward(ids).logits, source->forward(ids).logits));
  const std::string table = coe::test::read_file(root_ / "warm-moe" / "init_from.txt");
  EXPECT_NE(table.find("0 initialised, 0 dropped"), std::string::npos) << table;
  EXPECT_NE(table.find("copied  model.layers.1.mlp.experts.7.down_proj.weight"), std::string::npos) << table;
  // The optimizer starts fresh: no moments yet.
  for (const auto& p : t.optimizer().parameters()) EXPECT_FALSE(p.param.grad().defined());
}

TEST_F(Research, WarmStartMoeToCoeCopiesEveryTensor) {
  const fs::path src = source_checkpoint("src-moe-c1", coe::test::tiny_model_config(), 22);
  // C = 2 with aux-free balancing: the gate goes to both iterations; the biases start at zero.
  std::vector<std::string> o = kAuxFree;
  o.push_back("trainer.init_from=" + src.string());
  coe::Trainer t(config("warm-coe", o), quiet());
  const auto source = coe::read_hf_weights(src.string());
  const auto target = coe::hf_state_dict(t.model());
  int copied = 0, gates = 0;
  for (const auto& [name, tensor] : target) {
    if (name.find("e_score_correction_bias") != std::string::npos) {
      EXPECT_EQ(tensor.abs().sum().item<double>(), 0.0) << name;
      continue;
    }
    const auto gate = name.find(".mlp.gate.");
    const std::string from =
        gate == std::string::npos ? name : name.substr(0, gate) + ".mlp.gate.0.weight";  // C=1: gate.0
    if (gate != std::string::npos) ++gates;
    ASSERT_TRUE(source.count(from)) << name;
    EXPECT_TRUE(at::equal(tensor, source.at(from))) << name << " from " << from;
    ++copied;
  }
  EXPECT_EQ(gates, 4);  // 2 layers x 2 iterations
  EXPECT_EQ(copied + 4, static_cast<int>(target.size()));
  const std::string table = coe::test::read_file(root_ / "warm-coe" / "init_from.txt");
  EXPECT_NE(table.find(std::to_string(copied) + " copied, 4 initialised, 0 dropped"), std::string::npos) << table;
  EXPECT_NE(table.find("model.layers.0.mlp.gate.1.weight"), std::string::npos);
  EXPECT_NE(table.find("the source layer's only gate"), std::string::npos);
  // Independent gates start equal and diverge with training.
  ASSERT_EQ(t.run().status, coe::TrainStatus::kCompleted);
  const auto trained = coe::hf_state_dict(t.model());
  EXPECT_FALSE(
      at::equal(trained.at("model.layers.0.mlp.gate.0.weight"), trained.at("model.layers.0.mlp.gate.1.weight")));
}

TEST_F(Research, WarmStartDropsABiasTheTargetDoesNotUse) {
  coe::ModelConfig c = coe::test::tiny_model_config();
  c.topk_method = coe::TopkMethod::kNoauxTc;
  const fs::path src = source_checkpoint("src-noaux", c, 23);
  coe::Trainer t(config("warm-drop", {"trainer.init_from=" + src.string()}), quiet());
  const std::string table = coe::test::read_file(root_ / "warm-drop" / "init_from.txt");
  EXPECT_NE(table.find("0 initialised, 2 dropped"), std::string::npos) << table;
  EXPECT_NE(table.find("does not use topk_method noaux_tc"), std::string::npos) << table;
}

TEST_F(Research, WarmStartErrorsNameTheTensor) {
  coe::ModelConfig c2 = coe::test::tiny_model_config();
  c2.inner_iter = 2;
  const fs::path src_c2 = source_checkpoint("src-c2", c2, 24);
  coe::test::expect_error(
      [&] {
        coe::Trainer(config("warm-c3", {"model.inner_iter=3", "trainer.init_from=" + src_c2.string()}), quiet());
      },
      {"trainer.init_from", "cannot map the 2 gates of model.layers.0.mlp.gate (gate.0, gate.1)",
       "gates (gate.0, gate.1, gate.2)", "'model.layers.0.mlp.gate.0.weight'"});
  const fs::path src = source_checkpoint("src-c1", coe::test::tiny_model_config(), 26);
  coe::test::expect_error(
      [&] {
        coe::Trainer(config("warm-experts", {"model.n_routed_experts=6", "trainer.init_from=" + src.string()}),
                     quiet());
      },
      {"trainer.init_from", "model.layers.0.mlp.gate.0.weight", "8x32", "6x32"});
  coe::test::expect_error(
      [&] {
        coe::Trainer(config("warm-layers", {"model.num_hidden_layers=1", "trainer.init_from=" + src.string()}),
                     quiet());
      },
      {"trainer.init_from", "tensor 'model.layers.1.", "has no place in this model"});
  const fs::path not_a_checkpoint = root_ / "not-a-checkpoint";
  fs::create_directories(not_a_checkpoint);
  coe::test::expect_error(
      [&] { coe::Trainer(config("warm-none", {"trainer.init_from=" + not_a_checkpoint.string()}), quiet()); },
      {"trainer.init_from", not_a_checkpoint.string(), "neither a checkpoint"});
  coe::test::expect_error(
      [&] {
        config("warm-resume", {"trainer.init_from=x", "trainer.resume=runs/a/step-2"});
      },
      {"trainer.init_from", "not both"});
  coe::test::expect_error([&] { config("bad-rate", {"trainer.router_bias_update_rate=-0.001"}); },
                          {"trainer.router_bias_update_rate", "must be >= 0"});
  coe::test::expect_error([&] { config("bad-score", {"model.scoring_func=relu"}); },
                          {"scoring_func", "unknown scoring function 'relu'"});
}

TEST_F(Research, ResumingAWarmStartedRunTakesItsOwnCheckpoint) {
  const fs::path src = source_checkpoint("src-resume", coe::test::tiny_model_config(), 25);
  const std::vector<std::string> o{"trainer.init_from=" + src.string()};
  {
    coe::TrainOptions opts = quiet();
    opts.max_steps = 2;
    coe::Trainer first(config("warm-resume-run", o, 4), opts);
    ASSERT_EQ(first.run().status, coe::TrainStatus::kStopped);
  }
  coe::TrainOptions opts = quiet();
  opts.resume = true;
  coe::Trainer second(config("warm-resume-run", o, 4), opts);
  const auto saved = coe::read_hf_weights((root_ / "warm-resume-run" / "step-2").string());
  for (const auto& [name, t] : coe::hf_state_dict(second.model()))
    EXPECT_TRUE(at::equal(t, saved.at(name))) << name << ": the checkpoint's weights, not init_from's";
  EXPECT_EQ(second.run().status, coe::TrainStatus::kCompleted);
}

}  // namespace
