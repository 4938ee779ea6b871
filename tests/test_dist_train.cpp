// coe-train data-parallel over Gloo, two processes on this machine launched the way torchrun does
// (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT): the same global batch gives the same
// losses and parameters as one process (to float32 rounding), a two-rank run resumes exactly, a
// two-rank checkpoint resumes in one process, a killed rank (either) ends the other with an error
// naming it, SIGTERM to one rank stops both after the same step, one rank's error ends both, and an
// indivisible global batch is refused.
#include "coe/data/synth.h"
#include "coe/io/safetensors.h"
#include "coe/train/checkpoint.h"

#include "coe/util/subprocess.h"

#include "support/dist_launch.h"
#include "support/test_env.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <regex>
#include <set>

namespace {

namespace fs = std::filesystem;

// metrics.jsonl may be read while a rank is still appending to it.
std::vector<nlohmann::json> read_jsonl(const fs::path& path) { return coe::test::read_jsonl(path, SIZE_MAX, true); }

class DistTrain : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = coe::test::make_temp_dir("dist-train");
    coe::write_synth_file((root_ / "synth.json").string(), 400, 7);
    // A tiny MoE (seq_aux routers: the aux loss is exact under any split of the batch). Per rank:
    // 4 of the 8 rows, 2 micro-batches of 2. Several small gradient buckets. Padded rows (not
    // packed): records shorter than max_length count fewer labels, so the ranks hold different
    // numbers of loss tokens and a mean of the ranks' mean losses would differ from the global
    // token mean.
    std::ofstream(root_ / "run.yaml")
        << "model:\n"
           "  hidden_size: 32\n  intermediate_size: 64\n  moe_intermediate_size: 32\n"
           "  num_hidden_layers: 2\n  num_attention_heads: 4\n  kv_lora_rank: 16\n"
           "  qk_nope_head_dim: 8\n  qk_rope_head_dim: 8\n  v_head_dim: 8\n"
           "  n_routed_experts: 8\n  num_experts_per_tok: 2\n  max_position_embeddings: 256\n"
           "data:\n  train_files: ["
        << (root_ / "synth.json").string() << "]\n  prepared_dir: " << (root_ / "prepared").string()
        << "\n  val_count: 24\n  max_length: 256\n  packing: false\n  truncation: right\n"
           "optim:\n  lr: 2.0e-3\n  warmup_steps: 2\n  schedule: cosine\n"
           "trainer:\n  total_steps: 6\n  global_batch: 8\n  micro_batch: 2\n  val_interval: 3\n  val_batches: 3\n"
           "  log_interval: 1\n  seed: 5\n  threads: 1\n  dist_timeout_s: 20\n  dist_bucket_mb: 0.02\n";
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  // Starts coe-train with `args` as `world` ranks (world 0: a plain single process without any
  // launcher variable) into root_/name.
  static std::vector<coe::test::RankProcess> launch(const std::string& name, int world,
                                                    const std::vector<std::string>& args) {
    std::vector<std::string> argv{coe::test::tool_path("coe-train").string(), (root_ / "run.yaml").string(), "--out",
                                  (root_ / name).string()};
    argv.insert(argv.end(), args.begin(), args.end());
    const int port = coe::test::free_port();
    std::vector<coe::test::RankProcess> procs;
    for (int r = 0; r < std::max(world, 1); ++r) {
      auto env = world > 0 ? coe::test::rank_env(r, world, port) : std::map<std::string, std::string>{};
      env["OMP_NUM_THREADS"] = "1";
      procs.push_back(coe::test::spawn_process(argv, env, root_ / (name + "-rank" + std::to_string(r) + ".log")));
    }
    return procs;
  }

  // launch(), then waits until the processes ended (or were killed at the deadline).
  static std::vector<coe::test::RankProcess> train(const std::string& name, int world,
                                                   const std::vector<std::string>& args, double deadline_s = 240) {
    auto procs = launch(name, world, args);
    coe::test::wait_all(procs, deadline_s);
    return procs;
  }

