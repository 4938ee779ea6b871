// coe-generate and coe-eval --task as a user runs them, on a tiny CoE trained for a few steps by
// coe-train on real GSM8K: GSM8K accuracy on the shared test split (accuracy in [0, 1] inside its
// interval, a samples file with prompt, generation, extracted and gold answers), exemplars,
// records read back through a prepared split, streaming and JSONL generation, seeded sampling that
// does not depend on the batch, and bad input as one-line errors.
#include "support/test_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using coe::test::read_file;
using coe::test::read_jsonl;
using coe::test::run_argv;
using coe::test::tool_path;

fs::path gsm8k(const std::string& split) { return coe::test::shared_root() / "data" / "gsm8k" / (split + ".jsonl"); }

class ToolsGenerate : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = coe::test::scratch_dir("generate");
    // A CoE (C = 2) with room for GSM8K prompts in bytes; packed rows join records with EOS.
    coe::test::write_file(root_ / "run.yaml",
                          "model:\n"
                          "  hidden_size: 32\n  moe_intermediate_size: 16\n  num_hidden_layers: 2\n"
                          "  num_attention_heads: 2\n  kv_lora_rank: 16\n  qk_nope_head_dim: 8\n  qk_rope_head_dim: 8\n"
                          "  v_head_dim: 8\n  n_routed_experts: 8\n  n_shared_experts: 1\n  num_experts_per_tok: 2\n"
                          "  inner_iter: 2\n  max_position_embeddings: 1024\n"
                          "data:\n  train_files: [" +
                              gsm8k("train").string() +
                              "]\n"
                              "  prepared_dir: " +
                              (root_ / "prepared").string() +
                              "\n"
                              "  tokenizer: byte\n  text_keys: [question, answer]\n  val_count: 16\n"
                              "  max_length: 128\n  packing: true\n"
                              "optim:\n  lr: 3.0e-3\n"
                              "trainer:\n  total_steps: 4\n  global_batch: 8\n  micro_batch: 8\n"
                              "  log_interval: 10\n  threads: 1\n  seed: 3\n");
    std::string out;
    ASSERT_EQ(
        run_argv({tool_path("coe-train").string(), (root_ / "run.yaml").string(), "--out", (root_ / "run").string()},
                 &out),
        0)
        << out;
  }

  static std::string run_dir() { return (root_ / "run").string(); }

  // Runs a tool expecting failure: exit 1 and one line "error: ..." holding every fragment.
  static void expect_one_line_error(const std::vector<std::string>& argv, const std::vector<std::string>& fragments) {
    std::string out;
    const int rc = run_argv(argv, &out);
    EXPECT_EQ(rc, 1) << out;
    EXPECT_EQ(out.rfind("error: ", 0), 0u) << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
    for (const auto& f : fragments) EXPECT_NE(out.find(f), std::string::npos) << "'" << f << "' not in: " << out;
  }

  static fs::path root_;
};

fs::path ToolsGenerate::root_;

TEST_F(ToolsGenerate, EvalTaskGsm8kOnTheTestSplit) {
  const fs::path json = root_ / "gsm8k.json", samples = root_ / "gsm8k-samples.jsonl";
  std::string out;
  ASSERT_EQ(run_argv({tool_path("coe-eval").string(), "--checkpoint", run_dir(), "--data", gsm8k("test").string(),
                      "--task", "gsm8k", "--max-records", "20", "--max-new-tokens", "48", "--batch", "8", "--json",
                      json.string(), "--samples", samples.string()},
                     &out),
            0)
      << out;
  EXPECT_NE(out.find("accuracy"), std::string::npos) << out;
  const auto j = nlohmann::json::parse(read_file(json));
  EXPECT_EQ(j["task"], "gsm8k");
  EXPECT_EQ(j["records"].get<int64_t>(), 20);
  const double accuracy = j["accuracy"].get<double>();
  EXPECT_GE(accuracy, 0.0);
  EXPECT_LE(accuracy, 1.0);
  EXPECT_LE(j["accuracy_ci95"][0].get<double>(), accuracy);
  EXPECT_GE(j["accuracy_ci95"][1].get<double>(), accuracy);
  EXPECT_GT(j["accuracy_ci95"][1].get<double>(), 0.1);  // 20 records cannot pin accuracy down
  EXPECT_EQ(j["stop"], nlohmann::json::array({"question :"}));
  EXPECT_GT(j["generation"]["decode_tokens_per_s"].get<double>(), 0.0);

  const auto lines = read_jsonl(samples);
  ASSERT_EQ(lines.size(), 20u);
  for (const auto& s : lines) {
    for (const char* key : {"prompt", "generation", "extracted", "gold", "correct"})
      EXPECT_TRUE(s.contains(key)) << key;
    const std::string prompt = s["prompt"].get<std::string>();
    EXPECT_EQ(prompt.rfind("question : ", 0), 0u) << prompt;
    EXPECT_EQ(prompt.substr(prompt.size() - 9), " answer :") << prompt;
    EXPECT_LE(s["new_tokens"].get<int64_t>(), 48);
    EXPECT_EQ(s["correct"].get<bool>(), !s["extracted"].is_null() && s["extracted"] == s["gold"]);
  }
  // The first GSM8K test record: Janet's ducks, gold answer 18.
  EXPECT_EQ(lines[0]["gold"], "18");
  EXPECT_NE(lines[0]["prompt"].get<std::string>().find("Janet"), std::string::npos);
  EXPECT_EQ(lines[0]["where"], gsm8k("test").string() + ":1");
}

