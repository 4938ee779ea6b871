#include "coe/util/subprocess.h"

#include "coe/util/error.h"

#include <fmt/format.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

extern char** environ;

namespace fs = std::filesystem;

namespace coe {
namespace {

bool is_executable_file(const fs::path& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
}

// Closes the descriptor and destroys the spawn attributes on every path out of spawn_process.
struct SpawnResources {
  int log_fd = -1;
  bool actions_ready = false;
  posix_spawn_file_actions_t actions{};
  ~SpawnResources() {
    if (actions_ready) posix_spawn_file_actions_destroy(&actions);
    if (log_fd >= 0) ::close(log_fd);
  }
};

}  // namespace

std::optional<fs::path> find_executable(const std::string& name) {
  if (name.empty()) return std::nullopt;
  if (name.find('/') != std::string::npos) {
    if (is_executable_file(name)) return fs::path(name);
    return std::nullopt;
  }
  const char* path = std::getenv("PATH");
  const std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    const size_t colon = std::min(dirs.find(':', start), dirs.size());
    const std::string dir = dirs.substr(start, colon - start);
    start = colon + 1;
    if (dir.empty() || dir.front() != '/') continue;  // relative: the working directory's programs
    const fs::path candidate = fs::path(dir) / name;
    if (is_executable_file(candidate)) return candidate;
  }
  return std::nullopt;
}

pid_t spawn_process(const std::vector<std::string>& argv, const fs::path& log) {
  if (argv.empty() || argv.front().empty()) fail("spawn_process: no program to run");
  SpawnResources res;
  if (!log.empty()) {
    // Opened here, not in the child, so that an error names the log file.
    res.log_fd = ::open(log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (res.log_fd < 0) fail("{}: cannot open for writing: {}", log.string(), std::strerror(errno));
  }
  if (int rc = posix_spawn_file_actions_init(&res.actions); rc != 0)
    fail("{}: cannot start: {}", argv.front(), std::strerror(rc));
  res.actions_ready = true;
  int rc = posix_spawn_file_actions_addopen(&res.actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  // dup2 clears close-on-exec on the copies, so the child keeps fds 1 and 2 (and not log_fd).
  if (rc == 0 && res.log_fd >= 0) rc = posix_spawn_file_actions_adddup2(&res.actions, res.log_fd, STDOUT_FILENO);
  if (rc == 0 && res.log_fd >= 0) rc = posix_spawn_file_actions_adddup2(&res.actions, res.log_fd, STDERR_FILENO);
  if (rc != 0) fail("{}: cannot start: {}", argv.front(), std::strerror(rc));

  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  // posix_spawn, not posix_spawnp: argv[0] is a path, never looked up (find_executable does that).
  rc = posix_spawn(&pid, args[0], &res.actions, nullptr, args.data(), environ);
  if (rc != 0) fail("{}: cannot start: {}", argv.front(), std::strerror(rc));
  return pid;
}

int wait_process(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) fail("waiting for process {}: {}", pid, std::strerror(errno));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

std::optional<int> try_wait_process(pid_t pid) {
  int status = 0;
  pid_t r;
  while ((r = ::waitpid(pid, &status, WNOHANG)) < 0) {
    if (errno != EINTR) fail("waiting for process {}: {}", pid, std::strerror(errno));
  }
  if (r == 0) return std::nullopt;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

int run_process(const std::vector<std::string>& argv, const fs::path& log) {
  return wait_process(spawn_process(argv, log));
}

std::optional<fs::path> find_gnuplot() { return find_executable("gnuplot"); }

std::optional<fs::path> find_plot_script(const std::string& name, const char* env_var) {
  if (const char* env = env_var ? std::getenv(env_var) : nullptr; env && *env) return fs::path(env);
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return std::nullopt;
  // An installation's <prefix>/share/coe, which is also a build's share/coe (the build copies the
  // scripts there), first: an installed binary never runs a build's or a source tree's script.
  std::vector<fs::path> candidates{exe.parent_path() / ".." / "share" / "coe" / name};
#ifdef COE_BUILD_SHARE_DIR
  candidates.push_back(fs::path(COE_BUILD_SHARE_DIR) / name);  // a binary copied out of its build
#endif
  for (const fs::path& p : candidates)
    if (fs::is_regular_file(p, ec)) return fs::weakly_canonical(p, ec);
  return std::nullopt;
}

std::optional<std::string> install_png(const fs::path& drawn, const fs::path& target) {
  static const char kSignature[8] = {'\x89', 'P', 'N', 'G', '\r', '\n', '\x1a', '\n'};
  // The last chunk: length 0, type IEND, its CRC.
  static const char kIend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', '\xae', 'B', '\x60', '\x82'};
  std::string problem;
  const int fd = ::open(drawn.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    problem = errno == ENOENT ? "gnuplot did not draw it"
                              : fmt::format("cannot read what gnuplot drew: {}", std::strerror(errno));
  } else {
    struct stat st {};
    char head[8] = {}, tail[12] = {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      problem = "what gnuplot drew is not a file";
    } else if (::fsync(fd) != 0) {  // a full disk can fail the write-back of what write() accepted
      problem = fmt::format("cannot write it to disk: {}", std::strerror(errno));
    } else if (st.st_size == 0) {
      problem = "gnuplot wrote an empty file (the disk may be full)";
    } else if (st.st_size < static_cast<off_t>(sizeof(kSignature) + sizeof(kIend)) ||
               ::pread(fd, head, sizeof(head), 0) != static_cast<ssize_t>(sizeof(head)) ||
               std::memcmp(head, kSignature, sizeof(head)) != 0) {
      problem = fmt::format("not a PNG ({} bytes)", st.st_size);
    } else if (::pread(fd, tail, sizeof(tail), st.st_size - static_cast<off_t>(sizeof(tail))) !=
                   static_cast<ssize_t>(sizeof(tail)) ||
               std::memcmp(tail, kIend, sizeof(tail)) != 0) {
      problem = fmt::format("truncated PNG ({} bytes, no IEND chunk at the end: the disk may be full)", st.st_size);
    }
    ::close(fd);
  }
  std::error_code ec;
  if (problem.empty()) {
    fs::rename(drawn, target, ec);
    if (!ec) return std::nullopt;
    problem = fmt::format("cannot rename {} to it: {}", drawn.filename().string(), ec.message());
  }
  fs::remove(drawn, ec);
  return target.string() + ": " + problem;
}

int run_gnuplot(const fs::path& script, const std::vector<std::string>& args, const fs::path& log) {
  const auto gnuplot = find_gnuplot();
  if (!gnuplot) fail("gnuplot is not installed (apt-get install gnuplot-nox)");
  std::vector<std::string> argv{gnuplot->string(), "-c", script.string()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv, log);
}

}  // namespace coe
