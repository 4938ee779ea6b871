#pragma once
// The run's metrics component (torchtitan's components/metrics): everything a run reports about
// itself goes through one RunLogger, in the run directory's schema (util/run_files.h):
//   log_step        metrics.jsonl, TensorBoard, and every log_interval steps the console line
//   log_validation  val.jsonl, TensorBoard, the console
// Rank 0 writes the files and the console; the other ranks hold a silent logger, so the trainer
// calls it the same way on every rank.
#include "coe/util/file_io.h"
#include "coe/util/run_files.h"

#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <memory>

namespace coe {

class TensorBoardWriter;

// What the console line needs besides a step's row.
struct ProgressInfo {
  int64_t total_steps = 0;
  double flops_per_token = 0;  // training FLOPs per token: with peak_tflops, the line's MFU
  double peak_tflops = 0;      // trainer.peak_tflops; 0: no MFU
  c10::Device device{c10::kCPU};
};

class RunLogger {
 public:
  // Silent: writes nothing, prints nothing (ranks other than 0).
  RunLogger();
  // Opens out_dir's metrics.jsonl and val.jsonl cut back to `resumed_step` (the steps after it
  // are trained again; 0: a fresh run), and with `tensorboard` cuts <out_dir>/tb back alike and
  // opens this invocation's event file. `console`: print the progress lines (spdlog).
  RunLogger(const std::filesystem::path& out_dir, int64_t resumed_step, bool tensorboard, bool console,
            ProgressInfo progress);
  ~RunLogger();
  RunLogger(RunLogger&&) noexcept;
  RunLogger& operator=(RunLogger&&) noexcept;

  // One optimizer step of `seconds`; `log_line`: this step ends a console window (the line is
  // printed and TensorBoard flushed). The logger adds the memory figures and the MFU to the row.
  void log_step(MetricsRow row, double seconds, bool log_line);
  void log_validation(const ValRow& row);
  // The resolved configuration (config.yaml's text) as TensorBoard text "config" at `step`.
  void log_config(const std::string& config_yaml, int64_t step);
  void flush();

 private:
  bool writes_ = false, console_ = false;
  ProgressInfo progress_;
  AppendFile metrics_, val_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
  // Console window (since the last log line).
  double window_time_ = 0;
  int64_t window_steps_ = 0, window_tokens_ = 0;
};

}  // namespace coe
