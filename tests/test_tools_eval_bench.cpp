// coe-eval and coe-bench as a user runs them. A tiny CoE trained by coe-train on real GSM8K
// records: coe-eval on its checkpoint and validation split reports the loss the trainer logged
// for the same records (same token averaging), the routing file carries the combinatorial bound
// C(N,K)^C / C(N,C*K), and coe-bench runs training steps on CPU and writes its JSON, taking the
// vocabulary from the tokenizer. Bad flags are one-line errors.
#include "coe/io/hf_checkpoint.h"
#include "coe/model/causal_lm.h"

#include "support/test_env.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

namespace {

namespace fs = std::filesystem;
using coe::test::read_file;
using coe::test::read_jsonl;
using coe::test::run_command;
using coe::test::tool_path;

class ToolsEvalBench : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = coe::test::scratch_dir("tools");
    std::ifstream in(coe::test::shared_root() / "data" / "gsm8k" / "train.jsonl");
    ASSERT_TRUE(in) << "GSM8K train split missing under " << coe::test::shared_root();
    std::ofstream out(root_ / "gsm8k-96.jsonl");
    std::string line;
    for (int i = 0; i < 96 && std::getline(in, line); ++i) out << line << "\n";
    out.close();
    // Padded rows (no packing), 16 validation records = 4 full validation batches of 4.
    coe::test::write_file(root_ / "run.yaml",
                          "model:\n"
                          "  hidden_size: 32\n  moe_intermediate_size: 16\n  num_hidden_layers: 2\n"
                          "  num_attention_heads: 2\n  kv_lora_rank: 16\n  qk_nope_head_dim: 8\n  qk_rope_head_dim: 8\n"
                          "  v_head_dim: 8\n  n_routed_experts: 8\n  n_shared_experts: 1\n  num_experts_per_tok: 2\n"
                          "  inner_iter: 2\n  max_position_embeddings: 256\n"
                          "data:\n  train_files: [" +
                              (root_ / "gsm8k-96.jsonl").string() +
                              "]\n"
                              "  prepared_dir: " +
                              (root_ / "prepared").string() +
                              "\n"
                              "  tokenizer: byte\n  text_keys: [question, answer]\n  val_count: 16\n"
                              "  max_length: 160\n  packing: false\n  truncation: right\n"
                              "optim:\n  lr: 2.0e-3\n"
                              "trainer:\n  total_steps: 4\n  global_batch: 8\n  micro_batch: 4\n  val_interval: 4\n"
                              "  val_batches: 100\n  save_interval: 4\n  log_interval: 1\n  threads: 1\n  seed: 3\n");
    std::string out_text;
    const int rc = run_command(
        tool_path("coe-train").string() + " " + (root_ / "run.yaml").string() + " --out " + (root_ / "run").string(),
        &out_text);
    ASSERT_EQ(rc, 0) << out_text;
  }

  static fs::path root_;
};

fs::path ToolsEvalBench::root_;

TEST_F(ToolsEvalBench, EvalMatchesTheTrainersValidationLoss) {
  const auto val = read_jsonl(root_ / "run" / "val.jsonl");
  ASSERT_FALSE(val.empty());
  const double trained = val.back()["val_loss"].get<double>();
  const int64_t trained_tokens = val.back()["tokens"].get<int64_t>();

  const fs::path report = root_ / "eval.json";
  const fs::path routing = root_ / "routing.json";
  std::string out;
  const int rc = run_command(tool_path("coe-eval").string() + " --checkpoint " + (root_ / "run").string() + " --data " +
                                 (root_ / "prepared").string() + " --split val --batch 4 --max-length 160 --json " +
                                 report.string() + " --routing " + routing.string(),
                             &out);
  ASSERT_EQ(rc, 0) << out;
  const auto j = nlohmann::json::parse(read_file(report));
  EXPECT_EQ(j["records"].get<int64_t>(), 16);
  EXPECT_EQ(j["tokens"].get<int64_t>(), trained_tokens);
  EXPECT_NEAR(j["val_loss"].get<double>(), trained, 1e-5 * trained);
  EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(j["val_loss"].get<double>()),
              1e-6 * j["perplexity"].get<double>());
  const double accuracy = j["accuracy"].get<double>();
  EXPECT_GE(accuracy, 0.0);
  EXPECT_LE(accuracy, 1.0);

  const auto r = nlohmann::json::parse(read_file(routing));
  ASSERT_TRUE(r.contains("combinatorial_bound")) << r.dump();
  EXPECT_EQ(r["combinatorial_bound"]["formula"].get<std::string>(), "C(8,2)^2 / C(8,4)");
  EXPECT_NEAR(r["combinatorial_bound"]["value"].get<double>(), 28.0 * 28.0 / 70.0, 1e-9);
  ASSERT_TRUE(r.contains("chains"));
  ASSERT_EQ(r["chains"].size(), 2u);  // one per CoE layer
}

