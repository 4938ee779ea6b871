#pragma once
// One writer per directory. coe-train holds an exclusive flock(2) on <out_dir>/.coe-lock for its
// whole run, coe-sweep on <sweep out_dir>/.coe-lock; a second process on the same directory (a
// requeued job while the old one still runs, a copy-pasted command) fails at once, naming the
// holder's PID and host, before it writes anything there. The kernel drops
// the lock when the holder dies, however it dies, so a stale lock file never blocks anyone.
// The lock file also marks the directory as coe's: an existing directory without it (or a coe
// checkpoint) that is not empty holds someone else's files, and is refused before anything is
// written into it.
#include <string>

namespace coe {

// Creates `dir` as a run directory (its lock file, not locked) for a coe-train started in it later,
// after the same check: coe-sweep, before it writes a variant's train.log there.
void create_run_dir(const std::string& dir, const std::string& dir_key);

class RunDirLock {
 public:
  // Creates `dir` if needed and takes the lock; a coe::Error naming the other process otherwise
  // ("<dir> is in use by another <program> (...); wait for it to end or choose another <dir_key>"),
  // or a file of a non-empty directory coe did not make.
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
