// The differential test of coe's HF tokenizer against Hugging Face `tokenizers` itself: the npm
// package (the Rust library with node bindings) is installed into the build directory, and
// coe-tokfuzz compares ids, decode(ids) and decode(ids, skip_special_tokens) on seeded
// generated strings for every tokenizer in $COE_SHARED/data/tokenizers, and for small tokenizers
// whose Split patterns exercise the regex rewriting (properties inside and outside classes,
// negations, \b, (?i), Ruby's (?m)). Skipped, saying why, when node or npm is missing or the
// package cannot be installed.
#include "support/test_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#ifdef COE_WITH_HF_TOKENIZER

namespace fs = std::filesystem;

namespace {

std::string quoted(const std::string& s) { return "'" + s + "'"; }

constexpr const char* kOraclePackage = "tokenizers@0.23.2";
constexpr const char* kOracleVersion = "\"version\": \"0.23.2\"";
constexpr int kStringsPerTokenizer = 20000;
constexpr int kStringsPerPattern = 4000;

// Patterns valid in Oniguruma whose matches Split(Removed) turns into ids (the bytes left over).
const std::vector<std::string> kPatterns{R"((?i)\p{Lu}+|\p{Ll}\p{M}*)",
                                         R"(\P{L}+)",
                                         R"([^\p{L}\p{N}\s]+)",
                                         R"(\b\w+\b)",
                                         R"((?i:[a-z]+)|\d+|\h+)",
                                         R"(a(?m:.))",
                                         R"([\S\W]|[\P{Lu}x]+)",
                                         R"(\p{Zs}|\p{Cn}|\p{Co}|\p{Cf}|\p{Sk}|\p{Lt})",
                                         R"(\D\S\W)",
                                         R"(\B.)",
                                         R"((?i)\w\s\P{Ll})",
                                         R"(\p{^N}\p{Nl}|\p{No})",
                                         R"(\s+$|^\S)"};

// A tokenizer.json: Split(pattern, Removed), then ByteLevel; the vocabulary is the 256 bytes.
std::string pattern_tokenizer(const std::string& pattern) {
  nlohmann::json vocab = nlohmann::json::object();
  int extra = 0;
  for (int b = 0; b < 256; ++b) {  // GPT-2's byte-level alphabet
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const int cp = printable ? b : 256 + extra++;
    std::string c;
    if (cp < 0x80) {
      c += static_cast<char>(cp);
    } else {
      c += static_cast<char>(0xC0 | (cp >> 6));
      c += static_cast<char>(0x80 | (cp & 0x3F));
    }
    vocab[c] = b;
  }
  const nlohmann::json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
  const nlohmann::json j = {
      {"version", "1.0"},
      {"added_tokens", nlohmann::json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Removed"}, {"invert", false}},
          byte_level}}}},
      {"post_processor", nullptr},
      {"decoder", byte_level},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
  return j.dump();
}

// Runs coe-tokfuzz; returns its output, failing the test on a difference.
std::string run_fuzz(const fs::path& dir, const std::vector<std::string>& tokenizers, int count) {
  std::string command = coe::test::tool_path("coe-tokfuzz").string() + " --oracle " + quoted(dir.string()) +
                        " --count " + std::to_string(count) + " --seed 20261129 --examples 3";
  for (const auto& t : tokenizers) command += " --tokenizer " + quoted(t);
  std::string output;
  const int rc = coe::test::run_command(command, &output);
  std::cout << output;
  EXPECT_EQ(rc, 0) << "coe and HF tokenizers differ (or the oracle failed):\n" << output;
  EXPECT_NE(output.find("total: " + std::to_string(static_cast<size_t>(count) * tokenizers.size()) +
                        " strings, 0 differences"),
            std::string::npos)
      << output;
  return output;
}

