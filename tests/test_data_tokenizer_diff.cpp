// The differential test of coe's HF tokenizer against Hugging Face `tokenizers` itself: the PyPI
// package (the Rust library with Python bindings) in the Python coe was configured with, and
// coe-tokfuzz compares ids, decode(ids) and decode(ids, skip_special_tokens) on seeded
// generated strings for every tokenizer in $COE_SHARED/data/tokenizers, and for small tokenizers
// whose Split patterns exercise the regex rewriting (properties inside and outside classes,
// negations, \b, (?i), Ruby's (?m)).
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

// Runs coe-tokfuzz against the configured Python's tokenizers; returns its output, failing the
// test on a difference.
std::string run_fuzz(const std::vector<std::string>& tokenizers, int count) {
  std::vector<std::string> argv{coe::test::tool_path("coe-tokfuzz").string(),
                                "--python",
                                coe::test::python().string(),
                                "--count",
                                std::to_string(count),
                                "--seed",
                                "20261129",
                                "--examples",
                                "3"};
  for (const auto& t : tokenizers) argv.insert(argv.end(), {"--tokenizer", t});
  std::string output;
  const int rc = coe::test::run_argv(argv, &output);
  std::cout << output;
  EXPECT_EQ(rc, 0) << "coe and HF tokenizers differ (or the oracle failed):\n" << output;
  EXPECT_NE(output.find("total: " + std::to_string(static_cast<size_t>(count) * tokenizers.size()) +
                        " strings, 0 differences"),
            std::string::npos)
      << output;
  return output;
}

// The oracle is the version tools/requirements.txt pins (the one that reproduces the goldens in
// ../shared), imported by the Python coe was configured with; tools/install-deps.sh installs it.
void expect_pinned_oracle() {
  const std::string requirements = coe::test::read_file(coe::test::source_root() / "tools" / "requirements.txt");
  const size_t at = requirements.find("\ntokenizers==");
  ASSERT_NE(at, std::string::npos) << "tools/requirements.txt pins no tokenizers version";
  const size_t from = at + std::string("\ntokenizers==").size();
  const std::string pinned = requirements.substr(from, requirements.find('\n', from) - from);
  std::string version;
  ASSERT_EQ(
      coe::test::run_argv(
          {coe::test::python().string(), "-c", "import tokenizers; print(tokenizers.__version__, end='')"}, &version),
      0)
      << coe::test::python() << " cannot import HF tokenizers (run tools/install-deps.sh): " << version;
  ASSERT_EQ(version, pinned) << "the oracle is HF tokenizers " << pinned << " (tools/requirements.txt)";
}

}  // namespace

TEST(HfTokenizerDifferential, MatchesHfTokenizersOnGeneratedStrings) {
  const fs::path tool = coe::test::tool_path("coe-tokfuzz");
  ASSERT_TRUE(fs::exists(tool)) << "build the coe-tokfuzz target first: " << tool;
  expect_pinned_oracle();
  if (HasFatalFailure()) return;

  std::vector<std::string> tokenizers;
  for (const auto& entry : fs::directory_iterator(coe::test::shared_root() / "data" / "tokenizers")) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && name.size() > 15 && name.compare(name.size() - 15, 15, "-tokenizer.json") == 0)
      tokenizers.push_back(entry.path().string());
  }
  std::sort(tokenizers.begin(), tokenizers.end());
  ASSERT_GE(tokenizers.size(), 4u) << "expected the shared tokenizers (gpt-neox, qwen2, qwen2-digits3, deepseek-v3)";

  run_fuzz(tokenizers, kStringsPerTokenizer);
}

TEST(HfTokenizerDifferential, RegexRewritingMatchesOniguruma) {
  const fs::path tool = coe::test::tool_path("coe-tokfuzz");
  ASSERT_TRUE(fs::exists(tool)) << "build the coe-tokfuzz target first: " << tool;
  expect_pinned_oracle();
  if (HasFatalFailure()) return;
  const fs::path scratch = coe::test::scratch_dir("tokenizer-diff");
  std::vector<std::string> tokenizers;
  for (size_t i = 0; i < kPatterns.size(); ++i)
    tokenizers.push_back(coe::test::write_file(scratch / ("pattern" + std::to_string(i) + "-tokenizer.json"),
                                               pattern_tokenizer(kPatterns[i])));
  run_fuzz(tokenizers, kStringsPerPattern);
}

