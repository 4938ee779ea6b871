#include "coe/util/tensorboard.h"

#include "coe/util/error.h"
#include "coe/util/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <set>
#include <utility>

namespace fs = std::filesystem;

namespace coe {
namespace {

constexpr std::string_view kFileVersion = "brain.Event:2";
constexpr std::string_view kWriterName = "coe";
constexpr size_t kMaxTagBytes = 1024;
constexpr size_t kFlushThreshold = 1 << 20;

// ---- CRC-32C -------------------------------------------------------------------------------------

constexpr std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrc32cTable = make_crc32c_table();

// ---- protobuf wire format: the few field kinds an Event needs ------------------------------------

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

void put_key(std::string& out, uint32_t field, WireType type) { put_varint(out, (uint64_t{field} << 3) | type); }

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

void put_double(std::string& out, uint32_t field, double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  put_key(out, field, kFixed64);
  put_le(out, bits, 8);
}

void put_float(std::string& out, uint32_t field, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  put_key(out, field, kFixed32);
  put_le(out, bits, 4);
}

void put_bytes(std::string& out, uint32_t field, std::string_view bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out += bytes;
}

// Event fields (event.proto) and Summary / Summary.Value / SourceMetadata fields (summary.proto).
constexpr uint32_t kEventWallTime = 1, kEventStep = 2, kEventFileVersion = 3, kEventSummary = 5,
                   kEventSourceMetadata = 10;
constexpr uint32_t kSummaryValue = 1, kValueTag = 1, kValueSimpleValue = 2, kSourceMetadataWriter = 1;

// Reading back, for cut_back_event_files: the fields of an Event that decide what to keep.
struct EventHead {
  int64_t step = 0;
  bool has_summary = false;
  std::string file_version, writer;
  std::vector<std::string> tags;  // the summary's values'
};

class WireReader {
 public:
  explicit WireReader(std::string_view data) : data_(data) {}
  bool done() const { return pos_ >= data_.size(); }
  std::optional<uint64_t> varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && pos_ < data_.size(); shift += 7) {
      const auto byte = static_cast<uint8_t>(data_[pos_++]);
      v |= uint64_t{byte & 0x7fu} << shift;
      if (!(byte & 0x80)) return v;
    }
    return std::nullopt;
  }
  std::optional<std::string_view> take(uint64_t n) {
    if (n > data_.size() - pos_) return std::nullopt;
    const std::string_view s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

// Decodes what cut_back_event_files needs; nullopt when `data` is no well-formed message.
std::optional<EventHead> decode_event_head(std::string_view data) {
  EventHead head;
  WireReader r(data);
  while (!r.done()) {
    const auto key = r.varint();
    if (!key) return std::nullopt;
    const auto field = static_cast<uint32_t>(*key >> 3);
    switch (*key & 7) {
      case kVarint: {
        const auto v = r.varint();
        if (!v) return std::nullopt;
        if (field == kEventStep) head.step = static_cast<int64_t>(*v);
        break;
      }
      case kFixed64:
        if (!r.take(8)) return std::nullopt;
        break;
      case kFixed32:
        if (!r.take(4)) return std::nullopt;
        break;
      case kLengthDelimited: {
        const auto n = r.varint();
        const auto bytes = n ? r.take(*n) : std::nullopt;
        if (!bytes) return std::nullopt;
        if (field == kEventFileVersion) head.file_version = std::string(*bytes);
        if (field == kEventSummary) {
          head.has_summary = true;
          WireReader summary(*bytes);
          while (!summary.done()) {
            const auto skey = summary.varint();
            if (!skey || (*skey & 7) != kLengthDelimited) return std::nullopt;
            const auto sn = summary.varint();
            const auto value = sn ? summary.take(*sn) : std::nullopt;
            if (!value) return std::nullopt;
            if ((*skey >> 3) != kSummaryValue) continue;
            WireReader v(*value);
            while (!v.done()) {  // Value: its tag (length-delimited), simple_value (fixed32), ...
              const auto vkey = v.varint();
              if (!vkey) return std::nullopt;
              const auto wire = *vkey & 7;
              const auto len =
                  wire == kLengthDelimited ? v.varint() : std::optional<uint64_t>(wire == kFixed32 ? 4 : 8);
              if (!len || (wire != kLengthDelimited && wire != kFixed32 && wire != kFixed64)) return std::nullopt;
              const auto data = v.take(*len);
              if (!data) return std::nullopt;
              if ((*vkey >> 3) == kValueTag && wire == kLengthDelimited) head.tags.emplace_back(*data);
            }
          }
        }
        if (field == kEventSourceMetadata) {
          WireReader m(*bytes);
          while (!m.done()) {
            const auto mkey = m.varint();
            if (!mkey || (*mkey & 7) != kLengthDelimited) return std::nullopt;
            const auto mn = m.varint();
            const auto s = mn ? m.take(*mn) : std::nullopt;
            if (!s) return std::nullopt;
            if ((*mkey >> 3) == kSourceMetadataWriter) head.writer = std::string(*s);
          }
        }
        break;
      }
      default: return std::nullopt;
    }
  }
  return head;
}

uint64_t get_le(std::string_view s, size_t pos, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{static_cast<uint8_t>(s[pos + i])} << (8 * i);
  return v;
}

// One TFRecord of a file: where it starts and ends, and its Event.
struct Record {
  size_t begin = 0, end = 0;
  EventHead head;
};

// The records of `bytes` up to the first one that is torn, fails a CRC or does not decode
// (`stopped_at` is then its offset, else bytes.size()).
std::vector<Record> scan_records(std::string_view bytes, size_t& stopped_at) {
  std::vector<Record> records;
  size_t pos = 0;
  while (pos < bytes.size()) {
    if (bytes.size() - pos < 12) break;
    const uint64_t length = get_le(bytes, pos, 8);
    if (static_cast<uint32_t>(get_le(bytes, pos + 8, 4)) != masked_crc32c(bytes.substr(pos, 8))) break;
    if (length > bytes.size() - pos - 12 || bytes.size() - pos - 12 - length < 4) break;
    const std::string_view data = bytes.substr(pos + 12, length);
    if (static_cast<uint32_t>(get_le(bytes, pos + 12 + length, 4)) != masked_crc32c(data)) break;
    const auto head = decode_event_head(data);
    if (!head) break;
    records.push_back({pos, pos + 16 + length, *head});
    pos += 16 + length;
  }
  stopped_at = pos;
  return records;
}

// Valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF) without control characters:
// TensorBoard's protobuf parsers reject a string field that is not UTF-8.
bool is_clean_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c < 0x20 || c == 0x7f) return false;
    if (c < 0x80) {
      ++i;
      continue;
    }
    int n;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) n = 1, cp = c & 0x1f;
    else if ((c & 0xf0) == 0xe0) n = 2, cp = c & 0x0f;
    else if ((c & 0xf8) == 0xf0) n = 3, cp = c & 0x07;
    else return false;
    if (s.size() - i <= static_cast<size_t>(n)) return false;  // truncated sequence
    for (int k = 1; k <= n; ++k) {
      const auto cc = static_cast<uint8_t>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    const uint32_t min_cp[] = {0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp < 0xa0)) return false;
    i += n + 1;
  }
  return true;
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return "localhost";
  std::string host(buf);
  for (char& c : host)
    if (c == '/' || static_cast<unsigned char>(c) < 0x20) c = '_';
  return host;
}

