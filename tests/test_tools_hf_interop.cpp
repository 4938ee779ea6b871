// Hugging Face interop (docs/interop.md) against the real clients of tools/requirements.txt:
// transformers loads what coe-export writes (its own deepseek_v2 / deepseek_v3, or coe's remote code
// for Chain-of-Experts), and coe loads what transformers writes. On real GSM8K text, on CPU in
// float32, logits agree to 1e-4 both ways and greedy generations of 32 tokens for 20 prompts are
// equal token for token, transformers' with and without its KV cache. The models: both shared
// fixtures (the reference's code), a C = 1 model coe-train trained with DeepSeek's wiring, random
// coe models of the CoE variants (shared / independent gates; inner, outer, add-input residual;
// sigmoid + noaux_tc; moe_layer_freq; no shared experts), and random models transformers made
// itself with fields the fixtures lack (q_lora_rank null, n_group/topk_group, norm_topk_prob,
// first_k_dense_replace, YaRN, tied embeddings, bf16 and sharded weights).
#include "coe/eval/generate.h"
#include "coe/io/hf_checkpoint.h"
#include "coe/io/safetensors.h"
#include "coe/model/causal_lm.h"
#include "coe/model/config.h"
#include "coe/tokenizer/tokenizer.h"
#include "coe/train/checkpoint.h"
#include "support/test_env.h"
#include "support/tiny_model.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using coe::test::read_file;
using coe::test::read_jsonl;
using coe::test::run_argv;
using coe::test::tool_path;
using nlohmann::json;

constexpr int64_t kRows = 4, kRowTokens = 64, kPrompts = 20, kNewTokens = 32;

// One model of the comparison: a folder transformers loads and the coe model it must agree with.
struct Case {
  std::string name;
  fs::path folder;                 // what transformers loads (an export, or transformers' own save)
  fs::path coe_source;             // what coe runs: the exported checkpoint, or the folder itself
  std::string expect_class;        // the class transformers builds
  bool remote_code = false;        // built from the folder's modeling_coe.py
  std::vector<std::string> texts;  // AutoTokenizer's ids checked against coe's byte ids
};

// GSM8K test records, ASCII only: their bytes are the byte tokenizer's ids, below every model's
// vocabulary (the fixtures have 128).
std::vector<std::string> ascii_gsm8k_texts(size_t count, bool with_answer) {
  std::vector<std::string> out;
  for (const json& r : read_jsonl(coe::test::shared_root() / "data" / "gsm8k" / "test.jsonl", 400)) {
    std::string text = r["question"].get<std::string>();
    if (with_answer) text += " " + r["answer"].get<std::string>();
    if (std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 128; }))
      out.push_back(text);
    if (out.size() == count) break;
  }
  return out;
}

std::vector<int32_t> bytes_of(const std::string& text) {
  std::vector<int32_t> ids;
  for (const char c : text) ids.push_back(static_cast<unsigned char>(c));
  return ids;
}

// The tiny model with room for a prompt and its 32 new tokens.
coe::ModelConfig interop_model() {
  coe::ModelConfig c = coe::test::tiny_model_config();
  c.max_position_embeddings = 128;
  return c;
}

// A random coe model (larger weights than the training init, so that greedy choices are not
// near-ties) saved as a coe checkpoint (config.json + model.safetensors).
fs::path save_random_coe(const fs::path& dir, coe::ModelConfig c, uint64_t seed) {
  c.initializer_range = 0.2;
  torch::manual_seed(seed);
  coe::CausalLM model(c);
  torch::NoGradGuard no_grad;
  for (auto& b : model->named_buffers())
    if (b.key().find("e_score_correction_bias") != std::string::npos) b.value().uniform_(-0.05, 0.05);
  coe::save_hf_checkpoint(*model, dir.string());
  return dir;
}

