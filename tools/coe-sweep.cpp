// coe-sweep: trains every variant of a sweep file in its own coe-train process and summarises
// them (summary.csv, summary.md, plots). See docs/sweeps.md.
//
//   coe-sweep SWEEP.yaml [--only NAME ...] [--set KEY=VALUE ...] [--dry-run] [--report] [--out DIR]
//             [--no-routing]
//
// A variant whose run directory holds final.json is complete and skipped; one with a checkpoint
// continues with coe-train --resume. A failing variant (its exit status and log in
// <out>/<name>/train.log) does not stop the others; the exit status is 1 when any variant failed,
// 130 when interrupted (SIGINT/SIGTERM: the running coe-train saves a checkpoint and stops).
#include "cli.h"
#include "coe/train/sweep.h"
#include "coe/train/sweep_runner.h"

#include <CLI/CLI.hpp>

#include <exception>
#include <string>
#include <utility>
#include <vector>

static int tool_main(int argc, char** argv) {
  CLI::App app{"coe-sweep: train the variants of a sweep file and summarise them (docs/sweeps.md)"};
  std::string sweep_path, out_dir;
  coe::SweepOptions options;
  bool no_routing = false;
  std::vector<std::string> overrides;
  app.add_option("sweep", sweep_path, "sweep file (YAML)")->required();
  app.add_option("--only", options.only, "run only this variant (repeatable; the report still lists all)");
  app.add_option("--set", overrides, "override a key of every variant: section.key=value (repeatable)")->take_all();
  app.add_flag("--dry-run", options.dry_run, "validate every variant and print the commands; run nothing");
  app.add_flag("--report", options.report_only, "only (re)write summary.csv, summary.md and the plots");
  app.add_option("--out", out_dir, "sweep output directory (overrides out_dir)")->check(coe::cli::non_empty());
  app.add_flag("--no-routing", no_routing, "skip the coe-eval routing analysis");
  if (const int status = coe::cli::parse(app, argc, argv); status >= 0) return status;

  try {
    coe::SweepSpec spec = coe::load_sweep(sweep_path);
    if (!out_dir.empty()) spec.out_dir = out_dir;
    coe::add_cli_overrides(spec, overrides);
    if (no_routing) spec.routing.enabled = false;
    return coe::SweepRunner(std::move(spec), std::move(options)).run();
  } catch (const std::exception& e) {
    return coe::cli::report(e);
  }
}

int main(int argc, char** argv) { return coe::cli::exit_status(tool_main(argc, argv)); }
