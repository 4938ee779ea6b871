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
#include <cstring>
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

// transformers 5's config.json (docs/interop.md): deepseek_v2 / deepseek_v3 read with DeepSeek's
// wiring; what coe would compute otherwise than transformers is an error naming the key.
TEST_F(ConfigErrors, TransformersConfigs) {
  const std::string v2 = R"("vocab_size": 128, "hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 4, "q_lora_rank": null, "kv_lora_rank": 32,
    "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
    "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2, "n_group": null, "topk_group": null,
    "dtype": "bfloat16", "output_router_logits": false,
    "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                        "original_max_position_embeddings": 64, "mscale": 0.707, "mscale_all_dim": 0.707})";
  auto load = [&](const std::string& extra, const std::string& type = "deepseek_v2") {
    return coe::load_model_config(
        write_file(dir_ / "config.json", R"({"model_type": ")" + type + "\", " + v2 + extra + "}"));
  };
  const coe::ModelConfig c = load(R"(, "head_dim": 8, "qk_head_dim": 24, "mlp_bias": false)");
  EXPECT_EQ(c.inner_iter, 1);
  EXPECT_FALSE(c.use_igate);  // one router per layer: "mlp.gate"
  EXPECT_EQ(c.inner_residual, coe::InnerResidual::kNone);
  EXPECT_TRUE(c.outer_residual);
  EXPECT_EQ(c.n_group, 1);
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_EQ(c.rope_scaling->type, "yarn");
  EXPECT_DOUBLE_EQ(c.rope_scaling->factor, 4.0);
  EXPECT_EQ(coe::hf_export_model_type(c), coe::HfModelType::kDeepseekV2);
  const coe::ModelConfig v3 = load(R"(, "rope_interleave": true, "num_nextn_predict_layers": 1)", "deepseek_v3");
  EXPECT_EQ(v3.scoring_func, coe::ScoringFunc::kSigmoid);
  EXPECT_EQ(v3.topk_method, coe::TopkMethod::kNoauxTc);
  EXPECT_EQ(coe::hf_export_model_type(v3), coe::HfModelType::kDeepseekV3);

  expect_error([&] { load("", "llama"); }, {"config.json", "model_type", "'llama'", "deepseek_v2"});
  expect_error([&] { load(R"(, "inner_iter": 2)"); }, {"inner_iter", "not a field of model_type deepseek_v2"});
  expect_error([&] { load(R"(, "residual_mode": "inner")"); }, {"residual_mode", "model_type coe"});
  expect_error([&] { load(R"(, "mlp_bias": true)"); }, {"mlp_bias", "not supported"});
  expect_error([&] { load(R"(, "head_dim": 16)"); }, {"head_dim", "qk_rope_head_dim 8"});
  expect_error([&] { load(R"(, "qk_head_dim": 16)"); }, {"qk_head_dim", "24"});
  expect_error([&] { load(R"(, "rope_scaling": {"type": "linear", "factor": 2})"); }, {"rope_parameters", "not both"});
  expect_error([&] { load(R"(, "rope_interleave": false)", "deepseek_v3"); }, {"rope_interleave"});
  expect_error([&] { load(R"(, "topk_method": "greedy")", "deepseek_v3"); }, {"topk_method", "noaux_tc"});
  expect_error([&] { load(R"(, "scoring_func": "softmax")", "deepseek_v3"); }, {"scoring_func", "sigmoid"});
  expect_error([&] { load(R"(, "attention_bias": true)"); }, {"attention_bias"});

  auto rope = [&](const std::string& parameters) {
    std::string text = "{" + v2.substr(0, v2.find("\"rope_parameters\"")) + "\"rope_parameters\": " + parameters + "}";
    return coe::load_model_config(write_file(dir_ / "rope.json", text));
  };
  EXPECT_FALSE(rope(R"({"rope_type": "default", "rope_theta": 5000.0})").rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(rope(R"({"rope_type": "default", "rope_theta": 5000.0})").rope_theta, 5000.0);
  expect_error([&] { rope(R"({"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0})"); },
               {"rope_parameters.rope_type", "dynamic"});
  expect_error([&] { rope(R"({"rope_type": "longrope", "rope_theta": 1e4, "factor": 2.0})"); },
               {"rope_parameters.rope_type", "longrope"});
  // transformers derives 0.1 ln(4) + 1 when mscale_all_dim is absent; DeepSeek's code 0.0707 ln(4) + 1.
  expect_error([&] { rope(R"({"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0, "mscale": 0.707})"); },
               {"rope_parameters.mscale_all_dim", "attention_factor"});
  EXPECT_NO_THROW(rope(R"({"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0, "mscale": 0.707,
                           "attention_factor": 1.0980110113311763})"));
  expect_error([&] { rope(R"({"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0, "attention_factor": 1.5})"); },
               {"rope_parameters.attention_factor", "1.5"});
  expect_error([&] { rope(R"({"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0, "truncate": false})"); },
               {"rope_parameters.truncate"});
  expect_error(
      [&] { rope(R"({"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0, "partial_rotary_factor": 0.5})"); },
      {"partial_rotary_factor", "unknown key"});
}

