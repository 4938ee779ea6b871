// Bad inputs give specific one-line errors: model configs (YAML and config.json) and
// safetensors files / HF checkpoints.
#include "coe/data/prepare.h"
#include "coe/data/prepared.h"
#include "coe/io/hf_checkpoint.h"
#include "coe/io/safetensors.h"
#include "coe/model/config.h"
#include "coe/train/checkpoint.h"
#include "coe/train/train_config.h"
#include "coe/util/config_reader.h"
#include "coe/util/error.h"
#include "coe/util/run_files.h"
#include "support/expect_error.h"
#include "support/test_env.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using coe::test::expect_error;
using coe::test::write_file;

namespace {

fs::path fixture_dir() { return coe::test::shared_root() / "fixtures" / "coe_c2_igate_inner_yarn"; }

const char* kGoodYaml = R"(vocab_size: 128
hidden_size: 64
intermediate_size: 96
moe_intermediate_size: 32
num_hidden_layers: 2
num_attention_heads: 4
q_lora_rank: null
kv_lora_rank: 32
qk_nope_head_dim: 16
qk_rope_head_dim: 8
v_head_dim: 16
n_routed_experts: 8
n_shared_experts: 1
num_experts_per_tok: 2
inner_iter: 2
)";

}  // namespace

class ConfigErrors : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = coe::test::make_temp_dir("config"); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string yaml(const std::string& extra) { return write_file(dir_ / "model.yaml", std::string(kGoodYaml) + extra); }
  fs::path dir_;
};

TEST_F(ConfigErrors, GoodYamlAndReferenceJsonLoad) {
  coe::ModelConfig c = coe::load_model_config(yaml(""));
  EXPECT_EQ(c.inner_iter, 2);
  EXPECT_FALSE(c.q_lora_rank.has_value());
  coe::ModelConfig f = coe::load_model_config((fixture_dir() / "config.json").string());
  ASSERT_TRUE(f.rope_scaling.has_value());
  EXPECT_EQ(f.rope_scaling->type, "yarn");
  EXPECT_DOUBLE_EQ(f.rope_scaling->factor, 40.0);
  // A config written by coe reads back to the same JSON.
  std::string json = coe::model_config_to_json(f);
  coe::ModelConfig again = coe::load_model_config(write_file(dir_ / "c.json", json));
  EXPECT_EQ(coe::model_config_to_json(again), json);
}

TEST_F(ConfigErrors, UnknownKeySuggestsTheNearestOne) {
  expect_error([&] { coe::load_model_config(yaml("num_experts_per_token: 4\n")); },
               {"model.yaml:16", "num_experts_per_token", "unknown key", "did you mean 'num_experts_per_tok'"});
}

TEST_F(ConfigErrors, WrongTypeNamesKeyAndLine) {
  expect_error([&] { coe::load_model_config(yaml("seq_aux: maybe\n")); },
               {"model.yaml:16", "seq_aux", "true or false"});
  expect_error([&] { coe::load_model_config(yaml("rope_theta: fast\n")); }, {"rope_theta", "expected a number"});
}

