#include "coe/train/sweep_summary.h"

#include "coe/model/chunked_loss.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/format.h"
#include "coe/util/subprocess.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
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

std::string fmt_load(const std::optional<double>& v) { return v ? fmt::format("{:.2f}", *v) : std::string("-"); }

// A CSV number: "" when absent.
std::string csv_num(const std::optional<double>& v, const char* spec = "{:.6f}") {
  return v ? fmt::format(fmt::runtime(spec), *v) : std::string();
}

bool is_complete(const VariantResult& r) { return r.status == "complete"; }

// The variant a run belongs to (a result made without a sweep file may leave `variant` empty).
const std::string& variant_of(const VariantResult& r) { return r.variant.empty() ? r.name : r.variant; }

double mean_of(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  return v.empty() ? 0 : sum / double(v.size());
}

// "complete" when every run is; else how many are complete, and the others by status.
std::string summary_status(const std::vector<const VariantResult*>& runs) {
  if (runs.size() == 1) return runs.front()->status;
  std::map<std::string, int64_t> by_status;
  int64_t complete = 0;
  for (const VariantResult* r : runs) {
    if (is_complete(*r)) {
      ++complete;
    } else {
      ++by_status[r->status.rfind("failed", 0) == 0 ? std::string("failed") : r->status];
    }
  }
  if (complete == int64_t(runs.size())) return "complete";
  std::string s = fmt::format("{}/{} complete", complete, runs.size());
  for (const auto& [status, n] : by_status) s += fmt::format(", {} {}", n, status);
  return s;
}

// The mean curve and its interval over `runs`: at every step one of them logged, over those that did.
std::vector<CurvePoint> mean_curve(const std::vector<const VariantResult*>& runs) {
  std::map<int64_t, std::vector<double>> at;
  for (const VariantResult* r : runs)
    for (const auto& [step, loss] : r->val_curve) at[step].push_back(loss);
  std::vector<CurvePoint> curve;
  for (const auto& [step, values] : at) {
    const MeanInterval m = *mean_interval(values);
    curve.push_back({step, m.mean, m.low.value_or(m.mean), m.high.value_or(m.mean), m.n});
  }
  return curve;
}

// seed -> loss of the complete runs (a run without a seed counts as seed 0: one run per variant).
std::map<int64_t, double> losses_by_seed(const std::vector<const VariantResult*>& runs,
                                         std::optional<double> VariantResult::*loss) {
  std::map<int64_t, double> out;
  for (const VariantResult* r : runs)
    if (is_complete(*r) && r->*loss) out[r->seed.value_or(0)] = *(r->*loss);
  return out;
}

std::optional<MeanInterval> interval_of(const std::map<int64_t, double>& by_seed) {
  std::vector<double> values;
  for (const auto& [seed, v] : by_seed) values.push_back(v);
  return mean_interval(values);
}

// One row for the variant from its runs (VariantSummary::result).
VariantResult variant_row(const std::string& name, const std::vector<const VariantResult*>& runs) {
  std::vector<const VariantResult*> used;
  for (const VariantResult* r : runs)
    if (is_complete(*r)) used.push_back(r);
  if (used.empty()) used = runs;
  const VariantResult& first = *runs.front();
  VariantResult row;
  row.name = row.variant = name;
  row.status = summary_status(runs);
  row.exit_code = first.exit_code;
  row.total_steps = first.total_steps;
  row.params_total = first.params_total;
  row.params_active = first.params_active;
  row.estimate_bytes = first.estimate_bytes;
  row.steps = first.steps;
  std::vector<double> finals, bests, tokens, tps, loads;
  for (const VariantResult* r : used) {
    row.steps = std::min(row.steps, r->steps);
    if (r->final_val_loss) finals.push_back(*r->final_val_loss);
    if (r->best_val_loss) bests.push_back(*r->best_val_loss);
    tokens.push_back(double(r->tokens));
    tps.push_back(r->tokens_per_s);
    if (r->load_max_over_mean) {
      loads.push_back(*r->load_max_over_mean);
      row.load_source = r->load_source;
    }
  }
  if (!finals.empty()) row.final_val_loss = mean_of(finals);
  if (!bests.empty()) row.best_val_loss = mean_of(bests);
  if (!loads.empty()) row.load_max_over_mean = mean_of(loads);
  row.tokens = int64_t(mean_of(tokens) + 0.5);
  row.tokens_per_s = mean_of(tps);
  for (const VariantResult* r : runs) {
    if (r->measured_peak_bytes && (!row.measured_peak_bytes || *r->measured_peak_bytes > *row.measured_peak_bytes)) {
      row.measured_peak_bytes = r->measured_peak_bytes;
      row.measured_source = r->measured_source;
    }
    if (row.distinct_expert_sets.empty() && !r->distinct_expert_sets.empty()) {
      row.distinct_expert_sets = r->distinct_expert_sets;
      row.unique_experts_per_token = r->unique_experts_per_token;
    }
    if (!row.bound_value && r->bound_value) {
      row.bound_formula = r->bound_formula;
      row.bound_value = r->bound_value;
    }
    for (const auto& n : r->notes) row.notes.push_back(runs.size() > 1 ? r->name + ": " + n : n);
  }
  return row;
}

}  // namespace

