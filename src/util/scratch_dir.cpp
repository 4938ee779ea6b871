#include "coe/util/scratch_dir.h"

#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/json_limits.h"

#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace coe {
namespace {

// The pid in `<prefix><digits>`, or -1.
pid_t pid_suffix(const std::string& name, const std::string& prefix) {
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return -1;
  const std::string digits = name.substr(prefix.size());
  if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  const long v = std::stol(digits);
  return v > 0 ? static_cast<pid_t>(v) : -1;
}

bool marker_says_stale(const fs::path& dir, const std::string& tool, pid_t pid) {
  const fs::path marker = dir / kScratchMarker;
  std::error_code ec;
  if (!fs::is_regular_file(fs::symlink_status(marker, ec)) || fs::file_size(marker, ec) > 4096) return false;
  try {
    std::ifstream in(marker);
    std::stringstream text;
    text << in.rdbuf();
    const nlohmann::json j = nlohmann::json::parse(text.str(), json_depth_limit(marker.string()));
    return j.value("tool", "") == tool && j.value("host", "") == host_name() && j.value("pid", -1) == pid &&
           !process_alive(pid);
  } catch (...) {
    return false;  // unreadable: not provably ours
  }
}

}  // namespace

std::string host_name() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "";
  return buf;
}

bool process_alive(pid_t pid) {
  if (pid <= 0) return false;
  // EPERM: it exists, owned by someone else.
  return ::kill(pid, 0) == 0 || errno == EPERM;
}

fs::path scratch_path(const fs::path& target) { return target.string() + ".tmp-" + std::to_string(::getpid()); }

void create_scratch_dir(const fs::path& dir, const std::string& tool) {
  if (::mkdir(dir.c_str(), 0755) != 0) {
    if (errno == EEXIST)
      fail("{}: exists (left by an earlier process with this pid?); coe does not delete what it cannot prove it made: "
           "remove it",
           dir.string());
    fail("{}: cannot create: {}", dir.string(), std::strerror(errno));
  }
  try {
    const nlohmann::json marker = {{"tool", tool}, {"pid", ::getpid()}, {"host", host_name()}};
    write_file_atomic(dir / kScratchMarker, marker.dump() + "\n");
  } catch (...) {
    std::error_code ec;
    fs::remove(dir, ec);
    throw;
  }
}

std::vector<fs::path> stale_scratch_dirs(const fs::path& target, const std::string& tool) {
  std::vector<fs::path> out;
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string prefix = target.filename().string() + ".tmp-";
  std::error_code ec;
  fs::directory_iterator it(parent, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const pid_t pid = pid_suffix(it->path().filename().string(), prefix);
    if (pid < 0 || pid == ::getpid()) continue;
    std::error_code sec;
    if (!fs::is_directory(it->symlink_status(sec))) continue;
    if (marker_says_stale(it->path(), tool, pid))
      out.push_back(target.has_parent_path() ? it->path() : it->path().filename());
  }
  return out;
}

}  // namespace coe
