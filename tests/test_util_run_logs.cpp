// Reading a run directory's logs while the run writes them (coe/util/run_logs.h): complete lines
// only, a rewritten (cut back) file read afresh, one-line errors naming file:line, and the pace and
// ETA behind coe-sweep's progress line.
#include "coe/util/run_logs.h"
#include "support/expect_error.h"
#include "support/test_env.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

void append(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::app | std::ios::binary) << text; }

std::string metrics_line(int step, double loss, double tokens_per_s = 1000) {
  return "{\"step\": " + std::to_string(step) + ", \"loss\": " + std::to_string(loss) +
         ", \"aux_loss\": 0.01, \"lr\": 0.001, \"grad_norm\": 1.5, \"tokens\": 512, \"tokens_per_s\": " +
         std::to_string(tokens_per_s) + ", \"time\": 1.0}\n";
}

TEST(RunLogs, FollowerReturnsCompleteLinesOnly) {
  const fs::path dir = coe::test::scratch_dir("follow");
  coe::LineFollower follower(dir / "metrics.jsonl");
  EXPECT_TRUE(follower.poll().empty()) << "a missing file is empty";
  append(dir / "metrics.jsonl", "one\ntw");
  EXPECT_EQ(follower.poll(), std::vector<std::string>{"one"});
  EXPECT_TRUE(follower.poll().empty());
  append(dir / "metrics.jsonl", "o\nthree\n");
  EXPECT_EQ(follower.poll(), (std::vector<std::string>{"two", "three"}));
  // Cut back on resume: written anew (a rename) and shorter; read from its start.
  coe::test::write_file(dir / "new", "one\n");
  fs::rename(dir / "new", dir / "metrics.jsonl");
  EXPECT_EQ(follower.poll(), std::vector<std::string>{"one"});
  // Truncated in place (the same inode): shorter than what was read, so read from its start.
  coe::test::write_file(dir / "metrics.jsonl", "");
  EXPECT_TRUE(follower.poll().empty());
  append(dir / "metrics.jsonl", "uno\n");
  EXPECT_EQ(follower.poll(), std::vector<std::string>{"uno"});
}

TEST(RunLogs, ReadFilesSkipATornLastLineAndNameBadLines) {
  const fs::path dir = coe::test::scratch_dir("read-logs");
  coe::test::write_file(dir / "metrics.jsonl", metrics_line(1, 2.5) + metrics_line(2, 2.25) + "{\"step\": 3, \"lo");
  const auto rows = coe::read_metrics_file(dir / "metrics.jsonl");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].step, 2);
  EXPECT_EQ(rows[1].loss, 2.25);
  EXPECT_EQ(rows[1].grad_norm, 1.5);
  EXPECT_EQ(rows[1].tokens_per_s, 1000.0);
  EXPECT_TRUE(coe::read_val_file(dir / "val.jsonl").empty()) << "no val.jsonl: no validations";

  coe::test::write_file(dir / "bad.jsonl", metrics_line(1, 2.5) + "not json\n");
  coe::test::expect_error([&] { coe::read_metrics_file(dir / "bad.jsonl"); },
                          {(dir / "bad.jsonl").string() + ":2", "not JSON"});
  coe::test::write_file(dir / "bad.jsonl", "{\"loss\": 1}\n");
  coe::test::expect_error([&] { coe::read_metrics_file(dir / "bad.jsonl"); }, {"bad.jsonl:1", "no \"step\""});
  coe::test::write_file(dir / "bad.jsonl", "{\"step\": 1, \"loss\": 1, \"lr\": \"fast\"}\n");
  coe::test::expect_error([&] { coe::read_metrics_file(dir / "bad.jsonl"); },
                          {"bad.jsonl:1", "\"lr\" is not a number"});
  coe::test::write_file(dir / "bad.jsonl", "[1, 2]\n");
  coe::test::expect_error([&] { coe::read_metrics_file(dir / "bad.jsonl"); }, {"bad.jsonl:1", "not a JSON object"});
  coe::test::write_file(dir / "val.jsonl", "{\"step\": 1.5, \"val_loss\": 2}\n");
  coe::test::expect_error([&] { coe::read_val_file(dir / "val.jsonl"); },
                          {"val.jsonl:1", "\"step\" is not an integer"});
  // A non-finite loss (logged as null) is NaN, not zero.
  coe::test::write_file(dir / "nan.jsonl", "{\"step\": 1, \"loss\": null, \"grad_norm\": null}\n");
  const auto nan_rows = coe::read_metrics_file(dir / "nan.jsonl");
  ASSERT_EQ(nan_rows.size(), 1u);
  EXPECT_TRUE(std::isnan(nan_rows[0].loss));
  EXPECT_TRUE(std::isnan(*nan_rows[0].grad_norm));
}