// build/hf-oracle, or $COE_HF_ORACLE.
fs::path oracle_dir() {
  if (const char* env = std::getenv("COE_HF_ORACLE"); env && *env) return env;
  return coe::test::tool_path("coe-tokfuzz").parent_path().parent_path() / "hf-oracle";
}

// Installs the pinned oracle unless it is there; returns an empty string or why it is unusable.
std::string prepare_oracle(const fs::path& dir) {
  std::string output;
  if (coe::test::run_command("command -v node && command -v npm", &output) != 0)
    return "node and npm are needed for the differential test against HF tokenizers (tools/install-deps.sh installs "
           "Debian's nodejs and npm); not found on PATH";
  const fs::path package = dir / "node_modules" / "tokenizers" / "package.json";
  if (!fs::exists(package) || coe::test::read_file(package).find(kOracleVersion) == std::string::npos) {
    // ctest runs the tests of this file in parallel: one npm install at a time (flock), each
    // installing only if the others have not.
    std::error_code ec;
    fs::create_directories(dir, ec);
    // Inside sh -c '...': paths in double quotes.
    const std::string script = R"(grep -qs "\"version\": \"0.23.2\"" ")" + package.string() +
                               R"(" || npm install --prefix ")" + dir.string() +
                               "\" --no-audit --no-fund --loglevel=error " + kOraclePackage;
    const int rc = coe::test::run_command(
        "flock " + quoted((dir / ".install.lock").string()) + " sh -c " + quoted(script), &output);
    if (rc != 0) return "npm install " + std::string(kOraclePackage) + " into " + dir.string() + " failed: " + output;
  }
  const std::string load =
      "node -e " + quoted("require(process.argv[1])") + " " + quoted((dir / "node_modules" / "tokenizers").string());
  if (coe::test::run_command(load, &output) != 0)
    return "node cannot load " + std::string(kOraclePackage) + ": " + output;
  return "";
}

}  // namespace

TEST(HfTokenizerDifferential, MatchesHfTokenizersOnGeneratedStrings) {
  const fs::path tool = coe::test::tool_path("coe-tokfuzz");
  ASSERT_TRUE(fs::exists(tool)) << "build the coe-tokfuzz target first: " << tool;
  const fs::path dir = oracle_dir();
  if (const std::string why = prepare_oracle(dir); !why.empty()) GTEST_SKIP() << why;

  std::vector<std::string> tokenizers;
  for (const auto& entry : fs::directory_iterator(coe::test::shared_root() / "data" / "tokenizers")) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && name.size() > 15 && name.compare(name.size() - 15, 15, "-tokenizer.json") == 0)
      tokenizers.push_back(entry.path().string());
  }
  std::sort(tokenizers.begin(), tokenizers.end());
  ASSERT_GE(tokenizers.size(), 4u) << "expected the shared tokenizers (gpt-neox, qwen2, qwen2-digits3, deepseek-v3)";

  run_fuzz(dir, tokenizers, kStringsPerTokenizer);
}

TEST(HfTokenizerDifferential, RegexRewritingMatchesOniguruma) {
  const fs::path tool = coe::test::tool_path("coe-tokfuzz");
  ASSERT_TRUE(fs::exists(tool)) << "build the coe-tokfuzz target first: " << tool;
  const fs::path dir = oracle_dir();
  if (const std::string why = prepare_oracle(dir); !why.empty()) GTEST_SKIP() << why;
  const fs::path scratch = coe::test::scratch_dir("tokenizer-diff");
  std::vector<std::string> tokenizers;
  for (size_t i = 0; i < kPatterns.size(); ++i)
    tokenizers.push_back(coe::test::write_file(scratch / ("pattern" + std::to_string(i) + "-tokenizer.json"),
                                               pattern_tokenizer(kPatterns[i])));
  run_fuzz(dir, tokenizers, kStringsPerPattern);
}

#else  // !COE_WITH_HF_TOKENIZER

TEST(HfTokenizerDifferential, NotBuilt) { GTEST_SKIP() << "coe was configured without PCRE2"; }

#endif
