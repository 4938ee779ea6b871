#pragma once
// What the fuzz targets share: the parsers under test read files, so an input becomes one or more
// files in a private scratch folder (removed at exit), and only coe::Error may escape a parser.
#include "coe/util/error.h"

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace coe::fuzz {

// A folder of this process (libFuzzer's -jobs/-fork run several); removed at exit.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/coe-fuzz-XXXXXX";
    if (!mkdtemp(pattern.data())) std::abort();
    static const std::string keep = pattern;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(keep, ec);
    });
    return pattern;
  }();
  return dir;
}

// Writes `bytes` to <scratch>/<name> and returns the path.
inline std::string write_file(const std::string& name, std::string_view bytes) {
  const std::string path = scratch_dir() + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) std::abort();
  return path;
}

inline void remove_file(const std::string& name) {
  std::error_code ec;
  std::filesystem::remove(scratch_dir() + "/" + name, ec);
}

// An input of several files: the parts between lines "#--next-file--" (the seeds use it; see
// fuzz/make_corpus.py).
inline std::vector<std::string_view> split_files(std::string_view input) {
  static constexpr std::string_view kSeparator = "\n#--next-file--\n";
  std::vector<std::string_view> parts;
  while (true) {
    const size_t at = input.find(kSeparator);
    parts.push_back(input.substr(0, at));
    if (at == std::string_view::npos) return parts;
    input.remove_prefix(at + kSeparator.size());
  }
}

// Runs `parse`; a coe::Error is the expected way to refuse an input, anything else escaping is a
// bug (the tools promise one-line errors naming the file) and aborts, so libFuzzer reports it.
template <typename Parse>
void expect_only_coe_errors(Parse&& parse) {
  try {
    parse();
  } catch (const Error& e) {
    static const bool verbose = std::getenv("COE_FUZZ_VERBOSE") != nullptr;  // to see what seeds reach
    if (verbose) std::fprintf(stderr, "coe fuzz: refused: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coe fuzz: an exception other than coe::Error escaped: %s\n", e.what());
    std::abort();
  }
}

}  // namespace coe::fuzz