  // Two ranks of a run that would go on for 100,000 steps, returned once it logged 3 steps (or
  // after 120 s: the caller checks root_/name/metrics.jsonl).
  static std::vector<coe::test::RankProcess> launch_endless(const std::string& name) {
    auto procs = launch(name, 2,
                        {"--set", "trainer.total_steps=100000", "--set", "trainer.val_interval=0", "--set",
                         "trainer.log_interval=1000"});
    const fs::path metrics = root_ / name / "metrics.jsonl";
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (read_jsonl(metrics).size() < 3 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return procs;
  }

  static std::string logs(const std::vector<coe::test::RankProcess>& procs) {
    std::string out;
    for (size_t i = 0; i < procs.size(); ++i)
      out += "---- rank " + std::to_string(i) + " (exit " + std::to_string(procs[i].exit_code) + ", " +
             std::to_string(procs[i].seconds) + " s)\n" + procs[i].output();
    return out;
  }

  static void expect_success(const std::vector<coe::test::RankProcess>& procs) {
    for (const auto& p : procs) ASSERT_EQ(p.exit_code, 0) << logs(procs);
  }

  static std::map<std::string, at::Tensor> weights(const std::string& run, int step) {
    return coe::load_safetensors((root_ / run / ("step-" + std::to_string(step)) / "model.safetensors").string())
        .tensors;
  }

  // Largest |a - b| over all parameters.
  static double max_abs_diff(const std::map<std::string, at::Tensor>& a, const std::map<std::string, at::Tensor>& b) {
    EXPECT_EQ(a.size(), b.size());
    double m = 0;
    for (const auto& [name, t] : a) {
      auto it = b.find(name);
      if (it == b.end()) {
        ADD_FAILURE() << "missing " << name;
        continue;
      }
      m = std::max(m, (t.to(at::kDouble) - it->second.to(at::kDouble)).abs().max().item<double>());
    }
    return m;
  }

  static fs::path root_;
};

fs::path DistTrain::root_;

TEST_F(DistTrain, TwoRanksMatchOneProcessAndResume) {
  // One process, then the same run as two ranks.
  const auto single = train("single", 0, {});
  expect_success(single);
  const auto two = train("two", 2, {});
  expect_success(two);
  const std::string rank0 = two[0].output(), rank1 = two[1].output();
  EXPECT_NE(rank0.find("data parallel: 2 ranks (gloo)"), std::string::npos) << rank0;
  EXPECT_NE(rank0.find("each rank: 4 of the 8 sequences per step, 2 micro-batches of 2"), std::string::npos) << rank0;
  EXPECT_EQ(rank1.find("step "), std::string::npos) << "only rank 0 logs progress:\n" << rank1;
  // Rank 0 alone writes the run directory.
  EXPECT_TRUE(fs::exists(root_ / "two" / "final.json"));
  // The gradient buckets were all-reduced while backward was still running (hooks on the real
  // model's gradient accumulators), not all after it.
  std::smatch m;
  const std::regex summary("gradient all-reduce: (\\d+) buckets per step, (\\d+) of them started during backward");
  ASSERT_TRUE(std::regex_search(rank0, m, summary)) << rank0;
  EXPECT_GE(std::stoi(m[1]), 2) << rank0;
  EXPECT_GE(std::stoi(m[2]), 1) << rank0;

  const auto a = read_jsonl(root_ / "single" / "metrics.jsonl");
  const auto b = read_jsonl(root_ / "two" / "metrics.jsonl");
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u);
  // The rows really hold different numbers of counted labels (see the config above).
  std::set<int64_t> counts;
  for (const auto& line : a) counts.insert(line["loss_tokens"].get<int64_t>());
  EXPECT_GT(counts.size(), 1u);
  EXPECT_FALSE(a[0].contains("comm_wait_s"));
  EXPECT_TRUE(b[0].contains("comm_wait_s"));
  double worst_loss = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(b[i]["step"], a[i]["step"]);
    EXPECT_EQ(b[i]["tokens"], a[i]["tokens"]);
    EXPECT_EQ(b[i]["loss_tokens"], a[i]["loss_tokens"]);
    EXPECT_EQ(b[i]["lr"], a[i]["lr"]);
    for (const char* key : {"loss", "aux_loss", "grad_norm"}) {
      const double x = a[i][key].get<double>(), y = b[i][key].get<double>();
      EXPECT_LE(std::abs(x - y), 1e-5 * std::max(1.0, std::abs(x))) << "step " << i + 1 << " " << key;
      if (std::string(key) == "loss") worst_loss = std::max(worst_loss, std::abs(x - y));
    }
  }
  const auto va = read_jsonl(root_ / "single" / "val.jsonl");
  const auto vb = read_jsonl(root_ / "two" / "val.jsonl");
  ASSERT_EQ(va.size(), 2u);
  ASSERT_EQ(vb.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(vb[i]["tokens"], va[i]["tokens"]);
    EXPECT_EQ(vb[i]["rows"], va[i]["rows"]);
    EXPECT_NEAR(vb[i]["val_loss"].get<double>(), va[i]["val_loss"].get<double>(), 1e-5);
  }
  const double worst_param = max_abs_diff(weights("single", 6), weights("two", 6));
  EXPECT_LT(worst_param, 1e-5);
  std::printf("1 vs 2 processes after 6 steps: max |loss diff| %.3g, max |param diff| %.3g, final val loss %.7f vs "
              "%.7f\n",
              worst_loss, worst_param, va[1]["val_loss"].get<double>(), vb[1]["val_loss"].get<double>());
  RecordProperty("max_loss_diff", std::to_string(worst_loss));
  RecordProperty("max_param_diff", std::to_string(worst_param));

  // Two ranks: 3 steps, stop, resume for the other 3 = the straight two-rank run, bit for bit.
  expect_success(train("resumed", 2, {"--max-steps", "3"}));
  ASSERT_TRUE(fs::exists(root_ / "resumed" / "step-3" / "state.json"));
  fs::copy(root_ / "resumed", root_ / "resumed-single", fs::copy_options::recursive);
  const auto second = train("resumed", 2, {"--resume"});
  expect_success(second);
  EXPECT_NE(second[0].output().find("resumed from"), std::string::npos) << logs(second);
  const auto c = read_jsonl(root_ / "resumed" / "metrics.jsonl");
  ASSERT_EQ(c.size(), 6u);
  for (size_t i = 0; i < 6; ++i)
    for (const char* key : {"loss", "aux_loss", "grad_norm", "tokens", "loss_tokens"})
      EXPECT_EQ(c[i][key], b[i][key]) << "step " << i + 1 << " " << key;
  EXPECT_EQ(max_abs_diff(weights("two", 6), weights("resumed", 6)), 0.0);

  // The two-rank checkpoint resumed by one process (the loader cursor counts units, not batches):
  // the single-process run's steps 4-6, to float32 rounding.
  expect_success(train("resumed-single", 0, {"--resume"}));
  const auto d = read_jsonl(root_ / "resumed-single" / "metrics.jsonl");
  ASSERT_EQ(d.size(), 6u);
  for (size_t i = 3; i < 6; ++i) {
    EXPECT_EQ(d[i]["loss_tokens"], a[i]["loss_tokens"]) << "step " << i + 1;
    EXPECT_NEAR(d[i]["loss"].get<double>(), a[i]["loss"].get<double>(), 1e-5) << "step " << i + 1;
  }
  EXPECT_LT(max_abs_diff(weights("single", 6), weights("resumed-single", 6)), 1e-5);
}

