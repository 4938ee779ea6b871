// The run directory under everything that goes wrong in practice: two trainers on one directory,
// resuming from an older step, resuming a finished run, a diverged state at a save, a damaged
// checkpoint, and what killed saves and prunes leave behind.
#include "coe/io/safetensors.h"
#include "coe/model/flops.h"
#include "coe/train/checkpoint.h"
#include "coe/train/run_lock.h"
#include "coe/train/trainer.h"
#include "coe/util/error.h"
#include "coe/util/run_files.h"
#include "coe/util/tensorboard.h"

#include "support/expect_error.h"
#include "support/test_env.h"
#include "support/tfevents_reader.h"
#include "support/tiny_model.h"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

namespace {

namespace fs = std::filesystem;
using coe::test::expect_error;
using coe::test::read_file;
using coe::test::read_jsonl;
using coe::test::write_file;

class RunDir : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    spdlog::set_level(spdlog::level::warn);
    root_ = coe::test::scratch_dir("run-dir");
  }

  // A tiny GSM8K run into root_/<run> with `overrides` (the prepared data is shared).
  static coe::TrainConfig config(const std::string& run, const std::vector<std::string>& overrides = {}) {
    const fs::path yaml = root_ / (run + ".yaml");
    write_file(yaml, coe::test::tiny_gsm8k_run_yaml(root_ / "prepared", root_ / run, 6));
    return coe::load_train_config(yaml.string(), overrides);
  }

  static coe::TrainOptions options(bool resume = false, int64_t max_steps = -1) {
    coe::TrainOptions o;
    o.handle_signals = false;
    o.resume = resume;
    o.max_steps = max_steps;
    return o;
  }

  static nlohmann::json read_json(const fs::path& path) { return nlohmann::json::parse(read_file(path)); }

  static fs::path root_;
};

fs::path RunDir::root_;

TEST_F(RunDir, SecondTrainerOnTheSameDirectoryFailsNamingTheFirst) {
  auto first = std::make_unique<coe::Trainer>(config("locked", {"trainer.resume=auto"}), options());
  expect_error([&] { coe::Trainer second(config("locked", {"trainer.resume=auto"}), options()); },
               {(root_ / "locked").string(), "in use by another coe-train", "pid " + std::to_string(::getpid())});
  // The lock lives as long as the trainer: once it is gone, the directory is free again.
  ASSERT_EQ(first->run().status, coe::TrainStatus::kCompleted);
  first.reset();
  coe::Trainer again(config("locked", {"trainer.resume=auto"}), options());
  EXPECT_EQ(again.state().step, 6);
}

// A .coe-lock that is a symbolic link is refused, and its target is neither truncated nor written.
TEST_F(RunDir, LockFileIsNeverFollowedThroughALink) {
  const fs::path dir = root_ / "lock-link";
  fs::create_directories(dir);
  const fs::path target = root_ / "precious.txt";
  write_file(target, "keep me\n");
  fs::create_symlink(target, dir / ".coe-lock");
  expect_error([&] { coe::Trainer t(config("lock-link"), options()); },
               {(dir / ".coe-lock").string(), "symbolic link"});
  EXPECT_EQ(read_file(target), "keep me\n");
}

