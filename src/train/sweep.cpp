#include "coe/train/sweep.h"

#include "coe/util/run_files.h"

#include "coe/model/chunked_loss.h"
#include "coe/train/model_vocab.h"
#include "coe/util/config_reader.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/json_limits.h"
#include "coe/util/subprocess.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace fs = std::filesystem;

namespace coe {
namespace {

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string fmt_loss(const std::optional<double>& v) { return v ? fmt::format("{:.4f}", *v) : std::string("-"); }

std::string fmt_millions(int64_t v) { return fmt::format("{:.2f}M", double(v) / 1e6); }

std::string pct(double value, double base) {
  if (!(base > 0)) return "-";
  return fmt::format("{:.1f}%", 100.0 * value / base);
}

}  // namespace

namespace {

// The inline base of a sweep file as written there (its lines name the sweep file's), or as
// load_sweep kept it.
YAML::Node inline_base_node(const SweepSpec& spec) {
  try {
    const YAML::Node base = load_yaml_file(spec.file)["base"];
    if (base && base.IsMap()) return base;
  } catch (const std::exception&) {
  }
  return YAML::Load(spec.inline_base);
}

}  // namespace

std::vector<TrainConfig> resolve_variants(const SweepSpec& spec) {
  std::vector<TrainConfig> out;
  for (const auto& v : spec.variants) {
    try {
      if (!v.config.empty()) {
        out.push_back(load_train_config(v.config, v.overrides, v.override_origins));
      } else {
        out.push_back(parse_train_config(inline_base_node(spec), spec.file, v.overrides, v.override_origins));
      }
      TrainConfig& c = out.back();
      // Once per variant: the tables and memory estimates below reuse the resolved vocabulary.
      resolve_model_vocab(c);
      c.model.validate(c.source);
    } catch (const std::exception& e) {
      const std::string message = first_line(e);
      // An error located in the sweep file (an override, the inline base) names its line first;
      // its key path names the variant.
      if (message.rfind(spec.file + ":", 0) == 0) throw Error(message);
      fail("{}: variant '{}': {}", spec.file, v.name, message);
    }
  }
  return out;
}

void materialise_inline_base(SweepSpec& spec) {
  if (spec.inline_base.empty()) return;
  fs::create_directories(spec.out_dir);
  const fs::path base = fs::path(spec.out_dir) / "base.yaml";
  // The sweep file's name goes into a comment: one line, whatever characters it has.
  std::string source = spec.file;
  std::replace(source.begin(), source.end(), '\n', ' ');
  write_file_atomic(base,
                    "# The inline base config of " + source + " (written by coe-sweep).\n" + spec.inline_base + "\n");
  for (auto& v : spec.variants)
    if (v.config.empty()) v.config = base.string();
}

std::string variant_dir(const SweepSpec& spec, const SweepVariant& variant) {
  return (fs::path(spec.out_dir) / variant.name).string();
}

ModelConfig sweep_model(const TrainConfig& config) {
  TrainConfig resolved = config;
  resolve_model_vocab(resolved);
  return resolved.model;
}

MemoryOptions sweep_memory_options(const TrainConfig& config, const SweepMemory& memory) {
  TrainConfig resolved = config;
  resolve_model_vocab(resolved);
  MemoryOptions o = memory_options(resolved);
  o.micro_batch = memory.micro_batch.value_or(o.micro_batch);
  o.seq_len = memory.seq.value_or(o.seq_len);
  o.checkpointing = memory.checkpointing.value_or(o.checkpointing);
  return o;
}

namespace {

// The texts of the states; a failure's also carries its exit status.
constexpr std::pair<VariantStatus::State, const char*> kStateNames[] = {
    {VariantStatus::State::kNotRun, "not run"},
    {VariantStatus::State::kComplete, "complete"},
    {VariantStatus::State::kIncomplete, "incomplete"},
    {VariantStatus::State::kFailed, "failed"},
};

}  // namespace

std::string to_string(const VariantStatus& status) {
  for (const auto& [state, name] : kStateNames) {
    if (state != status.state) continue;
    if (state == VariantStatus::State::kFailed) return fmt::format("{} (exit {})", name, status.exit_code);
    return name;
  }
  return "?";
}

std::optional<VariantStatus> parse_variant_status(const std::string& text, int exit_code) {
  for (const auto& [state, name] : kStateNames) {
    const bool match = state == VariantStatus::State::kFailed ? text.rfind(name, 0) == 0 : text == name;
    if (match) return VariantStatus{state, exit_code};
  }
  return std::nullopt;
}

SweepStatus read_sweep_status(const SweepSpec& spec) {
  SweepStatus out;
  const fs::path p = fs::path(spec.out_dir) / "sweep-status.json";
  if (!fs::exists(p)) return out;
  try {
    const nlohmann::json j = read_json_file(p.string(), "a sweep-status.json");
    for (const auto& [name, v] : j.items())
      if (auto s = parse_variant_status(v.value("status", ""), v.value("exit_code", 0))) out[name] = *s;
  } catch (...) {
    // A damaged status file only loses the "failed" labels of earlier invocations.
  }
  return out;
}

void write_sweep_status(const SweepSpec& spec, const SweepStatus& status) {
  fs::create_directories(spec.out_dir);
  nlohmann::ordered_json j;
  for (const auto& [name, s] : status) j[name] = {{"status", to_string(s)}, {"exit_code", s.exit_code}};
  write_file_atomic(fs::path(spec.out_dir) / "sweep-status.json", j.dump(2) + "\n");
}

VariantResult read_variant_result(const SweepSpec& spec, const SweepVariant& variant, const TrainConfig& config) {
  VariantResult r;
  r.name = variant.name;
  r.total_steps = config.trainer.total_steps;
  const fs::path dir = variant_dir(spec, variant);
  const ModelConfig model = sweep_model(config);
  const ParamCounts p = count_parameters(model);
  r.params_total = p.total();
  r.params_active = p.active_per_token;
  r.estimate_bytes = estimate_memory(model, sweep_memory_options(config, spec.memory)).total_bytes();

  // The run directory's files through their one schema (util/run_files.h); a file that does not
  // read is a note in the report, not a failure of the sweep.
  try {
    for (const ValRow& v : read_val_file(dir / "val.jsonl")) r.val_curve.push_back({v.step, v.val_loss});
  } catch (const Error& e) {
    r.notes.push_back(fmt::format("val.jsonl unreadable: {}", e.what()));
  }
  if (fs::exists(dir / "final.json")) {
    r.status = "complete";
    try {
      const FinalSummary f = read_final_summary(dir / "final.json");
      r.steps = f.steps;
      r.final_val_loss = f.final_val_loss;
      r.best_val_loss = f.best_val_loss;
      r.tokens = f.tokens;
      r.tokens_per_s = f.tokens_per_s;
      if (f.peak_memory_bytes) {
        r.measured_peak_bytes = *f.peak_memory_bytes;
        r.measured_source = "final.json";
      }
    } catch (const Error& e) {
      r.notes.push_back(fmt::format("final.json unreadable: {}", e.what()));
    }
  } else {
    try {
      const std::vector<MetricsRow> metrics =
          fs::exists(dir / "metrics.jsonl") ? read_metrics_file(dir / "metrics.jsonl") : std::vector<MetricsRow>{};
      if (!metrics.empty()) r.status = "incomplete";
      double tps = 0;
      for (const MetricsRow& m : metrics) {
        r.steps = m.step;
        r.tokens += m.tokens.value_or(0);
        tps += m.tokens_per_s.value_or(0.0);
      }
      if (!metrics.empty()) r.tokens_per_s = tps / double(metrics.size());
    } catch (const Error& e) {
      r.notes.push_back(fmt::format("metrics.jsonl unreadable: {}", e.what()));
    }
    if (!r.val_curve.empty()) {
      r.final_val_loss = r.val_curve.back().second;
      double best = r.val_curve.front().second;
      for (const auto& [s, v] : r.val_curve) best = std::min(best, v);
      r.best_val_loss = best;
    }
  }
  if (fs::exists(dir / "memory.json")) {
    try {
      const auto j = read_json_file((dir / "memory.json").string(), "a memory.json");
      if (j.contains("measured_peak_bytes")) {
        r.measured_peak_bytes = j["measured_peak_bytes"].get<int64_t>();
        r.measured_source = j.value("measured_source", std::string("coe-memory --measure"));
      }
    } catch (...) {
      r.notes.push_back("memory.json unreadable");
    }
  }
  if (fs::exists(dir / "routing.json")) {
    try {
      const RoutingReport routing = read_routing_report(dir / "routing.json");
      for (const LayerChain& c : routing.chains) {
        r.distinct_expert_sets.push_back(c.distinct_expert_sets);
        r.unique_experts_per_token.push_back(c.mean_unique_experts);
      }
      if (routing.combinatorial_bound) {
        r.bound_formula = routing.combinatorial_bound->formula;
        r.bound_value = routing.combinatorial_bound->value;
      }
    } catch (const Error& e) {
      r.notes.push_back(fmt::format("routing.json unreadable: {}", e.what()));
    }
  }
  return r;
}

std::string sweep_results_table(const std::vector<VariantResult>& results) {
  std::string md =
      "| variant | status | steps | final val loss | best val loss | tokens | tokens/s | params | active params/token "
      "| memory estimate | measured peak |\n"
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
  for (const auto& r : results)
    md += fmt::format("| {} | {} | {}/{} | {} | {} | {} | {:.0f} | {} | {} | {} | {} |\n", r.name, r.status, r.steps,
                      r.total_steps, fmt_loss(r.final_val_loss), fmt_loss(r.best_val_loss), r.tokens, r.tokens_per_s,
                      fmt_millions(r.params_total), fmt_millions(r.params_active), format_bytes(r.estimate_bytes),
                      r.measured_peak_bytes ? format_bytes(*r.measured_peak_bytes) : std::string("-"));
  return md;
}

namespace {

// The baseline's result (nullptr when results has none).
const VariantResult* find_baseline(const SweepSpec& spec, const std::vector<VariantResult>& results) {
  const VariantResult* base = nullptr;
  for (const auto& r : results)
    if (r.name == spec.baseline) base = &r;
  return base;
}

// bars.dat: parameters, active parameters and memory of every variant as % of the baseline's.
std::string relative_bars(const SweepSpec& spec, const std::vector<VariantResult>& results, const VariantResult* base,
                          bool measured) {
  std::string bars =
      fmt::format("# variant params% active% memory_estimate% memory_measured% (relative to {})\n", spec.baseline);
  auto rel = [&](double v, double b) { return b > 0 ? fmt::format("{:.3f}", 100.0 * v / b) : std::string("?"); };
  for (const auto& r : results) {
    bars += fmt::format("{} {} {} {} {}\n", r.name, rel(double(r.params_total), base ? double(base->params_total) : 0),
                        rel(double(r.params_active), base ? double(base->params_active) : 0),
                        rel(double(r.estimate_bytes), base ? double(base->estimate_bytes) : 0),
                        measured && r.measured_peak_bytes
                            ? rel(double(*r.measured_peak_bytes), double(*base->measured_peak_bytes))
                            : std::string("?"));
  }
  return bars;
}

// summary.md's "Relative to <baseline>" section.
std::string relative_table(const SweepSpec& spec, const std::vector<VariantResult>& results,
                           const VariantResult& base) {
  std::string md = fmt::format("\n## Relative to {}\n\n", spec.baseline);
  md += "| variant | params | active params/token | memory estimate | measured peak | best val loss - baseline |\n";
  md += "| --- | --- | --- | --- | --- | --- |\n";
  for (const auto& r : results) {
    std::string dv = "-";
    if (r.best_val_loss && base.best_val_loss) dv = fmt::format("{:+.4f}", *r.best_val_loss - *base.best_val_loss);
    md +=
        fmt::format("| {} | {} | {} | {} | {} | {} |\n", r.name, pct(double(r.params_total), double(base.params_total)),
                    pct(double(r.params_active), double(base.params_active)),
                    pct(double(r.estimate_bytes), double(base.estimate_bytes)),
                    r.measured_peak_bytes && base.measured_peak_bytes
                        ? pct(double(*r.measured_peak_bytes), double(*base.measured_peak_bytes))
                        : std::string("-"),
                    dv);
  }
  return md;
}

// summary.md's routing section ("" when no variant has a routing analysis).
std::string routing_table(const std::vector<VariantResult>& results) {
  bool any_routing = false;
  for (const auto& r : results) any_routing = any_routing || !r.distinct_expert_sets.empty() || r.bound_value;
  if (!any_routing) return "";
  std::string md = "\n## Routing (coe-eval --routing on the final checkpoint)\n\n";
  md += "| variant | distinct expert sets per layer | unique experts per token | combinatorial bound |\n";
  md += "| --- | --- | --- | --- |\n";
  for (const auto& r : results) {
    std::string sets, uniq;
    for (size_t i = 0; i < r.distinct_expert_sets.size(); ++i) {
      sets += (i ? ", " : "") + std::to_string(r.distinct_expert_sets[i]);
      uniq += (i ? ", " : "") + fmt::format("{:.2f}", r.unique_experts_per_token[i]);
    }
    md += fmt::format("| {} | {} | {} | {} |\n", r.name, sets.empty() ? "-" : sets, uniq.empty() ? "-" : uniq,
                      r.bound_value ? fmt::format("{} = {:.4g}", r.bound_formula, *r.bound_value) : std::string("-"));
  }
  return md;
}

}  // namespace

std::vector<std::string> write_sweep_summary(const SweepSpec& spec, const std::vector<VariantResult>& results,
                                             const std::string& plot_script) {
  fs::create_directories(spec.out_dir);
  const fs::path out(spec.out_dir);
  std::vector<std::string> written;
  write_file_atomic(out / "summary.csv", sweep_summary_csv(results));
  written.push_back((out / "summary.csv").string());
  const SweepPlots plots = draw_sweep_plots(spec, results, plot_script);
  for (const auto& p : plots.pngs) written.push_back((out / p).string());
  write_file_atomic(out / "summary.md", sweep_summary_md(spec, results, plots));
  written.push_back((out / "summary.md").string());
  return written;
}

std::string sweep_summary_csv(const std::vector<VariantResult>& results) {
  std::ostringstream csv;
  csv << "variant,status,steps,total_steps,final_val_loss,best_val_loss,tokens,tokens_per_s,params_total,"
         "params_active_per_token,estimate_bytes,measured_peak_bytes,distinct_expert_sets,combinatorial_bound\n";
  for (const auto& r : results) {
    std::string sets;
    for (size_t i = 0; i < r.distinct_expert_sets.size(); ++i)
      sets += (i ? ";" : "") + std::to_string(r.distinct_expert_sets[i]);
    csv << csv_field(r.name) << ',' << csv_field(r.status) << ',' << r.steps << ',' << r.total_steps << ','
        << (r.final_val_loss ? fmt::format("{:.6f}", *r.final_val_loss) : "") << ','
        << (r.best_val_loss ? fmt::format("{:.6f}", *r.best_val_loss) : "") << ',' << r.tokens << ','
        << fmt::format("{:.1f}", r.tokens_per_s) << ',' << r.params_total << ',' << r.params_active << ','
        << r.estimate_bytes << ',' << (r.measured_peak_bytes ? std::to_string(*r.measured_peak_bytes) : "") << ','
        << csv_field(sets) << ',' << (r.bound_value ? fmt::format("{:.6g}", *r.bound_value) : "") << '\n';
  }
  return csv.str();
}

SweepPlots draw_sweep_plots(const SweepSpec& spec, const std::vector<VariantResult>& results,
                            const std::string& plot_script) {
  SweepPlots plots;
  if (plot_script.empty()) {
    plots.note = "the gnuplot script tools/plot_sweep.gp was not found (set COE_PLOT_SCRIPT)";
    return plots;
  }
  if (!find_gnuplot()) {
    plots.note = "gnuplot is not installed (apt-get install gnuplot-nox)";
    return plots;
  }
  const fs::path out(spec.out_dir);
  // Absolute paths: gnuplot would open a relative name starting with '<' or '|' through a shell.
  const fs::path abs_out = fs::absolute(out);
  const fs::path data = abs_out / "plots";
  fs::create_directories(data);
  std::string names;
  for (const auto& r : results) {
    if (r.val_curve.empty()) continue;
    std::string dat = "# step val_loss\n";
    for (const auto& [s, v] : r.val_curve) dat += fmt::format("{} {:.6f}\n", s, v);
    write_file_atomic(data / ("val-" + r.name + ".dat"), dat);
    names += (names.empty() ? "" : " ") + r.name;
  }
  const VariantResult* base = find_baseline(spec, results);
  const bool measured = base && base->measured_peak_bytes;
  write_file_atomic(data / "bars.dat", relative_bars(spec, results, base, measured));
  // gnuplot draws into fresh names; a finished PNG replaces the previous one by rename.
  const std::string tmp = ".tmp-" + std::to_string(::getpid());
  const char* const png_names[] = {"val_loss.png", "relative.png"};
  const fs::path log = data / "gnuplot.log";
  int rc = 0;
  try {
    write_file_atomic(log, "");
    rc = run_gnuplot(plot_script,
                     {data.string(), (abs_out / (png_names[0] + tmp)).string(),
                      (abs_out / (png_names[1] + tmp)).string(), names, spec.baseline, spec.name, measured ? "1" : "0"},
                     log);
  } catch (const Error& e) {
    plots.note = e.what();
    rc = -1;
  }
  // A PNG gets its name only when complete (install_png): gnuplot exits 0 after writing a
  // truncated one on a full disk.
  std::vector<std::string> problems;
  for (const char* png : png_names) {
    const fs::path drawn = abs_out / (png + tmp);
    std::error_code ec;
    const bool expected = png != png_names[0] || !names.empty();  // no curves: no val_loss.png
    if (rc != 0 || !expected) {
      fs::remove(drawn, ec);
    } else if (const auto problem = install_png(drawn, out / png)) {
      problems.push_back(*problem);
    } else {
      plots.pngs.push_back(png);
    }
  }
  if (plots.note.empty() && rc != 0) plots.note = fmt::format("gnuplot failed (exit {}); see {}", rc, log.string());
  if (plots.note.empty() && !problems.empty())
    plots.note = fmt::format("{}; see {}", fmt::join(problems, "; "), log.string());
  return plots;
}

std::string sweep_summary_md(const SweepSpec& spec, const std::vector<VariantResult>& results,
                             const SweepPlots& plots) {
  std::string md;
  md += fmt::format("# Sweep {}\n\nSweep file: `{}`. Run directories: `{}/<variant>/`. Baseline: `{}`.\n\n", spec.name,
                    spec.file, spec.out_dir, spec.baseline);
  md += sweep_results_table(results);
  const auto& mem = spec.memory;
  md += fmt::format(
      "\nMemory estimate: `coe-memory`'s analytical training total (docs/memory.md) at micro-batch {}, sequence {}, "
      "checkpointing {} (defaults: each variant's trainer.micro_batch, data.max_length, "
      "trainer.activation_checkpointing). Measured peak: {}.\n",
      mem.micro_batch ? std::to_string(*mem.micro_batch) : "(config)", mem.seq ? std::to_string(*mem.seq) : "(config)",
      mem.checkpointing ? (*mem.checkpointing ? "on" : "off") : "(config)",
      mem.measure ? "`coe-memory --measure` after training, same settings (CUDA: caching-allocator peak; CPU: peak "
                    "live tensor storage)"
                  : "not measured (set memory.measure: true)");
  if (const VariantResult* base = find_baseline(spec, results)) md += relative_table(spec, results, *base);
  md += routing_table(results);
  md += fmt::format(
      "\nCombinatorial bound: C(N,K)^C / C(N,C*K) counts ordered sequences of C expert sets of size K against "
      "unordered sets of C*K experts. The paper's \"823x\" is quoted for C(64,4)^2 / C(64,8), which evaluates to "
      "{:.1f}; coe-eval uses the routed-expert count N = n_routed_experts.\n",
      combinatorial_ratio(64, 4, 2));

  md += "\n## Plots\n\n";
  if (!plots.pngs.empty()) {
    for (const auto& p : plots.pngs) md += fmt::format("![{}]({})\n\n", p, p);
    md += fmt::format("Data behind them: `{}/plots/` (val-<variant>.dat, bars.dat).\n", spec.out_dir);
  } else {
    md += "Plots skipped: " + plots.note + ".\n";
  }
  bool any_notes = false;
  for (const auto& r : results) any_notes = any_notes || !r.notes.empty();
  if (any_notes) {
    md += "\n## Notes\n\n";
    for (const auto& r : results)
      for (const auto& n : r.notes) md += fmt::format("- {}: {}\n", r.name, n);
  }
  return md;
}

}  // namespace coe