// Aux-loss-free balancing under data parallelism: each rank routes its half of the batch, the
// bias moves by the load of the whole global batch (all-reduced), so two ranks end with the one
// process's biases (a per-rank update would move them by different +-gamma steps).
TEST_F(DistTrain, AuxFreeBiasFollowsTheGlobalLoad) {
  const std::vector<std::string> aux_free{
      "--set", "model.topk_method=noaux_tc", "--set", "model.scoring_func=sigmoid",
      "--set", "model.aux_loss_alpha=0",     "--set", "trainer.router_bias_update_rate=0.01",
      "--set", "model.inner_iter=2"};
  expect_success(train("aux-free-single", 0, aux_free));
  expect_success(train("aux-free-two", 2, aux_free));
  const auto a = weights("aux-free-single", 6), b = weights("aux-free-two", 6);
  int biases = 0;
  for (const auto& [name, t] : a) {
    if (name.find("e_score_correction_bias") == std::string::npos) continue;
    ++biases;
    EXPECT_GT(t.abs().max().item<double>(), 0.0) << name;
    EXPECT_LT((t - b.at(name)).abs().max().item<double>(), 1e-6) << name;
  }
  EXPECT_EQ(biases, 4);
  EXPECT_LT(max_abs_diff(a, b), 1e-5);
  const auto m = read_jsonl(root_ / "aux-free-two" / "metrics.jsonl");
  ASSERT_EQ(m.size(), 6u);
  EXPECT_EQ(m[5]["router"], read_jsonl(root_ / "aux-free-single" / "metrics.jsonl")[5]["router"])
      << "the load statistics are over the global batch";
}

// SIGKILL one rank mid-run: the other exits non-zero with a line naming the dead rank, well within
// dist_timeout_s (20 s) + a margin, instead of hanging. Rank 1 (a plain peer) and rank 0 (which
// also hosts the rendezvous store) are both tried.
class DistTrainKilled : public DistTrain, public ::testing::WithParamInterface<int> {};

