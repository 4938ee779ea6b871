// The memory model: analytical parameter counts equal the real CausalLM's (total and per
// component) for MoE, CoE with independent and shared gates, dense layers, q-LoRA and tied
// embeddings; active parameters per token against a hand count; coe-memory's --json, --compare
// and --measure (whose CPU measurement of saved activations the estimate must match).
#include "coe/model/causal_lm.h"
#include "coe/train/memory_model.h"

#include "support/test_env.h"
#include "support/tiny_model.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

namespace {

namespace fs = std::filesystem;

// The tiny model with a different size for every dimension, so a count that mixes two of them up
// cannot match CausalLM's parameters by accident.
coe::ModelConfig tiny() {
  coe::ModelConfig c = coe::test::tiny_model_config();
  c.vocab_size = 37;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.moe_intermediate_size = 6;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 2;
  c.kv_lora_rank = 8;
  c.qk_nope_head_dim = 4;
  c.qk_rope_head_dim = 2;
  c.v_head_dim = 3;
  c.n_routed_experts = 5;
  return c;
}

struct Counted {
  int64_t total = 0, embeddings = 0, lm_head = 0, routed = 0, shared = 0, gates = 0, norms = 0, attention = 0,
          dense = 0;
};

// Sums numel over the model's parameters, sorted into components by their (reference) names.
Counted count_model(const coe::ModelConfig& config) {
  coe::CausalLM model(config);
  Counted c;
  for (const auto& item : model->named_parameters()) {
    const std::string& n = item.key();
    const int64_t k = item.value().numel();
    c.total += k;
    auto has = [&](const char* s) { return n.find(s) != std::string::npos; };
    if (has("embed_tokens")) c.embeddings += k;
    else if (n.rfind("lm_head", 0) == 0) c.lm_head += k;
    else if (has("norm")) c.norms += k;
    else if (has(".mlp.experts.")) c.routed += k;
    else if (has(".mlp.shared_experts.")) c.shared += k;
    else if (has(".mlp.gate.")) c.gates += k;
    else if (has(".self_attn.")) c.attention += k;
    else if (has(".mlp.")) c.dense += k;
    else ADD_FAILURE() << "unclassified parameter " << n;
  }
  return c;
}

void expect_counts_match(const coe::ModelConfig& config, const std::string& what) {
  SCOPED_TRACE(what);
  const Counted m = count_model(config);
  const coe::ParamCounts p = coe::count_parameters(config);
  EXPECT_EQ(p.total(), m.total);
  EXPECT_EQ(p.embeddings, m.embeddings);
  EXPECT_EQ(p.lm_head, m.lm_head);
  EXPECT_EQ(p.routed_experts, m.routed);
  EXPECT_EQ(p.shared_experts, m.shared);
  EXPECT_EQ(p.gates, m.gates);
  EXPECT_EQ(p.norms, m.norms);
  EXPECT_EQ(p.attention, m.attention);
  EXPECT_EQ(p.dense_mlps, m.dense);
}

TEST(MemoryModel, ParameterCountsEqualTheModel) {
  coe::ModelConfig c = tiny();
  expect_counts_match(c, "MoE C=1");
  c.inner_iter = 2;
  expect_counts_match(c, "CoE C=2, independent gates");
  c.use_igate = false;
  expect_counts_match(c, "CoE C=2, shared gate");
  c = tiny();
  c.inner_iter = 3;
  c.first_k_dense_replace = 1;
  c.moe_layer_freq = 2;
  expect_counts_match(c, "dense first layer, MoE every other layer");
  c = tiny();
  c.q_lora_rank = 5;
  c.n_shared_experts = 2;
  expect_counts_match(c, "q-LoRA, two shared experts");
  c = tiny();
  c.tie_word_embeddings = true;
  c.n_shared_experts = 0;
  c.inner_iter = 2;
  expect_counts_match(c, "tied embeddings, no shared experts");
  c = tiny();
  c.n_routed_experts = 0;
  expect_counts_match(c, "all layers dense");
  c = tiny();
  c.inner_iter = 2;
  c.topk_method = coe::TopkMethod::kNoauxTc;  // the correction biases are buffers: no parameters
  c.scoring_func = coe::ScoringFunc::kSigmoid;
  expect_counts_match(c, "noaux_tc with sigmoid scores");
}

TEST(MemoryModel, ActiveParametersPerTokenHandCount) {
  coe::ModelConfig c;
  c.vocab_size = 10;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.moe_intermediate_size = 3;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 1;
  c.kv_lora_rank = 4;
  c.qk_nope_head_dim = 2;
  c.qk_rope_head_dim = 2;
  c.v_head_dim = 2;
  c.n_routed_experts = 4;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 1;
  c.inner_iter = 2;
  c.max_position_embeddings = 16;
  // embeddings 10*8 = 80, lm_head 80, final norm 8; attention: q 8*1*4 = 32, kv_a 8*(4+2) = 48,
  // kv_b 4*1*(2+2) = 16, o 1*2*8 = 16 -> 112; layer norms: kv_a 4 + 2*8 = 20; gates 2*4*8 = 64;
  // routed experts 4 * 3*8*3 = 288; shared expert 3*8*3 = 72. Total 724.
  const coe::ParamCounts p = coe::count_parameters(c);
  EXPECT_EQ(p.total(), 724);
  EXPECT_EQ(p.total(), count_model(c).total);
  // A token meets at most C*K = 2 distinct routed experts: 724 - 288 + 2*72 = 580.
  EXPECT_EQ(p.active_per_token, 580);
  EXPECT_EQ(p.expert_calls_per_token, 2 * (1 + 1));
  // C*K = 6 > E = 4: every routed expert can be used.
  c.num_experts_per_tok = 3;
  EXPECT_EQ(coe::count_parameters(c).active_per_token, coe::count_parameters(c).total());
}

TEST(MemoryModel, CombinatorialRatio) {
  // The paper's "823x" for C(64,4)^2 / C(64,8) is about 91.2 (635376^2 / 4426165368).
  EXPECT_NEAR(coe::combinatorial_ratio(64, 4, 2), 635376.0 * 635376.0 / 4426165368.0, 1e-6);
  EXPECT_NEAR(coe::combinatorial_ratio(64, 4, 2), 91.21, 0.01);
}

TEST(MemoryModel, CheckpointingSavesOnlyLayerInputs) {
  const coe::ModelConfig c = tiny();
  coe::MemoryOptions o;
  o.micro_batch = 2;
  o.seq_len = 16;
  const coe::MemoryEstimate e = coe::estimate_memory(c, o);
  EXPECT_LT(e.with_checkpointing.saved_bytes, e.without_checkpointing.saved_bytes);
  EXPECT_EQ(e.states_bytes, 16 * e.params.total());
  // CoE with C = 2 and K/2 saves the same routed rows (T*K in total) but a second copy of the
  // per-iteration tensors, so it never saves less than MoE.
  coe::ModelConfig coe = c;
  coe.inner_iter = 2;
  coe.num_experts_per_tok = 1;
  EXPECT_GE(coe::estimate_memory(coe, o).without_checkpointing.saved_bytes, e.without_checkpointing.saved_bytes);
}

// ---- coe-memory ----

class MemoryTool : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { dir_ = coe::test::make_temp_dir("memory-tool"); }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static fs::path write_config(const std::string& name, const std::string& model_extra) {
    const fs::path p = dir_ / name;
    std::ofstream(p) << "model:\n  vocab_size: 300\n  hidden_size: 32\n  intermediate_size: 48\n"
                        "  moe_intermediate_size: 16\n  num_hidden_layers: 2\n  num_attention_heads: 2\n"
                        "  kv_lora_rank: 16\n  qk_nope_head_dim: 8\n  qk_rope_head_dim: 4\n  v_head_dim: 8\n"
                        "  n_routed_experts: 7\n  n_shared_experts: 1\n  max_position_embeddings: 256\n"
                     << model_extra
                     << "data:\n  train_files: [unused.jsonl]\n  tokenizer: byte\n  max_length: 32\n"
                        "trainer:\n  global_batch: 4\n  micro_batch: 2\n  device: cpu\n  threads: 1\n";
    return p;
  }
  static inline fs::path dir_;
};

