// The memory model: analytical parameter counts equal the real CausalLM's (total and per
// component) for MoE, CoE with independent and shared gates, dense layers, q-LoRA and tied
// embeddings; active parameters per token against a hand count; coe-memory's --json, --compare
// and --measure (whose CPU measurement of saved activations the estimate must match).
#include "coe/model/causal_lm.h"
#include "coe/train/memory_model.h"
#include "coe/util/error.h"

#include "support/dist_launch.h"
#include "support/test_env.h"
#include "support/tiny_model.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
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

// ---- per rank: expert parallelism and ZeRO-1 ----

// The paper's model (ModelConfig's defaults: H=1024, 4 MoE layers, experts of width 704) with
// `routed` routed experts and CoE C=2, K=4, as the paper's main result.
coe::ModelConfig paper_model(int64_t routed) {
  coe::ModelConfig c;
  c.n_routed_experts = routed;
  c.num_experts_per_tok = 4;
  c.inner_iter = 2;
  return c;
}

coe::MemoryOptions layout(int64_t world, int64_t ep, bool sharded) {
  coe::MemoryOptions o;
  o.micro_batch = 1;
  o.seq_len = 512;
  o.bf16 = true;
  o.fused_attention = true;
  o.grouped_dispatch = true;
  o.world_size = world;
  o.expert_parallel = ep;
  o.shard_optimizer = sharded;
  return o;
}

int64_t term(const coe::MemoryEstimate& e, size_t i) { return e.states.at(i).bytes; }

// The bytes of a peak candidate by name (-1 if it is not one).
int64_t phase(const coe::ActivationEstimate& a, const std::string& name) {
  for (const auto& p : a.phases)
    if (p.name == name) return p.bytes;
  return -1;
}

