#include "coe/train/sweep_runner.h"

#include "coe/train/checkpoint.h"
#include "coe/train/run_lock.h"
#include "coe/train/sweep_summary.h"
#include "coe/util/config_reader.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/subprocess.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <signal.h>
#include <sys/ioctl.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <deque>
#include <fstream>
#include <functional>
#include <thread>
#include <utility>

namespace fs = std::filesystem;

namespace coe {
namespace {

// The stop signal, and the coe-train running meanwhile: the handler passes the signal on.
volatile sig_atomic_t g_stop = 0;
volatile pid_t g_child = 0;

void on_signal(int sig) {
  g_stop = sig;
  if (g_child > 0) kill(g_child, sig);  // also reaches the child when it was not sent to the group
}

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

fs::path self_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) fail("cannot resolve /proc/self/exe: {}", ec.message());
  return exe.parent_path();
}

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./=:,+") ==
                        std::string::npos)
    return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs argv (no shell: subprocess.h) with stdout and stderr appended to `log`, after a line saying
// what runs; returns the exit status (128 + signal when killed by one). `tick`, when given, is
// called about twice a second while the child runs, and once more with true when it has ended.
int run_logged(const std::vector<std::string>& argv, const fs::path& log,
               const std::function<void(bool finished)>& tick = {}) {
  fs::create_directories(log.parent_path());
  {
    const std::time_t now = std::time(nullptr);
    char when[64];
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", std::localtime(&now));
    AppendFile out(log);
    out.append(fmt::format("=== {} coe-sweep runs: {}\n", when, display_command(argv)));
    out.close();
  }
  const pid_t pid = spawn_process(argv, log);
  g_child = pid;
  try {
    int status;
    if (!tick) {
      status = wait_process(pid);
    } else {
      std::optional<int> ended;
      while (!(ended = try_wait_process(pid))) {
        tick(false);
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
      }
      status = *ended;
    }
    g_child = 0;
    if (tick) tick(true);
    return status;
  } catch (...) {
    g_child = 0;
    throw;
  }
}

// The terminal's width (stdout), or 0 when it is not a terminal.
int terminal_columns() {
  if (!::isatty(STDOUT_FILENO)) return 0;
  struct winsize ws {};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

// A path as one argument of a coe tool: "-x.yaml" would read as an option.
std::string path_arg(const std::string& p) { return !p.empty() && p.front() == '-' ? "./" + p : p; }

std::vector<std::string> tail_lines(const fs::path& p, size_t n) {
  std::deque<std::string> lines;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(line);
    if (lines.size() > n) lines.pop_front();
  }
  return {lines.begin(), lines.end()};
}

// The resolved config.yaml coe-train wrote into the run directory: where its data was prepared.
std::string prepared_dir_of(const fs::path& run) {
  try {
    const YAML::Node n = load_yaml_file((run / "config.yaml").string());
    return n["data"]["prepared_dir"].as<std::string>();
  } catch (...) {
    return "";
  }
}

bool is(const VariantStatus& s, VariantStatus::State state) { return s.state == state; }

}  // namespace

VariantStatus training_outcome(int exit_code, bool final_written, bool interrupted) {
  using State = VariantStatus::State;
  if (exit_code == 0 && final_written) return {State::kComplete, 0};
  if (exit_code == 0 || interrupted) return {State::kIncomplete, exit_code};
  return {State::kFailed, exit_code};
}

std::string display_command(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + shell_quote(a);
  return s;
}

int sweep_stop_signal() { return g_stop; }

// ---- progress --------------------------------------------------------------------------------

void SweepPace::add(const RunWatcher& run) {
  steps += run.paced_steps();
  seconds += run.paced_seconds();
}

std::optional<double> SweepPace::sweep_eta(const RunWatcher& run, int64_t later_steps) const {
  const auto eta = run.eta_seconds();
  if (!eta || later_steps <= 0) return std::nullopt;
  const int64_t all_steps = steps + run.paced_steps();
  const double all_seconds = seconds + run.paced_seconds();
  return *eta + all_seconds / static_cast<double>(all_steps) * static_cast<double>(later_steps);
}

SweepProgress::SweepProgress(std::string tag, const fs::path& run_dir, int64_t total_steps, int columns, SweepPace pace,
                             int64_t later_steps, std::FILE* out)
    : tag_(std::move(tag)),
      watcher_(run_dir, total_steps),
      total_steps_(total_steps),
      columns_(columns),
      pace_(pace),
      later_steps_(later_steps),
      out_(out) {
  watcher_.poll(0);
  last_tenth_ = total_steps_ > 0 ? watcher_.step() * 10 / total_steps_ : 0;
}

