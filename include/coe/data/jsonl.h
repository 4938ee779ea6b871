#pragma once
// Raw record files: a JSON array of objects (MetaMathQA-395K.json) or JSON Lines (GSM8K), told
// apart by the first non-blank character. The file is memory-mapped and cut into one byte range
// per record first, so records can be parsed in parallel and every error can name file:line.
#include "coe/util/mapped_file.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace coe {

class RecordFile {
 public:
  // Maps and scans `path`; structural errors (unterminated array, stray text) throw file:line.
  explicit RecordFile(const std::string& path);

  const std::string& path() const { return file_.path(); }
  int64_t size() const { return static_cast<int64_t>(records_.size()); }
  bool is_json_array() const { return json_array_; }
  // 1-based line where record i starts.
  int64_t line(int64_t i) const { return records_[static_cast<size_t>(i)].line; }
  // Parses record i; throws "file:line: malformed JSON: ..." or "file:line: record is not a JSON object".
  // Thread-safe.
  nlohmann::json parse(int64_t i) const;

 private:
  struct Span {
    size_t begin, end;
    int64_t line;
  };
  void scan_array(size_t pos, int64_t line);
  void scan_lines(size_t pos, int64_t line);
  std::string_view text() const { return {file_.data() ? file_.data() : "", file_.size()}; }

  MappedFile file_;
  bool json_array_ = false;
  std::vector<Span> records_;
};

// Expands inputs into record files: a file stays as given; a directory contributes its *.json and
// *.jsonl files (not recursive), sorted by name so the record order is reproducible.
std::vector<std::string> resolve_record_files(const std::vector<std::string>& inputs);

}  // namespace coe