TEST_P(DistTrainKilled, KilledRankEndsTheOtherWithAnError) {
  const int victim = GetParam(), survivor = 1 - victim;
  const std::string name = "killed" + std::to_string(victim);
  auto procs = launch_endless(name);
  ASSERT_GE(read_jsonl(root_ / name / "metrics.jsonl").size(), 3u) << logs(procs);
  const auto killed_at = std::chrono::steady_clock::now();
  ::kill(procs[victim].pid, SIGKILL);
  coe::test::wait_all(procs, 60);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  EXPECT_EQ(procs[victim].exit_code, 128 + SIGKILL) << logs(procs);
  EXPECT_EQ(procs[survivor].exit_code, 1) << logs(procs);
  EXPECT_FALSE(procs[survivor].timed_out) << logs(procs);
  EXPECT_LT(took, 20.0 + 10.0) << logs(procs);
  const std::string out = procs[survivor].output();
  EXPECT_NE(out.find("error: rank " + std::to_string(survivor) + ": "), std::string::npos) << out;
  EXPECT_NE(out.find("rank " + std::to_string(victim) + " stopped answering (dead or hung"), std::string::npos) << out;
  std::printf("rank %d killed: rank %d exited %.1f s later\n", victim, survivor, took);
}

INSTANTIATE_TEST_SUITE_P(Rank, DistTrainKilled, ::testing::Values(1, 0));

// SIGTERM to one rank only (a launcher forwards it to all; any one suffices): both ranks stop after
// the same step, rank 0 writes its checkpoint, both exit 0.
// The real launcher: the torchrun of the Python coe was built against (the checkout's .venv) starts
// the binary itself (--no-python; without it torchrun hands the binary to Python), each rank's
// output copied to a log and the console. The two ranks give the single process's losses.
TEST_F(DistTrain, TorchrunLaunchesTwoCpuRanks) {
  const fs::path torchrun = coe::test::python_tool("torchrun");
  ASSERT_TRUE(fs::exists(torchrun)) << torchrun << " is missing (tools/install-deps.sh installs torch into .venv)";
  const auto single = train("torchrun-single", 0, {});
  expect_success(single);
  std::vector<std::string> argv{torchrun.string(),
                                "--no-python",
                                "--standalone",
                                "--nproc-per-node=2",
                                "--tee",
                                "3",
                                "--log_dir",
                                (root_ / "torchrun-logs").string(),
                                coe::test::tool_path("coe-train").string(),
                                (root_ / "run.yaml").string(),
                                "--out",
                                (root_ / "torchrun").string()};
  std::vector<coe::test::RankProcess> procs{
      coe::test::spawn_process(argv, {{"OMP_NUM_THREADS", "1"}}, root_ / "torchrun.log")};
  coe::test::wait_all(procs, 240);
  ASSERT_EQ(procs[0].exit_code, 0) << procs[0].output();
  const auto summary = nlohmann::json::parse(coe::test::read_file(root_ / "torchrun" / "final.json"));
  EXPECT_EQ(summary["world_size"].get<int64_t>(), 2);
  const auto a = read_jsonl(root_ / "torchrun-single" / "metrics.jsonl");
  const auto b = read_jsonl(root_ / "torchrun" / "metrics.jsonl");
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u);
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = a[i]["loss"].get<double>(), y = b[i]["loss"].get<double>();
    EXPECT_LE(std::abs(x - y), 1e-5 * std::max(1.0, std::abs(x))) << "step " << i + 1;
  }
}

// Under torchrun a failing rank writes its error line into TORCHELASTIC_ERROR_FILE, so torchrun's
// failure summary shows it as the rank's traceback instead of "<N/A>".
TEST_F(DistTrain, TorchrunSummaryShowsTheRanksErrorLine) {
  const fs::path torchrun = coe::test::python_tool("torchrun");
  ASSERT_TRUE(fs::exists(torchrun)) << torchrun << " is missing (tools/install-deps.sh installs torch into .venv)";
  std::vector<std::string> argv{torchrun.string(),
                                "--no-python",
                                "--standalone",
                                "--nproc-per-node=2",
                                coe::test::tool_path("coe-train").string(),
                                (root_ / "run.yaml").string(),
                                "--out",
                                (root_ / "torchrun-error").string(),
                                "--set",
                                "trainer.global_batch=6"};
  std::vector<coe::test::RankProcess> procs{
      coe::test::spawn_process(argv, {{"OMP_NUM_THREADS", "1"}}, root_ / "torchrun-error.log")};
  coe::test::wait_all(procs, 240);
  EXPECT_NE(procs[0].exit_code, 0) << procs[0].output();
  const std::string out = procs[0].output();
  EXPECT_NE(out.find("traceback : rank 0: "), std::string::npos) << out;
  EXPECT_NE(out.find("trainer.global_batch 6 is not divisible by WORLD_SIZE 2"), std::string::npos) << out;
  EXPECT_EQ(out.find("<N/A>"), std::string::npos) << out;
}