TEST(MemoryModel, PerRankStatesSplitTheExpertsAndShardTheMoments) {
  const coe::ModelConfig c = paper_model(64);
  const coe::ParamCounts p = coe::count_parameters(c);
  // Routed experts: 4 layers x 64 experts x 3 matrices of 1024 x 704.
  const int64_t Pe = 4 * 64 * 3 * 1024 * 704;
  ASSERT_EQ(p.routed_experts, Pe);
  const int64_t Pr = p.total() - Pe, P = p.total();
  // ZeRO-1's largest flat bucket: the embedding (102400 x 1024 floats), larger than
  // trainer.dist_bucket_mb's 25 MiB, is a bucket alone.
  const int64_t bucket = 4 * 102400 * 1024;
  auto up = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  const std::string reduce = "gradient reduce-scatter (ZeRO-1)";

  // W = 8, EP = 8, sharded: each rank holds 8 of the 64 experts; every moment is split 8 ways
  // (the replicated parameters over 8 ranks, each expert shard over the W/EP = 1 rank holding it).
  const coe::MemoryEstimate e88 = coe::estimate_memory(c, layout(8, 8, true));
  EXPECT_EQ(e88.params_per_rank, Pr + Pe / 8);
  EXPECT_EQ(term(e88, 0), 4 * (Pr + Pe / 8));
  EXPECT_EQ(term(e88, 1), 4 * (Pr + Pe / 8));
  EXPECT_EQ(term(e88, 2), 8 * (up(Pr, 8) + Pe / 8));
  EXPECT_EQ(e88.states.size(), 3u);  // no buffer held across steps
  EXPECT_EQ(e88.states_bytes, 8 * (Pr + Pe / 8) + 8 * (up(Pr, 8) + Pe / 8));
  // At the end of the gradient reduction the rank holds, beside the full gradients, its shards of
  // the summed gradients (4 bytes per moment pair's element) and one flat bucket.
  EXPECT_EQ(e88.reduce_scatter_bytes, 4 * (up(Pr, 8) + Pe / 8) + bucket);
  EXPECT_EQ(phase(e88.with_checkpointing, reduce), e88.reduce_scatter_bytes);
  EXPECT_EQ(phase(e88.without_checkpointing, reduce), e88.reduce_scatter_bytes);
  EXPECT_EQ(e88.all_to_all_bytes, 4 * 512 * 4 * 1024);  // f*T*K*H
  EXPECT_NE(e88.states[2].formula.find("per rank"), std::string::npos);

  // W = 8, EP = 2, sharded: 32 experts per rank, their moments split over the 4 ranks holding them.
  const coe::MemoryEstimate e82 = coe::estimate_memory(c, layout(8, 2, true));
  EXPECT_EQ(term(e82, 0), 4 * (Pr + Pe / 2));
  EXPECT_EQ(term(e82, 1), 4 * (Pr + Pe / 2));
  EXPECT_EQ(term(e82, 2), 8 * (up(Pr, 8) + Pe / 2 / 4));
  EXPECT_EQ(e82.reduce_scatter_bytes, 4 * (up(Pr, 8) + Pe / 2 / 4) + bucket);
  // Unsharded: full moments, and the all-reduce buckets hold a float32 copy of every gradient
  // that is reduced: the replicated ones (over 8 ranks) and the experts' (over 4).
  const coe::MemoryEstimate e82r = coe::estimate_memory(c, layout(8, 2, false));
  EXPECT_EQ(term(e82r, 2), 8 * (Pr + Pe / 2));
  EXPECT_EQ(term(e82r, 3), 4 * (Pr + Pe / 2));
  EXPECT_EQ(e82r.reduce_scatter_bytes, 0);
  EXPECT_EQ(phase(e82r.with_checkpointing, reduce), -1);
  // W = EP = 8 unsharded: no other rank holds this rank's experts, so only Pr is all-reduced.
  EXPECT_EQ(term(coe::estimate_memory(c, layout(8, 8, false)), 3), 4 * Pr);

  // W = 8 without expert parallelism or sharding: one process's figures plus the buckets (4P).
  const coe::MemoryEstimate one = coe::estimate_memory(c, layout(1, 1, false));
  const coe::MemoryEstimate dp = coe::estimate_memory(c, layout(8, 1, false));
  ASSERT_EQ(one.states.size(), 3u);
  EXPECT_EQ(one.states_bytes, 16 * P);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(term(dp, i), term(one, i));
  EXPECT_EQ(term(dp, 3), 4 * P);
  EXPECT_EQ(dp.states_bytes, 20 * P);
  EXPECT_EQ(dp.without_checkpointing.peak_bytes, one.without_checkpointing.peak_bytes);
  EXPECT_EQ(dp.with_checkpointing.peak_bytes, one.with_checkpointing.peak_bytes);
  // DP + ZeRO-1: moments / 8, no gradient copy held across steps.
  const coe::MemoryEstimate dps = coe::estimate_memory(c, layout(8, 1, true));
  EXPECT_EQ(dps.states_bytes, 8 * P + 8 * up(P, 8));
  EXPECT_EQ(dps.reduce_scatter_bytes, 4 * up(P, 8) + bucket);
  // One process: sharding over one rank changes nothing.
  EXPECT_EQ(coe::estimate_memory(c, layout(1, 1, true)).total_bytes(), one.total_bytes());
  EXPECT_EQ(one.all_to_all_bytes, 0);

  // The paper's 63 routed experts split over 7 ranks (9 each), sharded.
  const coe::ModelConfig c63 = paper_model(63);
  const coe::ParamCounts p63 = coe::count_parameters(c63);
  const int64_t Pe63 = 4 * 63 * 3 * 1024 * 704, Pr63 = p63.total() - Pe63;
  ASSERT_EQ(p63.routed_experts, Pe63);
  const coe::MemoryEstimate e77 = coe::estimate_memory(c63, layout(7, 7, true));
  EXPECT_EQ(term(e77, 0), 4 * (Pr63 + Pe63 / 7));
  EXPECT_EQ(term(e77, 2), 8 * (up(Pr63, 7) + Pe63 / 7));
}