TEST(RunLogs, WatcherPaceExcludesEarlierLinesAndStartup) {
  const fs::path run = coe::test::scratch_dir("watch");
  // A resumed run: steps 1-10 are from the earlier invocation.
  std::string earlier;
  for (int s = 1; s <= 10; ++s) earlier += metrics_line(s, 5.0 - 0.1 * s);
  coe::test::write_file(run / "metrics.jsonl", earlier);
  coe::RunWatcher w(run, 100);
  EXPECT_TRUE(w.poll(0.0));
  EXPECT_EQ(w.step(), 10);
  EXPECT_FALSE(w.seconds_per_step());
  EXPECT_FALSE(w.eta_seconds());
  EXPECT_EQ(coe::progress_line("[1/2] moe", w, std::nullopt),
            "[1/2] moe: step 10/100 (10%) | loss 4.0000 | 1.0k tok/s");
  // Startup takes 30 s; then a step every 2 s.
  EXPECT_FALSE(w.poll(10.0));
  append(run / "metrics.jsonl", metrics_line(11, 3.5, 3000));
  EXPECT_TRUE(w.poll(30.0));
  EXPECT_FALSE(w.seconds_per_step()) << "one new step: no pace yet";
  append(run / "metrics.jsonl", metrics_line(12, 3.4, 3000) + metrics_line(13, 3.3, 3000));
  append(run / "val.jsonl", "{\"step\": 13, \"val_loss\": 3.75}\n");
  EXPECT_TRUE(w.poll(34.0));
  EXPECT_EQ(w.step(), 13);
  EXPECT_DOUBLE_EQ(*w.seconds_per_step(), 2.0);
  EXPECT_EQ(w.paced_steps(), 2);
  EXPECT_DOUBLE_EQ(w.paced_seconds(), 4.0);
  EXPECT_DOUBLE_EQ(*w.eta_seconds(), 87 * 2.0);
  // Mean of the last 13 tokens/s values: 10 x 1000 and 3 x 3000.
  EXPECT_NEAR(*w.tokens_per_s(), (10 * 1000.0 + 3 * 3000.0) / 13, 1e-9);
  EXPECT_EQ(coe::progress_line("[1/2] moe", w, 400.0),
            "[1/2] moe: step 13/100 (13%) | loss 3.3000 | val 3.7500 | 1.5k tok/s | eta 2m54s | sweep eta 6m40s");
  // A line that does not parse is skipped, not fatal: the watcher only shows progress.
  append(run / "metrics.jsonl", "garbage\n");
  EXPECT_FALSE(w.poll(35.0));
  EXPECT_EQ(w.step(), 13);
}

TEST(RunLogs, FormatDuration) {
  EXPECT_EQ(coe::format_duration(0), "0s");
  EXPECT_EQ(coe::format_duration(59.4), "59s");
  EXPECT_EQ(coe::format_duration(185), "3m05s");
  EXPECT_EQ(coe::format_duration(3720), "1h02m");
  EXPECT_EQ(coe::format_duration(-5), "0s");
}

}  // namespace