void SweepProgress::tick(double now, bool finished) {
  watcher_.poll(now);
  // (The final validation arrives after the last step: the last line shows it.)
  if (watcher_.step() <= 0 ||
      (watcher_.step() == last_printed_step_ && (!finished || watcher_.val_loss() == last_printed_val_))) {
    if (finished && line_open_) fmt::print(out_, "\n");
    return;
  }
  std::string line = progress_line(tag_, watcher_, pace_.sweep_eta(watcher_, later_steps_));
  if (columns_ > 0) {
    if (!finished && now - last_print_ < 0.5) return;
    if (line.size() >= static_cast<size_t>(columns_)) line.resize(static_cast<size_t>(columns_) - 1);
    fmt::print(out_, "\r\x1b[K{}{}", line, finished ? "\n" : "");
    line_open_ = !finished;
  } else {
    const int64_t tenth = watcher_.step() * 10 / std::max<int64_t>(1, total_steps_);
    if (!finished && tenth <= last_tenth_) return;
    // The last step's line waits for the run's end: the final validation comes after it.
    if (!finished && watcher_.step() >= total_steps_) return;
    fmt::print(out_, "{}\n", line);
    last_tenth_ = tenth;
  }
  std::fflush(out_);
  last_printed_step_ = watcher_.step();
  last_printed_val_ = watcher_.val_loss();
  last_print_ = now;
}

// ---- setup phases ----------------------------------------------------------------------------

SweepRunner::SweepRunner(SweepSpec spec, SweepOptions options)
    : spec_(std::move(spec)), options_(std::move(options)), selected_(options_.only.begin(), options_.only.end()) {
  resolve();
  check_selection();
  prepare_base();
  plan();
}

// Every variant's full config, before anything is launched.
void SweepRunner::resolve() { configs_ = resolve_variants(spec_); }

void SweepRunner::check_selection() const {
  for (const auto& name : selected_) {
    bool found = false;
    for (const auto& v : spec_.variants) found = found || v.name == name || v.variant == name;
    if (!found) fail("--only {}: no such variant (or <variant>/seed-<s> run) in {}", name, spec_.file);
  }
}

// The first thing run() does: nothing is written into out_dir before this, so a second coe-sweep
// on it fails here, leaving the first one's status file and runs alone; then the inline base
// config is written. (--dry-run writes nothing and takes no lock.)
void SweepRunner::lock_out_dir() {
  if (options_.dry_run) return;
  lock_ = std::make_unique<RunDirLock>(spec_.out_dir, "coe-sweep", "out_dir (or --out)");
  if (!options_.report_only) materialise_inline_base(spec_);
}

// An inline base config is run from <out_dir>/base.yaml (written by lock_out_dir).
void SweepRunner::prepare_base() {
  if (spec_.inline_base.empty()) return;
  for (auto& v : spec_.variants)
    if (v.config.empty()) v.config = (fs::path(spec_.out_dir) / "base.yaml").string();
}

// The launches of earlier invocations, and the steps each variant still has to train (the sweep's
// ETA).
void SweepRunner::plan() {
  status_ = read_sweep_status(spec_);
  steps_left_.clear();
  for (size_t i = 0; i < spec_.variants.size(); ++i) steps_left_.push_back(plan_variant(i).steps_left);
}

VariantPlan SweepRunner::plan_variant(size_t i) const {
  VariantPlan p;
  const SweepVariant& v = spec_.variants.at(i);
  p.selected = selected_.empty() || selected_.count(v.name) || selected_.count(v.variant);
  if (!p.selected) return p;
  const fs::path dir = variant_dir(spec_, v);
  if (fs::exists(dir / "final.json")) {
    p.state = VariantPlan::State::kComplete;
    return p;
  }
  const auto ckpt = latest_checkpoint(dir.string());
  if (ckpt) p.state = VariantPlan::State::kPartial;
  p.steps_left = std::max<int64_t>(0, configs_.at(i).trainer.total_steps - (ckpt ? ckpt->step : 0));
  return p;
}

// ---- commands --------------------------------------------------------------------------------

fs::path SweepRunner::tool(const std::string& name) const {
  const fs::path p = (options_.tools_dir.empty() ? self_dir() : options_.tools_dir) / name;
  if (!fs::exists(p)) fail("{} not found beside coe-sweep ({}); build it first", name, p.string());
  return p;
}

