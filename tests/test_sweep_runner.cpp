// coe-sweep's pieces without training anything (coe/train/sweep_runner.h, and the status and
// summary parts of coe/train/sweep.h): the variant status and its sweep-status.json text as older
// sweeps wrote it, the plan read from run directories laid out by hand, the commands of each phase,
// a run whose coe-train is /usr/bin/false or /usr/bin/true (a failed and a stopped variant), the
// live progress lines, and summary.csv / summary.md as the three parts of write_sweep_summary.
#include "coe/train/run_lock.h"
#include "coe/train/sweep.h"
#include "coe/train/sweep_runner.h"
#include "coe/train/sweep_summary.h"
#include "coe/util/subprocess.h"

#include "support/expect_error.h"
#include "support/test_env.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using coe::VariantPlan;
using coe::VariantStatus;
using State = VariantStatus::State;
using coe::test::read_file;
using coe::test::write_file;

// A sweep of four variants a, b, c, d over a tiny model (nothing is trained: resolving the configs
// and reading run directories only), its run directories under out/ and a tools/ directory whose
// coe-train, coe-memory and coe-eval are links to `tool_target`.
class SweepRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = coe::test::scratch_dir("sweep-runner");
    write_file(dir_ / "base.yaml", "model: {hidden_size: 16, moe_intermediate_size: 8, num_hidden_layers: 1,\n"
                                   "  num_attention_heads: 2, kv_lora_rank: 8, qk_nope_head_dim: 4,\n"
                                   "  qk_rope_head_dim: 4, v_head_dim: 4, n_routed_experts: 4,\n"
                                   "  num_experts_per_tok: 2, max_position_embeddings: 64}\n"
                                   "data: {train_files: [x.jsonl], tokenizer: byte, max_length: 32}\n"
                                   "trainer: {total_steps: 10, global_batch: 2, micro_batch: 2, device: cpu}\n");
    sweep_ = write_file(dir_ / "sweep.yaml", "name: tiny\n"
                                             "out_dir: " +
                                                 out().string() +
                                                 "\n"
                                                 "base: base.yaml\n"
                                                 "memory: {micro_batch: 1, seq: 16, checkpointing: true}\n"
                                                 "variants:\n"
                                                 "  - name: a\n"
                                                 "  - name: b\n"
                                                 "    overrides: {model.inner_iter: 2}\n"
                                                 "  - name: c\n"
                                                 "  - name: d\n");
    link_tools("true");
  }

  fs::path out() const { return dir_ / "out"; }
  fs::path tools() const { return dir_ / "tools"; }
  std::string base() const { return (dir_ / "base.yaml").lexically_normal().string(); }

  void link_tools(const std::string& program) {
    const auto target = coe::find_executable(program);
    ASSERT_TRUE(target) << program << " not on $PATH";
    fs::create_directories(tools());
    for (const char* t : {"coe-train", "coe-memory", "coe-eval"}) {
      fs::remove(tools() / t);
      fs::create_symlink(*target, tools() / t);
    }
  }

  // a: complete; b: checkpoints at steps 1 and 3 (partial); c: nothing yet; d: an empty directory.
  // What an earlier, interrupted coe-sweep left in its out_dir.
  void lay_out_run_dirs() {
    coe::create_run_dir(out().string(), "out_dir");
    write_file(out() / "a" / "final.json",
               "{\"steps\": 10, \"final_val_loss\": null, \"best_val_loss\": null, \"final_train_loss\": 2.0, "
               "\"tokens\": 640, \"tokens_per_s\": 100.0, \"params\": 1, \"elapsed_s\": 1.0, \"checkpoint\": \"\"}\n");
    write_file(out() / "b" / "step-1" / "state.json", "{}");
    write_file(out() / "b" / "step-3" / "state.json", "{}");
    fs::create_directories(out() / "b" / "step-5.tmp");  // not a complete checkpoint
    fs::create_directories(out() / "d");
  }

  coe::SweepRunner runner(std::vector<std::string> only = {}, bool dry_run = false) {
    coe::SweepOptions o;
    o.only = std::move(only);
    o.dry_run = dry_run;
    o.tools_dir = tools();
    return coe::SweepRunner(coe::load_sweep(sweep_), o);
  }

  fs::path dir_;
  std::string sweep_;
};

// sweep-status.json as coe-sweep has always written it (nlohmann's dump(2), names in order).
const char* const kStatusFile = "{\n"
                                "  \"a\": {\n"
                                "    \"status\": \"complete\",\n"
                                "    \"exit_code\": 0\n"
                                "  },\n"
                                "  \"b\": {\n"
                                "    \"status\": \"incomplete\",\n"
                                "    \"exit_code\": 130\n"
                                "  },\n"
                                "  \"c\": {\n"
                                "    \"status\": \"failed (exit 2)\",\n"
                                "    \"exit_code\": 2\n"
                                "  }\n"
                                "}\n";