TEST_F(ConfigErrors, ImpossibleValues) {
  expect_error([&] { coe::load_model_config(yaml("topk_method: group_limited_greedy\nn_group: 3\ntopk_group: 1\n")); },
               {"model.yaml", "n_group", "not divisible"});
  EXPECT_NO_THROW(coe::load_model_config(yaml("n_group: 1\nmoe_layer_freq: 1\nrouted_scaling_factor: 1\n"
                                              "max_position_embeddings: 64\nscoring_func: softmax\n"
                                              "first_k_dense_replace: 0\nrope_theta: 10000\n"
                                              "seq_aux: true\ntopk_group: 1\n"
                                              "norm_topk_prob: false\naux_loss_alpha: 0.001\n"
                                              "rms_norm_eps: 1.0e-6\ninitializer_range: 0.02\n"
                                              "use_igate: true\ntie_word_embeddings: false\n"
                                              "eos_token_id: 1\n")));  // every documented key is accepted
  std::string nine = std::string(kGoodYaml);
  nine.replace(nine.find("num_experts_per_tok: 2"), 22, "num_experts_per_tok: 9");
  expect_error([&] { coe::load_model_config(write_file(dir_ / "k.yaml", nine)); },
               {"num_experts_per_tok", "exceeds n_routed_experts 8"});
  std::string zero = std::string(kGoodYaml);
  zero.replace(zero.find("hidden_size: 64"), 15, "hidden_size: 0");
  expect_error([&] { coe::load_model_config(write_file(dir_ / "z.yaml", zero)); },
               {"z.yaml", "hidden_size", "must be > 0"});
  expect_error([&] { coe::load_model_config(yaml("hidden_size: 32\n")); },
               {"model.yaml:16", "hidden_size", "duplicate key"});
  expect_error([&] { coe::load_model_config(yaml("rope_scaling: {type: ntk, factor: 2}\n")); },
               {"rope_scaling.type", "unknown rope type 'ntk'"});
  expect_error([&] { coe::load_model_config(yaml("topk_method: sinkhorn\n")); }, {"topk_method", "sinkhorn"});
  expect_error([&] { coe::load_model_config(yaml("residual_mode: sideways\n")); }, {"residual_mode", "sideways"});
  expect_error([&] { coe::load_model_config(yaml("rope_scaling: {rope_type: yarn}\n")); },
               {"rope_scaling.factor", "required"});
  // Counts that are loops: an absurd one is an error at once, not an endless loop.
  std::string deep = std::string(kGoodYaml);
  deep.replace(deep.find("num_hidden_layers: 2"), 20, "num_hidden_layers: 9223372036854775807");
  expect_error([&] { coe::load_model_config(write_file(dir_ / "deep.yaml", deep)); },
               {"deep.yaml", "num_hidden_layers", "must be <= 65536"});
}

TEST_F(ConfigErrors, DuplicateKeyIsReportedByTheParser) {
  std::string p = write_file(dir_ / "bad.yaml", "hidden_size: [1, 2\n");
  expect_error([&] { coe::load_model_config(p); }, {"bad.yaml", "cannot parse"});
}

// The small files coe reads whole are refused by size before a byte is read, with one line
// naming the file, its size and the limit: configs yaml-cpp reads (a model's config.json, run
// configs, model.from) at 1 MiB, JSON files of checkpoints, run directories and prepared datasets
// at 16 MiB (include/coe/util/json_limits.h). A 20 MB config.json nested 10 million levels deep
// took 5-12 s and 3 GB before (yaml-cpp). Within the size, config.json gets JSON's depth limit.
TEST_F(ConfigErrors, OversizedSmallFilesAreRefusedBeforeReading) {
  const fs::path ckpt = dir_ / "ckpt";
  fs::create_directories(ckpt);
  const size_t levels = 10'000'000;
  const std::string config =
      write_file(ckpt / "config.json", "{\"a\": " + std::string(levels, '[') + std::string(levels, ']') + "}");
  const std::string size = std::to_string(fs::file_size(config));
  const auto start = std::chrono::steady_clock::now();
  for (const auto& load : std::vector<std::function<void()>>{[&] { coe::load_model_config(config); },
                                                             [&] { coe::load_hf_checkpoint(ckpt.string()); }})
    expect_error(load, {config + ": " + size + " bytes, more than the 1048576-byte limit for a config file"});
  const std::string run = write_file(dir_ / "run.yaml", "model: {from: ckpt/config.json}\n");
  expect_error([&] { coe::load_train_config(run); },
               {run + ":1: model.from: " + config + ": " + size + " bytes, more than the 1048576-byte limit"});
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 2.0);
  write_file(ckpt / "config.json", "{\"a\": " + std::string(100, '[') + std::string(100, ']') + "}");
  expect_error([&] { coe::load_model_config(config); }, {config + ": JSON nested deeper than 64 levels"});

  // 16 MiB + 1 byte (sparse files: nothing is written, and nothing may be read).
  auto oversized = [](const fs::path& p) {
    fs::create_directories(p.parent_path());
    std::ofstream(p).close();
    fs::resize_file(p, (16u << 20) + 1);
    return p.string();
  };
  auto limit = [](const std::string& path, const std::string& kind) {
    return path + ": 16777217 bytes, more than the 16777216-byte limit for " + kind;
  };
  const std::string state = oversized(dir_ / "run" / "step-2" / "state.json");
  expect_error([&] { coe::read_checkpoint_state((dir_ / "run" / "step-2").string()); }, {limit(state, "a state.json")});
  const std::string index = oversized(dir_ / "sharded" / "model.safetensors.index.json");
  expect_error([&] { coe::read_hf_weights((dir_ / "sharded").string()); },
               {limit(index, "a model.safetensors.index.json")});
  const std::string manifest = oversized(dir_ / "prepared" / "manifest.json");
  expect_error([&] { coe::read_manifest((dir_ / "prepared").string()); }, {limit(manifest, "a manifest.json")});
  const std::string meta = oversized(dir_ / "prepared" / "train" / "meta.json");
  expect_error([&] { coe::PreparedSplit::open((dir_ / "prepared" / "train").string()); }, {limit(meta, "a meta.json")});
  const std::string final_json = oversized(dir_ / "run" / "final.json");
  expect_error([&] { coe::read_final_summary(final_json); }, {limit(final_json, "a final.json")});
}

