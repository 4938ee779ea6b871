#include "support/test_env.h"

#include "coe/util/subprocess.h"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace coe::test {

std::filesystem::path shared_root() {
  if (const char* env = std::getenv("COE_SHARED"); env && *env) return env;
  return COE_SHARED_DEFAULT;
}

namespace {

// The shipped configs name their data as $COE_DATA/...: the tests (and the tools they start, which
// inherit the environment) read the shared data, whatever COE_DATA the caller has.
const bool kSharedDataRoot = [] {
  ::setenv("COE_DATA", std::filesystem::absolute(shared_root() / "data").c_str(), 1);
  return true;
}();

}  // namespace

std::filesystem::path tool_path(const std::string& name) { return std::filesystem::path(COE_BIN_DIR) / name; }

std::filesystem::path source_root() { return COE_SOURCE_DIR; }

std::filesystem::path python() { return COE_PYTHON; }

std::filesystem::path python_tool(const std::string& name) { return python().parent_path() / name; }

std::filesystem::path make_temp_dir(const std::string& tag) {
  static std::atomic<int> counter{0};
  auto dir = std::filesystem::temp_directory_path() /
             ("coe-test-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::filesystem::path scratch_dir(const std::string& tag) {
  static std::vector<std::filesystem::path> dirs;
  static struct Cleanup {
    ~Cleanup() {
      if (std::getenv("COE_KEEP_TEST_DIRS")) return;
      std::error_code ec;
      for (const auto& d : dirs) std::filesystem::remove_all(d, ec);
    }
  } cleanup;
  dirs.push_back(make_temp_dir(tag));
  return dirs.back();
}

std::string write_file(const std::filesystem::path& path, const std::string& text) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
  return path.string();
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& path, size_t limit, bool allow_partial_last) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  std::string line;
  while (lines.size() < limit && std::getline(in, line))
    if (!line.empty()) lines.push_back(line);
  std::vector<nlohmann::json> out;
  for (size_t i = 0; i < lines.size(); ++i) {
    try {
      out.push_back(nlohmann::json::parse(lines[i]));
    } catch (const nlohmann::json::exception& e) {
      if (!(allow_partial_last && i + 1 == lines.size()))
        ADD_FAILURE() << path << ":" << i + 1 << ": not JSON: " << e.what();
    }
  }
  return out;
}

int run_command(const std::string& command, std::string* output) {
  std::string full = command + " 2>&1";
  FILE* pipe = ::popen(full.c_str(), "r");
  if (!pipe) return -1;
  std::array<char, 4096> buf{};
  std::string out;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  int status = ::pclose(pipe);
  if (output) *output = std::move(out);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int run_argv(const std::vector<std::string>& argv, std::string* output) {
  static const std::filesystem::path dir = scratch_dir("run-argv");
  static std::atomic<int> counter{0};
  const std::filesystem::path log = dir / ("output-" + std::to_string(counter++) + ".log");
  const int status = coe::run_process(argv, log);
  if (output) *output = read_file(log);
  std::filesystem::remove(log);
  return status;
}

}  // namespace coe::test