TEST(VariantStatusText, ToStringAndParse) {
  EXPECT_EQ(coe::to_string(VariantStatus{}), "not run");
  EXPECT_EQ(coe::to_string(VariantStatus{State::kComplete, 0}), "complete");
  EXPECT_EQ(coe::to_string(VariantStatus{State::kIncomplete, 130}), "incomplete");
  EXPECT_EQ(coe::to_string(VariantStatus{State::kFailed, 3}), "failed (exit 3)");
  for (const auto& s : {VariantStatus{State::kNotRun, 0}, VariantStatus{State::kComplete, 0},
                        VariantStatus{State::kIncomplete, 130}, VariantStatus{State::kFailed, 3}}) {
    const auto back = coe::parse_variant_status(coe::to_string(s), s.exit_code);
    ASSERT_TRUE(back) << coe::to_string(s);
    EXPECT_EQ(back->state, s.state) << coe::to_string(s);
    EXPECT_EQ(back->exit_code, s.exit_code) << coe::to_string(s);
  }
  // Any text starting with "failed" was always read as a failure; the exit code is stored beside it.
  const auto failed = coe::parse_variant_status("failed", 9);
  ASSERT_TRUE(failed);
  EXPECT_EQ(failed->state, State::kFailed);
  EXPECT_EQ(failed->exit_code, 9);
  for (const char* other : {"", "running", "completed", "Complete", "not-run"})
    EXPECT_FALSE(coe::parse_variant_status(other)) << other;
}

TEST(VariantStatusText, TrainingOutcome) {
  const auto check = [](VariantStatus s, State state, int code) {
    EXPECT_EQ(s.state, state) << coe::to_string(s);
    EXPECT_EQ(s.exit_code, code) << coe::to_string(s);
  };
  check(coe::training_outcome(0, true, false), State::kComplete, 0);
  check(coe::training_outcome(0, false, false), State::kIncomplete, 0);  // --max-steps, or a signal to coe-train
  check(coe::training_outcome(130, false, true), State::kIncomplete, 130);
  check(coe::training_outcome(143, true, true), State::kIncomplete, 143);
  check(coe::training_outcome(1, false, false), State::kFailed, 1);
  check(coe::training_outcome(3, true, false), State::kFailed, 3);
}

TEST(VariantStatusText, DisplayCommandQuotesForAShell) {
  EXPECT_EQ(coe::display_command({"/bin/coe-train", "cfg.yaml", "--set", "model.inner_iter=2", "--out", "runs/x"}),
            "/bin/coe-train cfg.yaml --set model.inner_iter=2 --out runs/x");
  EXPECT_EQ(coe::display_command({"a b", "it's", "", "$(x)"}), "'a b' 'it'\\''s' '' '$(x)'");
}

TEST_F(SweepRunnerTest, StatusFileKeepsItsFormat) {
  write_file(out() / "sweep-status.json", kStatusFile);
  const coe::SweepSpec spec = coe::load_sweep(sweep_);
  const coe::SweepStatus status = coe::read_sweep_status(spec);
  ASSERT_EQ(status.size(), 3u);
  EXPECT_EQ(status.at("a").state, State::kComplete);
  EXPECT_EQ(status.at("b").state, State::kIncomplete);
  EXPECT_EQ(status.at("b").exit_code, 130);
  EXPECT_EQ(status.at("c").state, State::kFailed);
  EXPECT_EQ(status.at("c").exit_code, 2);
  fs::remove(out() / "sweep-status.json");
  coe::write_sweep_status(spec, status);
  EXPECT_EQ(read_file(out() / "sweep-status.json"), kStatusFile);

  write_file(out() / "sweep-status.json", "{\"a\": {\"status\": \"complete\", \"exit_code\": 0}, \"x\": {\"status\": "
                                          "\"weird\"}, \"c\": {\"status\": \"failed (exit 4)\", \"exit_code\": 4}}");
  const coe::SweepStatus some = coe::read_sweep_status(spec);
  EXPECT_EQ(some.size(), 2u) << "text that is no status is left out";
  EXPECT_EQ(some.count("x"), 0u);
  write_file(out() / "sweep-status.json", "{\"a\": ");
  EXPECT_TRUE(coe::read_sweep_status(spec).empty()) << "a damaged file reads as empty";
}

// A second coe-sweep on a running sweep's out_dir fails on the lock before it writes anything:
// the first one's status file stays as it is.
TEST_F(SweepRunnerTest, ASecondSweepOnTheSameOutDirWritesNothing) {
  write_file(out() / "sweep-status.json", kStatusFile);
  const coe::RunDirLock first(out().string(), "coe-sweep", "out_dir (or --out)");
  coe::SweepRunner second = runner();
  coe::test::expect_error([&] { second.run(); }, {out().string(), "in use by another coe-sweep", "pid "});
  EXPECT_EQ(read_file(out() / "sweep-status.json"), kStatusFile);
  EXPECT_EQ(runner({}, /*dry_run=*/true).run(), 0) << "a dry run writes nothing and takes no lock";
}