// A tag as an error message shows it: one line, bytes outside printable ASCII as \xNN, cut at 60.
std::string tag_for_message(std::string_view tag) {
  std::string out;
  for (size_t i = 0; i < tag.size() && i < 60; ++i) {
    const auto c = static_cast<uint8_t>(tag[i]);
    out += c >= 0x20 && c < 0x7f ? std::string(1, static_cast<char>(c)) : fmt::format("\\x{:02x}", c);
  }
  return tag.size() > 60 ? out + "..." : out;
}

void append_scalars(std::string& event, int64_t step, const Scalars& values, double wall_time) {
  // proto3 leaves fields at their default (0) out; the encoding stays canonical for any reader.
  if (wall_time != 0 || std::signbit(wall_time)) put_double(event, kEventWallTime, wall_time);
  if (step != 0) {
    put_key(event, kEventStep, kVarint);
    put_varint(event, static_cast<uint64_t>(step));
  }
  std::string summary;
  for (const auto& [tag, value] : values) {
    if (tag.empty() || tag.size() > kMaxTagBytes || !is_clean_utf8(tag))
      fail("tensorboard: tag '{}' ({} bytes): not 1 to {} bytes of UTF-8 without control characters",
           tag_for_message(tag), tag.size(), kMaxTagBytes);
    std::string v;
    put_bytes(v, kValueTag, tag);
    // Always written, 0 too: simple_value is a oneof member, and an absent one is no value at all.
    put_float(v, kValueSimpleValue, static_cast<float>(value));
    put_bytes(summary, kSummaryValue, v);
  }
  put_bytes(event, kEventSummary, summary);
}

constexpr std::string_view kCutBackTmpPrefix = ".coe-cut-back.";