TEST_F(ToolsGenerate, EvalTaskWithExemplarsAndFromAPreparedSplit) {
  const fs::path json = root_ / "shots.json", samples = root_ / "shots-samples.jsonl";
  std::string out;
  ASSERT_EQ(run_argv({tool_path("coe-eval").string(), "--checkpoint", run_dir(), "--data", gsm8k("test").string(),
                      "--task", "gsm8k", "--max-records", "3", "--max-new-tokens", "8", "--shots", "2", "--json",
                      json.string(), "--samples", samples.string()},
                     &out),
            0)
      << out;
  const auto j = nlohmann::json::parse(read_file(json));
  EXPECT_EQ(j["shots"].get<int64_t>(), 2);
  // The run's training file, as its config.yaml names it: absolute and normal.
  EXPECT_EQ(j["shots_from"], gsm8k("train").lexically_normal().string());
  const std::string prompt = j["example_prompt"].get<std::string>();
  size_t questions = 0;
  for (size_t at = prompt.find("question : "); at != std::string::npos; at = prompt.find("question : ", at + 1))
    ++questions;
  EXPECT_EQ(questions, 3u) << prompt;
  EXPECT_NE(prompt.find("\n\nquestion : "), std::string::npos) << prompt;
  EXPECT_NE(prompt.find("#### "), std::string::npos) << prompt;  // exemplars carry their solutions

  // The validation split of the prepared data: its records come back from the source file.
  const fs::path prepared = root_ / "prepared-samples.jsonl";
  ASSERT_EQ(
      run_argv({tool_path("coe-eval").string(), "--checkpoint", run_dir(), "--data", (root_ / "prepared").string(),
                "--task", "gsm8k", "--max-records", "2", "--max-new-tokens", "4", "--samples", prepared.string()},
               &out),
      0)
      << out;
  const auto lines = read_jsonl(prepared);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["where"].get<std::string>().rfind(gsm8k("train").lexically_normal().string() + ":", 0), 0u)
      << lines[0].dump();
}

TEST_F(ToolsGenerate, GenerateStreamsOnePromptAndWritesJsonl) {
  std::string out;
  const fs::path stats = root_ / "stats.json";
  ASSERT_EQ(run_argv({tool_path("coe-generate").string(), "--checkpoint", run_dir(), "--prompt",
                      "Tom has 3 apples and buys 4 more. How many apples does he have?", "--max-new-tokens", "12",
                      "--ignore-eos", "--json", stats.string()},
                     &out),
            0)
      << out;
  EXPECT_NE(out.find("prefill"), std::string::npos) << out;
  EXPECT_NE(out.find("tokens/s"), std::string::npos) << out;
  const auto s = nlohmann::json::parse(read_file(stats));
  EXPECT_EQ(s["decode_tokens"].get<int64_t>(), 11);  // the first of the 12 comes from the prefill
  EXPECT_EQ(s["finish_reasons"], nlohmann::json::array({"max_new_tokens"}));
  EXPECT_EQ(s["kv_cache_bytes_per_token"].get<int64_t>(), 2 * (16 + 8) * 4);

  const fs::path jsonl = root_ / "generated.jsonl";
  ASSERT_EQ(run_argv({tool_path("coe-generate").string(), "--checkpoint", run_dir(), "--input", gsm8k("test").string(),
                      "--max-records", "5", "--batch", "2", "--max-new-tokens", "16", "--output", jsonl.string()},
                     &out),
            0)
      << out;
  const auto lines = read_jsonl(jsonl);
  ASSERT_EQ(lines.size(), 5u);
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i]["index"].get<size_t>(), i);
    const std::string prompt = lines[i]["prompt"].get<std::string>();
    EXPECT_EQ(prompt.substr(prompt.size() - 9), " answer :") << prompt;
    EXPECT_LE(lines[i]["new_tokens"].get<int64_t>(), 16);
  }
}

