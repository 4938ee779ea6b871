#pragma once
// Working directories coe builds an output in before renaming it into place
// (`<target>.tmp-<pid>`), and how a later run tells the leftover of a killed process from anything
// else that happens to have such a name. Each one carries a marker file naming the tool, the
// process and the host; a leftover is stale, and may be deleted, only when its marker says coe
// made it and that process is gone. A name pattern alone never decides (docs/security.md).
#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

namespace coe {

// The marker's name inside a scratch directory.
inline constexpr const char* kScratchMarker = ".coe-scratch.json";

// `<target>.tmp-<pid of this process>`.
std::filesystem::path scratch_path(const std::filesystem::path& target);

// Creates `dir` (its parent must exist; `dir` must not: the error names it) and writes its marker
// for `tool`: {"tool", "pid", "host"}.
void create_scratch_dir(const std::filesystem::path& dir, const std::string& tool);

// The siblings of `target` named `<target's name>.tmp-<pid>` (real directories, not symlinks)
// whose marker was written by `tool`, on this host, by process <pid>, which no longer runs.
std::vector<std::filesystem::path> stale_scratch_dirs(const std::filesystem::path& target, const std::string& tool);

// Whether a process with this pid exists on this machine.
bool process_alive(pid_t pid);

// This machine's host name (gethostname).
std::string host_name();

}  // namespace coe