TEST_F(SweepRunnerTest, PlanReadsTheRunDirectories) {
  lay_out_run_dirs();
  write_file(out() / "sweep-status.json", kStatusFile);
  const coe::SweepRunner r = runner({"a", "b", "c"});
  const auto a = r.plan_variant(0), b = r.plan_variant(1), c = r.plan_variant(2), d = r.plan_variant(3);
  EXPECT_TRUE(a.selected);
  EXPECT_EQ(a.state, VariantPlan::State::kComplete);
  EXPECT_EQ(a.steps_left, 0);
  EXPECT_EQ(b.state, VariantPlan::State::kPartial);
  EXPECT_EQ(b.steps_left, 7) << "10 steps, the newest complete checkpoint at step 3";
  EXPECT_EQ(c.state, VariantPlan::State::kNew);
  EXPECT_EQ(c.steps_left, 10);
  EXPECT_FALSE(d.selected);
  EXPECT_EQ(d.steps_left, 0);
  EXPECT_EQ(r.status().at("c").state, State::kFailed) << "the status of earlier invocations is read";

  // Without --only every variant is selected; d's empty directory is a new run.
  const coe::SweepRunner all = runner();
  EXPECT_TRUE(all.plan_variant(3).selected);
  EXPECT_EQ(all.plan_variant(3).state, VariantPlan::State::kNew);
  EXPECT_EQ(all.plan_variant(3).steps_left, 10);
}

TEST_F(SweepRunnerTest, UnknownOnlyNameFails) {
  coe::test::expect_error([&] { runner({"a", "zz"}); }, {"--only zz", "no such variant", "sweep.yaml"});
}

TEST_F(SweepRunnerTest, CommandsOfThePhases) {
  write_file(out() / "c" / "config.yaml", "data: {prepared_dir: /data/prepared-c}\n");
  const coe::SweepRunner r = runner();
  const std::string train = (tools() / "coe-train").string();
  EXPECT_EQ(r.train_command(0, false), (std::vector<std::string>{train, base(), "--out", (out() / "a").string()}));
  EXPECT_EQ(r.train_command(1, true), (std::vector<std::string>{train, base(), "--set", "model.inner_iter=2", "--out",
                                                                (out() / "b").string(), "--resume"}));
  EXPECT_EQ(r.memory_command(1),
            (std::vector<std::string>{(tools() / "coe-memory").string(), base(), "--set", "model.inner_iter=2",
                                      "--micro-batch", "1", "--seq", "16", "--checkpointing", "--measure", "--json",
                                      (out() / "b" / "memory.json").string()}));
  // The routing data defaults to the run's prepared dataset (its config.yaml says where).
  EXPECT_EQ(r.routing_command(2),
            (std::vector<std::string>{(tools() / "coe-eval").string(), "--checkpoint", (out() / "c").string(), "--data",
                                      "/data/prepared-c", "--max-records", "100", "--max-length", "32", "--batch", "2",
                                      "--device", "cpu", "--routing", (out() / "c" / "routing.json").string(), "--json",
                                      (out() / "c" / "eval.json").string()}));

  // A relative out_dir starting with '-' would read as an option of coe-train.
  coe::SweepSpec spec = coe::load_sweep(sweep_);
  spec.out_dir = "-dash";
  coe::SweepOptions o;
  o.tools_dir = tools();
  const coe::SweepRunner dash(spec, o);
  EXPECT_EQ(dash.train_command(0, false).back(), "./-dash/a");

  o.tools_dir = dir_ / "no-tools";
  const coe::SweepRunner none(spec, o);
  coe::test::expect_error([&] { none.train_command(0, false); }, {"coe-train not found beside coe-sweep", "no-tools"});
}

TEST_F(SweepRunnerTest, ResultsTakeFailuresFromTheStatus) {
  lay_out_run_dirs();
  write_file(out() / "sweep-status.json",
             "{\"a\": {\"status\": \"failed (exit 2)\", \"exit_code\": 2}, \"b\": {\"status\": \"incomplete\", "
             "\"exit_code\": 130}, \"c\": {\"status\": \"failed (exit 2)\", \"exit_code\": 2}}");
  const auto results = runner().results();
  ASSERT_EQ(results.size(), 4u);
  EXPECT_EQ(results[0].status, "complete") << "final.json outranks an earlier failure";
  EXPECT_EQ(results[0].exit_code, 0);
  EXPECT_EQ(results[1].status, "not run") << "no metrics.jsonl yet; only failures come from the status";
  EXPECT_EQ(results[2].status, "failed (exit 2)");
  EXPECT_EQ(results[2].exit_code, 2);
  EXPECT_EQ(results[3].status, "not run");
}

TEST_F(SweepRunnerTest, DryRunPrintsThePlanAndRunsNothing) {
  lay_out_run_dirs();
  coe::SweepRunner r = runner({"a", "b", "c"}, true);
  testing::internal::CaptureStdout();
  const int rc = r.run();
  const std::string printed = testing::internal::GetCapturedStdout();
  EXPECT_EQ(rc, 0);
  const std::string train = (tools() / "coe-train").string();
  EXPECT_NE(printed.find("[1/4] a: complete (would skip)\n  params "), std::string::npos) << printed;
  EXPECT_NE(printed.find("[2/4] b: partial (would resume)\n  " + train + " " + base() +
                         " --set model.inner_iter=2 --out " + (out() / "b").string() + " --resume\n  params "),
            std::string::npos)
      << printed;
  EXPECT_NE(printed.find("[3/4] c: new\n  " + train + " " + base() + " --out " + (out() / "c").string() + "\n"),
            std::string::npos)
      << printed;
  EXPECT_EQ(printed.find("[4/4]"), std::string::npos) << printed;
  EXPECT_FALSE(fs::exists(out() / "c" / "train.log"));
  EXPECT_FALSE(fs::exists(out() / "summary.csv"));
}

