// coe-train: trains a MoE / Chain-of-Experts language model from a YAML run configuration.
//
//   coe-train CONFIG.yaml [--set section.key=value ...] [--resume] [--out DIR] [--max-steps N]
//
// Exit status: 0 when training completed, or stopped cleanly on SIGINT/SIGTERM or --max-steps
// (a checkpoint of the last completed step was written; continue with --resume); 1 on an error
// (one line "error: ..." on stderr); 3 when the loss or gradient norm became non-finite (nothing
// was saved for that step; the last good checkpoint is intact). See docs/training.md.
#include "coe/train/trainer.h"
#include "coe/util/error.h"

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"Train a MoE / Chain-of-Experts language model (see docs/training.md)"};
  std::string config_path;
  std::vector<std::string> overrides;
  bool resume = false;
  std::string out_dir;
  int64_t max_steps = -1;
  app.add_option("config", config_path, "run configuration (YAML)")->required();
  app.add_option("--set", overrides, "override a key: section.key=value (repeatable)")->take_all();
  app.add_flag("--resume", resume, "continue from the newest complete checkpoint in the run directory");
  app.add_option("--out", out_dir, "run directory (overrides trainer.out_dir)");
  app.add_option("--max-steps", max_steps, "stop (with a checkpoint) after N steps of this invocation");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }

  spdlog::set_pattern("[%H:%M:%S] %^%v%$");
  try {
    coe::TrainConfig config = coe::load_train_config(config_path, overrides);
    if (!out_dir.empty()) config.trainer.out_dir = out_dir;
    coe::TrainOptions options;
    options.resume = resume;
    options.max_steps = max_steps;
    coe::Trainer trainer(std::move(config), options);
    const coe::TrainResult result = trainer.run();
    if (result.status == coe::TrainStatus::kNonFinite) std::fprintf(stderr, "error: %s\n", result.message.c_str());
    return coe::exit_code(result.status);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    // One line: torch errors carry a C++ backtrace after the first line.
    if (auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
    std::fprintf(stderr, "error: %s\n", msg.c_str());
    return 1;
  }
}
