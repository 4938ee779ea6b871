#pragma once
// Where tests find their inputs: the shared test data (../shared, or $COE_SHARED; every test
// process sets COE_DATA to its data/ folder, which the shipped configs read) and the
// freshly built command-line tools.
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace coe::test {

// Root of the shared data: $COE_SHARED if set, else the path configured at build time.
std::filesystem::path shared_root();
// build/bin/<name>
std::filesystem::path tool_path(const std::string& name);
// The repository's source tree.
std::filesystem::path source_root();
// The Python whose torch coe was built against (CMake's COE_PYTHON: the checkout's .venv), which
// also holds the real clients the tests use as oracles: tokenizers, tensorboard, torchrun.
std::filesystem::path python();
// A console script installed beside that Python (e.g. torchrun).
std::filesystem::path python_tool(const std::string& name);
// A fresh, empty temporary directory unique to this test process.
std::filesystem::path make_temp_dir(const std::string& tag);
// A fresh temporary directory removed when the test binary exits (kept when COE_KEEP_TEST_DIRS
// is set, for looking at what a failing test wrote).
std::filesystem::path scratch_dir(const std::string& tag);
// Writes `text` to `path` (binary, truncating; parent directories created). Returns `path`.
std::string write_file(const std::filesystem::path& path, const std::string& text);
std::string read_file(const std::filesystem::path& path);
// One JSON value per line, at most `limit` lines. A line that does not parse fails the test
// (ADD_FAILURE) and is skipped; `allow_partial_last` tolerates a last line still being written.
std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& path, size_t limit = SIZE_MAX,
                                       bool allow_partial_last = false);
// Runs a shell command, returns its exit status; stdout+stderr are captured into `output`. For
// commands the tests compose from their own paths only; a path with shell characters in it goes
// through run_argv.
int run_command(const std::string& command, std::string* output = nullptr);
// Runs argv without a shell (coe::run_process), returns its exit status; stdout+stderr are
// captured into `output`.
int run_argv(const std::vector<std::string>& argv, std::string* output = nullptr);

}  // namespace coe::test
