#pragma once
// A reader of TensorBoard event files written from the format's description alone (TFRecord
// framing, the protobuf wire format, the field numbers of tensorboard's event.proto /
// summary.proto), sharing no code with coe's writer: a bitwise CRC-32C instead of the writer's
// table, a generic protobuf field parser. Failures are test failures. Beside it, the tensorboard
// package's own reading (read_with_tensorboard).
#include "support/test_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace coe::test {

// CRC-32C bit by bit (reflected Castagnoli polynomial 0x82F63B78, initial and final XOR ~0).
inline uint32_t reference_crc32c(const std::string& bytes) {
  uint32_t crc = 0xffffffffu;
  for (unsigned char b : bytes) {
    crc ^= b;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
  }
  return crc ^ 0xffffffffu;
}

inline uint32_t reference_mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

inline uint64_t little_endian(const std::string& s, size_t pos, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(s[pos + i])) << (8 * i);
  return v;
}

// One protobuf field as the wire format has it: number, wire type, and the varint / fixed bits or
// the length-delimited bytes.
struct Field {
  uint32_t number = 0, wire_type = 0;
  uint64_t bits = 0;
  std::string bytes;
};

// Every field of a message; fails the test on malformed input.
inline std::vector<Field> parse_fields(const std::string& msg) {
  std::vector<Field> fields;
  size_t pos = 0;
  auto varint = [&]() {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      if (pos >= msg.size() || shift > 63) throw std::runtime_error("truncated varint");
      const auto b = static_cast<unsigned char>(msg[pos++]);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  while (pos < msg.size()) {
    const uint64_t key = varint();
    Field f;
    f.number = static_cast<uint32_t>(key >> 3);
    f.wire_type = static_cast<uint32_t>(key & 7);
    if (f.wire_type == 0) {
      f.bits = varint();
    } else if (f.wire_type == 1 || f.wire_type == 5) {
      const size_t n = f.wire_type == 1 ? 8 : 4;
      if (msg.size() - pos < n) throw std::runtime_error("truncated fixed field");
      f.bits = little_endian(msg, pos, n);
      pos += n;
    } else if (f.wire_type == 2) {
      const uint64_t n = varint();
      if (n > msg.size() - pos) throw std::runtime_error("truncated length-delimited field");
      f.bytes = msg.substr(pos, n);
      pos += n;
    } else {
      throw std::runtime_error("unexpected wire type " + std::to_string(f.wire_type));
    }
    fields.push_back(std::move(f));
  }
  return fields;
}

struct ReadValue {
  std::string tag;
  std::optional<float> simple_value;
  std::optional<std::string> text;  // a text summary's string
};

struct ReadEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::optional<std::string> file_version, writer;
  bool has_summary = false;
  std::vector<ReadValue> values;
};

// event.proto: Event{wall_time = 1 (double), step = 2 (int64), file_version = 3, summary = 5,
// source_metadata = 10}; summary.proto: Summary{repeated Value value = 1}, Value{tag = 1,
// simple_value = 2 (float), tensor = 8 (TensorProto{string_val = 8}), metadata = 9};
// SourceMetadata{writer = 1}.
inline ReadEvent decode_event(const std::string& data) {
  ReadEvent e;
  for (const Field& f : parse_fields(data)) {
    if (f.number == 1 && f.wire_type == 1) {
      std::memcpy(&e.wall_time, &f.bits, 8);
    } else if (f.number == 2 && f.wire_type == 0) {
      e.step = static_cast<int64_t>(f.bits);
    } else if (f.number == 3 && f.wire_type == 2) {
      e.file_version = f.bytes;
    } else if (f.number == 10 && f.wire_type == 2) {
      for (const Field& m : parse_fields(f.bytes))
        if (m.number == 1 && m.wire_type == 2) e.writer = m.bytes;
    } else if (f.number == 5 && f.wire_type == 2) {
      e.has_summary = true;
      for (const Field& v : parse_fields(f.bytes)) {
        if (v.number != 1 || v.wire_type != 2) throw std::runtime_error("Summary: unexpected field");
        ReadValue rv;
        for (const Field& x : parse_fields(v.bytes)) {
          if (x.number == 1 && x.wire_type == 2) {
            rv.tag = x.bytes;
          } else if (x.number == 8 && x.wire_type == 2) {  // tensor: a text summary's TensorProto
            std::string text;
            for (const Field& t : parse_fields(x.bytes))
              if (t.number == 8 && t.wire_type == 2) text += t.bytes;  // string_val
            rv.text = text;
          } else if (x.number == 9 && x.wire_type == 2) {  // metadata (the text plugin's name)
          } else if (x.number == 2 && x.wire_type == 5) {
            const auto bits = static_cast<uint32_t>(x.bits);
            float value;
            std::memcpy(&value, &bits, 4);
            rv.simple_value = value;
          } else {
            throw std::runtime_error("Summary.Value: unexpected field " + std::to_string(x.number));
          }
        }
        e.values.push_back(rv);
      }
    } else {
      throw std::runtime_error("Event: unexpected field " + std::to_string(f.number));
    }
  }
  return e;
}

