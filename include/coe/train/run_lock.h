#pragma once
// One trainer per run directory. coe-train holds an exclusive flock(2) on <out_dir>/.coe-lock for
// its whole run; a second process on the same directory (a requeued job while the old one still
// runs, a copy-pasted command) fails at once, naming the holder's PID and host. The kernel drops
// the lock when the holder dies, however it dies, so a stale lock file never blocks anyone.
#include <string>

namespace coe {

class RunDirLock {
 public:
  // Creates `dir` if needed and takes the lock; a coe::Error naming the other process otherwise.
  explicit RunDirLock(const std::string& dir);
  ~RunDirLock();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace coe