// Resuming from step 2 while steps 4 and 6 exist: the abandoned branch moves aside whole, the logs
// restart at step 2, pruning keeps the step resumed from, and the new branch retraces the old one
// (same seed, same data order) to the same losses.
TEST_F(RunDir, ResumingFromAnOlderStepStartsABranch) {
  const std::vector<std::string> common{"trainer.save_interval=2", "trainer.keep_last=2", "trainer.val_interval=2"};
  ASSERT_EQ(coe::Trainer(config("branch", common), options()).run().status, coe::TrainStatus::kCompleted);
  const fs::path dir = root_ / "branch";
  const auto old_metrics = read_jsonl(dir / "metrics.jsonl");
  ASSERT_EQ(old_metrics.size(), 6u);
  ASSERT_TRUE(fs::exists(dir / "step-4") && fs::exists(dir / "step-6") && fs::exists(dir / "final.json"));
  // keep_last 2 left steps 4 and 6; bring step 2 back from a copy so there is an older step to resume.
  {
    ASSERT_EQ(coe::Trainer(config("branch-src", common), options(false, 2)).run().status, coe::TrainStatus::kStopped);
    fs::copy(root_ / "branch-src" / "step-2", dir / "step-2", fs::copy_options::recursive);
  }

  auto resumed = config("branch", common);
  resumed.trainer.resume = (dir / "step-2").string();
  auto t = std::make_unique<coe::Trainer>(resumed, options());
  EXPECT_EQ(t->state().step, 2);
  std::vector<fs::path> aside;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("abandoned-after-step-2-", 0) == 0) aside.push_back(e.path());
  ASSERT_EQ(aside.size(), 1u);
  for (const char* f : {"step-4", "step-6", "final.json", "metrics.jsonl", "val.jsonl"})
    EXPECT_TRUE(fs::exists(aside[0] / f)) << f;
  EXPECT_FALSE(fs::exists(dir / "step-4"));
  EXPECT_FALSE(fs::exists(dir / "final.json"));
  EXPECT_EQ(read_jsonl(dir / "metrics.jsonl").size(), 2u);
  EXPECT_EQ(read_jsonl(dir / "val.jsonl").size(), 1u);

  ASSERT_EQ(t->run().status, coe::TrainStatus::kCompleted);
  t.reset();
  const auto new_metrics = read_jsonl(dir / "metrics.jsonl");
  ASSERT_EQ(new_metrics.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(new_metrics[i]["step"].get<int64_t>(), static_cast<int64_t>(i + 1));
    EXPECT_EQ(new_metrics[i]["loss"], old_metrics[i]["loss"]) << "step " << i + 1;
  }
  EXPECT_EQ(read_jsonl(dir / "val.jsonl").size(), 3u);  // steps 2, 4, 6: each once
  const auto kept = coe::list_checkpoints(dir.string());
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(kept[0].step, 4);
  EXPECT_EQ(kept[1].step, 6);
  // --resume now follows the new branch: the run is complete.
  coe::Trainer after(config("branch", common), options(true));
  EXPECT_EQ(fs::path(after.resumed_from()).filename(), "step-6");
}

// A requeued job resuming a finished run (or one killed between its last checkpoint and
// final.json) reports the run's own numbers and validates nothing twice.
TEST_F(RunDir, ResumingAFinishedRunKeepsItsSummary) {
  const std::vector<std::string> common{"trainer.val_interval=4"};  // the final validation comes at step 6
  const coe::TrainResult done = coe::Trainer(config("finished", common), options()).run();
  ASSERT_EQ(done.status, coe::TrainStatus::kCompleted);
  const fs::path dir = root_ / "finished";
  const nlohmann::json summary = read_json(dir / "final.json");
  const std::string val_log = read_file(dir / "val.jsonl");
  EXPECT_EQ(read_jsonl(dir / "val.jsonl").size(), 2u);
  EXPECT_GT(summary["final_train_loss"].get<double>(), 0.0);
  EXPECT_GT(summary["tokens_per_s"].get<double>(), 0.0);

  for (bool lose_summary : {false, true}) {
    if (lose_summary) fs::remove(dir / "final.json");
    const coe::TrainResult again = coe::Trainer(config("finished", common), options(true)).run();
    EXPECT_EQ(again.status, coe::TrainStatus::kCompleted);
    EXPECT_EQ(again.last_loss, done.last_loss);
    EXPECT_EQ(again.final_val_loss, done.final_val_loss);
    EXPECT_EQ(read_json(dir / "final.json"), summary) << "lost final.json: " << lose_summary;
    EXPECT_EQ(read_file(dir / "val.jsonl"), val_log);
  }
}

// A diverged optimizer state behind finite losses (an infinite second moment, as a gradient
// spike without clipping leaves it: every later update of that tensor is zero) is not saved as a
// checkpoint: the run stops naming the tensor and the last good checkpoint.
TEST_F(RunDir, DivergedStateIsNeverSaved) {
  const std::vector<std::string> common{"trainer.save_interval=1", "trainer.val_interval=0"};
  ASSERT_EQ(coe::Trainer(config("diverge", common), options(false, 2)).run().status, coe::TrainStatus::kStopped);
  coe::Trainer t(config("diverge", common), options(true));
  {
    auto state = t.optimizer().full_state().optimizer;
    state.at("model.norm.weight.exp_avg_sq").fill_(INFINITY);
    t.optimizer().load_state(state, "test");
  }
  const coe::TrainResult r = t.run();
  ASSERT_EQ(r.status, coe::TrainStatus::kNonFinite);
  EXPECT_EQ(r.step, 3);
  EXPECT_NE(r.message.find("model.norm.weight's AdamW exp_avg_sq after the update of step 3"), std::string::npos)
      << r.message;
  EXPECT_NE(r.message.find("the last good checkpoint is step-2"), std::string::npos) << r.message;
  const auto kept = coe::list_checkpoints((root_ / "diverge").string());
  ASSERT_FALSE(kept.empty());
  EXPECT_EQ(kept.back().step, 2);
}

