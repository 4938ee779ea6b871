// coe-tokenize: JSONL text on stdin -> one {"ids":[...]} line per input line on stdout, in input
// order, tokenized on N threads. --decode reads {"ids":[...]} lines and writes {"text": ...} lines
// (--skip-special-tokens drops special tokens, as HF's decode(ids, skip_special_tokens=True)).
// --bench measures encoding throughput (tokens/s) on the input instead of writing ids.
//
//   coe-tokenize --tokenizer FILE|byte [--field text]... [--threads N] [--decode [--skip-special-tokens]]
//                [--bench [--repeat K]]
//
// Several --field options are joined with one space (e.g. --field question --field answer).
// A malformed line or a missing field stops the run: the error names the line, the exit code is 1.
#include "cli.h"
#include "coe/tokenizer/tokenizer.h"
#include "coe/util/clock.h"
#include "coe/util/error.h"

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <iostream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

namespace {

using nlohmann::json;

constexpr size_t kBatchLines = 16384;      // lines read before a parallel pass
constexpr size_t kBatchBytes = 32u << 20;  // ... or this many bytes
constexpr size_t kChunk = 16;              // lines a worker takes at a time

json parse_line(const std::string& line) {
  try {
    json j = json::parse(line);
    if (!j.is_object()) coe::fail("expected a JSON object");
    return j;
  } catch (const json::parse_error& e) {
    coe::fail("malformed JSON: {}", e.what());
  }
}

// The text of a record: the string fields joined by single spaces.
std::string record_text(const std::string& line, const std::vector<std::string>& fields) {
  const json j = parse_line(line);
  std::string text;
  for (size_t i = 0; i < fields.size(); ++i) {
    auto it = j.find(fields[i]);
    if (it == j.end() || !it->is_string()) coe::fail("missing string field '{}'", fields[i]);
    if (i > 0) text += ' ';
    text += it->get_ref<const std::string&>();
  }
  return text;
}

std::string ids_line(const std::vector<int32_t>& ids) {
  std::string out = "{\"ids\":[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out += ',';
    fmt::format_to(std::back_inserter(out), "{}", ids[i]);
  }
  out += "]}";
  return out;
}

