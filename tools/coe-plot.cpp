// coe-plot: PNG plots of one or more training runs from their metrics.jsonl and val.jsonl, and a
// heatmap of the expert load from a `coe-eval --routing` file. See docs/training.md#watching-a-run.
//
//   coe-plot RUN_DIR... [--out DIR] [--routing FILE] [--smoothing W]
//
// Writes into DIR (default RUN_DIR/plots for one run; required for several): loss.png (raw and
// EMA-smoothed training loss), val_loss.png (when a run has validations), lr.png, grad_norm.png,
// tokens_per_s.png, and expert_load.png (expert_load-<run>.png for several runs) for each run with
// a routing file; beside them the data the plots are drawn from (train-<i>.dat, val-<i>.dat,
// expert_load-<i>.dat, runs.txt naming run i) and gnuplot.log. Runs are overlaid, named by their
// directory. A run that is still training is read up to its last complete line.
//
// Exit status 0 when every PNG was drawn; 1 with one line "error: ..." for bad input, or when
// gnuplot (or tools/plot_run.gp) is missing or fails, or a PNG it drew is incomplete (truncated on
// a full disk: removed, never given its name): the data files are written all the same, and the
// message says where they are.
#include "cli.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/json_limits.h"
#include "coe/util/run_files.h"
#include "coe/util/subprocess.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

struct LoadRow {
  int64_t layer = 0, iteration = 0;
  std::vector<double> load;
};

struct Run {
  fs::path dir;
  std::string title;  // the legend name: the directory's name
  std::vector<coe::MetricsRow> metrics;
  std::vector<coe::ValRow> val;
  fs::path routing_file;  // empty: no heatmap
  std::vector<LoadRow> load;
};

// "runs/x/" and "runs/x" are both named x; "." is named after the working directory.
std::string dir_name(const fs::path& dir) {
  fs::path p = dir.lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  if (p.empty() || p == "." || p == "..") p = fs::absolute(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().empty() ? p.string() : p.filename().string();
}

// A legend title holds no line breaks (TITLES reaches plot_run.gp joined by newlines).
std::string printable(std::string s) {
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return s;
}

// A file name made from a run's name: [A-Za-z0-9._-], anything else '_'.
std::string file_safe(const std::string& s) {
  std::string out;
  for (char c : s) out += std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' ? c : '_';
  return out.empty() || out[0] == '.' ? "run" + out : out;
}

// A number for a gnuplot data file; "?" (set datafile missing) for absent or non-finite values.
std::string num(const std::optional<double>& v) {
  return v && std::isfinite(*v) ? fmt::format("{:.9g}", *v) : std::string("?");
}

// The "routing" array of a coe-eval --json / --routing file (util/run_files.h): expert load per
// layer and iteration, each relative to its mean.
std::vector<LoadRow> read_routing(const fs::path& path) {
  std::vector<LoadRow> rows;
  for (const coe::IterationRouting& it : coe::read_routing_report(path).routing) {
    LoadRow row{it.layer, it.iteration, {}};
    double total = 0;
    for (int64_t v : it.expert_load) total += static_cast<double>(v);
    const double mean = total / static_cast<double>(it.expert_load.size());
    for (int64_t v : it.expert_load) row.load.push_back(mean > 0 ? static_cast<double>(v) / mean : 0);
    rows.push_back(std::move(row));
  }
  if (rows.empty()) coe::fail("{}: \"routing\" is empty (a dense model routes nothing)", path.string());
  return rows;
}

// TensorBoard-style exponential moving average, debiased so that it starts at the first value:
// ema_t = (w * m_{t-1} + (1 - w) * x_t) / (1 - w^t). Absent and non-finite values are skipped.
std::vector<std::optional<double>> smoothed(const std::vector<std::optional<double>>& values, double weight) {
  std::vector<std::optional<double>> out;
  double m = 0, debias = 1;
  bool any = false;
  for (const auto& v : values) {
    if (v && std::isfinite(*v)) {
      m = weight * m + (1 - weight) * *v;
      debias *= weight;
      any = true;
    }
    out.push_back(any ? std::optional<double>(m / (1 - debias)) : std::nullopt);
  }
  return out;
}

void write_data_files(const fs::path& out, const std::vector<Run>& runs, double smoothing) {
  std::string index = "# run title directory\n";
  for (size_t i = 0; i < runs.size(); ++i) {
    const Run& r = runs[i];
    const size_t n = i + 1;
    index += fmt::format("{} {} {}\n", n, r.title, r.dir.string());
    std::string train = fmt::format(
        "# {}: step loss loss_ema(weight {}) lr grad_norm tokens_per_s aux_loss tokens_per_s_ema(weight {})\n",
        r.dir.string(), smoothing, smoothing);
    std::vector<std::optional<double>> losses, throughput;
    for (const auto& m : r.metrics) {
      losses.push_back(m.loss);
      throughput.push_back(m.tokens_per_s);
    }
    const auto ema = smoothed(losses, smoothing), tps_ema = smoothed(throughput, smoothing);
    for (size_t k = 0; k < r.metrics.size(); ++k) {
      const auto& m = r.metrics[k];
      train += fmt::format("{} {} {} {} {} {} {} {}\n", m.step, num(m.loss), num(ema[k]), num(m.lr), num(m.grad_norm),
                           num(m.tokens_per_s), num(m.router_loss("aux_loss")), num(tps_ema[k]));
    }
    coe::write_file_atomic(out / fmt::format("train-{}.dat", n), train);
    if (!r.val.empty()) {
      std::string val = fmt::format("# {}: step val_loss\n", r.dir.string());
      for (const auto& v : r.val) val += fmt::format("{} {}\n", v.step, num(v.val_loss));
      coe::write_file_atomic(out / fmt::format("val-{}.dat", n), val);
    }
    if (!r.load.empty()) {
      // A matrix with headers: the corner, the expert numbers; then per layer/iteration its label
      // and each expert's load / mean load.
      std::string m = "layer/iter";
      for (size_t e = 0; e < r.load.front().load.size(); ++e) m += fmt::format(" {}", e);
      m += "\n";
      for (const auto& row : r.load) {
        m += fmt::format("\"L{} i{}\"", row.layer, row.iteration);
        for (double v : row.load) m += fmt::format(" {:.6g}", v);
        m += "\n";
      }
      coe::write_file_atomic(out / fmt::format("expert_load-{}.dat", n), m);
    }
  }
  coe::write_file_atomic(out / "runs.txt", index);
}

}  // namespace