std::vector<std::string> SweepRunner::train_command(size_t i, bool resume) const {
  const SweepVariant& v = spec_.variants.at(i);
  std::vector<std::string> cmd{tool("coe-train").string(), path_arg(v.config)};
  for (const auto& o : v.overrides) cmd.insert(cmd.end(), {"--set", o});
  cmd.insert(cmd.end(), {"--out", path_arg(variant_dir(spec_, v))});
  if (resume) cmd.push_back("--resume");
  return cmd;
}

std::vector<std::string> SweepRunner::memory_command(size_t i) const {
  const SweepVariant& v = spec_.variants.at(i);
  const MemoryOptions m = sweep_memory_options(configs_.at(i), spec_.memory);
  std::vector<std::string> cmd{tool("coe-memory").string(), path_arg(v.config)};
  for (const auto& o : v.overrides) cmd.insert(cmd.end(), {"--set", o});
  cmd.insert(cmd.end(), {"--micro-batch", std::to_string(m.micro_batch), "--seq", std::to_string(m.seq_len),
                         m.checkpointing ? "--checkpointing" : "--no-checkpointing", "--measure", "--json",
                         path_arg((fs::path(variant_dir(spec_, v)) / "memory.json").string())});
  return cmd;
}

std::vector<std::string> SweepRunner::routing_command(size_t i) const {
  const TrainConfig& c = configs_.at(i);
  const fs::path dir = variant_dir(spec_, spec_.variants.at(i));
  const std::string data = spec_.routing.data.empty() ? prepared_dir_of(dir) : spec_.routing.data;
  return {tool("coe-eval").string(),
          "--checkpoint",
          path_arg(dir.string()),
          "--data",
          path_arg(data),
          "--max-records",
          std::to_string(spec_.routing.max_records),
          "--max-length",
          std::to_string(c.data.max_length),
          "--batch",
          std::to_string(c.trainer.micro_batch),
          "--device",
          c.trainer.device,
          "--routing",
          path_arg((dir / "routing.json").string()),
          "--json",
          path_arg((dir / "eval.json").string())};
}

// ---- run -------------------------------------------------------------------------------------

int SweepRunner::run() {
  lock_out_dir();
  start_ = Clock::now();
  if (!options_.report_only) {
    if (!options_.dry_run) install_stop_handlers();
    for (size_t i = 0; i < spec_.variants.size() && !g_stop; ++i) {
      const VariantPlan p = plan_variant(i);
      if (!p.selected) continue;
      if (options_.dry_run) {
        print_dry_run(i, p);
        continue;
      }
      const SweepVariant& v = spec_.variants[i];
      const fs::path dir = variant_dir(spec_, v);
      const bool complete = p.state == VariantPlan::State::kComplete;
      if (complete) {
        fmt::print("{}: complete, skipped ({})\n", tag(i), (dir / "final.json").string());
        status_[v.name] = {VariantStatus::State::kComplete, 0};
      } else {
        train_variant(i, p);
      }
      if (!g_stop && fs::exists(dir / "final.json")) analyse_variant(i);
      // The table so far after each variant this invocation trained, not only at the end.
      if (!complete) fmt::print("\n{}\n", sweep_results_table(results()));
      std::fflush(stdout);
    }
    if (options_.dry_run) return 0;
  }
  return report();
}

std::string SweepRunner::tag(size_t i) const {
  return fmt::format("[{}/{}] {}", i + 1, spec_.variants.size(), spec_.variants.at(i).name);
}

double SweepRunner::seconds_since_start() const { return seconds_since(start_); }

void SweepRunner::print_dry_run(size_t i, const VariantPlan& plan) const {
  const bool complete = plan.state == VariantPlan::State::kComplete;
  const bool partial = plan.state == VariantPlan::State::kPartial;
  fmt::print("{}: {}\n", tag(i), complete ? "complete (would skip)" : partial ? "partial (would resume)" : "new");
  if (!complete) fmt::print("  {}\n", display_command(train_command(i, partial)));
  const TrainConfig& c = configs_.at(i);
  const ModelConfig model = sweep_model(c);
  const ParamCounts p = count_parameters(model);
  const auto est = estimate_memory(model, sweep_memory_options(c, spec_.memory));
  fmt::print("  params {:.2f}M, active/token {:.2f}M, memory estimate {}\n", double(p.total()) / 1e6,
             double(p.active_per_token) / 1e6, format_bytes(est.total_bytes()));
}