// run() installs coe-sweep's SIGINT/SIGTERM handlers in this test process; no signal is sent.
TEST_F(SweepRunnerTest, AFailedLaunchIsReportedAndRecorded) {
  lay_out_run_dirs();
  link_tools("false");
  coe::SweepRunner r = runner({"a", "c"});
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  const int rc = r.run();
  const std::string printed = testing::internal::GetCapturedStdout();
  const std::string errors = testing::internal::GetCapturedStderr();
  EXPECT_EQ(rc, 1) << printed << errors;
  EXPECT_NE(printed.find("[1/4] a: complete, skipped (" + (out() / "a" / "final.json").string() + ")\n"),
            std::string::npos)
      << printed;
  EXPECT_NE(printed.find("[3/4] c: training -> " + (out() / "c").string() + "\n"), std::string::npos) << printed;
  EXPECT_NE(errors.find("[3/4] c: FAILED with exit status 1 after "), std::string::npos) << errors;
  EXPECT_NE(errors.find("; log: " + (out() / "c" / "train.log").string() + "\n  | === "), std::string::npos) << errors;
  // The table after the variant, then the report.
  EXPECT_NE(printed.find("| c | failed (exit 1) | 0/10 |"), std::string::npos) << printed;
  EXPECT_NE(printed.find("wrote " + (out() / "summary.csv").string() + "\n"), std::string::npos) << printed;
  EXPECT_NE(printed.find("wrote " + (out() / "summary.md").string() + "\n"), std::string::npos) << printed;

  const std::string log = read_file(out() / "c" / "train.log");
  EXPECT_EQ(log.rfind("=== ", 0), 0u) << log;
  EXPECT_NE(log.find(" coe-sweep runs: " + (tools() / "coe-train").string() + " " + base() + " --out " +
                     (out() / "c").string() + "\n"),
            std::string::npos)
      << log;
  const std::string status = read_file(out() / "sweep-status.json");
  EXPECT_NE(status.find("  \"c\": {\n    \"status\": \"failed (exit 1)\",\n    \"exit_code\": 1\n  }"),
            std::string::npos)
      << status;
  EXPECT_NE(status.find("  \"a\": {\n    \"status\": \"complete\",\n    \"exit_code\": 0\n  }"), std::string::npos)
      << status;
  const std::string csv = read_file(out() / "summary.csv");
  EXPECT_NE(csv.find("\nc,failed (exit 1),1,0,,0,10,"), std::string::npos) << csv;
  EXPECT_NE(csv.find("\na,complete,1,1,,10,10,"), std::string::npos) << csv;
  EXPECT_NE(csv.find("\nb,not run,1,0,,0,10,"), std::string::npos) << csv;
}

TEST_F(SweepRunnerTest, ALaunchEndingWithoutFinalJsonIsIncomplete) {
  link_tools("true");
  coe::SweepRunner r = runner({"c"});
  testing::internal::CaptureStdout();
  const int rc = r.run();
  const std::string printed = testing::internal::GetCapturedStdout();
  EXPECT_EQ(rc, 0) << printed;
  EXPECT_NE(printed.find("[3/4] c: stopped after "), std::string::npos) << printed;
  EXPECT_NE(printed.find(" (checkpoint saved; run the sweep again to resume)\n"), std::string::npos) << printed;
  EXPECT_EQ(read_file(out() / "sweep-status.json"),
            "{\n  \"c\": {\n    \"status\": \"incomplete\",\n    \"exit_code\": 0\n  }\n}\n");
}

// ---- progress ----------------------------------------------------------------------------------

void append(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::app | std::ios::binary) << text; }

std::string metrics(int step, double loss) {
  return "{\"step\": " + std::to_string(step) + ", \"loss\": " + std::to_string(loss) + ", \"tokens_per_s\": 1000.0}\n";
}

// What was printed into `f`.
std::string contents(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) s.append(buf, n);
  return s;
}

TEST(SweepProgressLines, NotATerminalALinePerTenthAndTheLast) {
  const fs::path run = coe::test::scratch_dir("progress-log");
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  // 20 steps; 10 steps of later variants, no pace measured before this variant.
  coe::SweepProgress p("[1/2] moe", run, 20, 0, coe::SweepPace{}, 10, f);
  p.tick(0.5, false);
  append(run / "metrics.jsonl", metrics(1, 2.0));
  p.tick(1.0, false);  // step 1: not yet a tenth of the run
  append(run / "metrics.jsonl", metrics(2, 1.9));
  p.tick(2.0, false);  // step 2: the first tenth; 1 s per step since step 1
  append(run / "metrics.jsonl", metrics(3, 1.8));
  p.tick(3.0, false);  // still in the second tenth
  for (int s = 4; s <= 20; ++s) append(run / "metrics.jsonl", metrics(s, 1.5));
  p.tick(4.0, false);  // the last step: 19 steps in 3 s; its line waits for the final validation
  append(run / "val.jsonl", "{\"step\": 20, \"val_loss\": 1.25}\n");
  p.tick(5.0, true);  // ended: the 100% line, once, with the final validation
  p.tick(6.0, true);  // nothing new
  EXPECT_EQ(contents(f),
            "[1/2] moe: step 2/20 (10%) | loss 1.9000 | 1.0k tok/s | eta 18s | sweep eta 28s\n"
            "[1/2] moe: step 20/20 (100%) | loss 1.5000 | val 1.2500 | 1.0k tok/s | eta 0s | sweep eta 2s\n");
  EXPECT_EQ(p.run().paced_steps(), 19);
  std::fclose(f);
}