TEST(MemoryModel, ExpertParallelActivationsPerRank) {
  // tiny(): 3 MoE layers, H = 16, I = 6, 5 routed experts, K = 2; B*S = 32 tokens, R = 64 rows.
  const coe::ModelConfig c = tiny();
  const int64_t layers = 3, C = 1, H = 16, I = 6, T = 32, R = T * 2;
  coe::MemoryOptions o;
  o.micro_batch = 2;
  o.seq_len = 16;
  coe::MemoryOptions ep = o;
  ep.world_size = 5;
  ep.expert_parallel = 5;
  // float32, segmented dispatch: nothing saved depends on the number of experts a rank holds
  // (the router's scores are over all 5), so expert parallelism adds exactly, per MoE layer and
  // iteration, the returned rows f*R*H, the slot weights f*R and two int64 row orders 2*i*R.
  const int64_t added = layers * C * (4 * R * H + 4 * R + 2 * 8 * R);
  EXPECT_EQ(coe::estimate_memory(c, ep).without_checkpointing.saved_bytes,
            coe::estimate_memory(c, o).without_checkpointing.saved_bytes + added);
  // bf16 (segmented): each iteration also casts the used experts' weights, now 1 expert of 5.
  o.bf16 = ep.bf16 = true;
  EXPECT_EQ(
      coe::estimate_memory(c, ep).without_checkpointing.saved_bytes,
      coe::estimate_memory(c, o).without_checkpointing.saved_bytes + added - layers * C * (5 - 1) * 3 * 2 * I * H);
  EXPECT_EQ(coe::estimate_memory(c, ep).all_to_all_bytes, 4 * R * H);
}

