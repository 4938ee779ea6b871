#pragma once
// coe-sweep's work (docs/sweeps.md): one SweepRunner per invocation.
//
// Construction runs the setup phases in order: resolve every variant's full config (a typo in any
// variant fails before anything runs), check the --only names, write an inline base config, read
// sweep-status.json and plan what each variant still has to train. run() then goes through the
// variants: a complete one is skipped, any other selected one is trained in its own coe-train
// process (train_variant, with the live progress of SweepProgress), a complete one gets its
// analyses (analyse_variant), and at the end the summary is written (report). With --dry-run it
// prints the plan and runs nothing; with --report it only writes the summary.
//
// SIGINT/SIGTERM while run() trains: the running coe-train receives the signal too (it saves a
// checkpoint and stops), no further variant starts, the summary is written and run() returns 130.
// The handlers stay installed for the rest of the process.
//
// No shell anywhere: coe-train, coe-memory, coe-eval and gnuplot are argument vectors
// (util/subprocess.h) with their output appended to the run directory's logs.
#include "coe/train/run_lock.h"
#include "coe/train/sweep.h"
#include "coe/util/clock.h"
#include "coe/util/run_logs.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace coe {

struct SweepOptions {
  std::vector<std::string> only;  // run just these variants (the report still covers all)
  bool dry_run = false;           // print each variant's state, command, parameters and memory; run nothing
  bool report_only = false;       // only (re)write summary.csv, summary.md and the plots
  // Where coe-train, coe-memory and coe-eval are; "" = the directory of this process's executable.
  std::filesystem::path tools_dir;
};

// What a variant's run directory says before the sweep acts on it.
struct VariantPlan {
  enum class State { kNew, kPartial, kComplete };  // kPartial: a checkpoint and no final.json (--resume)
  bool selected = true;                            // not left out by --only
  State state = State::kNew;
  int64_t steps_left = 0;  // trainer.total_steps less the newest checkpoint's step; 0 unless selected and not complete
};

// The wall-clock pace of the variants this sweep trained so far.
struct SweepPace {
  int64_t steps = 0;
  double seconds = 0;

  // Adds the steps a finished variant's watcher saw arrive and the time they took.
  void add(const RunWatcher& run);
  // The sweep's ETA while `run` trains: its own ETA plus `later_steps` (of the variants after it)
  // at the pace so far, this run's included. nullopt while the run has no ETA or nothing is left
  // after it.
  std::optional<double> sweep_eta(const RunWatcher& run, int64_t later_steps) const;
};

// The live progress of one variant while it trains, read from its metrics.jsonl / val.jsonl
// (progress_line). On a terminal (`columns` > 0) one line updated in place at most twice a second,
// cut to the width; otherwise (a log file, CI) a new line each time the run passes another tenth
// of its steps, and the last one when it ends (with the final validation, which comes after the
// last step).
class SweepProgress {
 public:
  // `pace` and `later_steps`: for the sweep's ETA (SweepPace::sweep_eta). The run directory is read
  // once here: lines already there (a resumed run's) are not counted in the pace.
  SweepProgress(std::string tag, const std::filesystem::path& run_dir, int64_t total_steps, int columns, SweepPace pace,
                int64_t later_steps, std::FILE* out = stdout);

  // Reads what the run appended and prints when due. `now`: seconds on the caller's steady clock;
  // `finished`: the run has ended (its last line is printed, a line in place is ended).
  void tick(double now, bool finished);

  const RunWatcher& run() const { return watcher_; }

 private:
  std::string tag_;
  RunWatcher watcher_;
  int64_t total_steps_;
  int columns_;
  SweepPace pace_;
  int64_t later_steps_;
  std::FILE* out_;
  int64_t last_printed_step_ = -1;
  std::optional<double> last_printed_val_;
  int64_t last_tenth_ = 0;
  double last_print_ = -1;
  bool line_open_ = false;  // a terminal line is shown without its newline
};

class SweepRunner {
 public:
  // The spec with coe-sweep's --out and --no-routing already applied.
  SweepRunner(SweepSpec spec, SweepOptions options);

  // The sweep; returns coe-sweep's exit status: 130 when interrupted, else 1 when a variant failed,
  // else 0.
  int run();

  const SweepSpec& spec() const { return spec_; }
  const std::vector<TrainConfig>& configs() const { return configs_; }
  // Each variant's plan as its run directory says now.
  VariantPlan plan_variant(size_t i) const;
  // The launches of this and earlier invocations (sweep-status.json).
  const SweepStatus& status() const { return status_; }

  // The commands of the phases, for variant i.
  std::vector<std::string> train_command(size_t i, bool resume) const;
  std::vector<std::string> memory_command(size_t i) const;
  std::vector<std::string> routing_command(size_t i) const;

  // What every variant's run directory says, a failed launch (status()) overriding a run directory
  // that is not complete.
  std::vector<VariantResult> results() const;

 private:
  // Setup phases, in the order the constructor runs them.
  void resolve();
  void check_selection() const;
  void lock_out_dir();
  void prepare_base();
  void plan();

  // run()'s phases.
  void print_dry_run(size_t i, const VariantPlan& plan) const;
  void train_variant(size_t i, const VariantPlan& plan);
  void analyse_variant(size_t i);
  int report();

  std::string tag(size_t i) const;
  std::filesystem::path tool(const std::string& name) const;
  double seconds_since_start() const;

  SweepSpec spec_;
  SweepOptions options_;
  std::vector<TrainConfig> configs_;
  std::set<std::string> selected_;  // empty: all
  SweepStatus status_;
  std::vector<int64_t> steps_left_;  // per variant, as planned at construction: the sweep's ETA
  SweepPace pace_;
  Clock::time_point start_;
  bool any_failed_ = false;
  std::unique_ptr<RunDirLock> lock_;  // out_dir's, held for the runner's lifetime (not with --dry-run)
};

// What a coe-train's end means for its variant: complete when it exited 0 and wrote final.json;
// incomplete (stopped with a checkpoint) when it exited 0 without, or the sweep was interrupted;
// failed otherwise.
VariantStatus training_outcome(int exit_code, bool final_written, bool interrupted);

// argv as one line of words a POSIX shell would split back into argv (for reading: the logs'
// headers and --dry-run; nothing runs it).
std::string display_command(const std::vector<std::string>& argv);

// The signal (SIGINT/SIGTERM) that stopped a SweepRunner::run() in this process, 0 if none.
int sweep_stop_signal();

}  // namespace coe
