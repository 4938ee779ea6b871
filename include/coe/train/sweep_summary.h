#pragma once
// coe-sweep's report (docs/sweeps.md): summary.csv, summary.md and the plots, from what the runs'
// directories say (read_variant_result). With `seeds:` each variant has several runs: the report
// gives per variant the mean, standard deviation and 95% interval of the final and best validation
// loss over its complete runs, and against the baseline the paired difference (same seed) with its
// interval (train/sweep_stats.h); runs.csv and the "Runs" table keep one row per run.
#include "coe/train/sweep.h"
#include "coe/train/sweep_stats.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace coe {

// One point of a variant's validation curve over its runs: the mean and its 95% interval (low ==
// high == mean with a single run) at a step every run that reached it logged.
struct CurvePoint {
  int64_t step = 0;
  double mean = 0, low = 0, high = 0;
  int64_t runs = 0;
};

// One variant over its runs (one run without seeds).
struct VariantSummary {
  // The variant as one row: status ("complete", or e.g. "2/3 complete, 1 failed"), losses, tokens
  // and throughput the means over its complete runs (over all its runs while none is complete),
  // measured memory the largest, routing the first run's that has it, notes each run's.
  VariantResult result;
  int64_t runs = 0, complete = 0;
  std::vector<int64_t> seeds;  // of the complete runs
  // Over the complete runs; the differences are this variant's minus the baseline's, over the seeds
  // both completed (nullopt for the baseline itself and when they share none).
  std::optional<MeanInterval> final_val_loss, best_val_loss, final_diff, best_diff;
  std::vector<CurvePoint> val_curve;
};

// The variants of `runs` (read_variant_result for each of spec.variants), in the sweep file's
// order.
std::vector<VariantSummary> summarise_variants(const SweepSpec& spec, const std::vector<VariantResult>& runs);

// A table of runs (markdown, one row per run: status, steps, losses, tokens, throughput,
// parameters, memory, load); coe-sweep also prints it after each run it trains.
std::string sweep_results_table(const std::vector<VariantResult>& results);

// Writes summary.csv, runs.csv (with seeds), the plots (draw_sweep_plots) and summary.md into
// out_dir, in this order; `plot_script` is the gnuplot script ("" when not found). Returns the
// paths written.
std::vector<std::string> write_sweep_summary(const SweepSpec& spec, const std::vector<VariantResult>& runs,
                                             const std::string& plot_script);

// The parts of write_sweep_summary. summary.csv's text: a header and one row per variant, with the
// statistics over seeds (empty where there is no spread or no baseline to pair with).
std::string sweep_summary_csv(const std::vector<VariantSummary>& variants);
// runs.csv's text: one row per run.
std::string sweep_runs_csv(const std::vector<VariantResult>& runs);

// The PNGs drawn into out_dir (file names), or why there are none.
struct SweepPlots {
  std::vector<std::string> pngs;
  std::string note;  // why pngs is empty, or that gnuplot failed ("" when it drew them)
};
// Writes the curves (mean and interval per step) and bars into <out_dir>/plots/ and has gnuplot
// draw val_loss.png and relative.png from them with `plot_script`; without the script or gnuplot
// nothing is written.
SweepPlots draw_sweep_plots(const SweepSpec& spec, const std::vector<VariantSummary>& variants,
                            const std::string& plot_script);

// summary.md's text: the variants' table (with seeds: the statistics over seeds, then the runs'
// table), the figures relative to the baseline, the routing table, the plots (or why they were
// skipped) and the notes.
std::string sweep_summary_md(const SweepSpec& spec, const std::vector<VariantResult>& runs,
                             const std::vector<VariantSummary>& variants, const SweepPlots& plots);

}  // namespace coe