TEST_F(DistTrain, StopSignalOnOneRankStopsEveryRankAtTheSameStep) {
  auto procs = launch_endless("sigterm");
  const fs::path metrics = root_ / "sigterm" / "metrics.jsonl";
  ASSERT_GE(read_jsonl(metrics).size(), 3u) << logs(procs);
  ::kill(procs[1].pid, SIGTERM);
  coe::test::wait_all(procs, 60);
  expect_success(procs);
  const auto lines = read_jsonl(metrics);
  ASSERT_FALSE(lines.empty());
  const int64_t last = lines.back()["step"].get<int64_t>();
  const auto saved = coe::latest_checkpoint((root_ / "sigterm").string());
  ASSERT_TRUE(saved.has_value()) << logs(procs);
  EXPECT_EQ(saved->step, last) << logs(procs);
  EXPECT_NE(procs[0].output().find("another rank received a stop signal: saving step " + std::to_string(last)),
            std::string::npos)
      << logs(procs);
  EXPECT_FALSE(fs::exists(root_ / "sigterm" / "final.json"));
}

// Errors of one rank reach the others: a rank started with other overrides is refused (and rank 0
// names it), and rank 0's refusal to resume reaches rank 1.
TEST_F(DistTrain, OneRanksErrorEndsEveryRank) {
  {
    const int port = coe::test::free_port();
    std::vector<coe::test::RankProcess> procs;
    for (int r = 0; r < 2; ++r) {
      std::vector<std::string> argv{coe::test::tool_path("coe-train").string(), (root_ / "run.yaml").string(), "--out",
                                    (root_ / "mismatch").string()};
      if (r == 1) argv.insert(argv.end(), {"--set", "optim.lr=1e-3"});
      auto env = coe::test::rank_env(r, 2, port);
      env["OMP_NUM_THREADS"] = "1";
      procs.push_back(coe::test::spawn_process(argv, env, root_ / ("mismatch-rank" + std::to_string(r) + ".log")));
    }
    coe::test::wait_all(procs, 60);
    for (const auto& p : procs) EXPECT_EQ(p.exit_code, 1) << logs(procs);
    EXPECT_NE(procs[1].output().find("error: rank 1: the resolved configuration differs from rank 0's: optim.lr "
                                     "(0.002 -> 0.001)"),
              std::string::npos)
        << logs(procs);
    EXPECT_NE(procs[0].output().find("rank 1 exited with an error"), std::string::npos) << logs(procs);
  }
  {
    const auto procs = train("nothing-to-resume", 2, {"--resume"}, 60);
    for (const auto& p : procs) EXPECT_EQ(p.exit_code, 1) << logs(procs);
    EXPECT_NE(procs[0].output().find("error: rank 0: --resume: no complete checkpoint"), std::string::npos)
        << logs(procs);
    EXPECT_NE(procs[1].output().find("error: rank 1: rank 0 failed during choosing the checkpoint to resume: --resume: "
                                     "no complete checkpoint"),
              std::string::npos)
        << logs(procs);
  }
}

TEST_F(DistTrain, GlobalBatchMustSplitOverRanks) {
  const auto procs = train("indivisible", 2, {"--set", "trainer.global_batch=6"}, 60);
  for (const auto& p : procs) {
    EXPECT_EQ(p.exit_code, 1) << logs(procs);
    EXPECT_NE(p.output().find("trainer.global_batch 6 is not divisible by WORLD_SIZE 2 x trainer.micro_batch 2"),
              std::string::npos)
        << logs(procs);
  }
}

// The data-parallel keys are checked like every other key (also in a single process).
TEST_F(DistTrain, DistKeysAreChecked) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"trainer.dist_timeout_s=0", "trainer.dist_timeout_s: must be > 0 seconds, got 0"},
      {"trainer.dist_bucket_mb=-1", "trainer.dist_bucket_mb: must be > 0 MB, got -1"},
      {"trainer.dist_overlap=maybe", "trainer.dist_overlap"}};
  for (const auto& [set, message] : cases) {
    const auto procs = train("bad-key", 0, {"--set", set}, 60);
    EXPECT_EQ(procs[0].exit_code, 1) << logs(procs);
    const std::string out = procs[0].output();
    EXPECT_NE(out.find("error: "), std::string::npos) << out;
    EXPECT_NE(out.find(message), std::string::npos) << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << "one line:\n" << out;
  }
}

