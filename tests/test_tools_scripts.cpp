// The shipped scripts: tools/download-data.sh fetches every file the shipped configs name under
// $COE_DATA (checked with --dry-run: there is no network here), into ../shared/data's layout; and
// tools/quickstart.sh --out DIR runs from a checkout it only reads.
#include "support/test_env.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using coe::test::read_file;

// Every file (relative to the data root) a config in configs/ names as $COE_DATA/...
std::set<std::string> data_root_files() {
  std::set<std::string> out;
  const std::regex path(R"(\$COE_DATA/([^\s\],#'"]+))");
  for (const auto& entry : fs::recursive_directory_iterator(coe::test::source_root() / "configs")) {
    if (entry.path().extension() != ".yaml") continue;
    const std::string text = read_file(entry.path());
    for (std::sregex_iterator it(text.begin(), text.end(), path), end; it != end; ++it) out.insert((*it)[1].str());
  }
  return out;
}

// "URL -> FILE [(sha256 HASH)]" lines of the dry run: FILE -> {URL, HASH}.
std::map<std::string, std::pair<std::string, std::string>> dry_run_lines(const std::string& output) {
  std::map<std::string, std::pair<std::string, std::string>> out;
  const std::regex line(R"(^(https://\S+) -> (\S+)(?: \(sha256 ([0-9a-f]{64})\))?$)");
  std::istringstream in(output);
  for (std::string l; std::getline(in, l);) {
    std::smatch m;
    if (std::regex_match(l, m, line)) out[m[2].str()] = {m[1].str(), m[3].str()};
    else ADD_FAILURE() << "not a 'URL -> FILE' line: " << l;
  }
  return out;
}

TEST(Scripts, DownloadDataFetchesEveryFileTheShippedConfigsName) {
  const fs::path dest = coe::test::scratch_dir("download") / "data";
  std::string out;
  ASSERT_EQ(coe::test::run_argv(
                {(coe::test::source_root() / "tools" / "download-data.sh").string(), "--dry-run", dest.string()}, &out),
            0)
      << out;
  EXPECT_FALSE(fs::exists(dest)) << "a dry run writes nothing";
  const auto lines = dry_run_lines(out);
  const std::set<std::string> named = data_root_files();
  // The configs name GSM8K, MetaMathQA and their tokenizers; each has a download.
  for (const char* f : {"gsm8k/train.jsonl", "metamathqa/MetaMathQA-395K.json", "tokenizers/gpt-neox-tokenizer.json",
                        "tokenizers/deepseek-v2-lite-tokenizer.json"})
    EXPECT_EQ(named.count(f), 1u) << f << " is no longer named by configs/: update this test";
  for (const auto& f : named) EXPECT_EQ(lines.count((dest / f).string()), 1u) << f << " is not downloaded\n" << out;

  // Files ../shared/data holds as well are checked against its bytes: the two roots are
  // interchangeable.
  size_t checked = 0;
  for (const auto& [file, source] : lines) {
    const std::string& sha = source.second;
    if (sha.empty()) continue;
    const fs::path shared = coe::test::shared_root() / "data" / fs::path(file).lexically_relative(dest);
    std::string sum;
    ASSERT_EQ(coe::test::run_command("sha256sum " + shared.string(), &sum), 0) << sum;
    EXPECT_EQ(sum.substr(0, 64), sha) << shared;
    ++checked;
  }
  EXPECT_EQ(checked, 2u) << out;  // GSM8K's train and test

  // --only picks one set; a bad option is refused.
  ASSERT_EQ(coe::test::run_argv({(coe::test::source_root() / "tools" / "download-data.sh").string(), "--dry-run",
                                 "--only", "gsm8k", dest.string()},
                                &out),
            0)
      << out;
  EXPECT_EQ(dry_run_lines(out).size(), 3u) << out;
  EXPECT_EQ(out.find("MetaMathQA"), std::string::npos) << out;
  EXPECT_EQ(
      coe::test::run_argv({(coe::test::source_root() / "tools" / "download-data.sh").string(), "--only", "x"}, &out), 2)
      << out;
}

// Every entry below `dir`, for comparing a tree before and after.
std::set<std::string> tree(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) out.insert(e.path().lexically_relative(dir).string());
  return out;
}

// The quickstart with --out into a fresh folder (its name has a space and a quote) and --bin: the
// synthetic data, the prepared data and the sweep all land under it, the checkout is left as it
// was, and a folder that is not coe's is never removed. A few steps instead of 300.
TEST(Scripts, QuickstartWritesOnlyUnderOut) {
  const fs::path dir = coe::test::scratch_dir("quickstart");
  const fs::path checkout = dir / "checkout";  // the script and the configs it reads
  fs::create_directories(checkout / "tools");
  fs::copy_file(coe::test::source_root() / "tools" / "quickstart.sh", checkout / "tools" / "quickstart.sh");
  fs::copy(coe::test::source_root() / "configs", checkout / "configs", fs::copy_options::recursive);
  const std::set<std::string> before = tree(checkout);

  const fs::path out = dir / "out dir's";
  const std::string bin = coe::test::tool_path("coe-sweep").parent_path().string();
  const std::vector<std::string> args{(checkout / "tools" / "quickstart.sh").string(),
                                      "--bin",
                                      bin,
                                      "--out",
                                      out.string(),
                                      "--set",
                                      "trainer.total_steps=6",
                                      "--set",
                                      "trainer.val_interval=3",
                                      "--set",
                                      "trainer.val_batches=1"};
  std::string log;
  ASSERT_EQ(coe::test::run_argv(args, &log), 0) << log;
  const std::string summary = read_file(out / "sweep" / "summary.md");
  EXPECT_NE(summary.find("| moe-c1-k4 | complete | 6/6 |"), std::string::npos) << summary;
  EXPECT_NE(summary.find("| coe-c2-k2 | complete | 6/6 |"), std::string::npos) << summary;
  EXPECT_NE(log.find("| coe-c2-k2 | complete"), std::string::npos) << log;  // the table, printed
  EXPECT_TRUE(fs::exists(out / "sweep" / "run-plots" / "loss.png")) << log;
  for (const char* v : {"moe-c1-k4", "coe-c2-k2"}) {
    const std::string config = read_file(out / "sweep" / v / "config.yaml");
    EXPECT_NE(config.find("    - " + (out / "synth.json").string() + "\n"), std::string::npos) << config;
    EXPECT_NE(config.find("  prepared_dir: " + (out / "prepared").string() + "\n"), std::string::npos) << config;
  }
  EXPECT_TRUE(fs::exists(out / "prepared" / "manifest.json"));
  EXPECT_EQ(tree(checkout), before) << "the quickstart wrote into the checkout";

  // DIR/sweep that coe did not make: refused, left alone.
  const fs::path mine = dir / "mine";
  coe::test::write_file(mine / "sweep" / "notes.txt", "mine");
  std::vector<std::string> refused = args;
  refused[4] = mine.string();
  EXPECT_EQ(coe::test::run_argv(refused, &log), 1) << log;
  EXPECT_NE(log.find("error: " + (mine / "sweep").string() + " exists and is not a coe sweep directory"),
            std::string::npos)
      << log;
  EXPECT_EQ(read_file(mine / "sweep" / "notes.txt"), "mine");
}

}  // namespace