std::string decode_line(const coe::Tokenizer& tok, const std::string& line, bool skip_special_tokens) {
  const json j = parse_line(line);
  auto it = j.find("ids");
  if (it == j.end() || !it->is_array()) coe::fail("missing array field 'ids'");
  std::vector<int32_t> ids;
  ids.reserve(it->size());
  for (const auto& v : *it) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > std::numeric_limits<int32_t>::max())
      coe::fail("'ids' must hold non-negative integer token ids, got {}", v.dump());
    ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
  }
  return json{{"text", tok.decode(ids, skip_special_tokens)}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Runs fn(i) for i in [0, n) on `threads` threads (the caller's included), in small chunks so
// that uneven documents balance out.
void parallel_for(size_t n, int threads, const std::function<void(size_t)>& fn) {
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (;;) {
      const size_t begin = next.fetch_add(kChunk);
      if (begin >= n) return;
      for (size_t i = begin; i < std::min(n, begin + kChunk); ++i) fn(i);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
}

// Reads stdin in batches, transforms each line in parallel, writes results in input order.
int stream(const std::function<std::string(const std::string&)>& transform, int threads) {
  std::vector<std::string> lines, outputs, errors;
  size_t line_base = 0;  // lines before this batch
  std::string line, buffer;
  bool eof = false;
  while (!eof) {
    lines.clear();
    size_t bytes = 0;
    while (lines.size() < kBatchLines && bytes < kBatchBytes) {
      if (!std::getline(std::cin, line)) {
        eof = true;
        break;
      }
      bytes += line.size();
      lines.push_back(std::move(line));
    }
    if (lines.empty()) break;
    outputs.assign(lines.size(), std::string());
    errors.assign(lines.size(), std::string());
    parallel_for(lines.size(), threads, [&](size_t i) {
      try {
        outputs[i] = transform(lines[i]);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
    buffer.clear();
    for (size_t i = 0; i < lines.size(); ++i) {
      if (!errors[i].empty()) {
        std::fwrite(buffer.data(), 1, buffer.size(), stdout);
        std::fflush(stdout);
        fmt::print(stderr, "error: stdin line {}: {}\n", line_base + i + 1, errors[i]);
        return 1;
      }
      buffer += outputs[i];
      buffer += '\n';
    }
    std::fwrite(buffer.data(), 1, buffer.size(), stdout);
    line_base += lines.size();
  }
  std::fflush(stdout);
  return 0;
}

// Encodes the whole input `repeat` times and reports tokens/s; pass 1 starts with an empty
// word cache. Reading and JSON parsing are not timed.
int bench(const coe::Tokenizer& tok, const std::vector<std::string>& fields, int threads, int repeat) {
  std::vector<std::string> texts;
  std::string line;
  for (size_t line_no = 1; std::getline(std::cin, line); ++line_no) {
    try {
      texts.push_back(record_text(line, fields));
    } catch (const std::exception& e) {
      fmt::print(stderr, "error: stdin line {}: {}\n", line_no, e.what());
      return 1;
    }
  }
  size_t bytes = 0;
  for (const auto& t : texts) bytes += t.size();
  fmt::print("bench: {} documents, {} bytes, tokenizer {}, {} thread(s)\n", texts.size(), bytes, tok.name(), threads);
  for (int pass = 1; pass <= repeat; ++pass) {
    std::vector<size_t> counts(texts.size());
    const auto start = coe::Clock::now();
    parallel_for(texts.size(), threads, [&](size_t i) { counts[i] = tok.encode(texts[i]).size(); });
    const double seconds = coe::seconds_since(start);
    size_t tokens = 0;
    for (size_t c : counts) tokens += c;
    const double rate = static_cast<double>(tokens) / seconds;
    fmt::print("pass {}: {} tokens in {:.3f} s = {:.0f} tokens/s ({:.0f} per thread){}\n", pass, tokens, seconds, rate,
               rate / threads, pass == 1 ? " [cold word cache]" : "");
  }
  return 0;
}

}  // namespace

static int tool_main(int argc, char** argv) {
  CLI::App app{"Tokenize JSONL text into token ids (or decode ids back into text)"};
  std::string spec;
  std::vector<std::string> fields;
  int threads = 1;
  bool decode = false, skip_special_tokens = false, run_bench = false;
  int repeat = 3;
  app.add_option("--tokenizer", spec, "tokenizer.json, vocab.json (+ merges.txt), a directory, or 'byte'")->required();
  app.add_option("--field", fields, "string field(s) to encode, joined by a space (default: text)");
  app.add_option("--threads", threads, "worker threads (output order is preserved)")->check(CLI::Range(1, 1024));
  app.add_flag("--decode", decode, "read {\"ids\":[...]} lines and write {\"text\": ...} lines");
  app.add_flag("--skip-special-tokens", skip_special_tokens,
               "with --decode: drop special tokens (HF's skip_special_tokens)");
  app.add_flag("--bench", run_bench, "report encoding throughput on the input instead of writing ids");
  app.add_option("--repeat", repeat, "passes over the input in --bench mode")->check(CLI::Range(1, 1000));
  if (const int status = coe::cli::parse(app, argc, argv); status >= 0) return status;
  if (fields.empty()) fields = {"text"};
  if (decode && run_bench) {
    fmt::print(stderr, "error: --decode and --bench cannot be combined\n");
    return 2;
  }
  if (skip_special_tokens && !decode) {
    fmt::print(stderr, "error: --skip-special-tokens needs --decode\n");
    return 2;
  }

  std::ios::sync_with_stdio(false);
  try {
    const auto tok = coe::load_tokenizer(spec);
    if (run_bench) return bench(*tok, fields, threads, repeat);
    if (decode)
      return stream([&](const std::string& line) { return decode_line(*tok, line, skip_special_tokens); }, threads);
    return stream([&](const std::string& line) { return ids_line(tok->encode(record_text(line, fields))); }, threads);
  } catch (const std::exception& e) {
    return coe::cli::report(e);
  }
}

int main(int argc, char** argv) { return coe::cli::exit_status(tool_main(argc, argv)); }