at::Tensor coe_logits(const fs::path& dir, const at::Tensor& ids) {
  coe::CausalLM model = coe::load_hf_checkpoint(dir.string());
  model->eval();
  torch::NoGradGuard no_grad;
  return model->forward(ids).logits;
}

std::vector<std::vector<int32_t>> coe_generations(const fs::path& dir, const std::vector<std::vector<int32_t>>& prompts,
                                                  coe::MlaDecode decode) {
  coe::CausalLM model = coe::load_hf_checkpoint(dir.string());
  model->eval();
  coe::GenerateOptions options;
  options.max_new_tokens = kNewTokens;
  options.stop_at_eos = false;
  options.decode_mode = decode;
  const coe::ByteTokenizer tokenizer;
  std::vector<std::vector<int32_t>> out;
  for (const auto& g : coe::generate(*model, tokenizer, prompts, options)) out.push_back(g.tokens);
  return out;
}

class HfInterop : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = coe::test::scratch_dir("hf-interop");
    at::set_num_threads(1);  // tiny models; as the transformers side runs
    // transformers, datasets and lm-eval (and the coe tools) run offline, caching in the scratch dir.
    setenv("HF_HOME", (root_ / "hf-home").c_str(), 1);
    for (const char* offline : {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "OMP_NUM_THREADS"})
      setenv(offline, "1", 1);
    const fs::path shared = coe::test::shared_root();

    // Inputs: rows of GSM8K text for the logits, question openings of varied length as prompts.
    std::vector<int64_t> ids;
    for (const auto& text : ascii_gsm8k_texts(kRows, true))
      for (int64_t i = 0; i < kRowTokens; ++i) ids.push_back(static_cast<unsigned char>(text.at(i)));
    inputs_ = at::tensor(ids, at::kLong).view({kRows, kRowTokens});
    coe::save_safetensors((root_ / "inputs.safetensors").string(), {{"input_ids", inputs_}});
    std::string prompt_lines;
    const auto questions = ascii_gsm8k_texts(kPrompts, false);
    for (size_t i = 0; i < questions.size(); ++i) {
      const std::string p = questions[i].substr(0, std::min<size_t>(questions[i].size(), 30 + 7 * (i % 5)));
      prompts_.push_back(bytes_of(p));
      prompt_lines += json{{"prompt", p}}.dump() + "\n";
    }
    ASSERT_EQ(prompts_.size(), static_cast<size_t>(kPrompts));
    coe::test::write_file(root_ / "prompts.jsonl", prompt_lines);

    // coe's side: checkpoints to export.
    const fs::path fixtures = shared / "fixtures";
    export_case("fixture-coe-c2", fixtures / "coe_c2_igate_inner_yarn", {}, "CoeForCausalLM", true);
    export_case("fixture-moe-c1", fixtures / "moe_c1_qlora_grouplimited_norm", {"--max-shard-size", "200KB"},
                "CoeForCausalLM", true);
    train_native_run();
    export_case("trained-c1-outer", root_ / "run-native", {}, "DeepseekV2ForCausalLM", false);
    cases_.back().coe_source = coe::find_checkpoint((root_ / "run-native").string());
    cases_.back().texts = {"Natalia sold clips to 48 of her friends.", "Caf\xC3\xA9 <|eos|> costs $3.\n\tOK?"};
    export_case("trained-c1-outer-bf16", root_ / "run-native", {"--dtype", "bfloat16"}, "DeepseekV2ForCausalLM", false);
    cases_.back().coe_source = cases_.back().folder;  // coe is compared on the same bf16 weights

    coe::ModelConfig shared_gate = interop_model();  // C = 2, one router, outer residual
    shared_gate.inner_iter = 2;
    shared_gate.use_igate = false;
    shared_gate.inner_residual = coe::InnerResidual::kNone;
    shared_gate.outer_residual = true;
    shared_gate.topk_method = coe::TopkMethod::kGroupLimitedGreedy;
    shared_gate.n_group = 4;
    shared_gate.topk_group = 2;
    shared_gate.q_lora_rank = 12;
    shared_gate.first_k_dense_replace = 1;
    shared_gate.num_hidden_layers = 3;
    export_case("coe-c2-shared-gate-outer", save_random_coe(root_ / "coe-shared", shared_gate, 1), {}, "CoeForCausalLM",
                true);

    coe::ModelConfig addinit = interop_model();  // C = 2, a router per iteration, x(0) added back
    addinit.inner_iter = 2;
    addinit.inner_residual = coe::InnerResidual::kInput;
    addinit.outer_residual = true;
    addinit.scoring_func = coe::ScoringFunc::kSigmoid;
    addinit.topk_method = coe::TopkMethod::kNoauxTc;
    addinit.n_group = 2;
    addinit.topk_group = 1;
    addinit.norm_topk_prob = true;
    addinit.routed_scaling_factor = 2.0;
    export_case("coe-c2-addinit-noaux", save_random_coe(root_ / "coe-addinit", addinit, 2), {}, "CoeForCausalLM", true);

    coe::ModelConfig v3 = interop_model();  // C = 1 with DeepSeek-V3's routing
    v3.inner_residual = coe::InnerResidual::kNone;
    v3.outer_residual = true;
    v3.scoring_func = coe::ScoringFunc::kSigmoid;
    v3.topk_method = coe::TopkMethod::kNoauxTc;
    v3.norm_topk_prob = true;
    v3.routed_scaling_factor = 2.5;
    export_case("coe-c1-v3", save_random_coe(root_ / "coe-v3", v3, 3), {}, "DeepseekV3ForCausalLM", false);

    coe::ModelConfig freq = interop_model();  // C = 3, MoE every other layer, no shared experts
    freq.inner_iter = 3;
    freq.num_hidden_layers = 3;
    freq.moe_layer_freq = 2;
    freq.n_shared_experts = 0;
    export_case("coe-c3-freq2", save_random_coe(root_ / "coe-freq", freq, 4), {}, "CoeForCausalLM", true);

    // transformers' side: models it makes itself.
    const json common = {{"vocab_size", 259},        {"hidden_size", 32},
                         {"intermediate_size", 64},  {"moe_intermediate_size", 16},
                         {"num_attention_heads", 4}, {"num_key_value_heads", 4},
                         {"kv_lora_rank", 16},       {"qk_nope_head_dim", 8},
                         {"qk_rope_head_dim", 8},    {"v_head_dim", 8},
                         {"n_routed_experts", 8},    {"num_experts_per_tok", 2},
                         {"initializer_range", 0.2}, {"max_position_embeddings", 256}};
    json v2_yarn = common;
    v2_yarn.update({{"num_hidden_layers", 3},
                    {"q_lora_rank", nullptr},
                    {"n_shared_experts", 1},
                    {"topk_method", "group_limited_greedy"},
                    {"n_group", 4},
                    {"topk_group", 2},
                    {"first_k_dense_replace", 1},
                    {"rope_parameters",
                     {{"rope_type", "yarn"},
                      {"rope_theta", 10000.0},
                      {"factor", 4.0},
                      {"original_max_position_embeddings", 64},
                      {"beta_fast", 32},
                      {"beta_slow", 1},
                      {"mscale", 0.707},
                      {"mscale_all_dim", 0.707}}}});
    make_case("hf-v2-yarn-grouped-sharded", "DeepseekV2ForCausalLM", v2_yarn, 11, 0.0, "float32", "100KB");
    json v2_tied = common;
    v2_tied.update({{"num_hidden_layers", 2},
                    {"q_lora_rank", 12},
                    {"n_shared_experts", 2},
                    {"tie_word_embeddings", true},
                    {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 5000.0}}}});
    make_case("hf-v2-qlora-tied", "DeepseekV2ForCausalLM", v2_tied, 12, 0.0, "float32", "5GB");
    json v3_norm = common;
    v3_norm.update({{"num_hidden_layers", 2},
                    {"q_lora_rank", 12},
                    {"n_shared_experts", 1},
                    {"n_group", 2},
                    {"topk_group", 1},
                    {"norm_topk_prob", true},
                    {"routed_scaling_factor", 2.5},
                    {"first_k_dense_replace", 1}});
    make_case("hf-v3-norm-bf16", "DeepseekV3ForCausalLM", v3_norm, 13, 0.05, "bfloat16", "5GB");

    // One transformers process for everything.
    json manifest = {{"home", (root_ / "hf-home").string()},
                     {"inputs", (root_ / "inputs.safetensors").string()},
                     {"prompts", prompts_},
                     {"max_new_tokens", kNewTokens},
                     {"make", makes_},
                     {"run", json::array()}};
    for (const Case& c : cases_) {
      json job = {{"dir", c.folder.string()}, {"out", (root_ / ("hf-" + c.name)).string()}};
      if (!c.texts.empty()) job["tokenizer_texts"] = c.texts;
      manifest["run"].push_back(job);
    }
    coe::test::write_file(root_ / "manifest.json", manifest.dump(2));
    std::string out;
    ASSERT_EQ(run_argv({coe::test::python().string(),
                        (coe::test::source_root() / "tests" / "support" / "hf_interop.py").string(),
                        (root_ / "manifest.json").string()},
                       &out),
              0)
        << out;
  }

  // coe-export of `checkpoint` into <root>/export-<name>.
  static void export_case(const std::string& name, const fs::path& checkpoint, const std::vector<std::string>& flags,
                          const std::string& expect_class, bool remote) {
    const fs::path folder = root_ / ("export-" + name);
    std::vector<std::string> argv{tool_path("coe-export").string(), "--checkpoint", checkpoint.string(), "--out",
                                  folder.string()};
    argv.insert(argv.end(), flags.begin(), flags.end());
    std::string out;
    ASSERT_EQ(run_argv(argv, &out), 0) << out;
    cases_.push_back({name, folder, checkpoint, expect_class, remote, {}});
  }

  // A model transformers makes and saves; coe runs the folder itself.
  static void make_case(const std::string& name, const std::string& cls, const json& config, int seed,
                        double bias_scale, const std::string& dtype, const std::string& shard) {
    const fs::path folder = root_ / name;
    makes_.push_back({{"out", folder.string()},
                      {"class", cls},
                      {"config", config},
                      {"seed", seed},
                      {"bias_scale", bias_scale},
                      {"dtype", dtype},
                      {"max_shard_size", shard}});
    cases_.push_back({name, folder, folder, cls, false, {}});
  }

  // C = 1 with DeepSeek's wiring (residual_mode outer), a dense first layer and YaRN, trained for
  // a few steps on GSM8K with the byte tokenizer: transformers runs it as its own DeepSeek-V2.
  static void train_native_run() {
    const fs::path gsm = coe::test::shared_root() / "data" / "gsm8k";
    coe::test::write_file(
        root_ / "native.yaml",
        "model:\n  hidden_size: 32\n  intermediate_size: 64\n  moe_intermediate_size: 32\n  num_hidden_layers: 2\n"
        "  num_attention_heads: 4\n  q_lora_rank: null\n  kv_lora_rank: 16\n  qk_nope_head_dim: 8\n"
        "  qk_rope_head_dim: 8\n  v_head_dim: 8\n  n_routed_experts: 8\n  n_shared_experts: 1\n"
        "  num_experts_per_tok: 2\n  max_position_embeddings: 1024\n"
        "  first_k_dense_replace: 1\n  residual_mode: outer\n"
        "  rope_scaling: {type: yarn, factor: 4, original_max_position_embeddings: 32, mscale: 0.707, "
        "mscale_all_dim: 0.707}\n"
        "data:\n  train_files: [" +
            (gsm / "train.jsonl").string() + "]\n  prepared_dir: " + (root_ / "prepared").string() +
            "\n  tokenizer: byte\n  text_keys: [question, answer]\n  val_count: 16\n  max_length: 64\n"
            "  packing: true\n"
            "optim:\n  lr: 3.0e-3\n  warmup_steps: 2\n"
            "trainer:\n  total_steps: 60\n  global_batch: 8\n  micro_batch: 8\n  val_interval: 60\n"
            "  val_batches: 1\n  log_interval: 60\n  threads: 1\n  seed: 5\n  out_dir: " +
            (root_ / "run-native").string() + "\n");
    std::string out;
    ASSERT_EQ(run_argv({tool_path("coe-train").string(), (root_ / "native.yaml").string()}, &out), 0) << out;
  }

  // The checks, one per aspect; a single test runs them all, because ctest runs every test in a
  // process of its own and the transformers run above is the expensive part.
  static void TransformersBuildsTheExpectedClasses();
  static void LogitsAgreeWithTransformers();
  static void GreedyGenerationsAreEqual();
  static void ToolsRunHfFolders();
  static void DeepseekV2FolderStartsACoeRun();
  static void UnsupportedFieldIsAOneLineError();
  static void LmEvalAgreesWithCoeEval();

  static json hf_result(const Case& c) { return json::parse(read_file(root_ / ("hf-" + c.name + ".json"))); }
  static at::Tensor hf_logits(const Case& c) {
    return coe::load_safetensors((root_ / ("hf-" + c.name + ".safetensors")).string()).tensors.at("logits");
  }

  static fs::path root_;
  static at::Tensor inputs_;
  static std::vector<std::vector<int32_t>> prompts_;
  static std::vector<Case> cases_;
  static json makes_;
};

