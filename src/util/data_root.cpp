#include "coe/util/data_root.h"

#include "coe/util/error.h"

#include <cstdlib>
#include <cstring>
#include <system_error>

// The checkout's data/ folder, compiled in by CMakeLists.txt.
#ifndef COE_SOURCE_DATA_DIR
#error "COE_SOURCE_DATA_DIR (the checkout's data/ folder) must be defined by the build"
#endif

namespace fs = std::filesystem;

namespace coe {

std::string DataRoot::describe() const {
  return from_env ? fmt::format("COE_DATA={}", dir.string())
                  : fmt::format("COE_DATA unset: the checkout's data/ folder {}", dir.string());
}

DataRoot data_root() {
  if (const char* env = std::getenv("COE_DATA")) {
    if (!*env) fail("COE_DATA is set but empty: set it to the data folder, or unset it for {}", COE_SOURCE_DATA_DIR);
    return {fs::absolute(env).lexically_normal(), true};
  }
  return {fs::path(COE_SOURCE_DATA_DIR).lexically_normal(), false};
}

std::string resolve_config_path(const std::string& written, const std::string& base_dir) {
  for (const char* var : {"$COE_DATA", "${COE_DATA}"}) {
    const size_t n = std::strlen(var);
    if (written.compare(0, n, var) != 0 || (written.size() > n && written[n] != '/')) continue;
    const fs::path root = data_root().dir;
    return written.size() <= n + 1 ? root.string() : (root / written.substr(n + 1)).lexically_normal().string();
  }
  if (!written.empty() && written.front() == '$')
    fail("'{}': a path may begin with $COE_DATA/ (or ${{COE_DATA}}/) and no other variable: configs are data, no "
         "shell expands them",
         written);
  if (!written.empty() && written.front() == '~')
    fail("'{}': ~ is not expanded (no shell reads configs); give an absolute path, one relative to this file, or "
         "$COE_DATA/...",
         written);
  fs::path p(written);
  if (p.is_relative()) p = fs::path(base_dir) / p;
  return fs::absolute(p).lexically_normal().string();
}

void check_path_exists(const std::string& what, const std::string& path) {
  std::error_code ec;
  if (fs::exists(path, ec)) return;
  DataRoot root;
  try {
    root = data_root();
  } catch (const Error&) {
    fail("{}: {} not found", what, path);
  }
  const fs::path rel = fs::path(path).lexically_normal().lexically_relative(root.dir);
  const bool under_root = !rel.empty() && *rel.begin() != "..";
  if (!under_root) fail("{}: {} not found", what, path);
  fail("{}: {} not found under $COE_DATA ({}); tools/download-data.sh fetches the data the shipped configs name, or "
       "set COE_DATA to a folder that holds it",
       what, path, root.describe());
}

}  // namespace coe
