#pragma once
// Raw record files -> token ids, in parallel and deterministically: records are cut into fixed
// chunks that threads take in increasing order; results land by index, so the output never
// depends on the thread count or scheduling. On bad input the error of the lowest record index
// is reported, again independent of scheduling.
#include "coe/data/text_template.h"
#include "coe/tokenizer/tokenizer.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace coe {

struct TokenizedRecords {
  static constexpr int64_t kChunk = 512;  // records per work unit
  struct Chunk {
    std::vector<uint32_t> tokens;
    std::vector<uint64_t> offsets{0};
  };
  std::vector<Chunk> chunks;
  std::vector<std::optional<std::string>> types;  // the record's "type" value, if any
  std::vector<uint64_t> group_keys;               // xxh64 of the group_by value (when grouping)
  std::vector<int64_t> records_per_file;

  int64_t size() const { return static_cast<int64_t>(types.size()); }
  const uint32_t* record(int64_t i, int64_t* length) const {
    const Chunk& c = chunks[static_cast<size_t>(i / kChunk)];
    const auto j = static_cast<size_t>(i % kChunk);
    *length = static_cast<int64_t>(c.offsets[j + 1] - c.offsets[j]);
    return c.tokens.data() + c.offsets[j];
  }
  int64_t total_tokens() const;
};

// Reads, renders and tokenizes every record of `files` (in order). `group_by` empty: no group
// keys. threads <= 0: all cores. Errors: malformed JSON (file:line), a missing text or group key
// (key and file:line), empty text, no records at all.
TokenizedRecords tokenize_records(const std::vector<std::string>& files, const TextTemplate& text,
                                  const Tokenizer& tokenizer, const std::string& group_by, int threads);

}  // namespace coe