// One coe-train (resuming a partial run) with its live progress; the outcome goes into
// sweep-status.json, a failure's log tail to stderr.
void SweepRunner::train_variant(size_t i, const VariantPlan& plan) {
  const SweepVariant& v = spec_.variants.at(i);
  const fs::path dir = variant_dir(spec_, v);
  const bool partial = plan.state == VariantPlan::State::kPartial;
  const std::string name = tag(i);
  fmt::print("{}: {} -> {}\n", name, partial ? "resuming" : "training", dir.string());
  std::fflush(stdout);
  const auto t0 = Clock::now();
  int64_t later_steps = 0;
  for (size_t j = i + 1; j < steps_left_.size(); ++j) later_steps += steps_left_[j];
  SweepProgress progress(name, dir, configs_.at(i).trainer.total_steps, terminal_columns(), pace_, later_steps);
  create_run_dir(dir.string(), "variant directory");  // coe's, before train.log goes in
  const int rc = run_logged(train_command(i, partial), dir / "train.log",
                            [&](bool finished) { progress.tick(seconds_since_start(), finished); });
  pace_.add(progress.run());
  const double secs = seconds_since(t0);

  const VariantStatus outcome = training_outcome(rc, fs::exists(dir / "final.json"), g_stop != 0);
  status_[v.name] = outcome;
  if (is(outcome, VariantStatus::State::kComplete)) {
    fmt::print("{}: done in {}\n", name, format_duration(secs));
  } else if (is(outcome, VariantStatus::State::kIncomplete)) {
    fmt::print("{}: stopped after {} (checkpoint saved; run the sweep again to resume)\n", name, format_duration(secs));
  } else {
    any_failed_ = true;
    fmt::print(stderr, "{}: FAILED with exit status {} after {}; log: {}\n", name, rc, format_duration(secs),
               (dir / "train.log").string());
    for (const auto& line : tail_lines(dir / "train.log", 15)) fmt::print(stderr, "  | {}\n", line);
  }
  write_sweep_status(spec_, status_);
}

// The analyses after training, each run once (their output files mark them done); a failing one
// is reported and does not fail the sweep.
void SweepRunner::analyse_variant(size_t i) {
  const fs::path dir = variant_dir(spec_, spec_.variants.at(i));
  const std::string name = tag(i);
  // The seeds of a variant train the same model: its memory is measured once, with the first.
  const std::optional<int64_t> seed = spec_.variants.at(i).seed;
  const bool measures = !seed || *seed == spec_.seeds.front();
  if (spec_.memory.measure && measures && !fs::exists(dir / "memory.json")) {
    fmt::print("{}: measuring memory (coe-memory --measure)\n", name);
    std::fflush(stdout);
    const int rc = run_logged(memory_command(i), dir / "memory.log");
    if (rc != 0)
      fmt::print(stderr, "{}: coe-memory failed (exit {}); see {}\n", name, rc, (dir / "memory.log").string());
  }
  if (spec_.routing.enabled && !fs::exists(dir / "routing.json")) {
    fmt::print("{}: routing analysis (coe-eval --routing)\n", name);
    std::fflush(stdout);
    const int rc = run_logged(routing_command(i), dir / "eval.log");
    if (rc != 0) fmt::print(stderr, "{}: coe-eval failed (exit {}); see {}\n", name, rc, (dir / "eval.log").string());
  }
}

std::vector<VariantResult> SweepRunner::results() const {
  std::vector<VariantResult> out;
  for (size_t i = 0; i < spec_.variants.size(); ++i) {
    VariantResult r = read_variant_result(spec_, spec_.variants[i], configs_[i]);
    const auto it = status_.find(r.name);
    const auto own = parse_variant_status(r.status);
    const bool complete = own && is(*own, VariantStatus::State::kComplete);
    if (it != status_.end() && !complete && is(it->second, VariantStatus::State::kFailed)) {
      r.status = to_string(it->second);
      r.exit_code = it->second.exit_code;
    }
    out.push_back(std::move(r));
  }
  return out;
}

// summary.csv, summary.md and the plots.
int SweepRunner::report() {
  const std::vector<VariantResult> all = results();
  // A gnuplot script is a program (it may call system()): it comes from the environment or from
  // beside the binary, never from the working directory, which may be someone else's repository.
  const auto found_script = find_plot_script("plot_sweep.gp", "COE_PLOT_SCRIPT");
  const std::string script = found_script ? found_script->string() : "";
  for (const auto& f : write_sweep_summary(spec_, all, script)) fmt::print("wrote {}\n", f);
  if (g_stop) return 130;
  return any_failed_ ? 1 : 0;
}

}  // namespace coe
