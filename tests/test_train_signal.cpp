// The coe-train binary: SIGTERM during training finishes the step, leaves a complete checkpoint
// that loads, exits 0, and --resume continues to the end; plus its one-line errors.
#include "coe/data/synth.h"
#include "coe/io/hf_checkpoint.h"
#include "coe/train/checkpoint.h"

#include "support/test_env.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <fstream>
#include <thread>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace {

namespace fs = std::filesystem;

// metrics.jsonl may be read while a rank is still appending to it.
std::vector<nlohmann::json> read_jsonl(const fs::path& path) { return coe::test::read_jsonl(path, SIZE_MAX, true); }

// Starts `args` with stdout+stderr into `log`; returns the pid.
pid_t spawn(const std::vector<std::string>& args, const fs::path& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class TrainSignal : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = coe::test::make_temp_dir("train-signal");
    coe::write_synth_file((dir_ / "synth.json").string(), 400, 11);
    std::ofstream(dir_ / "run.yaml")
        << "model:\n"
           "  hidden_size: 32\n  intermediate_size: 64\n  moe_intermediate_size: 32\n"
           "  num_hidden_layers: 2\n  num_attention_heads: 4\n  kv_lora_rank: 16\n"
           "  qk_nope_head_dim: 8\n  qk_rope_head_dim: 8\n  v_head_dim: 8\n"
           "  n_routed_experts: 8\n  num_experts_per_tok: 2\n  max_position_embeddings: 64\n"
           "data:\n  train_files: ["
        << (dir_ / "synth.json").string()
        << "]\n  val_count: 20\n  max_length: 64\n  packing: true\n"
           "optim:\n  lr: 1.0e-3\n"
           "trainer:\n  total_steps: 300\n  global_batch: 4\n  micro_batch: 2\n"
           "  log_interval: 50\n  save_interval: 1000\n  val_batches: 2\n"
           "  out_dir: "
        << (dir_ / "run").string() << "\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
};

TEST_F(TrainSignal, SigtermLeavesACompleteCheckpointAndResumeFinishes) {
  const std::string bin = coe::test::tool_path("coe-train").string();
  ASSERT_TRUE(fs::exists(bin)) << bin;
  const pid_t pid = spawn({bin, (dir_ / "run.yaml").string()}, dir_ / "first.log");
  ASSERT_GT(pid, 0);

  // Wait for the first metrics line, then SIGTERM.
  const fs::path metrics = dir_ / "run" / "metrics.jsonl";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (read_jsonl(metrics).empty()) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, WNOHANG), 0) << "coe-train exited early:\n" << slurp(dir_ / "first.log");
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << slurp(dir_ / "first.log");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  const std::string log = slurp(dir_ / "first.log");
  ASSERT_TRUE(WIFEXITED(status)) << log;
  EXPECT_EQ(WEXITSTATUS(status), 0) << log;
  EXPECT_NE(log.find("SIGTERM received"), std::string::npos) << log;

  // A complete checkpoint of the last finished step, which loads.
  auto latest = coe::latest_checkpoint((dir_ / "run").string());
  ASSERT_TRUE(latest.has_value()) << log;
  const int64_t stopped = latest->step;
  EXPECT_GE(stopped, 1);
  EXPECT_LT(stopped, 300) << "the run finished before the signal arrived";
  EXPECT_EQ(read_jsonl(metrics).size(), static_cast<size_t>(stopped));
  nlohmann::json state = nlohmann::json::parse(std::ifstream(fs::path(latest->dir) / "state.json"));
  EXPECT_EQ(state["step"].get<int64_t>(), stopped);
  coe::CausalLM model = coe::load_hf_checkpoint(latest->dir);
  EXPECT_EQ(model->config().vocab_size, 259);
  EXPECT_FALSE(fs::exists(dir_ / "run" / "final.json"));
  for (const auto& entry : fs::directory_iterator(dir_ / "run"))
    EXPECT_NE(entry.path().extension(), ".tmp") << "leftover " << entry.path();

  // Without --resume the run directory is refused; with it the run continues to the end.
  std::string out;
  EXPECT_EQ(
      coe::test::run_command(
          bin + " " + (dir_ / "run.yaml").string() + " --set trainer.total_steps=" + std::to_string(stopped + 3), &out),
      1);
  EXPECT_NE(out.find("error: "), std::string::npos) << out;
  EXPECT_NE(out.find("--resume"), std::string::npos) << out;
  EXPECT_EQ(coe::test::run_command(bin + " " + (dir_ / "run.yaml").string() +
                                       " --resume --set trainer.total_steps=" + std::to_string(stopped + 3),
                                   &out),
            0)
      << out;
  const auto lines = read_jsonl(metrics);
  ASSERT_EQ(lines.size(), static_cast<size_t>(stopped + 3)) << out;
  for (size_t i = 0; i < lines.size(); ++i) EXPECT_EQ(lines[i]["step"].get<int64_t>(), static_cast<int64_t>(i + 1));
  EXPECT_TRUE(fs::exists(dir_ / "run" / "final.json")) << out;
  EXPECT_TRUE(fs::exists(dir_ / "run" / fmt::format("step-{}", stopped + 3))) << out;
}

TEST_F(TrainSignal, ErrorsAreOneLine) {
  const std::string bin = coe::test::tool_path("coe-train").string();
  std::string out;
  EXPECT_EQ(coe::test::run_command(bin + " " + (dir_ / "run.yaml").string() + " --set trainer.micro_batch=3", &out), 1);
  EXPECT_EQ(out.rfind("error: ", 0), 0u) << out;
  EXPECT_NE(out.find("trainer.micro_batch: 3 does not divide global_batch 4"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_EQ(coe::test::run_command(bin + " " + (dir_ / "nope.yaml").string(), &out), 1);
  EXPECT_NE(out.find("error: "), std::string::npos);
  EXPECT_EQ(coe::test::run_command(bin + " " + (dir_ / "run.yaml").string() + " --set optim.lr=x", &out), 1);
  EXPECT_NE(out.find("optim.lr: expected a number, got 'x'"), std::string::npos) << out;
  EXPECT_EQ(coe::test::run_command(bin + " --bogus", &out), 1);
  EXPECT_EQ(out.rfind("error: ", 0), 0u) << out;
  EXPECT_EQ(coe::test::run_command(bin + " " + (dir_ / "run.yaml").string() + " --resume", &out), 1);
  EXPECT_NE(out.find("no complete checkpoint"), std::string::npos) << out;
}

}  // namespace
