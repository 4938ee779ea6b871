// coe-sweep: trains every variant of a sweep file in its own coe-train process and summarises
// them (summary.csv, summary.md, plots). See docs/sweeps.md.
//
//   coe-sweep SWEEP.yaml [--only NAME ...] [--dry-run] [--report] [--out DIR] [--no-routing]
//
// A variant whose run directory holds final.json is complete and skipped; one with a checkpoint
// continues with coe-train --resume. A failing variant (its exit status and log in
// <out>/<name>/train.log) does not stop the others; the exit status is 1 when any variant failed,
// 130 when interrupted (SIGINT/SIGTERM: the running coe-train saves a checkpoint and stops).
#include "cli.h"
#include "coe/train/checkpoint.h"
#include "coe/train/sweep.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/run_logs.h"
#include "coe/util/subprocess.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>
#include <CLI/CLI.hpp>

#include <signal.h>
#include <sys/ioctl.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <set>
#include <thread>

namespace fs = std::filesystem;

namespace {

volatile sig_atomic_t g_stop = 0;
volatile pid_t g_child = 0;

void on_signal(int sig) {
  g_stop = sig;
  if (g_child > 0) kill(g_child, sig);  // also reaches the child when it was not sent to the group
}

fs::path self_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) coe::fail("cannot resolve /proc/self/exe: {}", ec.message());
  return exe.parent_path();
}