TEST_F(ToolsGenerate, SamplingIsSeededAndIndependentOfTheBatch) {
  auto sample = [&](const std::string& batch, const std::string& seed, const std::string& name) {
    const fs::path out_file = root_ / name;
    std::string out;
    EXPECT_EQ(run_argv({tool_path("coe-generate").string(),
                        "--checkpoint",
                        run_dir(),
                        "--input",
                        gsm8k("test").string(),
                        "--max-records",
                        "4",
                        "--batch",
                        batch,
                        "--max-new-tokens",
                        "24",
                        "--temperature",
                        "1.0",
                        "--top-k",
                        "50",
                        "--top-p",
                        "0.95",
                        "--seed",
                        seed,
                        "--output",
                        out_file.string()},
                       &out),
              0)
        << out;
    std::vector<std::string> texts;
    for (const auto& l : read_jsonl(out_file)) texts.push_back(l["generation"].get<std::string>());
    return texts;
  };
  const auto a = sample("4", "3", "s1.jsonl");
  EXPECT_EQ(a.size(), 4u);
  EXPECT_EQ(sample("4", "3", "s2.jsonl"), a);
  EXPECT_EQ(sample("1", "3", "s3.jsonl"), a);
  EXPECT_NE(sample("4", "4", "s4.jsonl"), a);
}

TEST_F(ToolsGenerate, BadInputIsAOneLineError) {
  const std::string generate = tool_path("coe-generate").string(), eval = tool_path("coe-eval").string();
  // A prompt past the position limit (1024 byte tokens).
  expect_one_line_error({generate, "--checkpoint", run_dir(), "--prompt", std::string(1100, 'x')},
                        {"--prompt", "no room", "max_position_embeddings 1024"});
  const fs::path long_record = coe::test::write_file(
      root_ / "long.jsonl", nlohmann::json{{"question", std::string(1100, 'y')}, {"answer", "#### 1"}}.dump() + "\n");
  expect_one_line_error({eval, "--checkpoint", run_dir(), "--data", long_record.string(), "--task", "gsm8k"},
                        {long_record.string() + ":1", "no room", "max_position_embeddings 1024"});
  // An unknown task.
  expect_one_line_error({eval, "--checkpoint", run_dir(), "--data", gsm8k("test").string(), "--task", "math500"},
                        {"--task", "unknown task 'math500'"});
  // No tokens to generate.
  expect_one_line_error({generate, "--checkpoint", run_dir(), "--prompt", "hi", "--max-new-tokens", "0"},
                        {"--max-new-tokens 0"});
  expect_one_line_error(
      {eval, "--checkpoint", run_dir(), "--data", gsm8k("test").string(), "--task", "gsm8k", "--max-new-tokens", "0"},
      {"--max-new-tokens 0"});
  // A checkpoint whose run config names no tokenizer (the reference's fixture has none at all).
  const std::string fixture = (coe::test::shared_root() / "fixtures" / "coe_c2_igate_inner_yarn").string();
  expect_one_line_error({generate, "--checkpoint", fixture, "--prompt", "hi"}, {"--tokenizer", "no run config"});
  expect_one_line_error({eval, "--checkpoint", fixture, "--data", gsm8k("test").string(), "--task", "gsm8k"},
                        {"--tokenizer", "no run config"});
  // Gold answers must be there.
  const fs::path no_gold = coe::test::write_file(
      root_ / "nogold.jsonl", nlohmann::json{{"question", "How many?"}, {"answer", "It is 4."}}.dump() + "\n");
  expect_one_line_error({eval, "--checkpoint", run_dir(), "--data", no_gold.string(), "--task", "gsm8k"},
                        {no_gold.string() + ":1", "no final answer after '####'"});
  // Flags that contradict each other.
  expect_one_line_error({generate, "--checkpoint", run_dir(), "--prompt", "a", "--input", gsm8k("test").string()},
                        {"--prompt / --input"});
  expect_one_line_error({eval, "--checkpoint", run_dir(), "--data", gsm8k("test").string(), "--samples", "x.jsonl"},
                        {"--samples", "only with --task"});
}

}  // namespace