std::vector<VariantSummary> summarise_variants(const SweepSpec& spec, const std::vector<VariantResult>& runs) {
  std::vector<std::string> names = spec.variant_names;
  for (const auto& r : runs)
    if (std::find(names.begin(), names.end(), variant_of(r)) == names.end()) names.push_back(variant_of(r));
  std::map<std::string, std::vector<const VariantResult*>> of;
  for (const auto& r : runs) of[variant_of(r)].push_back(&r);
  const auto& base_runs = of[spec.baseline];
  const auto base_final = losses_by_seed(base_runs, &VariantResult::final_val_loss);
  const auto base_best = losses_by_seed(base_runs, &VariantResult::best_val_loss);

  std::vector<VariantSummary> out;
  for (const auto& name : names) {
    const auto& mine = of[name];
    if (mine.empty()) continue;
    VariantSummary s;
    s.result = variant_row(name, mine);
    s.runs = int64_t(mine.size());
    const auto finals = losses_by_seed(mine, &VariantResult::final_val_loss);
    const auto bests = losses_by_seed(mine, &VariantResult::best_val_loss);
    for (const VariantResult* r : mine)
      if (is_complete(*r)) {
        ++s.complete;
        if (r->seed) s.seeds.push_back(*r->seed);
      }
    s.final_val_loss = interval_of(finals);
    s.best_val_loss = interval_of(bests);
    if (name != spec.baseline) {
      s.final_diff = paired_difference(finals, base_final);
      s.best_diff = paired_difference(bests, base_best);
    }
    std::vector<const VariantResult*> curves;
    for (const VariantResult* r : mine)
      if (s.complete == 0 || is_complete(*r)) curves.push_back(r);
    s.val_curve = mean_curve(curves);
    out.push_back(std::move(s));
  }
  return out;
}

std::string sweep_results_table(const std::vector<VariantResult>& results) {
  std::string md =
      "| variant | status | steps | final val loss | best val loss | tokens | tokens/s | params | active params/token "
      "| memory estimate | measured peak | load max/mean |\n"
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
  for (const auto& r : results)
    md +=
        fmt::format("| {} | {} | {}/{} | {} | {} | {} | {:.0f} | {} | {} | {} | {} | {} |\n", r.name, r.status, r.steps,
                    r.total_steps, fmt_loss(r.final_val_loss), fmt_loss(r.best_val_loss), r.tokens, r.tokens_per_s,
                    fmt_millions(r.params_total), fmt_millions(r.params_active), format_bytes(r.estimate_bytes),
                    r.measured_peak_bytes ? format_bytes(*r.measured_peak_bytes) : std::string("-"),
                    fmt_load(r.load_max_over_mean));
  return md;
}