fs::path tool(const std::string& name) {
  const fs::path p = self_dir() / name;
  if (!fs::exists(p)) coe::fail("{} not found beside coe-sweep ({}); build it first", name, p.string());
  return p;
}

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./=:,+") ==
                        std::string::npos)
    return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string command_line(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + shell_quote(a);
  return s;
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
    coe::AppendFile out(log);
    out.append(fmt::format("=== {} coe-sweep runs: {}\n", when, command_line(argv)));
    out.close();
  }
  const pid_t pid = coe::spawn_process(argv, log);
  g_child = pid;
  try {
    int status;
    if (!tick) {
      status = coe::wait_process(pid);
    } else {
      std::optional<int> ended;
      while (!(ended = coe::try_wait_process(pid))) {
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

std::string duration(double s) { return coe::format_duration(s); }

// The resolved config.yaml coe-train wrote into the run directory: where its data was prepared.
std::string prepared_dir_of(const fs::path& run) {
  try {
    const YAML::Node n = YAML::LoadFile((run / "config.yaml").string());
    return n["data"]["prepared_dir"].as<std::string>();
  } catch (...) {
    return "";
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"coe-sweep: train the variants of a sweep file and summarise them (docs/sweeps.md)"};
  std::string sweep_path, out_dir;
  std::vector<std::string> only;
  bool dry_run = false, report_only = false, no_routing = false;
  app.add_option("sweep", sweep_path, "sweep file (YAML)")->required();
  app.add_option("--only", only, "run only this variant (repeatable; the report still lists all)");
  app.add_flag("--dry-run", dry_run, "validate every variant and print the commands; run nothing");
  app.add_flag("--report", report_only, "only (re)write summary.csv, summary.md and the plots");
  app.add_option("--out", out_dir, "sweep output directory (overrides out_dir)");
  app.add_flag("--no-routing", no_routing, "skip the coe-eval routing analysis");
  if (const int status = coe::cli::parse(app, argc, argv); status >= 0) return status;

  try {
    coe::SweepSpec spec = coe::load_sweep(sweep_path);
    if (!out_dir.empty()) spec.out_dir = out_dir;
    if (no_routing) spec.routing.enabled = false;
    // Every variant's full config is resolved before anything is launched.
    const std::vector<coe::TrainConfig> configs = coe::resolve_variants(spec);
    std::set<std::string> selected(only.begin(), only.end());
    for (const auto& name : selected) {
      bool found = false;
      for (const auto& v : spec.variants) found = found || v.name == name;
      if (!found) coe::fail("--only {}: no such variant in {}", name, sweep_path);
    }
    if (!dry_run && !report_only) coe::materialise_inline_base(spec);
    if (spec.inline_base.size() && dry_run)
      for (auto& v : spec.variants) v.config = (fs::path(spec.out_dir) / "base.yaml").string();

    auto train_command = [&](const coe::SweepVariant& v, bool resume) {
      std::vector<std::string> cmd{tool("coe-train").string(), path_arg(v.config)};
      for (const auto& o : v.overrides) cmd.insert(cmd.end(), {"--set", o});
      cmd.insert(cmd.end(), {"--out", path_arg(coe::variant_dir(spec, v))});
      if (resume) cmd.push_back("--resume");
      return cmd;
    };
    auto memory_command = [&](const coe::SweepVariant& v, const coe::TrainConfig& c) {
      const coe::MemoryOptions m = coe::sweep_memory_options(c, spec.memory);
      std::vector<std::string> cmd{tool("coe-memory").string(), path_arg(v.config)};
      for (const auto& o : v.overrides) cmd.insert(cmd.end(), {"--set", o});
      cmd.insert(cmd.end(), {"--micro-batch", std::to_string(m.micro_batch), "--seq", std::to_string(m.seq_len),
                             m.checkpointing ? "--checkpointing" : "--no-checkpointing", "--measure", "--json",
                             path_arg((fs::path(coe::variant_dir(spec, v)) / "memory.json").string())});
      return cmd;
    };
    auto routing_command = [&](const coe::SweepVariant& v, const coe::TrainConfig& c) {
      const fs::path dir = coe::variant_dir(spec, v);
      std::string data = spec.routing.data.empty() ? prepared_dir_of(dir) : spec.routing.data;
      return std::vector<std::string>{tool("coe-eval").string(),
                                      "--checkpoint",
                                      path_arg(dir.string()),
                                      "--data",
                                      path_arg(data),
                                      "--max-records",
                                      std::to_string(spec.routing.max_records),
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
    };

    auto status = coe::read_sweep_status(spec);
    // What every variant's run directory says, with the failures this sweep saw.
    auto collect_results = [&]() {
      std::vector<coe::VariantResult> results;
      for (size_t i = 0; i < spec.variants.size(); ++i) {
        coe::VariantResult r = coe::read_variant_result(spec, spec.variants[i], configs[i]);
        auto it = status.find(r.name);
        if (it != status.end() && r.status != "complete" && it->second.first.rfind("failed", 0) == 0) {
          r.status = it->second.first;
          r.exit_code = it->second.second;
        }
        results.push_back(std::move(r));
      }
      return results;
    };
    // Steps still to train per variant (total_steps less its newest checkpoint's step), for the
    // sweep's ETA; complete and unselected variants have none.
    std::vector<int64_t> steps_left(spec.variants.size(), 0);
    for (size_t i = 0; i < spec.variants.size(); ++i) {
      const fs::path dir = coe::variant_dir(spec, spec.variants[i]);
      if (fs::exists(dir / "final.json") || (!selected.empty() && !selected.count(spec.variants[i].name))) continue;
      const auto ckpt = coe::latest_checkpoint(dir.string());
      steps_left[i] = std::max<int64_t>(0, configs[i].trainer.total_steps - (ckpt ? ckpt->step : 0));
    }
    // The pace of the variants trained so far (wall-clock seconds per step).
    int64_t paced_steps = 0;
    double paced_seconds = 0;
    const auto sweep_start = std::chrono::steady_clock::now();
    bool any_failed = false;
    if (!report_only) {
      if (!dry_run) {
        struct sigaction sa {};
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, nullptr);
        sigaction(SIGTERM, &sa, nullptr);
      }
      const size_t n = spec.variants.size();
      for (size_t i = 0; i < n && !g_stop; ++i) {
        const coe::SweepVariant& v = spec.variants[i];
        const coe::TrainConfig& c = configs[i];
        if (!selected.empty() && !selected.count(v.name)) continue;
        const fs::path dir = coe::variant_dir(spec, v);
        const bool complete = fs::exists(dir / "final.json");
        const bool partial = !complete && coe::latest_checkpoint(dir.string()).has_value();
        const std::string tag = fmt::format("[{}/{}] {}", i + 1, n, v.name);
        if (dry_run) {
          fmt::print("{}: {}\n", tag, complete ? "complete (would skip)" : partial ? "partial (would resume)" : "new");
          if (!complete) fmt::print("  {}\n", command_line(train_command(v, partial)));
          const coe::ModelConfig model = coe::sweep_model(c);
          const coe::ParamCounts p = coe::count_parameters(model);
          const auto est = coe::estimate_memory(model, coe::sweep_memory_options(c, spec.memory));
          fmt::print("  params {:.2f}M, active/token {:.2f}M, memory estimate {}\n", double(p.total()) / 1e6,
                     double(p.active_per_token) / 1e6, coe::format_bytes(est.total_bytes()));
          continue;
        }
        if (complete) {
          fmt::print("{}: complete, skipped ({})\n", tag, (dir / "final.json").string());
          status[v.name] = {"complete", 0};
        } else {
          fmt::print("{}: {} -> {}\n", tag, partial ? "resuming" : "training", dir.string());
          std::fflush(stdout);
          const auto t0 = std::chrono::steady_clock::now();
          // Live progress from the run's metrics.jsonl / val.jsonl: on a terminal one line that
          // updates in place; otherwise (a log file, CI) a line per tenth of the run, and the last.
          coe::RunWatcher watcher(dir, c.trainer.total_steps);
          watcher.poll(0);
          const int columns = terminal_columns();
          int64_t last_printed_step = -1;
          std::optional<double> last_printed_val;
          int64_t last_tenth = c.trainer.total_steps > 0 ? watcher.step() * 10 / c.trainer.total_steps : 0;
          double last_print = -1;
          bool line_open = false;
          auto tick = [&](bool finished) {
            const double now = std::chrono::duration<double>(std::chrono::steady_clock::now() - sweep_start).count();
            watcher.poll(now);
            // (The final validation arrives after the last step: the last line shows it.)
            if (watcher.step() <= 0 ||
                (watcher.step() == last_printed_step && (!finished || watcher.val_loss() == last_printed_val))) {
              if (finished && line_open) fmt::print("\n");
              return;
            }
            std::optional<double> sweep_eta;
            int64_t later_steps = 0;
            for (size_t j = i + 1; j < n; ++j) later_steps += steps_left[j];
            if (const auto eta = watcher.eta_seconds(); eta && later_steps > 0) {
              const int64_t steps = paced_steps + watcher.paced_steps();
              const double secs = paced_seconds + watcher.paced_seconds();
              sweep_eta = *eta + secs / static_cast<double>(steps) * static_cast<double>(later_steps);
            }
            std::string line = coe::progress_line(tag, watcher, sweep_eta);
            if (columns > 0) {
              if (!finished && now - last_print < 0.5) return;
              if (line.size() >= static_cast<size_t>(columns)) line.resize(static_cast<size_t>(columns) - 1);
              fmt::print("\r\x1b[K{}{}", line, finished ? "\n" : "");
              line_open = !finished;
            } else {
              const int64_t tenth = watcher.step() * 10 / std::max<int64_t>(1, c.trainer.total_steps);
              if (!finished && tenth <= last_tenth) return;
              fmt::print("{}\n", line);
              last_tenth = tenth;
            }
            std::fflush(stdout);
            last_printed_step = watcher.step();
            last_printed_val = watcher.val_loss();
            last_print = now;
          };
          const int rc = run_logged(train_command(v, partial), dir / "train.log", tick);
          paced_steps += watcher.paced_steps();
          paced_seconds += watcher.paced_seconds();
          const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          if (rc == 0 && fs::exists(dir / "final.json")) {
            fmt::print("{}: done in {}\n", tag, duration(secs));
            status[v.name] = {"complete", 0};
          } else if (rc == 0 || g_stop) {
            fmt::print("{}: stopped after {} (checkpoint saved; run the sweep again to resume)\n", tag, duration(secs));
            status[v.name] = {"incomplete", rc};
          } else {
            any_failed = true;
            status[v.name] = {fmt::format("failed (exit {})", rc), rc};
            fmt::print(stderr, "{}: FAILED with exit status {} after {}; log: {}\n", tag, rc, duration(secs),
                       (dir / "train.log").string());
            for (const auto& line : tail_lines(dir / "train.log", 15)) fmt::print(stderr, "  | {}\n", line);
          }
          coe::write_sweep_status(spec, status);
        }
        if (!g_stop && fs::exists(dir / "final.json")) {
          // Post-training analyses, each run once (their output files mark them done).
          if (spec.memory.measure && !fs::exists(dir / "memory.json")) {
            fmt::print("{}: measuring memory (coe-memory --measure)\n", tag);
            std::fflush(stdout);
            const int rc = run_logged(memory_command(v, c), dir / "memory.log");
            if (rc != 0)
              fmt::print(stderr, "{}: coe-memory failed (exit {}); see {}\n", tag, rc, (dir / "memory.log").string());
          }
          if (spec.routing.enabled && !fs::exists(dir / "routing.json")) {
            fmt::print("{}: routing analysis (coe-eval --routing)\n", tag);
            std::fflush(stdout);
            const int rc = run_logged(routing_command(v, c), dir / "eval.log");
            if (rc != 0)
              fmt::print(stderr, "{}: coe-eval failed (exit {}); see {}\n", tag, rc, (dir / "eval.log").string());
          }
        }
        // The table so far after each variant this invocation trained, not only at the end.
        if (!complete) fmt::print("\n{}\n", coe::sweep_results_table(collect_results()));
        std::fflush(stdout);
      }
      if (dry_run) return 0;
    }

    // ---- report ----
    const std::vector<coe::VariantResult> results = collect_results();
    // A gnuplot script is a program (it may call system()): it comes from the environment or from
    // beside the binary, never from the working directory, which may be someone else's repository.
    const auto found_script = coe::find_plot_script("plot_sweep.gp", "COE_PLOT_SCRIPT");
    const std::string script = found_script ? found_script->string() : "";
    for (const auto& f : coe::write_sweep_summary(spec, results, script)) fmt::print("wrote {}\n", f);
    if (g_stop) return 130;
    return any_failed ? 1 : 0;
  } catch (const std::exception& e) {
    return coe::cli::report(e);
  }
}