// Every record of an event file, each CRC checked (a failure fails the test and stops reading).
inline std::vector<ReadEvent> read_events(const std::filesystem::path& path) {
  const std::string bytes = read_file(path);
  std::vector<ReadEvent> events;
  size_t pos = 0;
  while (pos < bytes.size()) {
    if (bytes.size() - pos < 12) {
      ADD_FAILURE() << path << ": a torn record header at byte " << pos;
      break;
    }
    const uint64_t length = little_endian(bytes, pos, 8);
    const auto length_crc = static_cast<uint32_t>(little_endian(bytes, pos + 8, 4));
    if (length_crc != reference_mask(reference_crc32c(bytes.substr(pos, 8)))) {
      ADD_FAILURE() << path << ": wrong length CRC at byte " << pos;
      break;
    }
    if (bytes.size() - pos - 12 < length + 4) {
      ADD_FAILURE() << path << ": a torn record at byte " << pos;
      break;
    }
    const std::string data = bytes.substr(pos + 12, length);
    const auto data_crc = static_cast<uint32_t>(little_endian(bytes, pos + 12 + length, 4));
    if (data_crc != reference_mask(reference_crc32c(data))) {
      ADD_FAILURE() << path << ": wrong data CRC at byte " << pos;
      break;
    }
    try {
      events.push_back(decode_event(data));
    } catch (const std::exception& e) {
      ADD_FAILURE() << path << ": record at byte " << pos << ": " << e.what();
      break;
    }
    pos += 16 + length;
  }
  return events;
}

inline std::vector<std::filesystem::path> event_files(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().find("tfevents") != std::string::npos) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

// (tag, step) -> value over all files of a directory; a pair seen twice fails the test.
inline std::map<std::pair<std::string, int64_t>, float> union_of_scalars(const std::filesystem::path& dir) {
  std::map<std::pair<std::string, int64_t>, float> out;
  for (const auto& file : event_files(dir))
    for (const auto& e : read_events(file))
      for (const auto& v : e.values) {
        if (v.text) continue;  // text summaries (the run's config)
        EXPECT_TRUE(v.simple_value.has_value()) << file << " " << v.tag;
        const bool inserted = out.emplace(std::make_pair(v.tag, e.step), v.simple_value.value_or(NAN)).second;
        EXPECT_TRUE(inserted) << v.tag << " at step " << e.step << " appears twice in " << dir;
      }
  return out;
}

// The tensorboard package's reading of a directory (tools/check_tfevents.py under the Python coe
// was configured with): {"files", "records", "file_version", "writer", "scalars": {tag: [[step,
// value, wall_time], ...]}}. A reader error fails the test and returns null.
inline nlohmann::json read_with_tensorboard(const std::filesystem::path& dir) {
  std::string output;
  const int rc = run_argv(
      {python().string(), "-W", "ignore", (source_root() / "tools" / "check_tfevents.py").string(), dir.string()},
      &output);
  EXPECT_EQ(rc, 0) << "tensorboard cannot read " << dir << ": " << output;
  if (rc != 0) return nullptr;
  // The JSON object is the last line (the package may log before it).
  std::string last = output;
  while (!last.empty() && last.back() == '\n') last.pop_back();
  if (const size_t nl = last.rfind('\n'); nl != std::string::npos) last = last.substr(nl + 1);
  return nlohmann::json::parse(last);
}

}  // namespace coe::test