namespace {

const VariantSummary* find_baseline(const SweepSpec& spec, const std::vector<VariantSummary>& variants) {
  for (const auto& v : variants)
    if (v.result.name == spec.baseline) return &v;
  return nullptr;
}

// bars.dat: parameters, active parameters and memory of every variant as % of the baseline's.
std::string relative_bars(const SweepSpec& spec, const std::vector<VariantSummary>& variants, const VariantResult* base,
                          bool measured) {
  std::string bars =
      fmt::format("# variant params% active% memory_estimate% memory_measured% (relative to {})\n", spec.baseline);
  auto rel = [&](double v, double b) { return b > 0 ? fmt::format("{:.3f}", 100.0 * v / b) : std::string("?"); };
  for (const auto& v : variants) {
    const VariantResult& r = v.result;
    bars += fmt::format("{} {} {} {} {}\n", r.name, rel(double(r.params_total), base ? double(base->params_total) : 0),
                        rel(double(r.params_active), base ? double(base->params_active) : 0),
                        rel(double(r.estimate_bytes), base ? double(base->estimate_bytes) : 0),
                        measured && r.measured_peak_bytes
                            ? rel(double(*r.measured_peak_bytes), double(*base->measured_peak_bytes))
                            : std::string("?"));
  }
  return bars;
}

// "1.2345 ± 0.0012" (the sd only with a spread).
std::string mean_sd(const std::optional<MeanInterval>& m) {
  if (!m) return "-";
  return m->sd ? fmt::format("{:.4f} ± {:.4f}", m->mean, *m->sd) : fmt::format("{:.4f}", m->mean);
}

// "[1.2315, 1.2375]", with " *" when it excludes `mark_zero` (differences only).
std::string interval(const std::optional<MeanInterval>& m, bool mark_zero) {
  if (!m || !m->low) return "-";
  return fmt::format("[{:.4f}, {:.4f}]{}", *m->low, *m->high, mark_zero && m->excludes(0.0) ? " *" : "");
}

std::string signed_mean(const std::optional<MeanInterval>& m) {
  return m ? fmt::format("{:+.4f}", m->mean) : std::string("-");
}

// summary.md's statistics over seeds.
std::string seeds_table(const SweepSpec& spec, const std::vector<VariantSummary>& variants) {
  std::string md = fmt::format("## Over seeds ({})\n\n", fmt::join(spec.seeds, ", "));
  md += fmt::format(
      "| variant | complete runs | final val loss | 95% interval | best val loss | 95% interval | final - {0} | 95% "
      "interval | best - {0} | 95% interval |\n",
      spec.baseline);
  md += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
  for (const auto& v : variants) {
    const bool base = v.result.name == spec.baseline;
    md += fmt::format("| {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} |\n", v.result.name, v.complete, v.runs,
                      mean_sd(v.final_val_loss), interval(v.final_val_loss, false), mean_sd(v.best_val_loss),
                      interval(v.best_val_loss, false), base ? "(baseline)" : signed_mean(v.final_diff),
                      base ? "" : interval(v.final_diff, true), base ? "(baseline)" : signed_mean(v.best_diff),
                      base ? "" : interval(v.best_diff, true));
  }
  md += fmt::format(
      "\nOver each variant's complete runs: mean ± standard deviation, and the 95% interval of the mean (Student's "
      "t, n - 1 degrees of freedom). The differences to {0} are paired by seed (a seed fixes the data order and the "
      "initialisation stream of both runs) and averaged over the seeds both completed. * marks an interval that "
      "excludes 0: a difference that these seeds show beyond seed-to-seed noise (at the 5% level); an interval "
      "containing 0 means these seeds cannot tell the variant from {0}.\n\n",
      spec.baseline);
  return md;
}

// summary.md's "Relative to <baseline>" section.
std::string relative_table(const SweepSpec& spec, const std::vector<VariantSummary>& variants,
                           const VariantResult& base) {
  std::string md = fmt::format("\n## Relative to {}\n\n", spec.baseline);
  md += "| variant | params | active params/token | memory estimate | measured peak | best val loss - baseline |\n";
  md += "| --- | --- | --- | --- | --- | --- |\n";
  for (const auto& v : variants) {
    const VariantResult& r = v.result;
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
std::string routing_table(const std::vector<VariantSummary>& variants) {
  bool any_routing = false;
  for (const auto& v : variants)
    any_routing = any_routing || !v.result.distinct_expert_sets.empty() || v.result.bound_value;
  if (!any_routing) return "";
  std::string md = "\n## Routing (coe-eval --routing on the final checkpoint)\n\n";
  md += "| variant | distinct expert sets per layer | unique experts per token | combinatorial bound |\n";
  md += "| --- | --- | --- | --- |\n";
  for (const auto& v : variants) {
    const VariantResult& r = v.result;
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

std::vector<std::string> write_sweep_summary(const SweepSpec& spec, const std::vector<VariantResult>& runs,
                                             const std::string& plot_script) {
  fs::create_directories(spec.out_dir);
  const fs::path out(spec.out_dir);
  const std::vector<VariantSummary> variants = summarise_variants(spec, runs);
  std::vector<std::string> written;
  write_file_atomic(out / "summary.csv", sweep_summary_csv(variants));
  written.push_back((out / "summary.csv").string());
  if (!spec.seeds.empty()) {
    write_file_atomic(out / "runs.csv", sweep_runs_csv(runs));
    written.push_back((out / "runs.csv").string());
  }
  const SweepPlots plots = draw_sweep_plots(spec, variants, plot_script);
  for (const auto& p : plots.pngs) written.push_back((out / p).string());
  write_file_atomic(out / "summary.md", sweep_summary_md(spec, runs, variants, plots));
  written.push_back((out / "summary.md").string());
  return written;
}

namespace {

// The columns every row of summary.csv and runs.csv ends with.
constexpr const char* kRunColumns =
    "tokens,tokens_per_s,params_total,params_active_per_token,estimate_bytes,measured_peak_bytes,load_max_over_mean,"
    "distinct_expert_sets,combinatorial_bound";

std::string run_columns(const VariantResult& r) {
  std::string sets;
  for (size_t i = 0; i < r.distinct_expert_sets.size(); ++i)
    sets += (i ? ";" : "") + std::to_string(r.distinct_expert_sets[i]);
  return fmt::format("{},{:.1f},{},{},{},{},{},{},{}", r.tokens, r.tokens_per_s, r.params_total, r.params_active,
                     r.estimate_bytes, r.measured_peak_bytes ? std::to_string(*r.measured_peak_bytes) : "",
                     csv_num(r.load_max_over_mean, "{:.4f}"), csv_field(sets), csv_num(r.bound_value, "{:.6g}"));
}

// mean,sd,low,high of a loss.
std::string stat_columns(const std::optional<MeanInterval>& m) {
  if (!m) return ",,,";
  return fmt::format("{:.6f},{},{},{}", m->mean, csv_num(m->sd), csv_num(m->low), csv_num(m->high));
}

// mean,low,high,excludes_0 of a difference.
std::string diff_columns(const std::optional<MeanInterval>& m) {
  if (!m) return ",,,";
  return fmt::format("{:.6f},{},{},{}", m->mean, csv_num(m->low), csv_num(m->high),
                     m->low ? (m->excludes(0) ? "1" : "0") : "");
}

}  // namespace

std::string sweep_summary_csv(const std::vector<VariantSummary>& variants) {
  std::ostringstream csv;
  csv << "variant,status,runs,complete_runs,seeds,steps,total_steps,final_val_loss,final_val_loss_sd,"
         "final_val_loss_low,final_val_loss_high,best_val_loss,best_val_loss_sd,best_val_loss_low,best_val_loss_high,"
         "final_diff,final_diff_low,final_diff_high,final_diff_excludes_0,best_diff,best_diff_low,best_diff_high,"
         "best_diff_excludes_0,"
      << kRunColumns << '\n';
  for (const auto& v : variants) {
    const VariantResult& r = v.result;
    // Without seeds the one run's losses (complete or not) stand in the mean columns.
    const bool one = v.runs == 1;
    const auto final_stats =
        one && !v.final_val_loss && r.final_val_loss ? mean_interval({*r.final_val_loss}) : v.final_val_loss;
    const auto best_stats =
        one && !v.best_val_loss && r.best_val_loss ? mean_interval({*r.best_val_loss}) : v.best_val_loss;
    csv << csv_field(r.name) << ',' << csv_field(r.status) << ',' << v.runs << ',' << v.complete << ','
        << csv_field(fmt::format("{}", fmt::join(v.seeds, ";"))) << ',' << r.steps << ',' << r.total_steps << ','
        << stat_columns(final_stats) << ',' << stat_columns(best_stats) << ',' << diff_columns(v.final_diff) << ','
        << diff_columns(v.best_diff) << ',' << run_columns(r) << '\n';
  }
  return csv.str();
}

std::string sweep_runs_csv(const std::vector<VariantResult>& runs) {
  std::ostringstream csv;
  csv << "variant,seed,status,steps,total_steps,final_val_loss,best_val_loss," << kRunColumns << '\n';
  for (const auto& r : runs)
    csv << csv_field(variant_of(r)) << ',' << (r.seed ? std::to_string(*r.seed) : "") << ',' << csv_field(r.status)
        << ',' << r.steps << ',' << r.total_steps << ',' << csv_num(r.final_val_loss) << ',' << csv_num(r.best_val_loss)
        << ',' << run_columns(r) << '\n';
  return csv.str();
}

SweepPlots draw_sweep_plots(const SweepSpec& spec, const std::vector<VariantSummary>& variants,
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
  // Every variant keeps its place in the palette (its index in the sweep file), with or without a
  // curve, as coe-plot colours runs given in the sweep's order.
  std::string names, colours;
  for (size_t i = 0; i < variants.size(); ++i) {
    const VariantSummary& v = variants[i];
    if (v.val_curve.empty()) continue;
    std::string dat = "# step val_loss_mean low high runs (the mean over runs and its 95% interval)\n";
    for (const CurvePoint& p : v.val_curve)
      dat += fmt::format("{} {:.6f} {:.6f} {:.6f} {}\n", p.step, p.mean, p.low, p.high, p.runs);
    write_file_atomic(data / ("val-" + v.result.name + ".dat"), dat);
    names += (names.empty() ? "" : " ") + v.result.name;
    colours += (colours.empty() ? "" : " ") + std::to_string(i + 1);
  }
  const VariantSummary* base = find_baseline(spec, variants);
  const bool measured = base && base->result.measured_peak_bytes;
  write_file_atomic(data / "bars.dat", relative_bars(spec, variants, base ? &base->result : nullptr, measured));
  // gnuplot draws into fresh names; a finished PNG replaces the previous one by rename.
  const std::string tmp = ".tmp-" + std::to_string(::getpid());
  const char* const png_names[] = {"val_loss.png", "relative.png"};
  const fs::path log = data / "gnuplot.log";
  int rc = 0;
  try {
    write_file_atomic(log, "");
    rc = run_gnuplot(
        plot_script,
        {data.string(), (abs_out / (png_names[0] + tmp)).string(), (abs_out / (png_names[1] + tmp)).string(), names,
         colours, spec.baseline, spec.name, measured ? "1" : "0"},
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

std::string sweep_summary_md(const SweepSpec& spec, const std::vector<VariantResult>& runs,
                             const std::vector<VariantSummary>& variants, const SweepPlots& plots) {
  const bool seeded = !spec.seeds.empty();
  std::string md;
  md += fmt::format("# Sweep {}\n\nSweep file: `{}`. Run directories: `{}/<variant>/{}`. Baseline: `{}`.{}\n\n",
                    spec.name, spec.file, spec.out_dir, seeded ? "seed-<s>/" : "", spec.baseline,
                    seeded ? fmt::format(" Seeds: {}.", fmt::join(spec.seeds, ", ")) : "");
  if (seeded) md += seeds_table(spec, variants);
  std::vector<VariantResult> rows;
  for (const auto& v : variants) rows.push_back(v.result);
  if (seeded) md += "Means over each variant's complete runs (measured peak: the largest; load: the mean):\n\n";
  md += sweep_results_table(rows);
  const auto& mem = spec.memory;
  md += fmt::format(
      "\nMemory estimate: `coe-memory`'s analytical training total (docs/memory.md) at micro-batch {}, sequence {}, "
      "checkpointing {} (defaults: each variant's trainer.micro_batch, data.max_length, "
      "trainer.activation_checkpointing). Measured peak: {}. Load max/mean: the expert load's worst max / mean "
      "over layers and iterations, from `coe-eval --routing` on the validation split when it ran, else the last "
      "training log interval's.\n",
      mem.micro_batch ? std::to_string(*mem.micro_batch) : "(config)", mem.seq ? std::to_string(*mem.seq) : "(config)",
      mem.checkpointing ? (*mem.checkpointing ? "on" : "off") : "(config)",
      mem.measure ? "`coe-memory --measure` after training, same settings (CUDA: caching-allocator peak; CPU: peak "
                    "live tensor storage)"
                  : "not measured (set memory.measure: true)");
  if (const VariantSummary* base = find_baseline(spec, variants)) md += relative_table(spec, variants, base->result);
  md += routing_table(variants);
  md += fmt::format(
      "\nCombinatorial bound: C(N,K)^C / C(N,C*K) counts ordered sequences of C expert sets of size K against "
      "unordered sets of C*K experts. The paper's \"823x\" is quoted for C(64,4)^2 / C(64,8), which evaluates to "
      "{:.1f}; coe-eval uses the routed-expert count N = n_routed_experts.\n",
      combinatorial_ratio(64, 4, 2));

  md += "\n## Plots\n\n";
  if (!plots.pngs.empty()) {
    for (const auto& p : plots.pngs) md += fmt::format("![{}]({})\n\n", p, p);
    md += fmt::format(
        "Data behind them: `{}/plots/` (val-<variant>.dat: step, mean validation loss over the runs and its 95% "
        "interval, the band; bars.dat).\n",
        spec.out_dir);
  } else {
    md += "Plots skipped: " + plots.note + ".\n";
  }
  if (seeded) md += "\n## Runs\n\n" + sweep_results_table(runs);
  bool any_notes = false;
  for (const auto& v : variants) any_notes = any_notes || !v.result.notes.empty();
  if (any_notes) {
    md += "\n## Notes\n\n";
    for (const auto& v : variants)
      for (const auto& n : v.result.notes) md += fmt::format("- {}: {}\n", v.result.name, n);
  }
  return md;
}

}  // namespace coe
