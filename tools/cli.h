#pragma once
// The command-line contract of every coe tool: --help prints and exits 0; --version prints the
// coe version, the git commit, the torch version and the CUDA version built in (or CPU only); a bad flag or
// value is one line "error: <reason> (see --help)" on stderr and exit status 1; any failure
// later is one line "error: <reason>" and exit status 1.
#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe_version.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <iostream>
#include <string>

namespace coe::cli {

// "coe-eval 0.1.0 (git 1a2b3c4d5e6f), torch 2.11.0, CUDA 13.0" (or ", CPU only")
inline std::string version_line(const std::string& tool) {
  return tool + " " + COE_VERSION + " (git " + COE_GIT_COMMIT + "), torch " + COE_TORCH_VERSION +
         (COE_BUILT_WITH_CUDA ? std::string(", CUDA ") + COE_CUDA_VERSION : std::string(", CPU only"));
}

// For options whose empty value would silently mean "not given" (--out "", --prompt ""): an
// explicit empty value is a usage error instead.
inline CLI::Validator non_empty() {
  return CLI::Validator([](std::string& value) { return value.empty() ? std::string("must not be empty") : ""; },
                        "NON-EMPTY");
}

// Returns -1 when the tool should go on, else the status to exit with.
inline int parse(CLI::App& app, int argc, char** argv) {
  std::string tool = argc > 0 ? argv[0] : "coe";
  if (const auto slash = tool.rfind('/'); slash != std::string::npos) tool = tool.substr(slash + 1);
  app.set_version_flag("--version", version_line(tool));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "error: %s (see --help)\n", e.what());
    return 1;
  }
  return -1;
}

// "\n", "\t" and "\\" typed on a command line (stop strings, separators) become the characters.
inline std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == 'n' || s[i + 1] == 't' || s[i + 1] == '\\')) {
      out += s[i + 1] == 'n' ? '\n' : s[i + 1] == 't' ? '\t' : '\\';
      ++i;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Under torchrun (TORCHELASTIC_ERROR_FILE set), the error line also goes into torchrun's error file
// ({"message": ..., "timestamp": ...}, the format torch.distributed.elastic reads), so that its
// failure summary shows it as the rank's "traceback" instead of "<N/A>". Best effort: a file that
// cannot be written never hides the error itself.
inline void write_elastic_error_file(const std::string& message) {
  const char* path = std::getenv("TORCHELASTIC_ERROR_FILE");
  if (!path || !*path) return;
  try {
    const nlohmann::json j{{"message", message}, {"timestamp", static_cast<int64_t>(std::time(nullptr))}};
    write_file_atomic(path, j.dump() + "\n");
  } catch (const std::exception&) {
  }
}

// Prints "error: <who><first line>" on stderr (and into torchrun's error file); returns the exit
// status for a failure (1).
inline int report_error(const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  write_elastic_error_file(message);
  return 1;
}
inline int report(const std::exception& e, const std::string& who = "") { return report_error(who + first_line(e)); }

// What every tool's main returns through: the standard output is flushed and checked, so that a
// full disk or a closed pipe behind `> file` is "error: ..." and exit status 1, never exit 0 with
// the output cut short.
inline int exit_status(int status) {
  errno = 0;
  std::cout.flush();
  const bool failed = !std::cout || std::fflush(stdout) != 0 || std::ferror(stdout);
  if (!failed) return status;
  const int err = errno;
  std::fprintf(stderr, "error: cannot write the standard output: %s\n", err != 0 ? std::strerror(err) : "write failed");
  return status == 0 ? 1 : status;
}

}  // namespace coe::cli