// A damaged checkpoint is refused with the file and the reason, never trained from.
TEST_F(RunDir, DamagedCheckpointsAreRefused) {
  ASSERT_EQ(coe::Trainer(config("damaged", {"trainer.val_interval=0"}), options(false, 2)).run().status,
            coe::TrainStatus::kStopped);
  const fs::path step = root_ / "damaged" / "step-2";
  const std::string state = read_file(step / "state.json");
  auto resume = [&] { coe::Trainer t(config("damaged", {"trainer.val_interval=0"}), options(true)); };

  for (const auto& [field, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"step", -5}, {"step", int64_t{1} << 50}, {"tokens_seen", -1}, {"elapsed_s", -2.0}, {"val_step", 7}}) {
    nlohmann::json j = nlohmann::json::parse(state);
    j[field] = value;
    write_file(step / "state.json", j.dump(2));
    expect_error(resume, {(step / "state.json").string(), field, "out of range"});
  }
  write_file(step / "state.json", state);

  // One flipped byte in the middle of the weights.
  const fs::path weights = step / "model.safetensors";
  std::string bytes = read_file(weights);
  bytes[bytes.size() / 2] ^= 0x10;
  write_file(weights, bytes);
  expect_error(resume, {weights.string(), "checksum mismatch"});
}

// state.json is checked like the files it lists: an edit within every range (a step of 1,000,000
// would have the resume report the run complete) breaks its own checksum; a manifest in a step-N
// directory of another step is refused; the error names the newest intact checkpoint and the
// setting that resumes from it, which then sets the damaged one aside.
TEST_F(RunDir, EditedManifestsAreRefusedAndTheIntactCheckpointNamed) {
  const std::vector<std::string> common{"trainer.val_interval=0", "trainer.save_interval=2"};
  ASSERT_EQ(coe::Trainer(config("edited", common), options(false, 4)).run().status, coe::TrainStatus::kStopped);
  const fs::path dir = root_ / "edited", newest = dir / "step-4";
  const std::string state = read_file(newest / "state.json");
  auto resume = [&] { coe::Trainer t(config("edited", common), options(true)); };
  const int64_t tokens = nlohmann::json::parse(state)["tokens_seen"].get<int64_t>();
  for (const auto& [field, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"step", 1000000}, {"tokens_seen", tokens + 64}, {"elapsed_s", 0.5}}) {
    nlohmann::json j = nlohmann::json::parse(state);
    j[field] = value;
    write_file(newest / "state.json", j.dump(2));
    expect_error(resume, {(newest / "state.json").string(), "state_checksum mismatch",
                          "the newest intact checkpoint is " + (dir / "step-2").string(),
                          "--set trainer.resume=" + (dir / "step-2").string()});
  }
  // The loader's cursor, inside the nested object.
  nlohmann::json j = nlohmann::json::parse(state);
  ASSERT_TRUE(j["loader"].is_object() && !j["loader"].empty());
  j["loader"][j["loader"].begin().key()] = 7;
  write_file(newest / "state.json", j.dump(2));
  expect_error(resume, {"state_checksum mismatch"});
  // Whitespace and key order are not an edit.
  write_file(newest / "state.json", nlohmann::json::parse(state).dump());
  EXPECT_EQ(coe::read_checkpoint_state(newest.string()).step, 4);
  write_file(newest / "state.json", "not json");

  // A whole, intact checkpoint under another step's name.
  fs::copy(dir / "step-2", dir / "step-3", fs::copy_options::recursive);
  expect_error([&] { coe::read_checkpoint_state((dir / "step-3").string()); },
               {(dir / "step-3" / "state.json").string(), "step 2 does not match its directory's name (step-3)"});
  fs::remove_all(dir / "step-3");

  // As the error says: resume from step 2; the damaged step 4 moves aside, the run completes.
  coe::Trainer t(config("edited", {"trainer.val_interval=0", "trainer.save_interval=2",
                                   "trainer.resume=" + (dir / "step-2").string()}),
                 options());
  EXPECT_EQ(t.state().step, 2);
  EXPECT_FALSE(fs::exists(newest));
  ASSERT_EQ(t.run().status, coe::TrainStatus::kCompleted);
  EXPECT_EQ(read_jsonl(dir / "metrics.jsonl").size(), 6u);
}

// A manifest of format version 2 (no state_checksum: checkpoints of coe before it) still resumes.
TEST_F(RunDir, VersionTwoManifestsStillResume) {
  const std::vector<std::string> common{"trainer.val_interval=0"};
  ASSERT_EQ(coe::Trainer(config("v2", common), options(false, 2)).run().status, coe::TrainStatus::kStopped);
  const fs::path file = root_ / "v2" / "step-2" / "state.json";
  nlohmann::json j = nlohmann::json::parse(read_file(file));
  ASSERT_EQ(j["version"], 3);
  j["version"] = 2;
  j.erase("state_checksum");
  write_file(file, j.dump(2));
  coe::Trainer t(config("v2", common), options(true));
  EXPECT_EQ(t.state().step, 2);
}