TEST(SweepProgressLines, ATerminalLineInPlaceCutToTheWidth) {
  const fs::path run = coe::test::scratch_dir("progress-tty");
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  coe::SweepProgress p("[1/2] moe", run, 20, 24, coe::SweepPace{}, 0, f);
  append(run / "metrics.jsonl", metrics(1, 2.0));
  p.tick(1.0, false);
  append(run / "metrics.jsonl", metrics(2, 1.9));
  p.tick(1.2, false);  // under half a second since the last: not yet
  append(run / "metrics.jsonl", metrics(3, 1.8));
  p.tick(1.8, false);
  p.tick(2.0, true);  // nothing new: the line is ended
  EXPECT_EQ(contents(f), "\r\x1b[K[1/2] moe: step 1/20 (5\r\x1b[K[1/2] moe: step 3/20 (1\n");
  std::fclose(f);
}

TEST(SweepProgressLines, SweepEtaAddsTheLaterStepsAtThePaceSoFar) {
  const fs::path run = coe::test::scratch_dir("pace");
  coe::RunWatcher w(run, 20);
  w.poll(0);
  append(run / "metrics.jsonl", metrics(1, 2.0));
  w.poll(1.0);
  coe::SweepPace pace{10, 7.0};  // earlier variants: 10 steps in 7 s
  EXPECT_FALSE(pace.sweep_eta(w, 5)) << "no ETA of the run yet";
  append(run / "metrics.jsonl", metrics(2, 1.9));
  w.poll(2.0);
  // The run: 18 steps left at 1 s/step; later: 5 steps at (7 + 1) s / (10 + 1) steps.
  ASSERT_TRUE(pace.sweep_eta(w, 5));
  EXPECT_NEAR(*pace.sweep_eta(w, 5), 18.0 + 8.0 / 11.0 * 5.0, 1e-9);
  EXPECT_FALSE(pace.sweep_eta(w, 0)) << "nothing after this run";
  pace.add(w);
  EXPECT_EQ(pace.steps, 11);
  EXPECT_DOUBLE_EQ(pace.seconds, 8.0);
}

// ---- summary -----------------------------------------------------------------------------------

std::vector<coe::VariantResult> two_results() {
  coe::VariantResult moe;
  moe.name = "moe";
  moe.status = "complete";
  moe.steps = moe.total_steps = 10;
  moe.final_val_loss = 1.5;
  moe.best_val_loss = 1.25;
  moe.tokens = 2048;
  moe.tokens_per_s = 1000.4;
  moe.params_total = 2000000;
  moe.params_active = 1000000;
  moe.estimate_bytes = 1048576;
  moe.val_curve = {{5, 1.75}, {10, 1.5}};
  moe.distinct_expert_sets = {3, 5};
  moe.unique_experts_per_token = {1.5, 2.25};
  moe.bound_formula = "C(4,2)^2 / C(4,4)";
  moe.bound_value = 36;
  coe::VariantResult coe_run;
  coe_run.name = "coe";
  coe_run.status = "failed (exit 2)";
  coe_run.exit_code = 2;
  coe_run.total_steps = 10;
  coe_run.params_total = 2100000;
  coe_run.params_active = 500000;
  coe_run.estimate_bytes = 2097152;
  coe_run.notes = {"final.json unreadable: x"};
  return {moe, coe_run};
}

coe::SweepSpec summary_spec(const fs::path& out) {
  coe::SweepSpec spec;
  spec.file = "sweeps/s.yaml";
  spec.name = "s";
  spec.out_dir = out.string();
  spec.baseline = "moe";
  return spec;
}