// torchrun (torch 2.x) serving the store from its agent: TORCHELASTIC_USE_AGENT_STORE=True, rank 0
// must not serve one, and a restart of the workers (TORCHELASTIC_RESTART_COUNT) joins the same
// store again without tripping over the previous attempt's keys. This test process plays the agent.
TEST_F(DistTrain, LauncherServedStoreAndRestart) {
  const int port = coe::test::free_port();
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(port);
  o.isServer = true;
  o.waitWorkers = false;
  o.timeout = std::chrono::milliseconds(30000);
  auto agent_store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", o);
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::vector<std::string> argv{coe::test::tool_path("coe-train").string(),
                                  (root_ / "run.yaml").string(),
                                  "--out",
                                  (root_ / "agent").string(),
                                  "--set",
                                  "trainer.val_interval=0"};
    if (attempt == 0) argv.insert(argv.end(), {"--max-steps", "2"});
    else argv.push_back("--resume");
    std::vector<coe::test::RankProcess> procs;
    for (int r = 0; r < 2; ++r) {
      auto env = coe::test::rank_env(r, 2, port);
      env["OMP_NUM_THREADS"] = "1";
      env["TORCHELASTIC_USE_AGENT_STORE"] = "True";
      env["TORCHELASTIC_RESTART_COUNT"] = std::to_string(attempt);
      procs.push_back(coe::test::spawn_process(
          argv, env, root_ / ("agent" + std::to_string(attempt) + "-rank" + std::to_string(r) + ".log")));
    }
    coe::test::wait_all(procs, 120);
    expect_success(procs);
  }
  EXPECT_EQ(read_jsonl(root_ / "agent" / "metrics.jsonl").size(), 6u);
  EXPECT_TRUE(fs::exists(root_ / "agent" / "final.json"));
}

}  // namespace

// ---- expert parallelism and sharded optimizer states (docs/distributed.md) ----------------------

// The same run on 2 and 4 Gloo ranks with the experts split (parallel.expert_parallel), the
// optimizer states sharded (parallel.shard_optimizer) or both, for MoE (C=1) and CoE (C=2): the
// losses, gradient norms and validation losses of every step and the final weights equal one
// process's to float32 rounding (the ranks add the same numbers in another order).
struct ParallelCase {
  const char* name;
  int world;
  int expert_parallel;
  bool shard;
  int inner_iter;
  // Further overrides, for the run and its one-process baseline (named by `tag`).
  std::vector<std::string> extra = {};
  std::string tag = "";
};

// noaux_tc routers: the bias moves by the global load.
const std::vector<std::string> kAuxFree{
    "--set", "model.topk_method=noaux_tc", "--set", "model.scoring_func=sigmoid",
    "--set", "model.aux_loss_alpha=0",     "--set", "trainer.router_bias_update_rate=0.01"};

class DistParallel : public DistTrain, public ::testing::WithParamInterface<ParallelCase> {};