// An existing out_dir that coe did not make and that holds files is refused before anything is
// written: the user's config.yaml and metrics.jsonl stay as they were. An empty one is used.
TEST_F(RunDir, ANonEmptyDirectoryCoeDidNotMakeIsRefused) {
  const fs::path dir = root_ / "users-dir";
  write_file(dir / "config.yaml", "mine\n");
  write_file(dir / "metrics.jsonl", "{\"step\": 1, \"loss\": 3.0}\n");
  expect_error([&] { coe::Trainer t(config("users-dir"), options()); },
               {dir.string(), "holds files coe did not write", "not a coe run directory", "trainer.out_dir"});
  EXPECT_EQ(read_file(dir / "config.yaml"), "mine\n");
  EXPECT_EQ(read_file(dir / "metrics.jsonl"), "{\"step\": 1, \"loss\": 3.0}\n");
  EXPECT_FALSE(fs::exists(dir / ".coe-lock"));
  EXPECT_FALSE(fs::exists(dir / "tb"));

  fs::create_directories(root_ / "empty-dir");
  EXPECT_EQ(coe::Trainer(config("empty-dir"), options(false, 1)).run().status, coe::TrainStatus::kStopped);
  // Now coe's: it resumes there.
  coe::Trainer again(config("empty-dir"), options(true));
  EXPECT_EQ(again.state().step, 1);
}

// A checkpoint in a branch an earlier resume set aside is refused as trainer.resume (its steps
// would be appended to this branch's logs); its folder, as the run directory, continues that
// branch with its own logs.
TEST_F(RunDir, ResumingIntoAnAbandonedBranchIsRefused) {
  const std::vector<std::string> common{"trainer.val_interval=0", "trainer.save_interval=2"};
  ASSERT_EQ(coe::Trainer(config("switch", common), options(false, 4)).run().status, coe::TrainStatus::kStopped);
  const fs::path dir = root_ / "switch";
  {
    auto c = config("switch", common);
    c.trainer.resume = (dir / "step-2").string();
    coe::Trainer t(c, options(false, 1));
    ASSERT_EQ(t.run().status, coe::TrainStatus::kStopped);
  }
  fs::path aside;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("abandoned-after-step-2-", 0) == 0) aside = e.path();
  ASSERT_FALSE(aside.empty());
  ASSERT_TRUE(fs::exists(aside / "step-4"));
  const std::string metrics_before = read_file(dir / "metrics.jsonl");

  auto c = config("switch", common);
  c.trainer.resume = (aside / "step-4").string();
  expect_error([&] { coe::Trainer t(c, options()); }, {"lies in " + aside.string(), "would mix the two branches' logs",
                                                       "--out " + aside.string() + " --resume"});
  EXPECT_EQ(read_file(dir / "metrics.jsonl"), metrics_before);
  EXPECT_TRUE(fs::exists(aside / "step-4"));

  // As the error says.
  auto in_branch = config("switch", common);
  in_branch.trainer.out_dir = aside.string();
  coe::Trainer t(in_branch, options(true));
  EXPECT_EQ(t.state().step, 4);
  ASSERT_EQ(t.run().status, coe::TrainStatus::kCompleted);
  const auto branch_metrics = read_jsonl(aside / "metrics.jsonl");
  ASSERT_EQ(branch_metrics.size(), 6u);
  for (size_t i = 0; i < branch_metrics.size(); ++i) EXPECT_EQ(branch_metrics[i]["step"], i + 1);
  EXPECT_EQ(read_file(dir / "metrics.jsonl"), metrics_before);
}

