#include "coe/util/run_logs.h"

#include "coe/util/error.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

namespace fs = std::filesystem;

namespace coe {

std::vector<std::string> LineFollower::poll() {
  std::vector<std::string> lines;
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    offset_ = 0;  // missing (not yet written, or being replaced): nothing new
    return lines;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return lines;
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < offset_ || st.st_ino != inode_) offset_ = 0;  // rewritten: read it again
  inode_ = st.st_ino;
  std::string text;
  if (size > offset_) {
    text.resize(size - offset_);
    size_t got = 0;
    while (got < text.size()) {
      const ssize_t n = ::pread(fd, text.data() + got, text.size() - got, static_cast<off_t>(offset_ + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    text.resize(got);
  }
  ::close(fd);
  size_t start = 0;
  for (size_t nl = text.find('\n'); nl != std::string::npos; start = nl + 1, nl = text.find('\n', start))
    lines.push_back(text.substr(start, nl - start));
  offset_ += start;
  return lines;
}

RunWatcher::RunWatcher(const fs::path& run_dir, int64_t total_steps)
    : metrics_(run_dir / "metrics.jsonl"), val_(run_dir / "val.jsonl"), total_steps_(total_steps) {}

bool RunWatcher::poll(double now) {
  bool changed = false;
  const int64_t before = step_;
  for (const auto& line : metrics_.poll()) {
    try {
      const MetricsRow r = parse_metrics_line(line, metrics_.path().string());
      step_ = r.step;
      loss_ = r.loss;
      if (r.tokens_per_s) {
        recent_tokens_per_s_.push_back(*r.tokens_per_s);
        if (recent_tokens_per_s_.size() > 20) recent_tokens_per_s_.erase(recent_tokens_per_s_.begin());
      }
      changed = true;
    } catch (const Error&) {
    }
  }
  for (const auto& line : val_.poll()) {
    try {
      val_loss_ = parse_val_line(line, val_.path().string()).val_loss;
      changed = true;
    } catch (const Error&) {
    }
  }
  if (first_poll_) {
    first_poll_ = false;  // what was there before is not this watcher's pace
  } else if (step_ != before) {
    if (pace_step_ < 0 || step_ < pace_step_) {
      pace_step_ = step_;  // (a step below it: the logs were cut back; measure afresh)
      pace_time_ = now;
    }
    last_time_ = now;
  }
  return changed;
}

std::optional<double> RunWatcher::tokens_per_s() const {
  if (recent_tokens_per_s_.empty()) return std::nullopt;
  double sum = 0;
  for (double v : recent_tokens_per_s_) sum += v;
  return sum / static_cast<double>(recent_tokens_per_s_.size());
}

std::optional<double> RunWatcher::seconds_per_step() const {
  if (paced_steps() <= 0) return std::nullopt;
  return paced_seconds() / static_cast<double>(paced_steps());
}

std::optional<double> RunWatcher::eta_seconds() const {
  const auto pace = seconds_per_step();
  if (!pace) return std::nullopt;
  return static_cast<double>(std::max<int64_t>(0, total_steps_ - step_)) * *pace;
}

std::string progress_line(const std::string& tag, const RunWatcher& run, std::optional<double> sweep_eta) {
  const int64_t total = run.total_steps();
  std::string line = fmt::format("{}: step {}/{}", tag, run.step(), total);
  if (total > 0) line += fmt::format(" ({}%)", run.step() * 100 / total);
  if (run.loss()) line += fmt::format(" | loss {:.4f}", *run.loss());
  if (run.val_loss()) line += fmt::format(" | val {:.4f}", *run.val_loss());
  if (const auto tps = run.tokens_per_s()) {
    line += *tps >= 1e6   ? fmt::format(" | {:.2f}M tok/s", *tps / 1e6)
            : *tps >= 1e3 ? fmt::format(" | {:.1f}k tok/s", *tps / 1e3)
                          : fmt::format(" | {:.0f} tok/s", *tps);
  }
  if (const auto eta = run.eta_seconds()) line += " | eta " + format_duration(*eta);
  if (sweep_eta) line += " | sweep eta " + format_duration(*sweep_eta);
  return line;
}

}  // namespace coe
