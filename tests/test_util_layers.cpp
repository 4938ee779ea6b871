// The folders are the architecture (docs/architecture.md): includes between them go one way. This
// reads every header and source of the tree and fails on an include against that direction, so
// the layering holds by test, not by review.
#include "support/test_env.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>

namespace {

namespace fs = std::filesystem;

// Which folders each folder of include/coe/ and src/ may include (besides itself).
const std::map<std::string, std::set<std::string>> kAllowed = {
    {"util", {}},
    {"tokenizer", {"util"}},
    {"data", {"tokenizer", "util"}},
    {"model", {"util"}},
    {"io", {"model", "util"}},
    {"distributed", {"util"}},
    {"eval", {"data", "tokenizer", "model", "io", "util"}},
    {"train", {"eval", "data", "tokenizer", "model", "io", "distributed", "util"}},
};

// The folder a file belongs to: include/coe/<folder>/... or src/<folder>/...
std::string folder_of(const fs::path& relative) {
  auto it = relative.begin();
  if (*it == "include") ++it;  // include/coe/<folder>
  ++it;
  return it->string();
}

TEST(Layers, IncludesGoOneWay) {
  const fs::path root = coe::test::source_root();
  const std::regex include_line(R"(^\s*#\s*include\s+"coe/([a-z_]+)/)");
  size_t files = 0;
  std::set<std::string> folders_seen;
  for (const fs::path top : {root / "include" / "coe", root / "src"}) {
    for (const auto& entry : fs::recursive_directory_iterator(top)) {
      const std::string ext = entry.path().extension().string();
      if (!entry.is_regular_file() || (ext != ".h" && ext != ".cpp")) continue;
      const fs::path relative = fs::relative(entry.path(), root);
      const std::string folder = folder_of(relative);
      const auto allowed = kAllowed.find(folder);
      ASSERT_NE(allowed, kAllowed.end()) << relative << ": folder '" << folder << "' has no place in the layering";
      folders_seen.insert(folder);
      ++files;
      std::ifstream in(entry.path());
      std::string line;
      for (int n = 1; std::getline(in, line); ++n) {
        std::smatch m;
        if (!std::regex_search(line, m, include_line) || m[1] == folder) continue;
        EXPECT_TRUE(allowed->second.count(m[1]))
            << relative.string() << ":" << n << ": " << folder << "/ includes " << m[1] << "/ (" << line << ")";
      }
    }
  }
  EXPECT_GT(files, 100u);
  EXPECT_EQ(folders_seen.size(), kAllowed.size()) << "every folder of the layering holds code";
}

}  // namespace
