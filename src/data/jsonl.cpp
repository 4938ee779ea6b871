#include "coe/data/jsonl.h"

#include "coe/util/error.h"
#include "coe/util/json_limits.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

namespace coe {
namespace {

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// nlohmann's parse_error text starts with its own position ("... at line 1, column 9: "), which
// is relative to the record; keep only the reason so the message can carry the file's line.
std::string parse_reason(const std::string& what) {
  auto column = what.find("column ");
  if (column != std::string::npos) {
    auto colon = what.find(": ", column);
    if (colon != std::string::npos) return what.substr(colon + 2);
  }
  return what;
}

}  // namespace

RecordFile::RecordFile(const std::string& path) : file_(path) {
  std::string_view s = text();
  // Parquet (the reference's verl data files) starts and ends with "PAR1". There is no Parquet
  // reader in Debian's archive to build on; say what the file is and how to convert it.
  if (s.size() >= 8 && s.substr(0, 4) == "PAR1" && s.substr(s.size() - 4) == "PAR1")
    fail("{}: a Parquet file; coe reads JSON and JSONL records. Convert it where pandas and pyarrow are installed: "
         "python3 -c \"import pandas as pd; pd.read_parquet('{}').to_json('{}.jsonl', orient='records', lines=True, "
         "force_ascii=False)\"",
         path, path, std::filesystem::path(path).replace_extension().string());
  size_t pos = 0;
  if (s.substr(0, 3) == "\xEF\xBB\xBF") pos = 3;  // UTF-8 byte order mark
  int64_t line = 1;
  while (pos < s.size() && is_blank(s[pos])) line += s[pos++] == '\n';
  json_array_ = pos < s.size() && s[pos] == '[';
  if (json_array_) scan_array(pos + 1, line);
  else scan_lines(pos, line);
}

void RecordFile::scan_lines(size_t pos, int64_t line) {
  std::string_view s = text();
  while (pos < s.size()) {
    size_t eol = s.find('\n', pos);
    if (eol == std::string_view::npos) eol = s.size();
    size_t b = pos, e = eol;
    while (b < e && is_blank(s[b])) ++b;
    while (e > b && is_blank(s[e - 1])) --e;
    if (b < e) records_.push_back({b, e, line});
    pos = eol + 1;
    ++line;
  }
}

void RecordFile::scan_array(size_t pos, int64_t line) {
  std::string_view s = text();
  auto skip_blank = [&] {
    while (pos < s.size() && is_blank(s[pos])) line += s[pos++] == '\n';
  };
  skip_blank();
  if (pos < s.size() && s[pos] == ']') {
    ++pos;
  } else {
    while (true) {
      skip_blank();
      const size_t begin = pos;
      const int64_t begin_line = line;
      // Find the end of this element: a ',' or ']' at nesting depth 0, outside strings.
      int depth = 0;
      bool in_string = false;
      for (; pos < s.size(); ++pos) {
        char c = s[pos];
        if (c == '\n') ++line;
        if (in_string) {
          if (c == '\\') ++pos;
          else if (c == '"') in_string = false;
        } else if (c == '"') {
          in_string = true;
        } else if (c == '{' || c == '[') {
          ++depth;
        } else if (c == '}' || c == ']') {
          if (depth == 0) break;
          --depth;
        } else if (c == ',' && depth == 0) {
          break;
        }
      }
      size_t end = std::min(pos, s.size());
      while (end > begin && is_blank(s[end - 1])) --end;
      if (pos >= s.size()) fail("{}:{}: malformed JSON: the top-level array is not closed", path(), begin_line);
      if (end == begin) fail("{}:{}: malformed JSON: empty element in the top-level array", path(), line);
      records_.push_back({begin, end, begin_line});
      if (s[pos++] == ']') break;
    }
  }
  skip_blank();
  if (pos < s.size()) fail("{}:{}: malformed JSON: unexpected text after the top-level array", path(), line);
}

nlohmann::json RecordFile::parse(int64_t i) const {
  const Span& span = records_[static_cast<size_t>(i)];
  std::string_view s = text().substr(span.begin, span.end - span.begin);
  nlohmann::json value;
  try {
    value = nlohmann::json::parse(s.begin(), s.end(), json_depth_limit(fmt::format("{}:{}", path(), span.line)));
  } catch (const nlohmann::json::parse_error& e) {
    size_t upto = std::min(s.size(), e.byte > 0 ? static_cast<size_t>(e.byte - 1) : size_t{0});
    int64_t line = span.line + std::count(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(upto), '\n');
    fail("{}:{}: malformed JSON: {}", path(), line, parse_reason(e.what()));
  } catch (const nlohmann::json::exception& e) {  // out_of_range 406: a number beyond a double (1e400)
    fail("{}:{}: malformed JSON: {}", path(), span.line, e.what());
  }
  if (!value.is_object()) fail("{}:{}: record is not a JSON object", path(), span.line);
  return value;
}

std::vector<std::string> resolve_record_files(const std::vector<std::string>& inputs) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  for (const auto& input : inputs) {
    std::error_code ec;
    if (fs::is_directory(input, ec)) {
      std::vector<std::string> found;
      for (const auto& entry : fs::directory_iterator(input)) {
        auto ext = entry.path().extension().string();
        if (entry.is_regular_file() && (ext == ".json" || ext == ".jsonl")) found.push_back(entry.path().string());
      }
      if (found.empty()) fail("{}: directory has no .json or .jsonl files", input);
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::is_regular_file(input, ec)) {
      files.push_back(input);
    } else {
      fail("{}: input file or directory not found", input);
    }
  }
  if (files.empty()) fail("no input files given");
  return files;
}

}  // namespace coe
