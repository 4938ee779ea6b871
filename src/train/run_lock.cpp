#include "coe/train/run_lock.h"

#include "coe/util/error.h"
#include "coe/util/file_io.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <string>

namespace fs = std::filesystem;

namespace coe {
namespace {

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "?";
  return buf;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// What the holder wrote into the lock file ("pid 123 on host gpu-7 since ..."), one line.
std::string read_holder(int fd) {
  char buf[512] = {};
  const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
  std::string text = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  if (auto nl = text.find('\n'); nl != std::string::npos) text.resize(nl);
  return text.empty() ? "a process that has not yet written its name" : text;
}

// Whether coe made `dir` a run directory: it holds the lock file (coe-train, coe-sweep and
// create_run_dir leave it behind), a checkpoint carrying coe's marker (runs of coe before the
// lock, a branch set aside by a resume), or a sweep's status file.
bool made_by_coe(const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(fs::symlink_status(dir / ".coe-lock", ec)) || fs::is_regular_file(dir / "sweep-status.json", ec))
    return true;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("step-", 0) == 0 && fs::is_regular_file(entry.path() / ".coe-checkpoint", ec)) return true;
  }
  return false;
}

// Creates `dir`, or checks that an existing one is empty or coe's: coe writes config.yaml,
// metrics.jsonl, final.json, ... into it, and must not replace a user's files of those names.
void claim_dir(const std::string& dir, const std::string& dir_key) {
  std::error_code ec;
  if (fs::is_directory(dir, ec) && !made_by_coe(dir)) {
    fs::directory_iterator it(dir, ec);
    if (ec) fail("{}: cannot list: {}", dir, ec.message());
    if (it != fs::directory_iterator())
      fail("{}: holds files coe did not write (e.g. {}) and is not a coe run directory; choose an empty or new {}", dir,
           it->path().filename().string(), dir_key);
  }
  fs::create_directories(dir, ec);
  if (ec) fail("{}: cannot create the run directory: {}", dir, ec.message());
}

}  // namespace

void create_run_dir(const std::string& dir, const std::string& dir_key) {
  claim_dir(dir, dir_key);
  const std::string lock = (fs::path(dir) / ".coe-lock").string();
  const int fd = ::open(lock.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) fail("{}: cannot create: {}", lock, std::strerror(errno));
  ::close(fd);
}

RunDirLock::RunDirLock(const std::string& dir, const std::string& program, const std::string& dir_key)
    : path_((fs::path(dir) / ".coe-lock").string()) {
  claim_dir(dir, dir_key);
  // Never through a link: a .coe-lock symlink would have coe truncate and overwrite its target.
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
  if (fd_ < 0 && errno == ELOOP)
    fail("{}: is a symbolic link, not coe's lock file; remove it (its target is left alone)", path_);
  if (fd_ < 0) fail("{}: cannot open the run directory's lock file: {}", path_, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    fail("{}: is not a regular file, not coe's lock file; remove it", path_);
  }
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    const std::string holder = err == EWOULDBLOCK ? read_holder(fd_) : std::string();
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      fail("{} is in use by another {} ({}); wait for it to end or choose another {}", dir, program, holder, dir_key);
    fail("{}: cannot lock: {}", path_, std::strerror(err));
  }
  const std::string me = fmt::format("pid {} on host {} since {}\n", ::getpid(), host_name(), utc_now());
  if (::ftruncate(fd_, 0) != 0) fail("{}: cannot write: {}", path_, std::strerror(errno));
  write_all(fd_, me, path_);
}

RunDirLock::~RunDirLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock; the file stays (deleting it would race)
}

}  // namespace coe