fs::path HfInterop::root_;
at::Tensor HfInterop::inputs_;
std::vector<std::vector<int32_t>> HfInterop::prompts_;
std::vector<Case> HfInterop::cases_;
json HfInterop::makes_ = json::array();

// transformers builds its own DeepSeek classes for what they compute as coe does, coe's remote
// code for the rest; AutoTokenizer gives coe's byte ids (special-token text stays bytes).
void HfInterop::TransformersBuildsTheExpectedClasses() {
  for (const Case& c : cases_) {
    SCOPED_TRACE(c.name);
    const json r = hf_result(c);
    EXPECT_EQ(r["class"], c.expect_class);
    const bool remote = r["module"].get<std::string>().rfind("transformers.models.", 0) != 0;
    EXPECT_EQ(remote, c.remote_code) << r["module"];
    const json config = json::parse(read_file(c.folder / "config.json"));
    if (c.folder.filename().string().rfind("export-", 0) == 0) {
      EXPECT_EQ(config["torch_dtype"], c.name.find("bf16") == std::string::npos ? "float32" : "bfloat16");
      EXPECT_EQ(fs::exists(c.folder / "modeling_coe.py"), c.remote_code);
    }
    for (size_t i = 0; i < c.texts.size(); ++i) {
      EXPECT_EQ(r["tokenizer_class"], "TokenizersBackend");
      EXPECT_EQ(r["tokenized"][i].get<std::vector<int32_t>>(), bytes_of(c.texts[i])) << c.texts[i];
    }
  }
  EXPECT_TRUE(fs::exists(root_ / "export-fixture-moe-c1" / "model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(root_ / "hf-v2-yarn-grouped-sharded" / "model.safetensors.index.json"));
}

// Logits on GSM8K rows: coe's model vs transformers' load of the same weights, both directions.
void HfInterop::LogitsAgreeWithTransformers() {
  double worst = 0;
  for (const Case& c : cases_) {
    SCOPED_TRACE(c.name);
    const at::Tensor theirs = hf_logits(c);
    const at::Tensor ours = coe_logits(c.coe_source, inputs_);
    ASSERT_EQ(theirs.sizes(), ours.sizes());
    const double diff = (theirs - ours).abs().max().item<double>();
    EXPECT_LE(diff, 1e-4);
    worst = std::max(worst, diff);
    std::cout << "[ interop ] " << c.name << ": max |logits coe - transformers| = " << diff << "\n";
    if (c.coe_source != c.folder) {  // coe reads its own float32 export back bit for bit
      EXPECT_TRUE(at::equal(coe_logits(c.folder, inputs_), ours)) << "coe's import of its export";
    }
  }
  std::cout << "[ interop ] " << cases_.size() << " models, worst max |logits diff| = " << worst << "\n";
}

// Greedy generations of 32 tokens for 20 GSM8K prompts in one left-padded batch: coe's (absorbed
// and expanded MLA decoding) equal transformers' with and without its KV cache.
void HfInterop::GreedyGenerationsAreEqual() {
  int64_t equal = 0, total = 0;
  for (const Case& c : cases_) {
    SCOPED_TRACE(c.name);
    const json r = hf_result(c);
    const auto cached = r["cache"].get<std::vector<std::vector<int32_t>>>();
    const auto uncached = r["no_cache"].get<std::vector<std::vector<int32_t>>>();
    for (const coe::MlaDecode mode : {coe::MlaDecode::kAbsorbed, coe::MlaDecode::kExpanded}) {
      const auto ours = coe_generations(c.coe_source, prompts_, mode);
      ASSERT_EQ(ours.size(), cached.size());
      for (size_t i = 0; i < ours.size(); ++i) {
        EXPECT_EQ(ours[i].size(), static_cast<size_t>(kNewTokens));
        EXPECT_EQ(ours[i], cached[i]) << "prompt " << i << ", transformers with its KV cache";
        EXPECT_EQ(ours[i], uncached[i]) << "prompt " << i << ", transformers without a cache";
        equal += (ours[i] == cached[i]) + (ours[i] == uncached[i]);
        total += 2;
      }
    }
  }
  std::cout << "[ interop ] generations equal token for token: " << equal << " / " << total << "\n";
}

// The tools on the folders: coe-generate on an export with its own tokenizer.json and on a sharded
// transformers folder; coe-eval scores a transformers folder.
void HfInterop::ToolsRunHfFolders() {
  for (const std::string name : {"trained-c1-outer", "hf-v2-yarn-grouped-sharded"}) {
    SCOPED_TRACE(name);
    const auto it = std::find_if(cases_.begin(), cases_.end(), [&](const Case& c) { return c.name == name; });
    ASSERT_NE(it, cases_.end());
    const fs::path out = root_ / ("tool-" + name + ".jsonl");
    std::vector<std::string> argv{tool_path("coe-generate").string(),
                                  "--checkpoint",
                                  it->folder.string(),
                                  "--raw",
                                  "--input",
                                  (root_ / "prompts.jsonl").string(),
                                  "--max-new-tokens",
                                  std::to_string(kNewTokens),
                                  "--ignore-eos",
                                  "--batch",
                                  "32",
                                  "--output",
                                  out.string()};
    if (!fs::exists(it->folder / "tokenizer.json")) argv.insert(argv.end(), {"--tokenizer", "byte"});
    std::string log;
    ASSERT_EQ(run_argv(argv, &log), 0) << log;
    const auto lines = read_jsonl(out);
    const json r = hf_result(*it);
    ASSERT_EQ(lines.size(), static_cast<size_t>(kPrompts));
    for (size_t i = 0; i < lines.size(); ++i) EXPECT_EQ(lines[i]["tokens"], r["cache"][i]) << "prompt " << i;
  }
  std::string log;
  ASSERT_EQ(run_argv({tool_path("coe-eval").string(), "--checkpoint", (root_ / "hf-v3-norm-bf16").string(), "--data",
                      (coe::test::shared_root() / "data" / "gsm8k" / "test.jsonl").string(), "--tokenizer", "byte",
                      "--text-keys", "question,answer", "--max-records", "8", "--max-length", "256", "--truncation",
                      "right", "--json", (root_ / "eval.json").string()},
                     &log),
            0)
      << log;
  EXPECT_GT(json::parse(read_file(root_ / "eval.json"))["val_loss"].get<double>(), 0.0);
}

// A transformers folder as trainer.init_from: a DeepSeek-V2 (one router per layer) starts a CoE
// with a router per iteration; its only router goes to every iteration.
void HfInterop::DeepseekV2FolderStartsACoeRun() {
  const fs::path gsm = coe::test::shared_root() / "data" / "gsm8k";
  coe::test::write_file(root_ / "init.yaml",
                        "model:\n  hidden_size: 32\n  intermediate_size: 64\n  moe_intermediate_size: 16\n"
                        "  num_hidden_layers: 2\n  num_attention_heads: 4\n  q_lora_rank: 12\n  kv_lora_rank: 16\n"
                        "  qk_nope_head_dim: 8\n  qk_rope_head_dim: 8\n  v_head_dim: 8\n  n_routed_experts: 8\n"
                        "  n_shared_experts: 2\n  num_experts_per_tok: 2\n  inner_iter: 2\n"
                        "  tie_word_embeddings: true\n  max_position_embeddings: 64\n"
                        "data:\n  train_files: [" +
                            (gsm / "train.jsonl").string() + "]\n  prepared_dir: " + (root_ / "prepared").string() +
                            "\n  tokenizer: byte\n  text_keys: [question, answer]\n  val_count: 16\n"
                            "  max_length: 64\n  packing: true\n"
                            "trainer:\n  total_steps: 1\n  global_batch: 8\n  micro_batch: 8\n  threads: 1\n"
                            "  init_from: " +
                            (root_ / "hf-v2-qlora-tied").string() + "\n  out_dir: " + (root_ / "run-init").string() +
                            "\n");
  std::string out;
  ASSERT_EQ(run_argv({tool_path("coe-train").string(), (root_ / "init.yaml").string()}, &out), 0) << out;
  const std::string table = read_file(root_ / "run-init" / "init_from.txt");
  for (const std::string gate : {"model.layers.1.mlp.gate.0.weight", "model.layers.1.mlp.gate.1.weight"}) {
    std::istringstream lines(table);
    bool found = false;
    for (std::string line; std::getline(lines, line);) {
      std::istringstream words(line);
      std::string action, target, source;
      words >> action >> target >> source;
      found = found || (action == "copied" && target == gate && source == "model.layers.1.mlp.gate.weight");
    }
    EXPECT_TRUE(found) << gate << " from the source's only gate\n" << table;
  }
}

// A field coe does not compute as transformers does is one line naming it, from the tools too.
void HfInterop::UnsupportedFieldIsAOneLineError() {
  const fs::path bad = root_ / "bad-folder";
  fs::create_directories(bad);
  json config = json::parse(read_file(root_ / "hf-v2-qlora-tied" / "config.json"));
  config["mlp_bias"] = true;
  coe::test::write_file(bad / "config.json", config.dump());
  fs::copy_file(root_ / "hf-v2-qlora-tied" / "model.safetensors", bad / "model.safetensors");
  std::string out;
  EXPECT_EQ(run_argv({tool_path("coe-generate").string(), "--checkpoint", bad.string(), "--tokenizer", "byte",
                      "--prompt", "x", "--raw"},
                     &out),
            1);
  EXPECT_NE(out.find("error: "), std::string::npos) << out;
  EXPECT_NE(out.find("mlp_bias"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}

// lm-evaluation-harness (`lm_eval --model hf`) on an exported folder with the local GSM8K task of
// tools/lm_eval: per record, its greedy answer and exact match are coe-eval --task gsm8k's.
void HfInterop::LmEvalAgreesWithCoeEval() {
  const fs::path folder = root_ / "export-trained-c1-outer", shared = coe::test::shared_root();
  std::string task = read_file(coe::test::source_root() / "tools" / "lm_eval" / "coe_gsm8k.yaml");
  const std::string relative = "../shared/data/gsm8k/test.jsonl";
  ASSERT_NE(task.find(relative), std::string::npos);
  task.replace(task.find(relative), relative.size(), (shared / "data" / "gsm8k" / "test.jsonl").string());
  coe::test::write_file(root_ / "lm-tasks" / "coe_gsm8k.yaml", task);
  constexpr int kRecords = 3;
  std::string out;
  ASSERT_EQ(run_argv({coe::test::python_tool("lm_eval").string(), "--model", "hf", "--model_args",
                      "pretrained=" + folder.string() + ",dtype=float32", "--tasks", "coe_gsm8k", "--include_path",
                      (root_ / "lm-tasks").string(), "--device", "cpu", "--batch_size", "1", "--limit",
                      std::to_string(kRecords), "--log_samples", "--output_path", (root_ / "lm-out").string()},
                     &out),
            0)
      << out;
  fs::path samples;
  for (const auto& e : fs::recursive_directory_iterator(root_ / "lm-out"))
    if (e.path().filename().string().rfind("samples_coe_gsm8k", 0) == 0) samples = e.path();
  ASSERT_FALSE(samples.empty()) << out;
  ASSERT_EQ(run_argv({tool_path("coe-eval").string(), "--task", "gsm8k", "--checkpoint", folder.string(), "--data",
                      (shared / "data" / "gsm8k" / "test.jsonl").string(), "--text-keys", "question,answer",
                      "--max-records", std::to_string(kRecords), "--max-new-tokens", "32", "--samples",
                      (root_ / "coe-samples.jsonl").string()},
                     &out),
            0)
      << out;
  const auto theirs = read_jsonl(samples);
  const auto ours = read_jsonl(root_ / "coe-samples.jsonl");
  ASSERT_EQ(theirs.size(), static_cast<size_t>(kRecords));
  ASSERT_EQ(ours.size(), static_cast<size_t>(kRecords));
  for (const json& t : theirs) {
    const json& o = ours.at(t["doc_id"].get<size_t>());
    EXPECT_EQ(t["arguments"]["gen_args_0"]["arg_0"], o["prompt"]);
    EXPECT_EQ(t["resps"][0][0], o["generation"]) << "record " << t["doc_id"];
    EXPECT_EQ(t["exact_match"].get<double>() == 1.0, o["correct"].get<bool>()) << "record " << t["doc_id"];
  }
}

TEST_F(HfInterop, ExportImportAndToolsAgreeWithTransformers) {
  // (A failed assertion ends only the check it is in.)
  {
    SCOPED_TRACE("TransformersBuildsTheExpectedClasses");
    TransformersBuildsTheExpectedClasses();
  }
  {
    SCOPED_TRACE("LogitsAgreeWithTransformers");
    LogitsAgreeWithTransformers();
  }
  {
    SCOPED_TRACE("GreedyGenerationsAreEqual");
    GreedyGenerationsAreEqual();
  }
  {
    SCOPED_TRACE("ToolsRunHfFolders");
    ToolsRunHfFolders();
  }
  {
    SCOPED_TRACE("DeepseekV2FolderStartsACoeRun");
    DeepseekV2FolderStartsACoeRun();
  }
  {
    SCOPED_TRACE("UnsupportedFieldIsAOneLineError");
    UnsupportedFieldIsAOneLineError();
  }
  {
    SCOPED_TRACE("LmEvalAgreesWithCoeEval");
    LmEvalAgreesWithCoeEval();
  }
}

}  // namespace
