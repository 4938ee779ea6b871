// coe-tokfuzz: the differential test of coe's HF tokenizer against Hugging Face `tokenizers`
// itself (the PyPI package, run by tools/hf_oracle.py). Generates seeded test strings
// (coe/tokenizer/tokenizer_fuzz.h), encodes them with both, and compares the ids, decode(ids) and
// decode(ids, skip_special_tokens); reports differences with their code points.
//
//   coe-tokfuzz --tokenizer FILE [--tokenizer FILE]... [--count N] [--seed S] [--all-code-points]
//               [--batch N] [--threads N] [--examples K] [--python PATH] [--script PATH]
// The Python (default: the one coe was configured with, the checkout's .venv) must import
// `tokenizers` (tools/install-deps.sh installs the pinned version).
//   coe-tokfuzz --write-texts --tokenizer FILE [--count N] [--seed S] > texts.jsonl
//
// --all-code-points replaces the random strings by one string per code point (all 1,112,064
// scalar values) holding it in the contexts that matter (tokenizer_fuzz.h: code_point_contexts).
// --write-texts only writes the strings ({"text": ...} lines; the added tokens come from the
// tokenizer file), e.g. for coe-tokenize --bench.
// Exit status: 0 no differences; 1 differences, or coe's encode failed on a string (one line
// "error: coe-tokfuzz: coe cannot encode string N (B bytes): <reason>"), or a bad flag, as for
// every coe tool; 2 the oracle or a file failed.
#include "cli.h"
#include "coe/tokenizer/hf_tokenizer.h"
#include "coe/tokenizer/tokenizer_fuzz.h"
#include "coe/util/clock.h"
#include "coe/util/error.h"
#include "coe/util/subprocess.h"

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#ifdef COE_WITH_HF_TOKENIZER

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Ids = std::vector<int32_t>;
using coe::Clock;
using coe::seconds_since;

#ifndef COE_PYTHON
#define COE_PYTHON "python3"
#endif

std::vector<std::string> added_token_contents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) coe::fail("{}: cannot read", path);
  const json j = json::parse(in);
  std::vector<std::string> out;
  if (auto it = j.find("added_tokens"); it != j.end() && it->is_array())
    for (const auto& t : *it)
      if (t.contains("content") && t["content"].is_string()) out.push_back(t["content"].get<std::string>());
  return out;
}

