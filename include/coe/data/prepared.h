#pragma once
// A prepared split on disk, and its reader.
//
// <dataset>/<split>/ (split = "train" or "val") holds
//   tokens.bin        all records' token ids back to back, uint32 little-endian
//   offsets.bin       n+1 uint64 little-endian; record i is tokens[offsets[i], offsets[i+1])
//   source_index.bin  n uint64 little-endian: the record's position among all source records
//                     (input files concatenated in order), so a split can be traced to its source
//   meta.json         tokenizer, sources, text format, split parameters, counts, record types
// The reader memory-maps the binary files and checks them against meta.json on open.
#include "coe/util/mapped_file.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace coe {

inline constexpr int kPreparedFormatVersion = 1;

struct TokenSpan {
  const uint32_t* data = nullptr;
  int64_t size = 0;
  uint32_t operator[](int64_t i) const { return data[i]; }
};

class PreparedSplit {
 public:
  // Opens and validates a split directory; a missing, truncated or inconsistent file throws an
  // Error naming the file and what is wrong.
  static std::shared_ptr<const PreparedSplit> open(const std::string& split_dir);

  const std::string& dir() const { return dir_; }
  const std::string& name() const { return name_; }  // "train" / "val"
  int64_t size() const { return records_; }
  int64_t total_tokens() const { return tokens_; }
  int64_t max_record_tokens() const { return max_record_tokens_; }

  TokenSpan record(int64_t i) const;
  int64_t record_length(int64_t i) const { return static_cast<int64_t>(offsets_[i + 1] - offsets_[i]); }
  int64_t source_index(int64_t i) const { return static_cast<int64_t>(source_index_[i]); }
  // Where record i came from, for messages: "<source file>: record <n>" (1-based within that file),
  // so errors name the user's input, not the prepared directory.
  std::string describe_record(int64_t i) const;
  // The record's `type` field ("" when the source has none).
  const std::string& record_type(int64_t i) const;
  const std::vector<std::string>& type_names() const { return type_names_; }

  // Tokenizer facts recorded at preparation. pad_id() is the tokenizer's pad, else its EOS (as
  // the reference's hf_tokenizer sets pad = eos); -1 when it has neither.
  int32_t pad_id() const { return pad_id_; }
  int32_t eos_id() const { return eos_id_; }
  int64_t vocab_size() const { return vocab_size_; }

  const nlohmann::json& metadata() const { return meta_; }

 private:
  PreparedSplit() = default;

  std::string dir_, name_;
  nlohmann::json meta_;
  MappedFile tokens_file_, offsets_file_, source_file_;
  const uint32_t* tokens_ptr_ = nullptr;
  const uint64_t* offsets_ = nullptr;
  const uint64_t* source_index_ = nullptr;
  int64_t records_ = 0, tokens_ = 0, max_record_tokens_ = 0, vocab_size_ = 0;
  int32_t pad_id_ = -1, eos_id_ = -1;
  std::vector<std::string> type_names_;
  std::vector<int32_t> type_ids_;
};

// <dataset_dir>/<split>, opened; throws naming the dataset when that split is absent.
std::shared_ptr<const PreparedSplit> open_split(const std::string& dataset_dir, const std::string& split);

// Streams one split's files into a directory (which must exist). finish() writes offsets,
// source indices and meta.json (adding the counts and record types to `meta`); any write failure
// throws naming the file.
class SplitWriter {
 public:
  SplitWriter(const std::string& dir, std::string name);
  void add(const uint32_t* ids, int64_t n, int64_t source_index, const std::string* type);
  void finish(nlohmann::json meta);
  int64_t records() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  int64_t tokens() const { return static_cast<int64_t>(offsets_.back()); }

 private:
  std::string dir_, name_;
  std::ofstream tokens_;
  std::vector<uint64_t> offsets_{0};
  std::vector<uint64_t> source_index_;
  std::vector<std::string> type_names_;
  std::vector<int32_t> type_ids_;
  bool any_type_ = false;
  int64_t max_record_tokens_ = 0;
};

}  // namespace coe