// A run trained with a tokenizer named relative to its config works from anywhere: every
// checkpoint (and the run directory) holds a copy of the tokenizer, checksummed, which coe-eval
// and coe-generate use from another directory and from a copy of the run on which the original
// path means nothing; a given --tokenizer is checked against that copy by fingerprint. The run's
// config.yaml names every path absolute: coe-train resumes the run with it from another directory,
// and the copy with --out.
TEST_F(RunDir, ACheckpointWorksFromAnotherDirectoryAndAsACopy) {
  const fs::path cwd = root_ / "portable";  // where the run is trained from
  fs::create_directories(cwd / "tok");
  const fs::path shared_tokenizer = coe::test::shared_root() / "data" / "tokenizers" / "gpt-neox-tokenizer.json";
  fs::copy_file(shared_tokenizer, cwd / "tok" / "tokenizer.json");
  std::string yaml = coe::test::tiny_gsm8k_run_yaml(cwd / "prepared", "run", 2);
  yaml.replace(yaml.find("tokenizer: byte"), 15, "tokenizer: tok/tokenizer.json");
  const size_t vocab = yaml.find("  vocab_size:");
  if (vocab != std::string::npos) yaml.erase(vocab, yaml.find('\n', vocab) - vocab + 1);  // the tokenizer's
  write_file(cwd / "run.yaml", yaml);
  std::string out;
  ASSERT_EQ(coe::test::run_command("cd " + cwd.string() + " && " + coe::test::tool_path("coe-train").string() +
                                       " run.yaml --set trainer.val_interval=0",
                                   &out),
            0)
      << out;
  const fs::path step = cwd / "run" / "step-2";
  EXPECT_EQ(read_file(step / "tokenizer.json"), read_file(shared_tokenizer));
  EXPECT_EQ(read_file(cwd / "run" / "tokenizer.json"), read_file(shared_tokenizer));
  EXPECT_EQ(read_json(step / "state.json")["checksums"].count("tokenizer.json"), 1u);

  // Elsewhere: a copy of the run, and the tokenizer's original path gone.
  const fs::path elsewhere = root_ / "portable-elsewhere";
  fs::create_directories(elsewhere);
  fs::copy(cwd / "run", elsewhere / "run-copy", fs::copy_options::recursive);
  fs::rename(cwd / "tok", cwd / "tok-moved");
  const std::string test_file = (coe::test::shared_root() / "data" / "gsm8k" / "test.jsonl").string();
  for (const fs::path& run : {cwd / "run", elsewhere / "run-copy"}) {
    const std::string in_elsewhere = "cd " + elsewhere.string() + " && ";
    std::string eval_out, gen_out;
    EXPECT_EQ(coe::test::run_command(in_elsewhere + coe::test::tool_path("coe-eval").string() + " --checkpoint " +
                                         run.string() + " --data " + test_file + " --max-records 4",
                                     &eval_out),
              0)
        << eval_out;
    EXPECT_NE(eval_out.find("val_loss"), std::string::npos) << eval_out;
    EXPECT_EQ(coe::test::run_command(in_elsewhere + coe::test::tool_path("coe-generate").string() + " --checkpoint " +
                                         run.string() + " --prompt 'How many apples?' --max-new-tokens 4",
                                     &gen_out),
              0)
        << gen_out;
    // The same tokenizer given explicitly (an absolute path) passes the fingerprint check; another fails it.
    EXPECT_EQ(coe::test::run_command(in_elsewhere + coe::test::tool_path("coe-eval").string() + " --checkpoint " +
                                         run.string() + " --data " + test_file + " --max-records 2 --tokenizer " +
                                         shared_tokenizer.string(),
                                     &eval_out),
              0)
        << eval_out;
    EXPECT_EQ(coe::test::run_command(in_elsewhere + coe::test::tool_path("coe-eval").string() + " --checkpoint " +
                                         run.string() + " --data " + test_file + " --max-records 2 --tokenizer byte",
                                     &eval_out),
              1)
        << eval_out;
    EXPECT_NE(eval_out.find("not the tokenizer the model was trained with"), std::string::npos) << eval_out;
  }
  fs::rename(cwd / "tok-moved", cwd / "tok");

  const std::string config = read_file(cwd / "run" / "config.yaml");
  EXPECT_NE(config.find("  tokenizer: " + (cwd / "tok" / "tokenizer.json").string() + "\n"), std::string::npos)
      << config;
  EXPECT_NE(config.find("  out_dir: " + (cwd / "run").string() + "\n"), std::string::npos) << config;
  for (const auto& [run, out] : {std::pair<fs::path, std::string>{cwd / "run", ""},
                                 std::pair<fs::path, std::string>{elsewhere / "run-copy", " --out run-copy"}}) {
    std::string resumed;
    EXPECT_EQ(
        coe::test::run_command("cd " + elsewhere.string() + " && " + coe::test::tool_path("coe-train").string() + " " +
                                   (run / "config.yaml").string() + out + " --resume --set trainer.total_steps=3",
                               &resumed),
        0)
        << resumed;
    EXPECT_TRUE(fs::exists(run / "step-3" / "state.json")) << resumed;
  }
}