TEST(SweepSummary, ThreePartsMakeTheSummary) {
  const fs::path out = coe::test::scratch_dir("summary");
  const coe::SweepSpec spec = summary_spec(out);
  const auto results = two_results();

  const auto variants = coe::summarise_variants(spec, results);
  const std::string csv = coe::sweep_summary_csv(variants);
  // One row per variant: without seeds the statistics over seeds are the one run's loss (no
  // spread, no interval) and the baseline has no difference.
  EXPECT_EQ(csv,
            "variant,status,runs,complete_runs,seeds,steps,total_steps,final_val_loss,final_val_loss_sd,"
            "final_val_loss_low,final_val_loss_high,best_val_loss,best_val_loss_sd,best_val_loss_low,"
            "best_val_loss_high,final_diff,final_diff_low,final_diff_high,final_diff_excludes_0,best_diff,"
            "best_diff_low,best_diff_high,best_diff_excludes_0,tokens,tokens_per_s,params_total,"
            "params_active_per_token,estimate_bytes,measured_peak_bytes,load_max_over_mean,distinct_expert_sets,"
            "combinatorial_bound\n"
            "moe,complete,1,1,,10,10,1.500000,,,,1.250000,,,,,,,,,,,,2048,1000.4,2000000,1000000,1048576,,,3;5,36\n"
            "coe,failed (exit 2),1,0,,0,10,,,,,,,,,,,,,,,,,0,0.0,2100000,500000,2097152,,,,\n");

  const coe::SweepPlots none = coe::draw_sweep_plots(spec, variants, "");
  EXPECT_TRUE(none.pngs.empty());
  EXPECT_EQ(none.note, "the gnuplot script tools/plot_sweep.gp was not found (set COE_PLOT_SCRIPT)");
  EXPECT_FALSE(fs::exists(out / "plots")) << "nothing is written without a script";

  const std::string md = coe::sweep_summary_md(spec, results, variants, none);
  EXPECT_EQ(md,
            "# Sweep s\n\nSweep file: `sweeps/s.yaml`. Run directories: `" + out.string() +
                "/<variant>/`. Baseline: `moe`.\n\n"
                "| variant | status | steps | final val loss | best val loss | tokens | tokens/s | params | active "
                "params/token | memory estimate | measured peak | load max/mean |\n"
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
                "| moe | complete | 10/10 | 1.5000 | 1.2500 | 2048 | 1000 | 2.00M | 1.00M | 1.0 MiB | - | - |\n"
                "| coe | failed (exit 2) | 0/10 | - | - | 0 | 0 | 2.10M | 0.50M | 2.0 MiB | - | - |\n"
                "\nMemory estimate: `coe-memory`'s analytical training total (docs/memory.md) at micro-batch "
                "(config), sequence (config), checkpointing (config) (defaults: each variant's "
                "trainer.micro_batch, data.max_length, trainer.activation_checkpointing). Measured peak: not "
                "measured (set memory.measure: true). Load max/mean: the expert load's worst max / mean over layers "
                "and iterations, from `coe-eval --routing` on the validation split when it ran, else the last "
                "training log interval's.\n"
                "\n## Relative to moe\n\n"
                "| variant | params | active params/token | memory estimate | measured peak | best val loss - "
                "baseline |\n"
                "| --- | --- | --- | --- | --- | --- |\n"
                "| moe | 100.0% | 100.0% | 100.0% | - | +0.0000 |\n"
                "| coe | 105.0% | 50.0% | 200.0% | - | - |\n"
                "\n## Routing (coe-eval --routing on the final checkpoint)\n\n"
                "| variant | distinct expert sets per layer | unique experts per token | combinatorial bound |\n"
                "| --- | --- | --- | --- |\n"
                "| moe | 3, 5 | 1.50, 2.25 | C(4,2)^2 / C(4,4) = 36 |\n"
                "| coe | - | - | - |\n"
                "\nCombinatorial bound: C(N,K)^C / C(N,C*K) counts ordered sequences of C expert sets of size K "
                "against unordered sets of C*K experts. The paper's \"823x\" is quoted for C(64,4)^2 / C(64,8), "
                "which evaluates to 91.2; coe-eval uses the routed-expert count N = n_routed_experts.\n"
                "\n## Plots\n\n"
                "Plots skipped: the gnuplot script tools/plot_sweep.gp was not found (set COE_PLOT_SCRIPT).\n"
                "\n## Notes\n\n"
                "- coe: final.json unreadable: x\n");

  // write_sweep_summary writes exactly the parts, in this order, and names what it wrote.
  EXPECT_EQ(coe::write_sweep_summary(spec, results, ""),
            (std::vector<std::string>{(out / "summary.csv").string(), (out / "summary.md").string()}));
  EXPECT_EQ(read_file(out / "summary.csv"), csv);
  EXPECT_EQ(read_file(out / "summary.md"), md);
}