TEST(MemoryModel, LayoutsTheTrainerRefusesAreErrors) {
  const coe::ModelConfig c = paper_model(63);
  EXPECT_THROW(coe::estimate_memory(c, layout(8, 3, false)), coe::Error);  // 3 does not divide 8
  EXPECT_THROW(coe::estimate_memory(c, layout(8, 8, true)), coe::Error);   // 8 does not divide 63
  EXPECT_THROW(coe::estimate_memory(c, layout(0, 1, false)), coe::Error);
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

TEST_F(MemoryTool, PerRankLayoutFromFlagsAndConfig) {
  const fs::path cfg = write_config("ep.yaml", "  num_experts_per_tok: 2\n  inner_iter: 2\n");
  const std::string tool = coe::test::tool_path("coe-memory").string() + " " + cfg.string();
  const fs::path json = dir_ / "ep.json";
  std::string out;
  ASSERT_EQ(coe::test::run_command(
                tool + " --world-size 14 --expert-parallel 7 --shard-optimizer --json " + json.string(), &out),
            0)
      << out;
  EXPECT_NE(out.find("training memory per rank (14 ranks, expert parallel 7, optimizer sharded)"), std::string::npos)
      << out;
  nlohmann::json j = nlohmann::json::parse(std::ifstream(json));
  // write_config's model: 2 layers of 7 experts of 3 * 32 x 16 -> one expert per rank.
  const int64_t Pe = 2 * 7 * 3 * 32 * 16, Pr = j.at("params_total").get<int64_t>() - Pe;
  EXPECT_EQ(j.at("params").at("routed_experts").get<int64_t>(), Pe);
  EXPECT_EQ(j.at("parallel").at("world_size").get<int64_t>(), 14);
  EXPECT_EQ(j.at("parallel").at("expert_parallel").get<int64_t>(), 7);
  EXPECT_TRUE(j.at("parallel").at("shard_optimizer").get<bool>());
  EXPECT_EQ(j.at("params_per_rank").get<int64_t>(), Pr + Pe / 7);
  EXPECT_EQ(j.at("weights_bytes").get<int64_t>(), 4 * (Pr + Pe / 7));
  // Moments: replicated ones over 14 ranks, the rank's expert over the 2 ranks holding it.
  EXPECT_EQ(j.at("optimizer_bytes").get<int64_t>(), 8 * ((Pr + 13) / 14 + Pe / 7 / 2));
  // ZeRO-1 keeps no buffer across steps; its gradient reduction ends holding the gradient shards
  // and one bucket, here all the rank's parameters (the model is smaller than 25 MiB).
  EXPECT_EQ(j.at("communication_buffers_bytes").get<int64_t>(), 0);
  EXPECT_EQ(j.at("zero1_reduce_scatter_bytes").get<int64_t>(), 4 * ((Pr + 13) / 14 + Pe / 7 / 2) + 4 * (Pr + Pe / 7));
  EXPECT_EQ(j.at("all_to_all_bytes_per_iteration").get<int64_t>(), 4 * 2 * 32 * 2 * 32);  // f*T*K*H, T = 2 x 32

  // The config's parallel: section is the default; --world-size defaults to its expert_parallel.
  ASSERT_EQ(coe::test::run_command(tool + " --set parallel.expert_parallel=7 --json " + json.string(), &out), 0) << out;
  j = nlohmann::json::parse(std::ifstream(json));
  EXPECT_EQ(j.at("parallel").at("world_size").get<int64_t>(), 7);
  EXPECT_EQ(j.at("params_per_rank").get<int64_t>(), Pr + Pe / 7);
  EXPECT_EQ(j.at("communication_buffers_bytes").get<int64_t>(), 4 * Pr);  // experts: W/EP = 1, not reduced
}

// configs/scale/coe-16b-lite.yaml (docs/distributed.md's worked example): DeepSeek-V2-Lite's shapes
// as CoE C=2, K=3, laid out for 8 ranks by its parallel: section.
TEST_F(MemoryTool, ScaleConfigIsV2LiteSizedAndLaidOutForEightRanks) {
  const fs::path cfg = coe::test::source_root() / "configs" / "scale" / "coe-16b-lite.yaml";
  const fs::path json = dir_ / "scale.json";
  std::string out;
  ASSERT_EQ(coe::test::run_command(
                coe::test::tool_path("coe-memory").string() + " " + cfg.string() + " --json " + json.string(), &out),
            0)
      << out;
  const nlohmann::json j = nlohmann::json::parse(std::ifstream(json));
  // 26 MoE layers (the first is dense) x 64 experts x 3 matrices of 2048 x 1408.
  const int64_t Pe = int64_t{26} * 64 * 3 * 2048 * 1408;
  EXPECT_EQ(j.at("params").at("routed_experts").get<int64_t>(), Pe);
  EXPECT_EQ(j.at("params").at("dense_mlps").get<int64_t>(), int64_t{3} * 2048 * 10944);
  const int64_t P = j.at("params_total").get<int64_t>();
  EXPECT_GT(P, 15'500'000'000);  // DeepSeek-V2-Lite: 15.7B
  EXPECT_LT(P, 16'000'000'000);
  EXPECT_EQ(j.at("expert_calls_per_token").get<int64_t>(), 26 * 2 * (3 + 2));
  EXPECT_EQ(j.at("parallel").at("world_size").get<int64_t>(), 8);
  EXPECT_EQ(j.at("params_per_rank").get<int64_t>(), P - Pe + Pe / 8);
  EXPECT_EQ(j.at("optimizer_bytes").get<int64_t>(), 8 * ((P - Pe + 7) / 8 + Pe / 8));
  // With checkpointing a rank fits an 80 GB H100 (about 78 GiB), the point of the layout.
  EXPECT_LT(j.at("estimate_checkpointing_bytes").get<int64_t>(), int64_t{78} << 30);
}

TEST_F(MemoryTool, BadLayoutsAreOneLineErrorsNamingTheFlag) {
  const fs::path cfg = write_config("bad-ep.yaml", "  num_experts_per_tok: 2\n");
  const std::string tool = coe::test::tool_path("coe-memory").string() + " " + cfg.string();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--world-size 8 --expert-parallel 7", "--expert-parallel 7 does not divide --world-size 8"},
      {"--world-size 8 --expert-parallel 2", "--expert-parallel 2 does not divide model.n_routed_experts 7"},
      {"--world-size 8 --set parallel.expert_parallel=7", "parallel.expert_parallel 7 ("},
      {"--world-size 2 --measure", "per-rank measurement: start coe-memory --measure as 2 ranks"},
      {"--expert-parallel 0", "--expert-parallel"},
  };
  for (const auto& [args, message] : cases) {
    SCOPED_TRACE(args);
    std::string out;
    EXPECT_NE(coe::test::run_command(tool + " " + args, &out), 0) << out;
    EXPECT_NE(out.find(message), std::string::npos) << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  }
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

// --measure started as the ranks of a job (as torchrun would): every rank builds its part of the
// model (the trainer's layout, reduction and optimizer) and runs real steps; the per-rank peak of
// live tensor storage agrees with the per-rank estimate for expert parallelism, ZeRO-1 and both,
// on 2 and 4 ranks.
TEST_F(MemoryTool, MeasuresEveryRankOfAJobAgainstThePerRankEstimate) {
  const fs::path cfg = write_config("ranks.yaml", "  num_experts_per_tok: 2\n  inner_iter: 2\n");
  struct Case {
    int world;
    std::vector<std::string> layout;
  };
  const std::vector<Case> cases = {
      {2, {"--set", "model.n_routed_experts=8", "--expert-parallel", "2", "--no-shard-optimizer"}},
      {2, {"--shard-optimizer"}},
      {4, {"--set", "model.n_routed_experts=8", "--expert-parallel", "2", "--shard-optimizer"}},
      {4, {"--set", "model.n_routed_experts=8", "--expert-parallel", "4", "--shard-optimizer"}},
  };
  for (size_t k = 0; k < cases.size(); ++k) {
    const Case& c = cases[k];
    SCOPED_TRACE(fmt::format("{} ranks: {}", c.world, fmt::join(c.layout, " ")));
    const fs::path json = dir_ / fmt::format("ranks-{}.json", k);
    std::vector<std::string> argv{coe::test::tool_path("coe-memory").string(),
                                  cfg.string(),
                                  "--measure",
                                  "--measure-steps",
                                  "2",
                                  "--json",
                                  json.string()};
    argv.insert(argv.end(), c.layout.begin(), c.layout.end());
    const int port = coe::test::free_port();
    std::vector<coe::test::RankProcess> procs;
    for (int r = 0; r < c.world; ++r) {
      auto env = coe::test::rank_env(r, c.world, port);
      env["OMP_NUM_THREADS"] = "1";
      procs.push_back(coe::test::spawn_process(argv, env, dir_ / fmt::format("ranks-{}-{}.log", k, r)));
    }
    coe::test::wait_all(procs, 120);
    for (const auto& p : procs) ASSERT_EQ(p.exit_code, 0) << p.output();
    EXPECT_EQ(procs[1].output(), "") << "only rank 0 reports";
    const std::string out = procs[0].output();
    EXPECT_NE(out.find(fmt::format("per rank ({} ranks", c.world)), std::string::npos) << out;
    std::ifstream in(json);
    const nlohmann::json j = nlohmann::json::parse(in);
    EXPECT_EQ(j.at("parallel").at("world_size").get<int>(), c.world) << j.dump();
    const auto peaks = j.at("measured_peak_bytes_per_rank").get<std::vector<int64_t>>();
    ASSERT_EQ(peaks.size(), static_cast<size_t>(c.world));
    const double estimate = j.at("estimate_bytes").get<double>();
    for (int64_t peak : peaks) EXPECT_NEAR(estimate / static_cast<double>(peak), 1.0, 0.06) << out;
    std::printf("%d ranks %s: estimate %.0f bytes per rank, measured %s\n", c.world,
                fmt::format("{}", fmt::join(c.layout, " ")).c_str(), estimate,
                fmt::format("{}", fmt::join(peaks, ", ")).c_str());
  }
}

}  // namespace