// What a killed save or prune leaves is removed on the next run, and only that: a directory coe
// did not write, and a file a user put into a checkpoint directory, survive.
TEST_F(RunDir, LeftoversOfKilledSavesAreCleanedAndForeignFilesKept) {
  const std::vector<std::string> common{"trainer.save_interval=1", "trainer.keep_last=1", "trainer.val_interval=0"};
  ASSERT_EQ(coe::Trainer(config("leftovers", common), options(false, 2)).run().status, coe::TrainStatus::kStopped);
  const fs::path dir = root_ / "leftovers";
  const fs::path good = dir / "step-2";
  // A save killed before its rename, a prune killed after its rename, and a prune of an older coe
  // killed half-way (step-N with its state.json already gone).
  fs::copy(good, dir / "step-3.tmp", fs::copy_options::recursive);
  fs::remove(dir / "step-3.tmp" / "state.json");
  fs::copy(good, dir / "step-1.deleting", fs::copy_options::recursive);
  fs::copy(good, dir / "step-1", fs::copy_options::recursive);
  fs::remove(dir / "step-1" / "state.json");
  // Not coe's: no marker.
  write_file(dir / "step-9.tmp" / "notes.txt", "mine");
  // A user's file inside a checkpoint that pruning will remove.
  write_file(good / "notes.txt", "mine too");

  coe::Trainer t(config("leftovers", common), options(true));
  EXPECT_FALSE(fs::exists(dir / "step-3.tmp"));
  EXPECT_FALSE(fs::exists(dir / "step-1.deleting"));
  EXPECT_FALSE(fs::exists(dir / "step-1"));
  EXPECT_EQ(read_file(dir / "step-9.tmp" / "notes.txt"), "mine");
  ASSERT_EQ(t.run().status, coe::TrainStatus::kCompleted);
  // step-2 was pruned (keep_last 1): coe's files are gone, the user's file and its directory stay.
  EXPECT_EQ(read_file(dir / "step-2.deleting" / "notes.txt"), "mine too");
  EXPECT_FALSE(fs::exists(dir / "step-2.deleting" / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "step-2"));
  const auto kept = coe::list_checkpoints(dir.string());
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(kept[0].step, 6);
}

// A save killed right after creating step-N.tmp/ leaves it empty, or holding only the marker's
// temporary: that is coe's to remove, and the run resumes and saves step N again.
TEST_F(RunDir, ASaveKilledAtItsStartStaysResumable) {
  const std::vector<std::string> common{"trainer.save_interval=1", "trainer.val_interval=0"};
  ASSERT_EQ(coe::Trainer(config("killed-save", common), options(false, 2)).run().status, coe::TrainStatus::kStopped);
  const fs::path dir = root_ / "killed-save";
  fs::create_directories(dir / "step-3.tmp");
  write_file(dir / "step-4.tmp" / ".coe-checkpoint.tmp-4242", "coe-train chec");
  write_file(dir / "step-5.tmp" / "notes.txt", "mine");  // not coe's: stays

  coe::Trainer t(config("killed-save", common), options(true, 2));
  EXPECT_FALSE(fs::exists(dir / "step-3.tmp"));
  EXPECT_FALSE(fs::exists(dir / "step-4.tmp"));
  EXPECT_EQ(read_file(dir / "step-5.tmp" / "notes.txt"), "mine");
  ASSERT_EQ(t.run().status, coe::TrainStatus::kStopped);
  EXPECT_TRUE(fs::exists(dir / "step-3" / "state.json"));
  EXPECT_TRUE(fs::exists(dir / "step-4" / "state.json"));
}

// The temporaries of writes killed before their rename are removed by the next run; a file of the
// same pattern that is not one of coe's names stays.
TEST_F(RunDir, TemporariesOfKilledWritesAreRemoved) {
  const fs::path dir = root_ / "tmp-files";
  coe::create_run_dir(dir.string(), "trainer.out_dir");  // as an earlier coe-train left it
  for (const char* f : {"config.yaml.tmp-4242", "val.jsonl.tmp-17", "final.json.tmp-99", "notes.txt.tmp-5"})
    write_file(dir / f, "half");
  coe::Trainer t(config("tmp-files"), options());
  for (const char* f : {"config.yaml.tmp-4242", "val.jsonl.tmp-17", "final.json.tmp-99"})
    EXPECT_FALSE(fs::exists(dir / f)) << f;
  EXPECT_EQ(read_file(dir / "notes.txt.tmp-5"), "half");
}

// coe-train prints a non-finite stop once, as its error line, and exits 3. (A learning rate of
// 1e30 gives weights near 1e31 after one update, and an overflowing loss at the next step.)
TEST_F(RunDir, NonFiniteStopIsPrintedOnce) {
  const fs::path yaml = root_ / "nonfinite-binary.yaml";
  write_file(yaml, coe::test::tiny_gsm8k_run_yaml(root_ / "prepared", root_ / "nonfinite-binary", 4));
  std::string out;
  const int rc = coe::test::run_command(coe::test::tool_path("coe-train").string() + " " + yaml.string() +
                                            " --set optim.lr=1.0e30 --set optim.warmup_steps=0",
                                        &out);
  EXPECT_EQ(rc, 3) << out;
  size_t count = 0;
  for (size_t at = out.find("non-finite values"); at != std::string::npos; at = out.find("non-finite values", at + 1))
    ++count;
  EXPECT_EQ(count, 1u) << out;
  EXPECT_NE(out.find("error: non-finite values at step 2"), std::string::npos) << out;
  EXPECT_NE(out.find("no checkpoint was written"), std::string::npos) << out;
}

}  // namespace