TEST_F(ToolsEvalBench, BenchRunsOnCpuAndWritesJson) {
  const fs::path json = root_ / "bench.json";
  std::string out;
  const int rc = run_command(tool_path("coe-bench").string() + " " + (root_ / "run.yaml").string() +
                                 " --steps 2 --warmup 1 --seq 64 --json " + json.string(),
                             &out);
  ASSERT_EQ(rc, 0) << out;
  const auto j = nlohmann::json::parse(read_file(json));
  for (const char* key : {"tokens_per_s", "step_ms", "mfu", "peak_bytes", "config", "vocab_size", "blas"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_GT(j["tokens_per_s"].get<double>(), 0);
  EXPECT_GT(j["peak_bytes"].get<int64_t>(), 0);
  EXPECT_EQ(j["vocab_size"].get<int64_t>(), 259);  // omitted in the config: the byte tokenizer's
  EXPECT_EQ(j["seq_len"].get<int64_t>(), 64);
  EXPECT_EQ(j["step_ms_all"].size(), 2u);
}

TEST_F(ToolsEvalBench, BadFlagsAreOneLineErrors) {
  for (const std::string tool : {"coe-bench", "coe-eval", "coe-train", "coe-memory", "coe-sweep", "coe-prepare",
                                 "coe-tokenize", "coe-generate", "coe-plot", "coe-tokfuzz"}) {
    std::string out;
    const int rc = run_command(tool_path(tool).string() + " --no-such-flag", &out);
    EXPECT_EQ(rc, 1) << tool << ": " << out;
    EXPECT_EQ(out.rfind("error: ", 0), 0u) << tool << ": " << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << tool << ": " << out;
  }
  std::string out;
  const int rc = run_command(tool_path("coe-eval").string() + " --checkpoint " + (root_ / "nowhere").string() +
                                 " --data " + (root_ / "prepared").string(),
                             &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("nowhere"), std::string::npos) << out;
}

// A raw file is tokenized and rendered the way the run was trained (its config.yaml: byte
// tokenizer, question/answer keys, rows of 160), with no flags.
TEST_F(ToolsEvalBench, EvalOfARawFileTakesTheRunsSettings) {
  const fs::path report = root_ / "raw.json";
  std::string out;
  const int rc = run_command(tool_path("coe-eval").string() + " --checkpoint " + (root_ / "run").string() + " --data " +
                                 (root_ / "gsm8k-96.jsonl").string() + " --json " + report.string(),
                             &out);
  ASSERT_EQ(rc, 0) << out;
  const auto j = nlohmann::json::parse(read_file(report));
  EXPECT_EQ(j["records"].get<int64_t>(), 96);
  EXPECT_EQ(j["tokenizer"].get<std::string>(), "byte");
  EXPECT_EQ(j["max_length"].get<int64_t>(), 160);
  EXPECT_GT(j["records_per_s"].get<double>(), 0.0);
  EXPECT_TRUE(std::isfinite(j["val_loss"].get<double>()));
}

TEST_F(ToolsEvalBench, EvalRefusesWhatWouldScoreGarbage) {
  const std::string eval = tool_path("coe-eval").string() + " --checkpoint ";
  const std::string raw = " --data " + (root_ / "gsm8k-96.jsonl").string();
  struct Case {
    std::string args, expected;
  };
  const std::string fixture = (coe::test::shared_root() / "fixtures" / "coe_c2_igate_inner_yarn").string();
  const Case cases[] = {
      // A checkpoint without a run config, whose vocabulary is not the byte tokenizer's.
      {fixture + raw, "error: --tokenizer: " + fixture + " has no run config"},
      // Another tokenizer than the run's.
      {(root_ / "run").string() + raw + " --tokenizer " +
           (coe::test::shared_root() / "data" / "tokenizers" / "gpt-neox-tokenizer.json").string(),
       "vocabulary 50277 exceeds the model's vocab_size 259"},
      {(root_ / "run").string() + raw + " --device tpu", "error: --device: unknown device 'tpu'"},
      {(root_ / "run").string() + raw + " --max-length 100000",
       "error: --max-length 100000 exceeds the model's max_position_embeddings 256"},
      {(root_ / "run").string() + raw + " --json /nonexistent/dir/x.json",
       "error: --json /nonexistent/dir/x.json: cannot write: /nonexistent/dir is not a directory"},
  };
  for (const auto& c : cases) {
    std::string out;
    EXPECT_EQ(run_command(eval + c.args, &out), 1) << c.args << ": " << out;
    EXPECT_NE(out.find(c.expected), std::string::npos) << c.args << ": " << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << c.args << ": " << out;
  }
}

// coe-eval on a checkpoint whose weights are NaN: an error naming the checkpoint, no report.
TEST_F(ToolsEvalBench, EvalOfNonFiniteWeightsIsAnError) {
  const fs::path nan_ckpt = root_ / "nan-checkpoint";
  {
    coe::CausalLM model = coe::load_hf_checkpoint((root_ / "run" / "step-4").string());
    torch::NoGradGuard no_grad;
    model->norm->weight.fill_(std::numeric_limits<float>::quiet_NaN());
    coe::save_hf_checkpoint(*model, nan_ckpt.string());
  }
  fs::copy_file(root_ / "run" / "step-4" / "config.yaml", nan_ckpt / "config.yaml");
  const fs::path report = root_ / "nan-eval.json";
  std::string out;
  EXPECT_EQ(run_command(tool_path("coe-eval").string() + " --checkpoint " + nan_ckpt.string() + " --data " +
                            (root_ / "prepared").string() + " --split val --batch 4 --json " + report.string(),
                        &out),
            1)
      << out;
  EXPECT_NE(out.find("error: " + nan_ckpt.string()), std::string::npos) << out;
  EXPECT_NE(out.find("not finite"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(report));
}

// A full disk behind `> file` is an error: every tool flushes and checks its standard output
// before exiting 0 (/dev/full fails every write with ENOSPC).
TEST_F(ToolsEvalBench, EveryToolChecksItsStandardOutput) {
  for (const std::string tool : {"coe-bench", "coe-eval", "coe-train", "coe-memory", "coe-sweep", "coe-prepare",
                                 "coe-tokenize", "coe-generate", "coe-plot", "coe-tokfuzz"}) {
    std::string out;
    EXPECT_EQ(run_command("{ " + tool_path(tool).string() + " --help > /dev/full; }", &out), 1) << tool << ": " << out;
    EXPECT_EQ(out.rfind("error: cannot write the standard output", 0), 0u) << tool << ": " << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << tool << ": " << out;
  }
  // Real output, more than one buffer of it: 500 records tokenized into /dev/full.
  std::string records;
  for (int i = 0; i < 500; ++i) records += "{\"text\": \"record " + std::to_string(i) + " of the stdout check\"}\n";
  const fs::path input = coe::test::write_file(root_ / "stdout-check.jsonl", records);
  std::string out;
  EXPECT_EQ(run_command(
                "{ " + tool_path("coe-tokenize").string() + " --tokenizer byte < " + input.string() + " > /dev/full; }",
                &out),
            1)
      << out;
  EXPECT_NE(out.find("error: cannot write the standard output"), std::string::npos) << out;
}

// --help is plain text: no tab or other control character (a help string's "\n" typed as an
// escape must reach the user as the two characters it names, as in --stop's).
TEST_F(ToolsEvalBench, EveryToolsHelpIsPlainText) {
  for (const std::string tool : {"coe-bench", "coe-eval", "coe-train", "coe-memory", "coe-sweep", "coe-prepare",
                                 "coe-tokenize", "coe-generate", "coe-plot", "coe-tokfuzz"}) {
    std::string out;
    ASSERT_EQ(coe::test::run_argv({tool_path(tool).string(), "--help"}, &out), 0) << tool;
    for (const char c : out)
      EXPECT_TRUE(c == '\n' || static_cast<unsigned char>(c) >= 0x20)
          << tool << ": control character " << static_cast<int>(c) << " in --help";
  }
  std::string out;
  ASSERT_EQ(coe::test::run_argv({tool_path("coe-eval").string(), "--help"}, &out), 0);
  EXPECT_NE(out.find("(repeatable; \\n and \\t understood)"), std::string::npos) << out;
}

TEST_F(ToolsEvalBench, EveryToolNamesItsVersion) {
  // The oracle: the torch that CMake built against, asked through its own Python.
  std::string torch;
  ASSERT_EQ(coe::test::run_argv({coe::test::python().string(), "-W", "ignore", "-c",
                                 "import torch; print(torch.__version__.split('+')[0] + (', CUDA ' + "
                                 "torch.version.cuda if torch.version.cuda else ', CPU only'), end='')"},
                                &torch),
            0)
      << torch;
  const std::string expected = ", torch " + torch;
  for (const std::string tool : {"coe-bench", "coe-eval", "coe-train", "coe-memory", "coe-sweep", "coe-prepare",
                                 "coe-tokenize", "coe-generate", "coe-plot", "coe-tokfuzz"}) {
    std::string out;
    EXPECT_EQ(run_command(tool_path(tool).string() + " --version", &out), 0) << tool << ": " << out;
    EXPECT_EQ(out.rfind(tool + " ", 0), 0u) << out;
    EXPECT_NE(out.find("(git "), std::string::npos) << out;
    EXPECT_NE(out.find(expected), std::string::npos) << out << " lacks '" << expected << "'";
  }
}

}  // namespace