// A sweep over seeds 1-3, the numbers of tests/test_sweep_stats.cpp worked by hand: MoE's final
// losses 1.20, 1.25, 1.17 give 1.2067 ± 0.0404, [1.1063, 1.3071]; CoE's 1.12, 1.15, 1.10 give
// 1.1233 ± 0.0252, [1.0608, 1.1859]; paired, CoE - MoE = -0.08, -0.10, -0.07: -0.0833,
// [-0.1213, -0.0454], which excludes 0 (marked). CoE's seed 3 failing leaves seeds 1-2: -0.09 ±
// 0.0141, half width 12.706 * 0.014142 / sqrt(2) = 0.12706: [-0.2171, 0.0371], which does not.
TEST(SweepSummary, SeedsGiveMeansIntervalsAndPairedDifferences) {
  const fs::path out = coe::test::scratch_dir("summary-seeds");
  coe::SweepSpec spec = summary_spec(out);
  spec.seeds = {1, 2, 3};
  spec.variant_names = {"moe", "coe"};
  const double moe_loss[] = {1.20, 1.25, 1.17}, coe_loss[] = {1.12, 1.15, 1.10};
  std::vector<coe::VariantResult> runs;
  for (int64_t seed = 1; seed <= 3; ++seed) {
    for (const char* variant : {"moe", "coe"}) {
      coe::VariantResult r;
      r.variant = variant;
      r.seed = seed;
      r.name = fmt::format("{}/seed-{}", variant, seed);
      r.status = "complete";
      r.steps = r.total_steps = 10;
      const double loss = (std::string(variant) == "moe" ? moe_loss : coe_loss)[seed - 1];
      r.final_val_loss = loss;
      r.best_val_loss = loss - 0.01;
      r.val_curve = {{5, loss + 0.5}, {10, loss}};
      r.params_total = 1000;
      r.params_active = 500;
      r.load_max_over_mean = 1.0 + 0.5 * double(seed);  // 1.5, 2, 2.5: mean 2
      runs.push_back(r);
    }
  }
  auto md_of = [&](const std::vector<coe::VariantResult>& rs) {
    return coe::sweep_summary_md(spec, rs, coe::summarise_variants(spec, rs), coe::SweepPlots{{}, "none"});
  };
  const std::string md = md_of(runs);
  EXPECT_NE(md.find("Seeds: 1, 2, 3.\n\n## Over seeds (1, 2, 3)\n"), std::string::npos) << md;
  EXPECT_NE(md.find("| moe | 3/3 | 1.2067 ± 0.0404 | [1.1063, 1.3071] | 1.1967 ± 0.0404 | [1.0963, 1.2971] | "
                    "(baseline) |  | (baseline) |  |\n"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| coe | 3/3 | 1.1233 ± 0.0252 | [1.0608, 1.1859] | 1.1133 ± 0.0252 | [1.0508, 1.1759] | "
                    "-0.0833 | [-0.1213, -0.0454] * | -0.0833 | [-0.1213, -0.0454] * |\n"),
            std::string::npos)
      << md;
  // The variants' table holds the means, the load's too; the runs' table every run.
  EXPECT_NE(md.find("| moe | complete | 10/10 | 1.2067 | 1.1967 | 0 | 0 | 0.00M | 0.00M | 0 B | - | 2.00 |\n"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("\n## Runs\n\n"), std::string::npos) << md;
  EXPECT_NE(md.find("| coe/seed-2 | complete | 10/10 | 1.1500 | 1.1400 |"), std::string::npos) << md;

  const auto variants = coe::summarise_variants(spec, runs);
  ASSERT_EQ(variants.size(), 2u);
  EXPECT_EQ(variants[1].seeds, (std::vector<int64_t>{1, 2, 3}));
  ASSERT_EQ(variants[0].val_curve.size(), 2u);
  EXPECT_EQ(variants[0].val_curve[1].runs, 3);
  EXPECT_NEAR(variants[0].val_curve[1].low, 1.106263, 1e-5);
  const std::string csv = coe::sweep_summary_csv(variants);
  EXPECT_NE(csv.find("\ncoe,complete,3,3,1;2;3,10,10,1.123333,0.025166,1.060812,1.185854,"), std::string::npos) << csv;
  EXPECT_NE(csv.find(",-0.083333,-0.121282,-0.045384,1,"), std::string::npos) << csv;
  const std::string runs_csv = coe::sweep_runs_csv(runs);
  EXPECT_EQ(runs_csv.substr(0, runs_csv.find('\n')),
            "variant,seed,status,steps,total_steps,final_val_loss,best_val_loss,tokens,tokens_per_s,params_total,"
            "params_active_per_token,estimate_bytes,measured_peak_bytes,load_max_over_mean,distinct_expert_sets,"
            "combinatorial_bound");
  EXPECT_NE(runs_csv.find("\ncoe,2,complete,10,10,1.150000,1.140000,"), std::string::npos) << runs_csv;

  // CoE's seed 3 fails: its statistics and the pairing use seeds 1 and 2 only.
  runs[5].status = "failed (exit 1)";
  const std::string partial = md_of(runs);
  EXPECT_NE(partial.find("| coe | 2/3 | 1.1350 ± 0.0212 | [0.9444, 1.3256] | "), std::string::npos) << partial;
  EXPECT_NE(partial.find("| -0.0900 | [-0.2171, 0.0371] | "), std::string::npos) << partial;
  EXPECT_NE(partial.find("| coe | 2/3 complete, 1 failed | "), std::string::npos) << partial;
}

TEST(SweepSummary, WithoutABaselineResultNoRelativeTable) {
  const fs::path out = coe::test::scratch_dir("summary-nobase");
  coe::SweepSpec spec = summary_spec(out);
  spec.baseline = "gone";
  auto results = two_results();
  results[0].distinct_expert_sets.clear();
  results[0].bound_value.reset();
  results[1].notes.clear();
  coe::SweepPlots plots;
  plots.pngs = {"val_loss.png"};
  const std::string md = coe::sweep_summary_md(spec, results, coe::summarise_variants(spec, results), plots);
  EXPECT_EQ(md.find("## Relative to"), std::string::npos) << md;
  EXPECT_EQ(md.find("## Routing"), std::string::npos) << md;
  EXPECT_EQ(md.find("## Notes"), std::string::npos) << md;
  const std::string tail = "\n## Plots\n\n![val_loss.png](val_loss.png)\n\nData behind them: `" + out.string() +
                           "/plots/` (val-<variant>.dat: step, mean validation loss over the runs and its 95% "
                           "interval, the band; bars.dat).\n";
  ASSERT_GE(md.size(), tail.size());
  EXPECT_EQ(md.substr(md.size() - tail.size()), tail) << md;
}

TEST(SweepSummary, PlotDataAndAFailingGnuplot) {
  if (!coe::find_gnuplot()) GTEST_SKIP() << "gnuplot is not installed";
  const fs::path out = coe::test::scratch_dir("summary-plots");
  const coe::SweepSpec spec = summary_spec(out);
  const std::string script = write_file(out / "broken.gp", "this is not gnuplot\n");
  const coe::SweepPlots plots = coe::draw_sweep_plots(spec, coe::summarise_variants(spec, two_results()), script);
  EXPECT_TRUE(plots.pngs.empty());
  EXPECT_EQ(plots.note.rfind("gnuplot failed (exit ", 0), 0u) << plots.note;
  EXPECT_NE(plots.note.find("; see " + (fs::absolute(out) / "plots" / "gnuplot.log").string()), std::string::npos)
      << plots.note;
  EXPECT_EQ(read_file(out / "plots" / "val-moe.dat"),
            "# step val_loss_mean low high runs (the mean over runs and its 95% interval)\n"
            "5 1.750000 1.750000 1.750000 1\n10 1.500000 1.500000 1.500000 1\n");
  EXPECT_FALSE(fs::exists(out / "plots" / "val-coe.dat")) << "no curve, no file";
  EXPECT_EQ(read_file(out / "plots" / "bars.dat"),
            "# variant params% active% memory_estimate% memory_measured% (relative to moe)\n"
            "moe 100.000 100.000 100.000 ?\n"
            "coe 105.000 50.000 200.000 ?\n");
  for (const char* png : {"val_loss.png", "relative.png"}) EXPECT_FALSE(fs::exists(out / png)) << png;
}

// gnuplot exits 0 after writing a truncated PNG on a full disk: here a script that writes the
// PNG signature and stops. Neither PNG gets its name (the earlier val_loss.png stays), no
// temporary is left, and the note names each file and why.
TEST(SweepSummary, ATruncatedPngIsANoteNotAPlot) {
  if (!coe::find_gnuplot()) GTEST_SKIP() << "gnuplot is not installed";
  const fs::path out = coe::test::scratch_dir("summary-truncated");
  const coe::SweepSpec spec = summary_spec(out);
  const std::string script =
      write_file(out / "cut.gp", "set print ARG2\nprint \"\\211PNG\\r\\n\\032\\n-- cut off --\"\nunset print\n"
                                 "set print ARG3\nprint \"\\211PNG\\r\\n\\032\\n-- cut off --\"\nunset print\n");
  write_file(out / "val_loss.png", "an earlier plot\n");
  const coe::SweepPlots plots = coe::draw_sweep_plots(spec, coe::summarise_variants(spec, two_results()), script);
  EXPECT_TRUE(plots.pngs.empty());
  for (const char* png : {"val_loss.png", "relative.png"})
    EXPECT_NE(plots.note.find((out / png).string() + ": truncated PNG (22 bytes, no IEND chunk at the end"),
              std::string::npos)
        << plots.note;
  EXPECT_EQ(read_file(out / "val_loss.png"), "an earlier plot\n");
  EXPECT_FALSE(fs::exists(out / "relative.png"));
  for (const auto& entry : fs::directory_iterator(out))
    EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos) << entry.path();
}

}  // namespace