namespace {

// Resuming with a changed configuration warns with each changed key and both values.
TEST_F(RunDir, ResumeWarningNamesTheChangedKeys) {
  const fs::path yaml = root_ / "changed.yaml";
  write_file(yaml, coe::test::tiny_gsm8k_run_yaml(root_ / "prepared", root_ / "changed", 4));
  const std::string train = coe::test::tool_path("coe-train").string() + " " + yaml.string();
  std::string out;
  ASSERT_EQ(coe::test::run_command(train + " --max-steps 2", &out), 0) << out;
  ASSERT_EQ(
      coe::test::run_command(train + " --resume --max-steps 1 --set optim.lr=0.001 --set trainer.log_interval=5", &out),
      0)
      << out;
  EXPECT_NE(out.find("optim.lr (0.003 -> 0.001)"), std::string::npos) << out;
  EXPECT_NE(out.find("trainer.log_interval (10 -> 5)"), std::string::npos) << out;
}

}  // namespace

namespace {

// coe-train's TensorBoard files, read by the independent reader: every metrics.jsonl and
// val.jsonl value under its tag and step (to float32 rounding), and after a run killed past its
// last checkpoint and resumed, each step exactly once across the files.
// kill -9 loses the events still in the writer's buffer (everything after its last flush), while
// metrics.jsonl and val.jsonl hold every step: the resumed run writes the steps the event files
// lack, so that they hold exactly the logs' steps, each once.
TEST_F(RunDir, TensorBoardGetsBackTheStepsAKillLost) {
  const std::vector<std::string> common{"trainer.val_interval=2", "trainer.save_interval=2"};
  ASSERT_EQ(coe::Trainer(config("tb-kill", common), options(false, 4)).run().status, coe::TrainStatus::kStopped);
  const fs::path dir = root_ / "tb-kill";
  // What the kill left: the file as it was at the flush after step 1.
  coe::cut_back_event_files(dir / "tb", 1);
  ASSERT_EQ(coe::event_steps(dir / "tb", "train/"), (std::set<int64_t>{1}));
  ASSERT_EQ(coe::Trainer(config("tb-kill", common), options(true)).run().status, coe::TrainStatus::kCompleted);

  const auto scalars = coe::test::union_of_scalars(dir / "tb");  // fails on a (tag, step) seen twice
  std::set<int64_t> train_steps, val_steps;
  for (const auto& [key, value] : scalars) {
    if (key.first == "train/loss") train_steps.insert(key.second);
    if (key.first == "val/loss") val_steps.insert(key.second);
  }
  std::set<int64_t> logged, validated;
  for (const auto& m : read_jsonl(dir / "metrics.jsonl")) {
    logged.insert(m["step"].get<int64_t>());
    EXPECT_EQ(scalars.at({"train/loss", m["step"].get<int64_t>()}), static_cast<float>(m["loss"].get<double>()));
  }
  for (const auto& v : read_jsonl(dir / "val.jsonl")) validated.insert(v["step"].get<int64_t>());
  EXPECT_EQ(train_steps, logged);
  EXPECT_EQ(train_steps, (std::set<int64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(val_steps, validated);
  EXPECT_EQ(val_steps, (std::set<int64_t>{2, 4, 6}));
}

// What a user watching a run sees in metrics.jsonl and TensorBoard, not only on the console: the
// memory after every step (RSS and its peak on the CPU), the MFU with trainer.peak_tflops, and the
// resolved configuration as TensorBoard text; a finished run resumed again adds no event file.
TEST_F(RunDir, MemoryMfuAndTheConfigReachTheLogsAndTensorBoard) {
  const std::vector<std::string> common{"trainer.val_interval=0", "trainer.peak_tflops=0.5"};
  ASSERT_EQ(coe::Trainer(config("watch", common), options()).run().status, coe::TrainStatus::kCompleted);
  const fs::path dir = root_ / "watch";
  const auto run = coe::load_train_config((dir / "config.yaml").string());  // the vocabulary resolved
  const double flops = coe::training_flops_per_token(run.model, run.data.max_length).total();
  const auto metrics = read_jsonl(dir / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 6u);
  for (const auto& m : metrics) {
    const auto memory = m.at("memory_bytes").get<int64_t>(), peak = m.at("peak_memory_bytes").get<int64_t>();
    EXPECT_GT(memory, 10 << 20);  // a process with libtorch loaded
    EXPECT_GE(peak, memory);
    EXPECT_DOUBLE_EQ(m.at("mfu").get<double>(), m["tokens_per_s"].get<double>() * flops / 0.5e12);
  }
  const nlohmann::json tb = coe::test::read_with_tensorboard(dir / "tb");
  ASSERT_FALSE(tb.is_null());
  for (const char* tag : {"train/memory_bytes", "train/peak_memory_bytes", "train/mfu"})
    EXPECT_EQ(tb["scalars"][tag].size(), 6u) << tag;
  ASSERT_EQ(tb["texts"]["config"].size(), 1u) << tb.dump();
  EXPECT_EQ(tb["texts"]["config"][0][1].get<std::string>(), "```yaml\n" + read_file(dir / "config.yaml") + "```\n");

  const auto files = coe::test::event_files(dir / "tb").size();
  ASSERT_EQ(coe::Trainer(config("watch", common), options(true)).run().status, coe::TrainStatus::kCompleted);
  EXPECT_EQ(coe::test::event_files(dir / "tb").size(), files);
}

TEST_F(RunDir, TensorBoardEventsMatchTheLogsAcrossAResume) {
  const std::vector<std::string> common{"trainer.val_interval=2", "trainer.save_interval=2"};
  ASSERT_EQ(coe::Trainer(config("tb", common), options(false, 3)).run().status, coe::TrainStatus::kStopped);
  // Steps 1..3 are logged, the checkpoint is step-3; pretend the process died after step 3 was
  // logged but before it was saved: drop the checkpoint, so the resume redoes step 3.
  const fs::path dir = root_ / "tb";
  for (const auto& c : coe::list_checkpoints(dir.string()))
    if (c.step == 3) fs::remove_all(c.dir);
  ASSERT_EQ(coe::Trainer(config("tb", common), options(true)).run().status, coe::TrainStatus::kCompleted);

  const auto scalars = coe::test::union_of_scalars(dir / "tb");  // fails on a (tag, step) seen twice
  EXPECT_EQ(coe::test::event_files(dir / "tb").size(), 2u);
  const auto metrics = read_jsonl(dir / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 6u);
  for (const auto& m : metrics) {
    const int64_t step = m["step"].get<int64_t>();
    for (const auto& [key, tag] :
         std::vector<std::pair<std::string, std::string>>{{"loss", "train/loss"},
                                                          {"aux_loss", "train/aux_loss"},
                                                          {"lr", "train/lr"},
                                                          {"grad_norm", "train/grad_norm"},
                                                          {"tokens_per_s", "train/tokens_per_s"}}) {
      auto it = scalars.find({tag, step});
      ASSERT_NE(it, scalars.end()) << tag << " at step " << step;
      EXPECT_EQ(it->second, static_cast<float>(m[key].get<double>())) << tag << " at step " << step;
    }
  }
  const auto val = read_jsonl(dir / "val.jsonl");
  ASSERT_EQ(val.size(), 3u);  // steps 2, 4, 6
  for (const auto& v : val) {
    auto it = scalars.find({"val/loss", v["step"].get<int64_t>()});
    ASSERT_NE(it, scalars.end());
    EXPECT_EQ(it->second, static_cast<float>(v["val_loss"].get<double>()));
  }
  size_t train_losses = 0;
  for (const auto& [key, value] : scalars) train_losses += key.first == "train/loss";
  EXPECT_EQ(train_losses, 6u);

  // The tensorboard package (EventAccumulator, what `tensorboard --logdir` serves) sees exactly the
  // scalars of metrics.jsonl and val.jsonl: every tag, every step once, every value.
  std::map<std::pair<std::string, int64_t>, float> from_logs;
  for (const auto& m : metrics)
    for (const auto& [tag, value] : coe::metrics_scalars(m))
      from_logs[{tag, m["step"].get<int64_t>()}] = static_cast<float>(value);
  for (const auto& v : val)
    for (const auto& [tag, value] : coe::val_scalars(v))
      from_logs[{tag, v["step"].get<int64_t>()}] = static_cast<float>(value);
  EXPECT_EQ(from_logs.at({"train/loss", 6}), static_cast<float>(metrics.back()["loss"].get<double>()));
  const nlohmann::json tb = coe::test::read_with_tensorboard(dir / "tb");
  ASSERT_FALSE(tb.is_null());
  std::map<std::pair<std::string, int64_t>, float> read;
  for (const auto& [tag, events] : tb.at("scalars").items())
    for (const auto& e : events)
      EXPECT_TRUE(read.emplace(std::make_pair(tag, e[0].get<int64_t>()), static_cast<float>(e[1].get<double>())).second)
          << tag << " at step " << e[0] << " twice";
  EXPECT_EQ(read, from_logs);
}

}  // namespace