// One long real text: the regex matches through the windows find_all bounds its work with
// (docs/tokenizer.md) are those of matching the whole text, for every shared tokenizer: GSM8K
// train as one 1 MiB string, and long runs of spaces, digits and letters.
TEST(HfTokenizerDifferential, LongTextMatchesHfTokenizers) {
  const fs::path tool = coe::test::tool_path("coe-tokenize");
  ASSERT_TRUE(fs::exists(tool)) << "build the coe-tokenize target first: " << tool;
  expect_pinned_oracle();
  if (HasFatalFailure()) return;
  std::string gsm8k;
  for (const auto& r : coe::test::read_jsonl(coe::test::shared_root() / "data" / "gsm8k" / "train.jsonl")) {
    gsm8k += r.at("question").get<std::string>() + "\n" + r.at("answer").get<std::string>() + "\n\n";
    if (gsm8k.size() >= (1u << 20)) break;
  }
  gsm8k.resize(1u << 20);
  while (!gsm8k.empty() && (static_cast<unsigned char>(gsm8k.back()) & 0xC0) == 0x80) gsm8k.pop_back();
  if (!gsm8k.empty() && static_cast<unsigned char>(gsm8k.back()) >= 0xC0) gsm8k.pop_back();
  const std::string runs = "x" + std::string(100'000, ' ') + "y  \n" + std::string(50'000, '7') + " " +
                           std::string(70'000, 'q') + "\t\t" + std::string(30'000, '\n') + "end ";
  const fs::path scratch = coe::test::scratch_dir("tokenizer-diff-long");
  const std::string input =
      coe::test::write_file(scratch / "long.jsonl", nlohmann::json{{"text", gsm8k}}.dump() + "\n" +
                                                        nlohmann::json{{"text", runs}}.dump() + "\n");
  for (const auto& entry : fs::directory_iterator(coe::test::shared_root() / "data" / "tokenizers")) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || name.size() <= 15 || name.compare(name.size() - 15, 15, "-tokenizer.json") != 0)
      continue;
    const std::string hf_out = (scratch / (name + ".hf.jsonl")).string();
    const std::string coe_out = (scratch / (name + ".coe.jsonl")).string();
    std::string log;
    ASSERT_EQ(coe::test::run_argv(
                  {coe::test::python().string(), (coe::test::source_root() / "tools" / "hf_oracle.py").string(),
                   "--tokenizer", entry.path().string(), "--input", input, "--output", hf_out},
                  &log),
              0)
        << log;
    ASSERT_EQ(coe::test::run_command(
                  tool.string() + " --tokenizer " + entry.path().string() + " < " + input + " > " + coe_out, &log),
              0)
        << log;
    const auto hf = coe::test::read_jsonl(hf_out), ours = coe::test::read_jsonl(coe_out);
    ASSERT_EQ(hf.size(), 2u);
    ASSERT_EQ(ours.size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
      const auto expected = hf[i].at("ids").get<std::vector<int>>(), actual = ours[i].at("ids").get<std::vector<int>>();
      EXPECT_GT(actual.size(), 1000u) << name;
      EXPECT_TRUE(expected == actual) << name << ": text " << i << " differs from HF tokenizers (" << actual.size()
                                      << " ids, HF " << expected.size() << ")";
    }
  }
}

// coe's encode failing inside coe-tokfuzz's worker threads is the tool's one-line error and exit
// status 1, with any number of threads (it was std::terminate: an exception leaving a thread, the
// oracle's thread never joined). The pattern backtracks catastrophically on every line of more
// than a few characters without a '#'; the oracle is /bin/true, as HF's Oniguruma would take
// exponential time on it.
TEST(CoeTokfuzzTool, EncodeErrorIsOneLineAndExitStatus1) {
  const fs::path tool = coe::test::tool_path("coe-tokfuzz");
  ASSERT_TRUE(fs::exists(tool)) << "build the coe-tokfuzz target first: " << tool;
  const std::string path = coe::test::write_file(coe::test::scratch_dir("tokfuzz-throws") / "exp-tokenizer.json",
                                                 pattern_tokenizer("(?:.|.)*#|."));
  for (const std::string threads : {"1", "2"}) {
    std::string output;
    const int rc = coe::test::run_argv({tool.string(), "--python", "/bin/true", "--count", "200", "--batch", "50",
                                        "--threads", threads, "--tokenizer", path},
                                       &output);
    EXPECT_EQ(rc, 1) << threads << " threads: " << output;
    EXPECT_EQ(output.find('\n'), output.size() - 1) << "one line: " << output;
    for (const std::string& part : {std::string("error: coe-tokfuzz: coe cannot encode string "), path + ": regex /",
                                    std::string("backtracking limit hit")})
      EXPECT_NE(output.find(part), std::string::npos) << "missing '" << part << "' in: " << output;
  }
}

#else  // !COE_WITH_HF_TOKENIZER

TEST(HfTokenizerDifferential, NotBuilt) { GTEST_SKIP() << "coe was configured without PCRE2"; }

#endif