// Only files whose first record says coe wrote them are coe's to cut back.
bool written_by_coe(const std::vector<Record>& records) {
  return !records.empty() && records.front().head.writer == kWriterName &&
         records.front().head.file_version.rfind("brain.Event:", 0) == 0;
}

// The event files of `dir` (regular files named events.out.tfevents.*), sorted; none for a
// missing `dir`.
std::vector<fs::path> event_files(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::error_code entry_ec;
    if (entry.is_symlink(entry_ec) || !entry.is_regular_file(entry_ec)) continue;
    if (entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0) files.push_back(entry.path());
  }
  if (ec) fail("{}: cannot list: {}", dir.string(), ec.message());
  std::sort(files.begin(), files.end());
  return files;
}

// Replaces `file` with `content` through a temporary in the same directory whose name lacks
// "tfevents" (TensorBoard reads every file whose name contains it, a half-written copy too).
void replace_event_file(const fs::path& file, std::string_view content) {
  const fs::path tmp = file.parent_path() / fmt::format("{}{}.tmp", kCutBackTmpPrefix, ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) fail("{}: cannot write {}: {}", file.string(), tmp.string(), std::strerror(errno));
  try {
    write_all(fd, content, tmp);
    if (::fsync(fd) != 0) fail("{}: cannot write: {}", tmp.string(), std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0 || ::rename(tmp.c_str(), file.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("{}: cannot write: {}", file.string(), std::strerror(err));
  }
}

}  // namespace

uint32_t crc32c(std::string_view data, uint32_t crc) {
  crc = ~crc;
  for (const char ch : data) crc = kCrc32cTable[(crc ^ static_cast<uint8_t>(ch)) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint32_t masked_crc32c(std::string_view data) {
  const uint32_t crc = crc32c(data);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

double unix_time_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

TensorBoardWriter::TensorBoardWriter(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("{}: cannot create the TensorBoard directory: {}", dir.string(), ec.message());
  const auto seconds = static_cast<long long>(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  const std::string base = fmt::format("events.out.tfevents.{:010d}.{}.{}", seconds, host_name(), ::getpid());
  for (int n = 0; fd_ < 0; ++n) {
    path_ = dir / (n == 0 ? base : fmt::format("{}.{}", base, n));
    // O_EXCL: a new file for every writer, never the continuation of someone else's.
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0 && (errno != EEXIST || n >= 1000)) fail("{}: cannot create: {}", path_.string(), std::strerror(errno));
  }
  std::string event;
  put_double(event, kEventWallTime, unix_time_now());
  put_bytes(event, kEventFileVersion, kFileVersion);
  std::string source;
  put_bytes(source, kSourceMetadataWriter, kWriterName);
  put_bytes(event, kEventSourceMetadata, source);
  append_record(event);
  try {
    flush();
  } catch (...) {
    ::close(std::exchange(fd_, -1));
    throw;
  }
}

TensorBoardWriter::~TensorBoardWriter() {
  if (fd_ < 0) return;
  try {
    close();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "warning: %s\n", first_line(e).c_str());
  }
}

void TensorBoardWriter::append_record(std::string_view event) {
  std::string length;
  put_le(length, event.size(), 8);
  buffer_ += length;
  put_le(buffer_, masked_crc32c(length), 4);
  buffer_ += event;
  put_le(buffer_, masked_crc32c(event), 4);
}

void TensorBoardWriter::add_scalar(const std::string& tag, int64_t step, double value, double wall_time) {
  add_scalars(step, {{tag, value}}, wall_time);
}

void TensorBoardWriter::add_scalars(int64_t step, const Scalars& values, double wall_time) {
  if (fd_ < 0) fail("{}: the TensorBoard writer is closed", path_.string());
  if (values.empty()) return;
  std::string event;
  append_scalars(event, step, values, wall_time);
  append_record(event);
  if (buffer_.size() >= kFlushThreshold) flush();
}

void TensorBoardWriter::add_text(const std::string& tag, int64_t step, std::string_view text, double wall_time) {
  if (fd_ < 0) fail("{}: the TensorBoard writer is closed", path_.string());
  if (tag.empty() || tag.size() > kMaxTagBytes || !is_clean_utf8(tag))
    fail("tensorboard: tag '{}' ({} bytes): not 1 to {} bytes of UTF-8 without control characters",
         tag_for_message(tag), tag.size(), kMaxTagBytes);
  // Summary.Value{tag, tensor: TensorProto{dtype: DT_STRING, tensor_shape: {} (a scalar),
  // string_val: [text]}, metadata: {plugin_data: {plugin_name: "text"}}}, fields in number order.
  constexpr uint32_t kValueTensor = 8, kValueMetadata = 9, kTensorDtype = 1, kTensorShape = 2, kTensorStringVal = 8;
  constexpr uint64_t kDtString = 7;
  std::string tensor;
  put_key(tensor, kTensorDtype, kVarint);
  put_varint(tensor, kDtString);
  put_bytes(tensor, kTensorShape, "");
  put_bytes(tensor, kTensorStringVal, text);
  std::string plugin_data, metadata;
  put_bytes(plugin_data, 1, "text");    // PluginData.plugin_name
  put_bytes(metadata, 1, plugin_data);  // SummaryMetadata.plugin_data
  std::string value, summary, event;
  put_bytes(value, kValueTag, tag);
  put_bytes(value, kValueTensor, tensor);
  put_bytes(value, kValueMetadata, metadata);
  put_bytes(summary, kSummaryValue, value);
  if (wall_time != 0 || std::signbit(wall_time)) put_double(event, kEventWallTime, wall_time);
  if (step != 0) {
    put_key(event, kEventStep, kVarint);
    put_varint(event, static_cast<uint64_t>(step));
  }
  put_bytes(event, kEventSummary, summary);
  append_record(event);
  if (buffer_.size() >= kFlushThreshold) flush();
}

void TensorBoardWriter::flush() {
  if (fd_ < 0 || buffer_.empty()) return;
  // The buffer is emptied first: after a failed write the next flush does not repeat a prefix
  // that may have reached the file.
  const std::string pending = std::move(buffer_);
  buffer_.clear();
  write_all(fd_, pending, path_);
}

void TensorBoardWriter::close() {
  if (fd_ < 0) return;
  std::exception_ptr error;
  try {
    flush();
  } catch (...) {
    error = std::current_exception();
  }
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0 && !error) fail("{}: cannot write: {}", path_.string(), std::strerror(errno));
  if (error) std::rethrow_exception(error);
}

std::set<int64_t> event_steps(const fs::path& dir, std::string_view tag_prefix) {
  std::set<int64_t> steps;
  for (const auto& file : event_files(dir)) {
    size_t stopped_at = 0;
    const std::vector<Record> records = scan_records(read_text(file), stopped_at);
    if (!written_by_coe(records)) continue;
    for (const Record& r : records)
      for (const auto& tag : r.head.tags)
        if (tag.rfind(tag_prefix, 0) == 0) steps.insert(r.head.step);
  }
  return steps;
}

std::vector<std::string> cut_back_event_files(const fs::path& dir, int64_t max_step) {
  std::vector<std::string> notes;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return notes;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::error_code entry_ec;
    const std::string name = entry.path().filename().string();
    if (entry.is_symlink(entry_ec) || !entry.is_regular_file(entry_ec)) continue;
    if (name.rfind("events.out.tfevents.", 0) == 0) files.push_back(entry.path());
    // The temporary of a cut-back that was killed: the file it was replacing is still whole.
    if (name.rfind(kCutBackTmpPrefix, 0) == 0 && !fs::remove(entry.path(), entry_ec) && entry_ec)
      fail("{}: cannot remove: {}", entry.path().string(), entry_ec.message());
  }
  if (ec) fail("{}: cannot list: {}", dir.string(), ec.message());
  std::sort(files.begin(), files.end());

  for (const auto& file : files) {
    const std::string bytes = read_text(file);
    size_t stopped_at = 0;
    const std::vector<Record> records = scan_records(bytes, stopped_at);
    if (!written_by_coe(records)) continue;
    std::string kept;
    size_t dropped = 0, summaries_kept = 0;
    for (const Record& r : records) {
      if (r.head.has_summary && r.head.step > max_step) {
        ++dropped;
        continue;
      }
      summaries_kept += r.head.has_summary ? 1 : 0;
      kept.append(bytes, r.begin, r.end - r.begin);
    }
    const size_t tail = bytes.size() - stopped_at;
    if (dropped == 0 && tail == 0) continue;
    std::string what = dropped ? fmt::format("{} event(s) after step {}", dropped, max_step) : "";
    if (tail)
      what += fmt::format("{}a torn or damaged record at byte {} and the {} byte(s) from there",
                          what.empty() ? "" : " and ", stopped_at, tail);
    if (summaries_kept == 0) {
      if (!fs::remove(file, ec) && ec) fail("{}: cannot remove: {}", file.string(), ec.message());
      notes.push_back(fmt::format("{}: removed ({}; nothing left)", file.string(), what));
    } else {
      replace_event_file(file, kept);
      notes.push_back(fmt::format("{}: removed {}", file.string(), what));
    }
  }
  return notes;
}

}  // namespace coe