TEST_F(MemoryTool, JsonHasTheParameterCountsAndTheEstimate) {
  const fs::path cfg = write_config("moe.yaml", "  num_experts_per_tok: 4\n");
  const fs::path json = dir_ / "moe.json";
  std::string out;
  ASSERT_EQ(coe::test::run_command(
                coe::test::tool_path("coe-memory").string() + " " + cfg.string() + " --json " + json.string(), &out),
            0)
      << out;
  std::ifstream in(json);
  const nlohmann::json j = nlohmann::json::parse(in);
  coe::ModelConfig m;
  m.vocab_size = 300;
  m.hidden_size = 32;
  m.intermediate_size = 48;
  m.moe_intermediate_size = 16;
  m.num_hidden_layers = 2;
  m.num_attention_heads = 2;
  m.kv_lora_rank = 16;
  m.qk_nope_head_dim = 8;
  m.qk_rope_head_dim = 4;
  m.v_head_dim = 8;
  m.n_routed_experts = 7;
  m.n_shared_experts = 1;
  m.num_experts_per_tok = 4;
  m.max_position_embeddings = 256;
  EXPECT_EQ(j.at("params_total").get<int64_t>(), count_model(m).total);
  EXPECT_EQ(j.at("params_active_per_token").get<int64_t>(), coe::count_parameters(m).active_per_token);
  EXPECT_GT(j.at("estimate_bytes").get<int64_t>(), 16 * count_model(m).total);
  EXPECT_NE(out.find("routed experts"), std::string::npos) << out;
}