TEST_F(ConfigErrors, ResidualModesMapToTheWiring) {
  EXPECT_EQ(coe::load_model_config(yaml("residual_mode: addinit\n")).inner_residual, coe::InnerResidual::kInput);
  coe::ModelConfig outer = coe::load_model_config(yaml("residual_mode: outer\n"));
  EXPECT_EQ(outer.inner_residual, coe::InnerResidual::kNone);
  EXPECT_TRUE(outer.outer_residual);
  coe::ModelConfig both = coe::load_model_config(yaml("inner_residual: true\nouter_residual: true\n"));
  EXPECT_EQ(both.inner_residual, coe::InnerResidual::kPrevious);
  EXPECT_TRUE(both.outer_residual);
}

class SafetensorsErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = coe::test::make_temp_dir("st");
    good_ = (dir_ / "good.safetensors").string();
    coe::save_safetensors(good_,
                          {{"a", torch::arange(6, at::kFloat).view({2, 3})}, {"b", torch::ones({4}, at::kLong)}});
    std::ifstream in(good_, std::ios::binary);
    bytes_.assign(std::istreambuf_iterator<char>(in), {});
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string variant(const std::string& bytes) { return write_file(dir_ / "bad.safetensors", bytes); }
  std::string with_header(const std::string& header) {
    std::string out(8, '\0');
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
    return out + header + std::string(64, '\0');
  }
  fs::path dir_;
  std::string good_, bytes_;
};

TEST_F(SafetensorsErrors, RoundTripAllDtypes) {
  std::map<std::string, at::Tensor> t{{"f32", torch::randn({3})},
                                      {"bf16", torch::randn({2, 2}).to(at::kBFloat16)},
                                      {"f16", torch::randn({5}).to(at::kHalf)},
                                      {"i64", torch::arange(4, at::kLong)},
                                      {"i32", torch::arange(3, at::kInt)}};
  std::string p = (dir_ / "all.safetensors").string();
  coe::save_safetensors(p, t, {{"k", "v"}});
  auto back = coe::load_safetensors(p);
  EXPECT_EQ(back.metadata.at("k"), "v");
  for (const auto& [name, tensor] : t) EXPECT_TRUE(at::equal(tensor, back.tensors.at(name))) << name;
}

TEST_F(SafetensorsErrors, TruncatedFile) {
  expect_error([&] { coe::load_safetensors(variant(bytes_.substr(0, bytes_.size() - 10))); },
               {"bad.safetensors", "tensor 'b'", "truncated"});
  expect_error([&] { coe::load_safetensors(variant(bytes_.substr(0, 5))); }, {"bad.safetensors", "truncated"});
}

