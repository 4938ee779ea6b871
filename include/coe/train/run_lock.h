#pragma once
// One writer per directory. coe-train holds an exclusive flock(2) on <out_dir>/.coe-lock for its
// whole run, coe-sweep on <sweep out_dir>/.coe-lock; a second process on the same directory (a
// requeued job while the old one still runs, a copy-pasted command) fails at once, naming the
// holder's PID and host, before it writes anything there. The kernel drops
// the lock when the holder dies, however it dies, so a stale lock file never blocks anyone.
#include <string>

namespace coe {

class RunDirLock {
 public:
  // Creates `dir` if needed and takes the lock; a coe::Error naming the other process otherwise
  // ("<dir> is in use by another <program> (...); wait for it to end or choose another <dir_key>").
  explicit RunDirLock(const std::string& dir, const std::string& program = "coe-train",
                      const std::string& dir_key = "trainer.out_dir");
  ~RunDirLock();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace coe