TEST_P(DistParallel, MatchesOneProcess) {
  const ParallelCase& c = GetParam();
  const std::string iter = "model.inner_iter=" + std::to_string(c.inner_iter);
  std::vector<std::string> model{"--set", iter};
  model.insert(model.end(), c.extra.begin(), c.extra.end());
  const std::string single = "parallel-single-c" + std::to_string(c.inner_iter) + c.tag;
  if (!fs::exists(root_ / single / "final.json")) expect_success(train(single, 0, model));
  std::vector<std::string> args = model;
  args.insert(args.end(), {"--set", "parallel.expert_parallel=" + std::to_string(c.expert_parallel), "--set",
                           std::string("parallel.shard_optimizer=") + (c.shard ? "true" : "false")});
  const auto procs = train(c.name, c.world, args);
  expect_success(procs);
  const std::string out = procs[0].output();
  if (c.expert_parallel > 1)
    EXPECT_NE(out.find(fmt::format("expert parallel: groups of {} ranks, {} experts per rank", c.expert_parallel,
                                   8 / c.expert_parallel)),
              std::string::npos)
        << out;
  if (c.shard) EXPECT_NE(out.find("optimizer states sharded (ZeRO-1"), std::string::npos) << out;

  const auto a = read_jsonl(root_ / single / "metrics.jsonl");
  const auto b = read_jsonl(root_ / c.name / "metrics.jsonl");
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u);
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(b[i]["loss_tokens"], a[i]["loss_tokens"]);
    for (const char* key : {"loss", "aux_loss", "grad_norm"}) {
      if (!a[i].contains(key)) continue;  // aux-free routers log no aux loss
      const double x = a[i][key].get<double>(), y = b[i][key].get<double>();
      const double rel = std::abs(x - y) / std::max(1.0, std::abs(x));
      worst = std::max(worst, rel);
      EXPECT_LE(rel, 1e-6) << "step " << i + 1 << " " << key;
    }
    EXPECT_EQ(b[i]["router"], a[i]["router"]) << "the load statistics are global";
  }
  const auto va = read_jsonl(root_ / single / "val.jsonl"), vb = read_jsonl(root_ / c.name / "val.jsonl");
  ASSERT_EQ(vb.size(), va.size());
  for (size_t i = 0; i < va.size(); ++i) {
    EXPECT_EQ(vb[i]["tokens"], va[i]["tokens"]);
    EXPECT_NEAR(vb[i]["val_loss"].get<double>(), va[i]["val_loss"].get<double>(), 1e-5);
  }
  // The checkpoint holds the whole model in one process's layout, whatever the ranks held.
  const double param_diff = max_abs_diff(weights(single, 6), weights(c.name, 6));
  EXPECT_LT(param_diff, 1e-5);
  const auto opt_a = coe::load_safetensors((root_ / single / "step-6" / "optimizer.safetensors").string()).tensors;
  const auto opt_b = coe::load_safetensors((root_ / c.name / "step-6" / "optimizer.safetensors").string()).tensors;
  EXPECT_LT(max_abs_diff(opt_a, opt_b), 1e-6);
  std::printf("%s (%d ranks, E=%d, %s, C=%d): max relative loss/aux/grad-norm difference %.3g, max |param diff| "
              "%.3g after 6 steps\n",
              c.name, c.world, c.expert_parallel, c.shard ? "sharded" : "replicated", c.inner_iter, worst, param_diff);
  RecordProperty("max_rel_diff", std::to_string(worst));
  RecordProperty("max_param_diff", std::to_string(param_diff));
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, DistParallel,
    ::testing::Values(ParallelCase{"ep2-w2-moe", 2, 2, false, 1}, ParallelCase{"zero-w2-moe", 2, 1, true, 1},
                      ParallelCase{"ep2-zero-w4-moe", 4, 2, true, 1}, ParallelCase{"ep4-w4-moe", 4, 4, false, 1},
                      ParallelCase{"ep2-w2-coe", 2, 2, false, 2}, ParallelCase{"ep4-zero-w4-coe", 4, 4, true, 2},
                      ParallelCase{"ep2-zero-w4-coe-aux-free", 4, 2, true, 2, kAuxFree, "-aux-free"},
                      ParallelCase{"ep2-w2-coe-checkpointing",
                                   2,
                                   2,
                                   false,
                                   2,
                                   {"--set", "trainer.activation_checkpointing=true"},
                                   "-checkpointing"}),
    [](const auto& info) {
      std::string n = info.param.name;
      std::replace(n.begin(), n.end(), '-', '_');
      return n;
    });