TEST_F(SafetensorsErrors, BadHeaders) {
  expect_error([&] { coe::load_safetensors(variant(with_header("{not json"))); }, {"malformed safetensors header"});
  std::string huge = bytes_;
  huge[6] = 1;
  expect_error([&] { coe::load_safetensors(variant(huge)); }, {"header length"});
  expect_error(
      [&] { coe::load_safetensors(variant(with_header(R"({"x":{"dtype":"Q8","shape":[2],"data_offsets":[0,2]}})"))); },
      {"tensor 'x'", "unsupported dtype 'Q8'"});
  expect_error(
      [&] { coe::load_safetensors(variant(with_header(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})"))); },
      {"tensor 'x'", "expected 12"});
  expect_error(
      [&] {
        coe::load_safetensors(variant(with_header(
            R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})")));
      },
      {"overlap"});
}

// Files from elsewhere (a downloaded checkpoint) cannot make the reader allocate without bound,
// overflow a size computation, or read outside the data section.
TEST_F(SafetensorsErrors, HostileHeadersAreRefusedBeforeAnyAllocation) {
  std::string capped(8, '\0');
  const uint64_t len = coe::kMaxSafetensorsHeaderBytes + 1;
  for (int i = 0; i < 8; ++i) capped[i] = static_cast<char>(len >> (8 * i));
  expect_error([&] { coe::load_safetensors(variant(capped + "{}")); }, {"bad.safetensors", "exceeds the limit"});
  expect_error([&] { coe::load_safetensors(variant(with_header("{\"x\":" + std::string(100000, '[') + "}"))); },
               {"bad.safetensors", "nested deeper than"});
  // 2^32 * 2^32 * 4 elements wrap to 0 in 64 bits; so would the byte count of 2^62 F32 elements.
  expect_error(
      [&] {
        coe::load_safetensors(
            variant(with_header(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,0]}})")));
      },
      {"tensor 'x'", "too large"});
  expect_error(
      [&] {
        coe::load_safetensors(
            variant(with_header(R"({"x":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})")));
      },
      {"tensor 'x'", "too large"});
  expect_error(
      [&] {
        coe::load_safetensors(
            variant(with_header(R"({"x":{"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,0]}})")));
      },
      {"tensor 'x'", "too large"});
  expect_error(
      [&] {
        coe::load_safetensors(variant(with_header(R"({"x":{"dtype":"U8","shape":[8],"data_offsets":[60,68]}})")));
      },
      {"tensor 'x'", "data ends at byte 68", "64 data bytes"});
  // An overlap is found before the tensors are read, whatever their order in the header.
  expect_error(
      [&] {
        coe::load_safetensors(variant(with_header(
            R"({"y":{"dtype":"U8","shape":[8],"data_offsets":[8,16]},"x":{"dtype":"U8","shape":[16],"data_offsets":[0,16]}})")));
      },
      {"overlap"});
}

TEST_F(SafetensorsErrors, ShardIndexNamesFilesInTheCheckpointOnly) {
  const fs::path ckpt = dir_ / "ckpt";
  fs::create_directories(ckpt);
  fs::copy_file(good_, dir_ / "outside.safetensors");
  for (const std::string& shard :
       std::vector<std::string>{"../outside.safetensors", (dir_ / "outside.safetensors").string(), ".."}) {
    write_file(ckpt / "model.safetensors.index.json",
               R"({"weight_map": {"a": ")" + shard + R"(", "b": ")" + shard + R"("}})");
    expect_error([&] { coe::read_hf_weights(ckpt.string()); },
                 {"model.safetensors.index.json", "weight_map['a']", "not a file name in this directory"});
  }
  write_file(ckpt / "model.safetensors.index.json", "{\"weight_map\": " + std::string(1000, '[') + "}");
  expect_error([&] { coe::read_hf_weights(ckpt.string()); }, {"model.safetensors.index.json", "nested deeper"});
  // A plain shard name beside the index works.
  fs::copy_file(good_, ckpt / "shard-1.safetensors");
  write_file(ckpt / "model.safetensors.index.json",
             R"({"weight_map": {"a": "shard-1.safetensors", "b": "shard-1.safetensors"}})");
  EXPECT_EQ(coe::read_hf_weights(ckpt.string()).size(), 2u);
}

TEST_F(SafetensorsErrors, CheckpointTensorProblemsNameTheTensor) {
  auto weights = coe::read_hf_weights(fixture_dir().string());
  coe::ModelConfig config = coe::load_model_config((fixture_dir() / "config.json").string());
  auto load = [&](std::map<std::string, at::Tensor> w) {
    coe::CausalLM model(config);
    coe::load_hf_state_dict(*model, w, "ckpt");
  };
  auto missing = weights;
  missing.erase("model.layers.1.mlp.experts.3.down_proj.weight");
  expect_error([&] { load(missing); }, {"ckpt", "missing tensor 'model.layers.1.mlp.experts.3.down_proj.weight'"});
  auto extra = weights;
  extra["model.layers.7.mlp.gate.weight"] = torch::zeros({1});
  expect_error([&] { load(extra); }, {"unexpected tensor 'model.layers.7.mlp.gate.weight'"});
  auto wrong = weights;
  wrong["lm_head.weight"] = torch::zeros({3, 3});
  expect_error([&] { load(wrong); }, {"tensor 'lm_head.weight' has shape 3x3", "expects 128x64"});
  expect_error([&] { coe::read_hf_weights(dir_.string()); }, {"no model.safetensors"});
}
