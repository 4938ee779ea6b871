#pragma once
// Graceful stop on SIGINT / SIGTERM: while a StopSignalGuard lives, the first signal only sets a
// flag that the training loop checks after each step (it then saves a checkpoint and returns); a
// second signal of either kind ends the process at once with the default action. The previous
// handlers come back when the guard is destroyed.
#include <csignal>

namespace coe {

class StopSignalGuard {
 public:
  StopSignalGuard();
  ~StopSignalGuard();
  StopSignalGuard(const StopSignalGuard&) = delete;
  StopSignalGuard& operator=(const StopSignalGuard&) = delete;

  // The signal number received since the guard was installed, 0 if none.
  static int received();

 private:
  struct sigaction old_int_ {
  }, old_term_{};
};

}  // namespace coe