// Runs fn(i) for i in [0, n) on `threads` threads. The first exception any call throws stops the
// others from taking more work and is rethrown once every thread is joined (an exception leaving
// a std::thread, or a thread never joined, would end the process with std::terminate).
template <typename Fn>
void parallel_for(size_t n, int threads, Fn&& fn) {
  std::atomic<size_t> next{0};
  std::mutex error_mutex;
  std::exception_ptr error;
  auto worker = [&] {
    try {
      for (size_t i; (i = next.fetch_add(1)) < n;) fn(i);
    } catch (...) {
      next = n;
      const std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

struct Options {
  std::string python = COE_PYTHON, script;  // script: tools/hf_oracle.py, as find_plot_script finds it
  std::vector<std::string> tokenizers;
  uint64_t count = 20000, seed = 1;
  size_t batch = 50000;
  int threads = 1, examples = 3;
  bool all_code_points = false, write_texts = false;
};

// coe's encode threw on a generated string: exit status 1, not 2 (the oracle's or a file's failure).
struct EncodeFailed : coe::Error {
  using coe::Error::Error;
};

struct Counts {
  uint64_t strings = 0, ids = 0, decoded = 0, decoded_skip = 0;
  double hf_seconds = 0, coe_seconds = 0;
};

// The first code points where coe's and HF's ids stop agreeing (by coe's decode of the common prefix).
std::string where_ids_differ(const coe::HfTokenizer& tok, const std::string& text, const Ids& hf, const Ids& ours) {
  size_t k = 0;
  while (k < hf.size() && k < ours.size() && hf[k] == ours[k]) ++k;
  const std::string prefix = tok.decode(Ids(hf.begin(), hf.begin() + static_cast<std::ptrdiff_t>(k)));
  std::string rest =
      text.size() >= prefix.size() && text.compare(0, prefix.size(), prefix) == 0 ? text.substr(prefix.size()) : text;
  return fmt::format("token {}, text from byte {}: {}", k, text.size() - rest.size(),
                     coe::describe_code_points(rest, 12));
}

void report(const std::string& what, uint64_t index, const std::string& text, const std::string& detail) {
  std::string shown = json(text).dump();
  if (shown.size() > 400) shown = shown.substr(0, 400) + "...";
  fmt::print("  DIFF {}: string {} ({} bytes)\n    text: {}\n    code points: {}\n{}", what, index, text.size(), shown,
             coe::describe_code_points(text, 48), detail);
}

int fuzz_tokenizer(const Options& opt, const std::string& path, const fs::path& scratch, Counts& total) {
  const auto tok = coe::HfTokenizer::from_tokenizer_json(path);
  coe::TokenizerFuzzText generator(opt.seed, added_token_contents(path));
  const uint64_t count = opt.all_code_points ? 0x110000 - 0x800 : opt.count;
  char32_t next_code_point = 0;
  Counts counts;
  int shown = 0;
  const fs::path in_path = scratch / "in.jsonl", out_path = scratch / "out.jsonl", err_path = scratch / "err.txt";
  for (uint64_t done = 0; done < count;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(opt.batch, count - done));
    std::vector<std::string> texts(n);
    for (auto& t : texts) {
      if (opt.all_code_points) {
        if (next_code_point == 0xD800) next_code_point = 0xE000;
        t = coe::code_point_contexts(next_code_point++);
      } else {
        t = generator.next();
      }
    }
    {
      std::ofstream in(in_path, std::ios::binary | std::ios::trunc);
      for (const auto& t : texts) in << json{{"text", t}}.dump() << '\n';
      if (!in) coe::fail("{}: cannot write", in_path.string());
    }
    // HF in the background while coe encodes the same batch.
    int oracle_status = 0;
    double hf_seconds = 0;
    std::string oracle_error;
    fs::remove(err_path);
    std::thread oracle([&] {
      const auto start = Clock::now();
      try {
        oracle_status = coe::run_process(
            {opt.python, opt.script, "--tokenizer", path, "--input", in_path.string(), "--output", out_path.string()},
            err_path);
      } catch (const std::exception& e) {
        oracle_status = -1;
        oracle_error = e.what();
      }
      hf_seconds = seconds_since(start);
    });
    std::vector<Ids> ours(n);
    const auto coe_start = Clock::now();
    std::string encode_error;
    try {
      parallel_for(n, opt.threads, [&](size_t i) {
        try {
          ours[i] = tok->encode(texts[i]);
        } catch (const std::exception& e) {
          coe::fail("string {} ({} bytes): {}", done + i, texts[i].size(), coe::first_line(e));
        }
      });
    } catch (const std::exception& e) {
      encode_error = coe::first_line(e);
    }
    counts.coe_seconds += seconds_since(coe_start);
    oracle.join();  // before any return: a joinable std::thread's destructor ends the process
    // coe failing on a string is a finding like a difference (HF may encode it), reported as the
    // tool's one-line error.
    if (!encode_error.empty()) throw EncodeFailed(encode_error);
    counts.hf_seconds += hf_seconds;
    if (oracle_status != 0) {
      std::ifstream err(err_path);
      std::stringstream ss;
      ss << err.rdbuf();
      fmt::print(stderr, "coe-tokfuzz: the HF oracle failed (exit status {}): {}{}\n", oracle_status, oracle_error,
                 ss.str());
      return 2;
    }
    std::ifstream out(out_path);
    std::string line;
    for (size_t i = 0; i < n; ++i) {
      if (!std::getline(out, line)) {
        fmt::print(stderr, "coe-tokfuzz: the HF oracle wrote {} lines for {} strings\n", i, n);
        return 2;
      }
      const json hf = json::parse(line);
      const Ids hf_ids = hf.at("ids").get<Ids>();
      const uint64_t index = done + i;
      if (hf_ids != ours[i]) {
        ++counts.ids;
        if (shown++ < opt.examples)
          report("ids", index, texts[i],
                 fmt::format("    hf:  {}\n    coe: {}\n    first difference at {}\n", json(hf_ids).dump(),
                             json(ours[i]).dump(), where_ids_differ(*tok, texts[i], hf_ids, ours[i])));
        continue;
      }
      const std::string decoded = tok->decode(hf_ids), decoded_skip = tok->decode(hf_ids, true);
      if (decoded != hf.at("text").get<std::string>()) {
        ++counts.decoded;
        if (shown++ < opt.examples)
          report("decode(ids)", index, texts[i],
                 fmt::format("    hf:  {}\n    coe: {}\n", hf.at("text").dump(), json(decoded).dump()));
      }
      if (decoded_skip != hf.at("text_skip").get<std::string>()) {
        ++counts.decoded_skip;
        if (shown++ < opt.examples)
          report("decode(ids, skip_special_tokens)", index, texts[i],
                 fmt::format("    hf:  {}\n    coe: {}\n", hf.at("text_skip").dump(), json(decoded_skip).dump()));
      }
    }
    done += n;
    counts.strings = done;
  }
  fmt::print("{}: {} strings{}: {} differ in ids, {} in decode, {} in decode with skip_special_tokens "
             "(HF {:.1f} s, coe {:.1f} s)\n",
             tok->name(), counts.strings, opt.all_code_points ? " (every code point in context)" : "", counts.ids,
             counts.decoded, counts.decoded_skip, counts.hf_seconds, counts.coe_seconds);
  std::fflush(stdout);
  total.strings += counts.strings;
  total.ids += counts.ids;
  total.decoded += counts.decoded;
  total.decoded_skip += counts.decoded_skip;
  return counts.ids + counts.decoded + counts.decoded_skip == 0 ? 0 : 1;
}

}  // namespace

static int tool_main(int argc, char** argv) {
  CLI::App app{"Differential test of coe's HF tokenizer against Hugging Face tokenizers (PyPI)"};
  Options opt;
  app.add_option("--tokenizer", opt.tokenizers, "tokenizer.json file(s)")->required();
  app.add_option("--count", opt.count, "generated strings per tokenizer");
  app.add_option("--seed", opt.seed, "generator seed");
  app.add_flag("--all-code-points", opt.all_code_points, "one string per code point (in context) instead");
  app.add_option("--batch", opt.batch, "strings per oracle run")->check(CLI::Range(1, 10000000));
  app.add_option("--threads", opt.threads, "coe encoding threads")->check(CLI::Range(1, 256));
  app.add_option("--examples", opt.examples, "differences shown per tokenizer");
  app.add_option("--python", opt.python, "a Python that imports tokenizers")->capture_default_str();
  app.add_option("--script", opt.script, "the oracle script (default: <bin>/../share/coe/hf_oracle.py)");
  app.add_flag("--write-texts", opt.write_texts, "write the strings as JSONL to stdout instead of testing");
  if (const int status = coe::cli::parse(app, argc, argv); status >= 0) return status;
  if (opt.write_texts) {
    try {
      coe::TokenizerFuzzText generator(opt.seed, added_token_contents(opt.tokenizers.front()));
      for (uint64_t i = 0; i < opt.count; ++i) std::cout << json{{"text", generator.next()}}.dump() << '\n';
      std::cout.flush();
      return std::cout ? 0 : 2;
    } catch (const std::exception& e) {
      fmt::print(stderr, "coe-tokfuzz: {}\n", e.what());
      return 2;
    }
  }

  if (opt.script.empty()) {
    const auto found = coe::find_plot_script("hf_oracle.py", nullptr);
    if (!found)
      return coe::cli::report_error("coe-tokfuzz: hf_oracle.py is neither in <bin>/../share/coe nor in the build this "
                                    "binary came from: name it with --script");
    opt.script = found->string();
  }
  const fs::path scratch = fs::temp_directory_path() / fmt::format("coe-tokfuzz-{}", ::getpid());
  int status = 0;
  try {
    fs::create_directories(scratch);
    const auto start = Clock::now();
    Counts total;
    for (const auto& path : opt.tokenizers) {
      const int rc = fuzz_tokenizer(opt, path, scratch, total);
      status = std::max(status, rc);
      if (rc == 2) break;
    }
    if (status != 2)
      fmt::print("total: {} strings, {} differences, {:.1f} s\n", total.strings,
                 total.ids + total.decoded + total.decoded_skip, seconds_since(start));
  } catch (const EncodeFailed& e) {
    status = coe::cli::report(e, "coe-tokfuzz: coe cannot encode ");
  } catch (const std::exception& e) {
    fmt::print(stderr, "coe-tokfuzz: {}\n", e.what());
    status = 2;
  }
  std::error_code ec;
  fs::remove_all(scratch, ec);
  return status;
}

#else  // !COE_WITH_HF_TOKENIZER

int main() {
  std::fprintf(stderr,
               "coe-tokfuzz: this build of coe has no HF tokenizer support (PCRE2 was not found at configure time)\n");
  return 2;
}

#endif

int main(int argc, char** argv) { return coe::cli::exit_status(tool_main(argc, argv)); }
