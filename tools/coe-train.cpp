// coe-train: trains a MoE / Chain-of-Experts language model from a YAML run configuration.
//
//   coe-train CONFIG.yaml [--set section.key=value ...] [--resume] [--out DIR] [--max-steps N]
//
// Exit status: 0 when training completed, or stopped cleanly on SIGINT/SIGTERM or --max-steps
// (a checkpoint of the last completed step was written; continue with --resume); 1 on an error
// (one line "error: ..." on stderr); 3 when the loss or gradient norm became non-finite (nothing
// was saved for that step; the last good checkpoint is intact). See docs/training.md.
//
// Launched by torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) or Slurm
// (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID with MASTER_ADDR/MASTER_PORT), each process is one
// rank of a data-parallel job (docs/distributed.md); without those variables it is a single
// process. In a job, error lines name the rank: "error: rank 1: ...".
#include "cli.h"
#include "coe/distributed/env.h"
#include "coe/train/trainer.h"
#include "coe/util/error.h"
#include "coe/util/host_runtime.h"

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <limits>
#include <string>
#include <vector>

static int tool_main(int argc, char** argv) {
  CLI::App app{"Train a MoE / Chain-of-Experts language model (see docs/training.md)"};
  std::string config_path;
  std::vector<std::string> overrides;
  bool resume = false;
  std::string out_dir;
  int64_t max_steps = -1;
  app.add_option("config", config_path, "run configuration (YAML)")->required();
  app.add_option("--set", overrides, "override a key: section.key=value (repeatable)")->take_all();
  app.add_flag("--resume", resume, "continue from the newest complete checkpoint in the run directory");
  app.add_option("--out", out_dir, "run directory (overrides trainer.out_dir)")->check(coe::cli::non_empty());
  app.add_option("--max-steps", max_steps, "stop (with a checkpoint) after N >= 1 steps of this invocation")
      ->check(CLI::Range(int64_t{1}, std::numeric_limits<int64_t>::max()));
  if (const int status = coe::cli::parse(app, argc, argv); status >= 0) return status;
  coe::tune_host_allocator();

  spdlog::set_pattern("[%H:%M:%S] %^%v%$");
  std::string who;  // "rank R: " in a data-parallel job
  try {
    const coe::DistEnv env = coe::dist_env_from_process();
    if (env.distributed()) who = "rank " + std::to_string(env.rank) + ": ";
    coe::TrainConfig config = coe::load_train_config(config_path, overrides);
    if (!out_dir.empty()) config.trainer.out_dir = out_dir;
    coe::TrainOptions options;
    options.resume = resume;
    options.max_steps = max_steps;
    options.dist_env = env;
    coe::Trainer trainer(std::move(config), options);
    const coe::TrainResult result = trainer.run();
    // The same message on every rank: rank 0 prints it.
    if (result.status == coe::TrainStatus::kNonFinite && trainer.dist().is_main())
      coe::cli::report_error(result.message);
    return coe::exit_code(result.status);
  } catch (const std::exception& e) {
    return coe::cli::report(e, who);
  }
}

int main(int argc, char** argv) { return coe::cli::exit_status(tool_main(argc, argv)); }
