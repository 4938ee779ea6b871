#pragma once
// The command-line contract of every coe tool: --help prints and exits 0; a bad flag or value is
// one line "error: <reason> (see --help)" on stderr and exit status 1.
#include <CLI/CLI.hpp>

#include <cstdio>

namespace coe::cli {

// Returns -1 when the tool should go on, else the status to exit with.
inline int parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "error: %s (see --help)\n", e.what());
    return 1;
  }
  return -1;
}

}  // namespace coe::cli
