#include "coe/data/tokenize_records.h"

#include "coe/data/content_hash.h"
#include "coe/data/jsonl.h"
#include "coe/util/error.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace coe {

int64_t TokenizedRecords::total_tokens() const {
  int64_t total = 0;
  for (const auto& c : chunks) total += static_cast<int64_t>(c.tokens.size());
  return total;
}

TokenizedRecords tokenize_records(const std::vector<std::string>& files, const TextTemplate& text,
                                  const Tokenizer& tokenizer, const std::string& group_by, int threads) {
  std::vector<RecordFile> sources;
  sources.reserve(files.size());
  // (file, record-in-file) of every record, in order.
  std::vector<std::pair<int32_t, int64_t>> where;
  TokenizedRecords out;
  for (const auto& file : files) {
    sources.emplace_back(file);
    const RecordFile& src = sources.back();
    out.records_per_file.push_back(src.size());
    for (int64_t i = 0; i < src.size(); ++i) where.emplace_back(static_cast<int32_t>(sources.size() - 1), i);
  }
  const auto n = static_cast<int64_t>(where.size());
  if (n == 0) fail("{}: no records (empty dataset)", fmt::join(files, ", "));

  const int64_t n_chunks = (n + TokenizedRecords::kChunk - 1) / TokenizedRecords::kChunk;
  out.chunks.resize(static_cast<size_t>(n_chunks));
  out.types.resize(static_cast<size_t>(n));
  if (!group_by.empty()) out.group_keys.resize(static_cast<size_t>(n));

  struct Failure {
    int64_t record = -1;
    std::string message;
  };
  std::vector<Failure> failures(static_cast<size_t>(n_chunks));
  std::atomic<int64_t> next_chunk{0};
  std::atomic<bool> failed{false};

  auto process_chunk = [&](int64_t c) {
    auto& chunk = out.chunks[static_cast<size_t>(c)];
    const int64_t begin = c * TokenizedRecords::kChunk, end = std::min(n, begin + TokenizedRecords::kChunk);
    for (int64_t i = begin; i < end; ++i) {
      const RecordFile& src = sources[static_cast<size_t>(where[i].first)];
      const int64_t local = where[i].second;
      try {
        nlohmann::json record = src.parse(local);
        std::string rendered;
        try {
          rendered = text.render(record);
          if (!group_by.empty()) {
            auto it = record.find(group_by);
            if (it == record.end()) fail("record has no key '{}' (group_by)", group_by);
            const std::string key = value_to_text(*it);
            out.group_keys[static_cast<size_t>(i)] = xxh64(key);
          }
        } catch (const Error& e) {
          fail("{}:{}: {}", src.path(), src.line(local), e.what());
        }
        if (rendered.empty()) fail("{}:{}: the record's text is empty", src.path(), src.line(local));
        if (auto it = record.find("type"); it != record.end()) out.types[static_cast<size_t>(i)] = value_to_text(*it);
        std::vector<int32_t> ids = tokenizer.encode(rendered);
        for (int32_t id : ids) {
          if (id < 0) fail("{}:{}: tokenizer returned negative id {}", src.path(), src.line(local), id);
          chunk.tokens.push_back(static_cast<uint32_t>(id));
        }
        chunk.offsets.push_back(chunk.tokens.size());
      } catch (const std::exception& e) {
        failures[static_cast<size_t>(c)] = {i, e.what()};
        failed = true;
        return;
      }
    }
  };
  auto worker = [&] {
    // Chunks are taken in increasing order and a started chunk is always finished (up to its
    // first error), so every chunk before a failing one has been checked: the lowest failing
    // record below is the same whatever the scheduling.
    while (!failed) {
      int64_t c = next_chunk++;
      if (c >= n_chunks) break;
      process_chunk(c);
    }
  };

  int n_threads = threads > 0 ? threads : static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));
  n_threads = static_cast<int>(std::min<int64_t>(n_threads, n_chunks));
  std::vector<std::thread> pool;
  for (int t = 1; t < n_threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();

  if (failed) {
    for (const auto& f : failures)
      if (f.record >= 0) throw Error(f.message);
  }
  return out;
}

}  // namespace coe
