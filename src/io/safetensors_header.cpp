#include "coe/io/safetensors_header.h"

#include "coe/util/error.h"
#include "coe/util/json_limits.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <limits>

namespace coe {
namespace {

int64_t element_size(const std::string& dtype, const std::string& file, const std::string& tensor) {
  for (const auto& d : kSafetensorsDtypes)
    if (dtype == d.name) return d.element_size;
  fail("{}: tensor '{}': unsupported dtype '{}'", file, tensor, dtype);
}

}  // namespace

SafetensorsHeader read_safetensors_header(std::string_view file, const std::string& path) {
  const uint64_t file_size = file.size();
  if (file_size < 8) fail("{}: truncated safetensors file ({} bytes)", path, file_size);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(file[i]);
  if (header_len > kMaxSafetensorsHeaderBytes)
    fail("{}: header length {} exceeds the limit of {} bytes (not a safetensors file?)", path, header_len,
         kMaxSafetensorsHeaderBytes);
  if (header_len > file_size - 8) fail("{}: header length {} exceeds the file size {}", path, header_len, file_size);
  const std::string_view header = file.substr(8, header_len);

  nlohmann::json json;
  try {
    json = nlohmann::json::parse(header.begin(), header.end(), json_depth_limit(path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed safetensors header: {}", path, e.what());
  }
  if (!json.is_object()) fail("{}: malformed safetensors header: not a JSON object", path);

  // The whole header is checked before anything is allocated or read: a shape and its byte range
  // agree without overflow, every range lies inside the data section, no two overlap.
  const uint64_t data_size = file_size - 8 - header_len;
  SafetensorsHeader out;
  out.header_len = header_len;
  for (auto it = json.begin(); it != json.end(); ++it) {
    const std::string& name = it.key();
    const auto& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) fail("{}: __metadata__ must be an object", path);
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) fail("{}: __metadata__ value '{}' must be a string", path, m.key());
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets"))
      fail("{}: tensor '{}': header entry needs dtype, shape and data_offsets", path, name);
    if (!entry["dtype"].is_string()) fail("{}: tensor '{}': dtype must be a string", path, name);
    const std::string dtype = entry["dtype"].get<std::string>();
    const int64_t elem_size = element_size(dtype, path, name);
    std::vector<int64_t> shape;
    if (!entry["shape"].is_array()) fail("{}: tensor '{}': shape must be a list", path, name);
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned()) fail("{}: tensor '{}': shape entries must be non-negative integers", path, name);
      const uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) overflow = true;
      overflow = __builtin_mul_overflow(numel, dim, &numel) || overflow;
      shape.push_back(static_cast<int64_t>(dim));
    }
    uint64_t expected = 0;
    overflow = __builtin_mul_overflow(numel, static_cast<uint64_t>(elem_size), &expected) || overflow;
    if (overflow) fail("{}: tensor '{}': shape {} is too large", path, name, entry["shape"].dump());
    const auto& offs = entry["data_offsets"];
    if (!offs.is_array() || offs.size() != 2 || !offs[0].is_number_unsigned() || !offs[1].is_number_unsigned())
      fail("{}: tensor '{}': data_offsets must be [begin, end]", path, name);
    const uint64_t begin = offs[0].get<uint64_t>(), end = offs[1].get<uint64_t>();
    if (begin > end) fail("{}: tensor '{}': data_offsets begin {} > end {}", path, name, begin, end);
    if (end > data_size)
      fail("{}: tensor '{}': data ends at byte {} but the file holds {} data bytes (truncated file?)", path, name, end,
           data_size);
    if (end - begin != expected)
      fail("{}: tensor '{}': {} bytes for shape with {} elements of {} (expected {})", path, name, end - begin, numel,
           dtype, expected);
    out.entries.push_back({name, dtype, std::move(shape), begin, end});
  }
  std::vector<const SafetensorsEntry*> by_offset;
  for (const auto& e : out.entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const SafetensorsEntry* a, const SafetensorsEntry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      fail("{}: tensors '{}' and '{}' overlap in the data section", path, by_offset[i - 1]->name, by_offset[i]->name);
  return out;
}

std::map<std::string, std::string> read_safetensors_index(const std::string& index_path) {
  nlohmann::json j;
  try {
    j = read_json_file(index_path, "a model.safetensors.index.json");
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed index: {}", index_path, e.what());
  }
  if (!j.contains("weight_map") || !j["weight_map"].is_object())
    fail("{}: malformed index: no weight_map object", index_path);
  std::map<std::string, std::string> wanted;  // tensor -> shard
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string()) fail("{}: weight_map['{}'] must be a file name", index_path, it.key());
    // A shard is a file beside the index, never a path out of the checkpoint directory.
    const std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos)
      fail("{}: weight_map['{}']: '{}' is not a file name in this directory", index_path, it.key(), shard);
    wanted[it.key()] = shard;
  }
  return wanted;
}

}  // namespace coe