static int tool_main(int argc, char** argv) {
  CLI::App app{"coe-plot: PNG plots of training runs from metrics.jsonl / val.jsonl (docs/training.md)"};
  std::vector<std::string> run_dirs;
  std::string out_dir, routing;
  double smoothing = 0.9;
  app.add_option("run_dirs", run_dirs, "run directories (coe-train's trainer.out_dir)")->required();
  app.add_option("--out", out_dir, "where the PNGs and their data go (default: RUN_DIR/plots for one run)")
      ->check(coe::cli::non_empty());
  app.add_option("--routing", routing,
                 "a coe-eval --routing (or --json) file for the expert-load heatmap (one RUN_DIR only; "
                 "default: RUN_DIR/routing.json, else RUN_DIR/eval.json, when present)");
  app.add_option("--smoothing", smoothing, "weight of the training loss's moving average, in [0, 1)")
      ->check(CLI::Range(0.0, 0.999));
  if (const int status = coe::cli::parse(app, argc, argv); status >= 0) return status;

  try {
    if (!routing.empty() && run_dirs.size() > 1)
      coe::fail("--routing {}: only with one run directory ({} given)", routing, run_dirs.size());
    if (out_dir.empty() && run_dirs.size() > 1)
      coe::fail("{} run directories: give --out DIR for their plots", run_dirs.size());

    std::vector<Run> runs;
    std::map<std::string, int> title_count;
    for (const auto& d : run_dirs) {
      Run r;
      r.dir = d;
      std::error_code ec;
      if (!fs::is_directory(r.dir, ec)) coe::fail("{}: not a directory", d);
      const fs::path metrics = r.dir / "metrics.jsonl";
      if (!fs::exists(metrics, ec))
        coe::fail("{}: no metrics.jsonl (not a coe-train run directory, or its first step has not finished)", d);
      r.metrics = coe::read_metrics_file(metrics);
      if (r.metrics.empty()) coe::fail("{}: no complete line yet (the first step has not finished)", metrics.string());
      r.val = coe::read_val_file(r.dir / "val.jsonl");
      if (!routing.empty()) {
        r.routing_file = routing;
      } else {
        for (const char* name : {"routing.json", "eval.json"})
          if (fs::is_regular_file(r.dir / name, ec)) {
            r.routing_file = r.dir / name;
            break;
          }
      }
      if (!r.routing_file.empty()) r.load = read_routing(r.routing_file);
      r.title = printable(dir_name(r.dir));
      ++title_count[r.title];
      runs.push_back(std::move(r));
    }
    // Two runs of the same name (runs/a/x, runs/b/x) are told apart by their paths.
    for (auto& r : runs)
      if (title_count[r.title] > 1) r.title = printable(r.dir.lexically_normal().string());

    const fs::path out = fs::absolute(out_dir.empty() ? runs.front().dir / "plots" : fs::path(out_dir));
    std::error_code ec;
    fs::create_directories(out, ec);
    if (ec) coe::fail("--out {}: cannot create: {}", out.string(), ec.message());
    write_data_files(out, runs, smoothing);

    // The PNGs to expect, by the name plot_run.gp draws and the name they get. A curve that no run
    // logged (a metrics.jsonl written by hand, without grad_norm) is skipped, and said so: gnuplot
    // cannot draw a plot without a single point.
    using Field = std::optional<double> (*)(const coe::MetricsRow&);
    const std::pair<const char*, Field> curves[] = {
        {"loss", [](const coe::MetricsRow& m) { return std::optional<double>(m.loss); }},
        {"lr", [](const coe::MetricsRow& m) { return m.lr; }},
        {"grad_norm", [](const coe::MetricsRow& m) { return m.grad_norm; }},
        {"tokens_per_s", [](const coe::MetricsRow& m) { return m.tokens_per_s; }}};
    std::vector<std::pair<std::string, std::string>> pngs;
    std::string skipped;
    for (const auto& [name, field] : curves) {
      bool any = false;
      for (const Run& r : runs)
        for (const auto& m : r.metrics) any = any || (field(m) && std::isfinite(*field(m)));
      if (any) {
        pngs.push_back({name, std::string(name) + ".png"});
      } else {
        skipped += (skipped.empty() ? "" : " ") + std::string(name);
        fmt::print("skipped {}.png: no run logged {}\n", name, name);
      }
    }
    std::string val_runs, heatmaps, titles;
    std::set<std::string> heatmap_names;
    for (size_t i = 0; i < runs.size(); ++i) {
      const std::string n = std::to_string(i + 1);
      titles += (i ? "\n" : "") + runs[i].title;
      if (!runs[i].val.empty()) val_runs += (val_runs.empty() ? "" : " ") + n;
      if (runs[i].load.empty()) continue;
      heatmaps += (heatmaps.empty() ? "" : " ") + n;
      std::string name = runs.size() == 1 ? "expert_load.png" : "expert_load-" + file_safe(runs[i].title) + ".png";
      if (!heatmap_names.insert(name).second) name = "expert_load-" + n + ".png";
      pngs.push_back({"expert_load-" + n, name});
    }
    if (!val_runs.empty()) pngs.push_back({"val_loss", "val_loss.png"});

    const std::string where = fmt::format("the data files are in {}", out.string());
    const auto script = coe::find_plot_script("plot_run.gp", "COE_PLOT_RUN_SCRIPT");
    if (!coe::find_gnuplot()) coe::fail("gnuplot is not installed (apt-get install gnuplot-nox); {}", where);
    if (!script) coe::fail("the gnuplot script plot_run.gp was not found (set COE_PLOT_RUN_SCRIPT); {}", where);

    const fs::path log = out / "gnuplot.log";
    coe::write_file_atomic(log, "");
    const std::string suffix = ".tmp-" + std::to_string(::getpid());
    const int rc = coe::run_gnuplot(*script,
                                    {out.string(), suffix, std::to_string(runs.size()), titles, val_runs, heatmaps,
                                     fmt::format("{}", smoothing), skipped},
                                    log);
    // A PNG gets its name only when complete (coe::install_png): gnuplot exits 0 after writing
    // a truncated one on a full disk.
    std::vector<std::string> missing, problems;
    for (const auto& [drawn, name] : pngs) {
      const fs::path tmp = out / (drawn + ".png" + suffix);
      if (rc != 0) {
        fs::remove(tmp, ec);
        missing.push_back(name);
      } else if (const auto problem = coe::install_png(tmp, out / name)) {
        missing.push_back(name);
        problems.push_back(*problem);
      } else {
        fmt::print("wrote {}\n", (out / name).string());
      }
    }
    if (rc != 0)
      coe::fail("gnuplot failed (exit {}) and did not draw {}; see {}; {}", rc, fmt::join(missing, ", "), log.string(),
                where);
    if (!problems.empty())
      coe::fail("{}{}; see {}; {}", problems.front(),
                missing.size() > 1
                    ? fmt::format("; not written either: {}", fmt::join(missing.begin() + 1, missing.end(), ", "))
                    : std::string(),
                log.string(), where);
    return 0;
  } catch (const std::exception& e) {
    return coe::cli::report(e);
  }
}

int main(int argc, char** argv) { return coe::cli::exit_status(tool_main(argc, argv)); }