TEST_F(MemoryTool, CompareShowsBothConfigs) {
  const fs::path a = write_config("moe-k4.yaml", "  num_experts_per_tok: 4\n");
  const fs::path b = write_config("coe-c2-k2.yaml", "  num_experts_per_tok: 2\n  inner_iter: 2\n");
  std::string out;
  ASSERT_EQ(coe::test::run_command(coe::test::tool_path("coe-memory").string() + " --compare " + a.string() + " " +
                                       b.string() + " --micro-batch 1 --checkpointing",
                                   &out),
            0)
      << out;
  EXPECT_NE(out.find("moe-k4.yaml"), std::string::npos) << out;
  EXPECT_NE(out.find("coe-c2-k2.yaml"), std::string::npos) << out;
  EXPECT_NE(out.find("(B-A)/A"), std::string::npos) << out;
  EXPECT_NE(out.find("where the difference comes from"), std::string::npos) << out;
}

TEST_F(MemoryTool, MeasureOnCpuMatchesTheSavedActivations) {
  const fs::path cfg = write_config("measure.yaml", "  num_experts_per_tok: 2\n  inner_iter: 2\n");
  for (const std::string dispatch : {"segmented", "grouped"})
    for (const std::string ckpt : {"--no-checkpointing", "--checkpointing"}) {
      SCOPED_TRACE(dispatch + " " + ckpt);
      const fs::path json = dir_ / "measure.json";
      std::string out;
      ASSERT_EQ(coe::test::run_command(coe::test::tool_path("coe-memory").string() + " " + cfg.string() + " " + ckpt +
                                           " --set trainer.expert_dispatch=" + dispatch +
                                           " --measure --measure-steps 2 --json " + json.string(),
                                       &out),
                0)
          << out;
      EXPECT_NE(out.find(dispatch + " expert dispatch"), std::string::npos) << out;
      std::ifstream in(json);
      const nlohmann::json j = nlohmann::json::parse(in);
      const double measured_saved = j.at("measured_saved_activations_bytes").get<double>();
      const double saved = j.at("activations_saved_bytes").get<double>();
      EXPECT_NEAR(saved / measured_saved, 1.0, 0.02) << out;
      const double peak = j.at("measured_peak_bytes").get<double>();
      EXPECT_GT(peak, 0.0);
      EXPECT_NEAR(j.at("estimate_bytes").get<double>() / peak, 1.0, 0.15) << out;
    }
}

}  // namespace