// A run saved with E=2 (sharded) on 4 ranks resumes as it was (bit for bit), in one process, and
// with E=4 on 4 ranks (to float32 rounding): checkpoints keep one layout whatever the ranks held.
TEST_F(DistTrain, ExpertParallelCheckpointsResumeUnderAnyLayout) {
  const std::vector<std::string> ep2{"--set", "model.inner_iter=2",           "--set", "parallel.expert_parallel=2",
                                     "--set", "parallel.shard_optimizer=true"};
  expect_success(train("layout-straight", 4, ep2));
  auto first = ep2;
  first.insert(first.end(), {"--max-steps", "3"});
  expect_success(train("layout-resumed", 4, first));
  ASSERT_TRUE(fs::exists(root_ / "layout-resumed" / "step-3" / "state.json"));
  fs::copy(root_ / "layout-resumed", root_ / "layout-single", fs::copy_options::recursive);
  fs::copy(root_ / "layout-resumed", root_ / "layout-ep4", fs::copy_options::recursive);
  auto again = ep2;
  again.push_back("--resume");
  expect_success(train("layout-resumed", 4, again));
  EXPECT_EQ(max_abs_diff(weights("layout-straight", 6), weights("layout-resumed", 6)), 0.0);
  const auto straight = read_jsonl(root_ / "layout-straight" / "metrics.jsonl");
  const auto resumed = read_jsonl(root_ / "layout-resumed" / "metrics.jsonl");
  ASSERT_EQ(resumed.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(resumed[i]["loss"], straight[i]["loss"]) << "step " << i + 1;

  expect_success(train("layout-single", 0, {"--set", "model.inner_iter=2", "--resume"}));
  expect_success(train("layout-ep4", 4,
                       {"--set", "model.inner_iter=2", "--set", "parallel.expert_parallel=4", "--set",
                        "parallel.shard_optimizer=false", "--resume"}));
  for (const char* run : {"layout-single", "layout-ep4"}) {
    const auto m = read_jsonl(root_ / run / "metrics.jsonl");
    ASSERT_EQ(m.size(), 6u) << run;
    for (size_t i = 3; i < 6; ++i)
      EXPECT_NEAR(m[i]["loss"].get<double>(), straight[i]["loss"].get<double>(), 1e-5) << run << " step " << i + 1;
    EXPECT_LT(max_abs_diff(weights("layout-straight", 6), weights(run, 6)), 1e-5) << run;
  }
}

// SIGKILL one rank of an expert-parallel job: the others end with one line naming it.
TEST_F(DistTrain, KilledExpertParallelRankIsNamed) {
  auto procs =
      launch("ep-killed", 4,
             {"--set", "parallel.expert_parallel=2", "--set", "parallel.shard_optimizer=true", "--set",
              "trainer.total_steps=100000", "--set", "trainer.val_interval=0", "--set", "trainer.log_interval=1000"});
  const fs::path metrics = root_ / "ep-killed" / "metrics.jsonl";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (read_jsonl(metrics).size() < 3 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_GE(read_jsonl(metrics).size(), 3u) << logs(procs);
  ::kill(procs[3].pid, SIGKILL);
  coe::test::wait_all(procs, 60);
  EXPECT_EQ(procs[3].exit_code, 128 + SIGKILL) << logs(procs);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(procs[r].exit_code, 1) << logs(procs);
    EXPECT_FALSE(procs[r].timed_out) << logs(procs);
    const std::string out = procs[r].output();
    EXPECT_NE(out.find("error: rank " + std::to_string(r) + ": "), std::string::npos) << out;
    EXPECT_NE(out.find("rank 3 "), std::string::npos) << out;
  }
  const std::string out0 = procs[0].output();
  const size_t at = out0.find("error: rank 0: ");
  if (at != std::string::npos) std::printf("%s\n", out0.substr(at, out0.find('\n', at) - at).c_str());
}

TEST_F(DistTrain, ExpertParallelMustSplitTheRanksAndExperts) {
  const auto three = train("ep-bad-world", 2, {"--set", "parallel.expert_parallel=4"});
  for (const auto& p : three) {
    EXPECT_EQ(p.exit_code, 1) << logs(three);
    EXPECT_NE(p.output().find("parallel.expert_parallel 4 does not divide the 2 ranks of this job (WORLD_SIZE)"),
              std::string::npos)
        << p.output();
  }
  const auto experts = train("ep-bad-experts", 0, {"--set", "parallel.expert_parallel=3"});
  EXPECT_EQ(experts[0].exit_code, 1) << logs(experts);
  EXPECT_NE(experts[0].output().find("parallel.expert_parallel: 3 does not divide model.n_routed_experts 8"),
            std::string::npos)
      << experts[0].output();
}

// trainer.init_from under expert parallelism: each rank copies the experts it holds (the others'
// are not "unexpected"), so the first steps equal a one-process warm start from the same weights.
TEST_F(DistTrain, ExpertParallelWarmStartTakesEachRanksExperts) {
  expect_success(train("warm-source", 0, {"--max-steps", "2", "--set", "trainer.val_interval=0"}));
  const std::string from = "trainer.init_from=" + (root_ / "warm-source").string();
  expect_success(train("warm-single", 0, {"--max-steps", "2", "--set", from}));
  expect_success(train("warm-ep", 2, {"--max-steps", "2", "--set", from, "--set", "parallel.expert_parallel=2"}));
  const auto a = read_jsonl(root_ / "warm-single" / "metrics.jsonl");
  const auto b = read_jsonl(root_ / "warm-ep" / "metrics.jsonl");
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  for (size_t i = 0; i < 2; ++i)
    EXPECT_NEAR(b[i]["loss"].get<double>(), a[i]["loss"].get<double>(), 1e-6 * a[i]["loss"].get<double>());
  const std::string table = coe::test::read_file(root_ / "warm-ep" / "init_from.txt");
  EXPECT_NE(table.find("model.layers.1.mlp.experts.0.gate_proj.weight"), std::string::npos) << table;
}
