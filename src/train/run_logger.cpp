#include "coe/train/run_logger.h"

#include "coe/train/device.h"
#include "coe/train/memory_model.h"
#include "coe/util/format.h"
#include "coe/util/json_limits.h"
#include "coe/util/tensorboard.h"

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <set>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace coe {
namespace {

// Keeps the lines of a .jsonl log whose "step" is <= max_step (drops the steps a resumed run will
// redo, or everything for a fresh run), then opens it for appending. `kept`: the lines kept.
AppendFile open_log(const fs::path& path, int64_t max_step, std::vector<nlohmann::json>& kept) {
  std::string keep;
  if (max_step > 0 && fs::exists(path)) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      try {
        auto j = nlohmann::json::parse(line, json_depth_limit(path.string()));
        if (j.at("step").get<int64_t>() > max_step) continue;
        keep += line + '\n';
        kept.push_back(std::move(j));
      } catch (...) {
        // A torn last line of a killed process, or foreign text: dropped.
      }
    }
  }
  write_file_atomic(path, keep);
  return AppendFile(path);
}

// Writes the rows of `kept` whose step has no event with a `prefix` tag yet: the steps a killed
// run had logged to metrics.jsonl / val.jsonl but not yet flushed to its event file.
size_t write_missing_events(TensorBoardWriter& tb, const fs::path& dir, const std::vector<nlohmann::json>& kept,
                            std::string_view prefix, Scalars (*scalars)(const nlohmann::json&)) {
  const std::set<int64_t> present = event_steps(dir, prefix);
  size_t written = 0;
  for (const auto& row : kept) {
    const int64_t step = row.at("step").get<int64_t>();
    if (present.count(step)) continue;
    tb.add_scalars(step, scalars(row));
    ++written;
  }
  return written;
}

}  // namespace

RunLogger::RunLogger() = default;
RunLogger::~RunLogger() = default;
RunLogger::RunLogger(RunLogger&&) noexcept = default;
RunLogger& RunLogger::operator=(RunLogger&&) noexcept = default;

RunLogger::RunLogger(const fs::path& out_dir, int64_t resumed_step, bool tensorboard, bool console,
                     ProgressInfo progress)
    : writes_(true), console_(console), progress_(progress) {
  std::vector<nlohmann::json> metrics_rows, val_rows;
  metrics_ = open_log(out_dir / "metrics.jsonl", resumed_step, metrics_rows);
  val_ = open_log(out_dir / "val.jsonl", resumed_step, val_rows);
  if (tensorboard) {
    // Steps after the resumed one are trained again: their events go, as their log lines did.
    const fs::path tb = out_dir / "tb";
    for (const auto& note : cut_back_event_files(tb, resumed_step))
      if (console_) spdlog::info("tensorboard: {}", note);
    tensorboard_ = std::make_unique<TensorBoardWriter>(tb);
    if (console_) spdlog::info("tensorboard: {} (view: tensorboard --logdir {})", tb.string(), out_dir.string());
    // The steps up to the resumed one that a kill kept from the event files, from the logs.
    const size_t restored = write_missing_events(*tensorboard_, tb, metrics_rows, "train/", metrics_scalars) +
                            write_missing_events(*tensorboard_, tb, val_rows, "val/", val_scalars);
    tensorboard_->flush();
    if (restored && console_)
      spdlog::info("tensorboard: wrote {} logged step(s) the event files lacked (a killed run's unflushed events)",
                   restored);
  }
}

void RunLogger::log_step(MetricsRow row, double seconds, bool log_line) {
  row.memory_bytes = current_memory(progress_.device);
  row.peak_memory_bytes = peak_memory(progress_.device).bytes;
  if (progress_.peak_tflops > 0 && row.tokens_per_s)
    row.mfu = *row.tokens_per_s * progress_.flops_per_token / (progress_.peak_tflops * 1e12);
  if (writes_) {
    const nlohmann::ordered_json j = row.to_json();
    metrics_.append(j.dump() + '\n');
    if (tensorboard_) tensorboard_->add_scalars(row.step, metrics_scalars(j));
  }
  window_time_ += seconds;
  window_steps_ += 1;
  window_tokens_ += row.tokens.value_or(0);
  if (!log_line) return;
  if (tensorboard_) tensorboard_->flush();  // a live run shows up to this line
  if (console_) {
    const int64_t total = progress_.total_steps;
    const double per_step = window_time_ / static_cast<double>(window_steps_);
    const double tokens_per_s = static_cast<double>(window_tokens_) / window_time_;
    std::string line =
        fmt::format("step {:>{}}/{} | loss {:.4f}", row.step, std::to_string(total).size(), total, row.loss);
    // "aux_loss" -> "aux", "z_loss" -> "z".
    for (const auto& [name, value] : row.router_losses)
      line += fmt::format(" | {} {:.4f}", name.substr(0, name.rfind("_loss")), value);
    line += fmt::format(" | lr {:.3e} | grad {:.3f} | {} tok/s | eta {}", row.lr.value_or(0), row.grad_norm.value_or(0),
                        format_count(tokens_per_s), format_duration(per_step * static_cast<double>(total - row.step)));
    double worst_load = 0;
    for (const auto& [name, stats] : row.router) worst_load = std::max(worst_load, stats.max_over_mean);
    if (!row.router.empty()) line += fmt::format(" | load max/mean {:.2f}", worst_load);
    if (progress_.peak_tflops > 0)
      line += fmt::format(" | mfu {:.1f}%",
                          100.0 * tokens_per_s * progress_.flops_per_token / (progress_.peak_tflops * 1e12));
    line += fmt::format(" | {} {} (peak {})", progress_.device.is_cuda() ? "gpu" : "rss",
                        format_bytes(*row.memory_bytes), format_bytes(*row.peak_memory_bytes));
    spdlog::info("{}", line);
  }
  window_time_ = 0;
  window_steps_ = window_tokens_ = 0;
}

void RunLogger::log_validation(const ValRow& row) {
  if (writes_) {
    const nlohmann::ordered_json j = row.to_json();
    val_.append(j.dump() + '\n');
    if (tensorboard_) {
      tensorboard_->add_scalars(row.step, val_scalars(j));
      tensorboard_->flush();
    }
  }
  if (console_)
    spdlog::info("val  step {} | val_loss {:.4f} | {} tokens in {} rows | {:.1f}s", row.step, row.val_loss,
                 format_count(static_cast<double>(row.tokens.value_or(0))), row.rows.value_or(0),
                 row.seconds.value_or(0));
}

void RunLogger::log_config(const std::string& config_yaml, int64_t step) {
  if (!tensorboard_) return;
  tensorboard_->add_text("config", step, "```yaml\n" + config_yaml + "```\n");
  tensorboard_->flush();
}

void RunLogger::flush() {
  if (tensorboard_) tensorboard_->flush();
}

}  // namespace coe