// coe-export's config.json: what it chooses and that coe reads the same model back.
TEST_F(ConfigErrors, TransformersConfigsWritten) {
  const coe::ModelConfig f = coe::load_model_config((fixture_dir() / "config.json").string());
  std::string why;
  EXPECT_EQ(coe::hf_export_model_type(f, &why), coe::HfModelType::kCoe);
  EXPECT_NE(why.find("inner_iter 2"), std::string::npos) << why;
  const std::string coe_json = coe::model_config_to_hf_json(f, coe::HfModelType::kCoe, "bfloat16");
  const coe::ModelConfig again = coe::load_model_config(write_file(dir_ / "coe.json", coe_json));
  EXPECT_EQ(coe::model_config_to_json(again), coe::model_config_to_json(f));
  for (const char* key : {R"("model_type": "coe")", R"("AutoModelForCausalLM": "modeling_coe.CoeForCausalLM")",
                          R"("torch_dtype": "bfloat16")", R"("rope_parameters")", R"("attention_factor")"})
    EXPECT_NE(coe_json.find(key), std::string::npos) << key << " in " << coe_json;

  coe::ModelConfig outer = f;
  outer.inner_iter = 1;
  outer.inner_residual = coe::InnerResidual::kNone;
  outer.outer_residual = true;
  ASSERT_EQ(coe::hf_export_model_type(outer), coe::HfModelType::kDeepseekV2);
  const std::string v2_json = coe::model_config_to_hf_json(outer, coe::HfModelType::kDeepseekV2, "float32");
  EXPECT_EQ(v2_json.find("inner_iter"), std::string::npos) << v2_json;
  coe::ModelConfig read = coe::load_model_config(write_file(dir_ / "v2.json", v2_json));
  read.use_igate = outer.use_igate;  // the only router of a layer: "mlp.gate", not "mlp.gate.0"
  EXPECT_EQ(coe::model_config_to_json(read), coe::model_config_to_json(outer));

  coe::ModelConfig norm = outer;
  norm.norm_topk_prob = true;
  EXPECT_EQ(coe::hf_export_model_type(norm, &why), coe::HfModelType::kCoe);
  EXPECT_NE(why.find("norm_topk_prob"), std::string::npos) << why;
  expect_error([&] { coe::model_config_to_hf_json(norm, coe::HfModelType::kDeepseekV2, "float32"); },
               {"model_type deepseek_v2", "norm_topk_prob"});
  coe::ModelConfig dynamic = f;
  dynamic.rope_scaling->type = "dynamic";
  expect_error([&] { coe::model_config_to_hf_json(dynamic, coe::HfModelType::kCoe, "float32"); },
               {"rope_scaling.type", "dynamic"});
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

// A 64 MiB file written byte by byte here (not by save_safetensors): load_safetensors maps it, and
// the tensors are its values, aligned (a view of the mapping) or not (a copy). They outlive the
// SafetensorsFile and the file's name; writing to one leaves the file as it was. Cut short by one
// byte, the same file is a one-line error naming the tensor.
TEST_F(SafetensorsErrors, LargeFileIsMappedWithItsValues) {
  constexpr int64_t kSide = 4096;  // big: F32 [4096, 4096], value i / 2 at flat index i (exact in float)
  constexpr int64_t kBigBytes = kSide * kSide * 4;
  const std::vector<float> odd_floats{1.5f, -2.0f, 3.25f, 1e10f};
  std::string header = R"({"big":{"dtype":"F32","shape":[4096,4096],"data_offsets":[0,)" + std::to_string(kBigBytes) +
                       R"(]},"u8":{"dtype":"U8","shape":[3],"data_offsets":[)" + std::to_string(kBigBytes) + "," +
                       std::to_string(kBigBytes + 3) + R"(]},"unaligned":{"dtype":"F32","shape":[4],"data_offsets":[)" +
                       std::to_string(kBigBytes + 3) + "," + std::to_string(kBigBytes + 19) + "]}}";
  while (header.size() % 8 != 0) header += ' ';
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(static_cast<uint64_t>(header.size()) >> (8 * i));
  bytes += header;
  const size_t data_start = bytes.size();
  bytes.resize(data_start + kBigBytes);
  for (int64_t i = 0; i < kSide * kSide; ++i) {
    const float v = static_cast<float>(i) / 2;
    std::memcpy(&bytes[data_start + 4 * i], &v, 4);
  }
  bytes += std::string("\x07\x08\x09", 3);
  for (float v : odd_floats) bytes.append(reinterpret_cast<const char*>(&v), 4);
  const std::string path = write_file(dir_ / "large.safetensors", bytes);

  at::Tensor big, unaligned, u8;
  {
    coe::SafetensorsFile file = coe::load_safetensors(path);
    ASSERT_EQ(file.tensors.size(), 3u);
    big = file.tensors.at("big");
    unaligned = file.tensors.at("unaligned");
    u8 = file.tensors.at("u8");
  }
  fs::remove(path);  // the mapping keeps the data
  ASSERT_EQ(big.sizes(), (std::vector<int64_t>{kSide, kSide}));
  ASSERT_EQ(big.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(big.flatten(), at::arange(kSide * kSide, at::kFloat) / 2));
  EXPECT_EQ(big[4095][4095].item<float>(), static_cast<float>(kSide * kSide - 1) / 2);
  EXPECT_TRUE(at::equal(u8, at::tensor(std::vector<int64_t>{7, 8, 9}).to(at::kByte)));
  EXPECT_TRUE(at::equal(unaligned, at::tensor(odd_floats)));

  const std::string again = write_file(dir_ / "large.safetensors", bytes);
  {
    at::Tensor t = coe::load_safetensors(again).tensors.at("big");
    t.fill_(-1.0f);  // private pages: the file is not written
  }
  EXPECT_EQ(coe::load_safetensors(again).tensors.at("big")[1][2].item<float>(), (kSide + 2) / 2.0f);

  expect_error([&] { coe::load_safetensors(variant(bytes.substr(0, bytes.size() - 1))); },
               {"bad.safetensors", "tensor 'unaligned'", "truncated file"});
  expect_error([&] { coe::load_safetensors(variant(bytes.substr(0, data_start + kBigBytes / 2))); },
               {"bad.safetensors", "tensor 'big'", "truncated file"});
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
