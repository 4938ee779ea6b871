#pragma once
// Where tests find their inputs: the shared test data (../shared, or $COE_SHARED) and the
// freshly built command-line tools.
#include <filesystem>
#include <string>

namespace coe::test {

// Root of the shared data: $COE_SHARED if set, else the path configured at build time.
std::filesystem::path shared_root();
// build/bin/<name>
std::filesystem::path tool_path(const std::string& name);
// The repository's source tree.
std::filesystem::path source_root();
// A fresh, empty temporary directory unique to this test process.
std::filesystem::path make_temp_dir(const std::string& tag);
// Runs a shell command, returns its exit status; stdout+stderr are captured into `output`.
int run_command(const std::string& command, std::string* output = nullptr);

}  // namespace coe::test
