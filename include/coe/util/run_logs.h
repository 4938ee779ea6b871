#pragma once
// Watching a run directory's metrics.jsonl and val.jsonl (their schema: run_files.h) while a run
// trains: coe-sweep's live progress. A run that is still
// training may be in the middle of appending a line, so a last line without its newline is not
// read yet (it is the next poll's).
#include "coe/util/format.h"  // format_duration (the progress line's eta)
#include "coe/util/run_files.h"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace coe {

// Follows a file another process appends lines to: each poll() returns the lines completed since
// the previous poll (without their newlines). A file that is missing is empty; one that became
// shorter than what was read (rewritten, e.g. cut back when a run resumes) is read again from its
// start.
class LineFollower {
 public:
  explicit LineFollower(std::filesystem::path path) : path_(std::move(path)) {}
  std::vector<std::string> poll();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  uint64_t offset_ = 0;  // bytes consumed: the end of the last complete line
  uint64_t inode_ = 0;   // of the file read: a rename put a new file in its place
};

// A run being trained, watched through its run directory (coe-sweep's progress line): the last
// step, loss, validation loss and throughput, and the wall-clock pace. Times are seconds on any
// steady clock, given by the caller.
class RunWatcher {
 public:
  // `total_steps`: the run's trainer.total_steps. Lines already in the logs (a resumed run's) are
  // read by the first poll() and are not counted in the pace.
  RunWatcher(const std::filesystem::path& run_dir, int64_t total_steps);

  // Reads what the run appended since the last poll; true when a new step or validation arrived.
  // Lines that do not parse are skipped (the logs are the trainer's; coe-plot reports them).
  bool poll(double now);

  int64_t step() const { return step_; }
  int64_t total_steps() const { return total_steps_; }
  std::optional<double> loss() const { return loss_; }
  std::optional<double> val_loss() const { return val_loss_; }
  // Mean tokens/s of the last (up to) 20 steps.
  std::optional<double> tokens_per_s() const;
  // Wall-clock seconds per step since the first step this watcher saw arrive (validation and
  // checkpoints included); nullopt until a second step arrived.
  std::optional<double> seconds_per_step() const;
  // Steps trained since the first step this watcher saw arrive, and the seconds they took.
  int64_t paced_steps() const { return pace_step_ >= 0 ? step_ - pace_step_ : 0; }
  double paced_seconds() const { return pace_step_ >= 0 ? last_time_ - pace_time_ : 0; }
  // (total_steps - step) * seconds_per_step.
  std::optional<double> eta_seconds() const;

 private:
  LineFollower metrics_, val_;
  int64_t total_steps_;
  bool first_poll_ = true;
  int64_t step_ = 0;
  std::optional<double> loss_, val_loss_;
  std::vector<double> recent_tokens_per_s_;
  int64_t pace_step_ = -1;  // the first step seen arriving, and when
  double pace_time_ = 0, last_time_ = 0;
};

// "[1/2] moe: step 120/300 (40%) | loss 2.3456 | val 2.4012 | 11.2k tok/s | eta 42s | sweep eta 2m10s";
// parts that are not known yet are left out (`sweep_eta` too).
std::string progress_line(const std::string& tag, const RunWatcher& run, std::optional<double> sweep_eta);

}  // namespace coe