// coe-sweep refuses an out_dir holding someone else's files before it writes anything there, and a
// variant directory likewise before its train.log goes in: coe writes summary.md, config.yaml,
// metrics.jsonl... under fixed names.
TEST_F(SweepRunnerTest, DirectoriesCoeDidNotMakeAreRefused) {
  write_file(out() / "summary.md", "mine\n");
  coe::test::expect_error([&] { runner({"c"}).run(); },
                          {out().string(), "holds files coe did not write (e.g. summary.md)", "out_dir"});
  EXPECT_EQ(read_file(out() / "summary.md"), "mine\n");
  EXPECT_FALSE(fs::exists(out() / "base.yaml"));
  EXPECT_FALSE(fs::exists(out() / ".coe-lock"));
  EXPECT_FALSE(fs::exists(out() / "sweep-status.json"));

  fs::remove(out() / "summary.md");
  coe::create_run_dir(out().string(), "out_dir");  // the sweep's own, now
  write_file(out() / "c" / "notes.txt", "mine\n");
  link_tools("false");
  coe::test::expect_error(
      [&] { runner({"c"}).run(); },
      {(out() / "c").string(), "holds files coe did not write (e.g. notes.txt)", "variant directory"});
  EXPECT_FALSE(fs::exists(out() / "c" / "train.log"));
  EXPECT_EQ(read_file(out() / "c" / "notes.txt"), "mine\n");
}
