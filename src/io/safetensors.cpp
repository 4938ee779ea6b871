#include "coe/io/safetensors.h"

#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/json_limits.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <vector>

namespace coe {
namespace {

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
};
constexpr DtypeInfo kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"BF16", at::kBFloat16}, {"F16", at::kHalf}, {"I64", at::kLong},
    {"I32", at::kInt},    {"I16", at::kShort}, {"I8", at::kChar},       {"U8", at::kByte},  {"BOOL", at::kBool},
};

at::ScalarType dtype_from_name(const std::string& name, const std::string& file, const std::string& tensor) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.type;
  fail("{}: tensor '{}': unsupported dtype '{}'", file, tensor, name);
}

const char* dtype_name(at::ScalarType type, const std::string& tensor) {
  for (const auto& d : kDtypes)
    if (type == d.type) return d.name;
  fail("safetensors: tensor '{}': cannot store dtype {}", tensor, c10::toString(type));
}

}  // namespace

SafetensorsFile load_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open safetensors file", path);
  const uint64_t file_size = std::filesystem::file_size(path);
  if (file_size < 8) fail("{}: truncated safetensors file ({} bytes)", path, file_size);
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > kMaxSafetensorsHeaderBytes)
    fail("{}: header length {} exceeds the limit of {} bytes (not a safetensors file?)", path, header_len,
         kMaxSafetensorsHeaderBytes);
  if (header_len > file_size - 8) fail("{}: header length {} exceeds the file size {}", path, header_len, file_size);
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  if (!in) fail("{}: cannot read the header", path);

  nlohmann::json json;
  try {
    json = nlohmann::json::parse(header, json_depth_limit(path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed safetensors header: {}", path, e.what());
  }
  if (!json.is_object()) fail("{}: malformed safetensors header: not a JSON object", path);

  // The whole header is checked before anything is allocated or read: a shape and its byte range
  // agree without overflow, every range lies inside the data section, no two overlap.
  const uint64_t data_size = file_size - 8 - header_len;
  SafetensorsFile out;
  struct Entry {
    std::string name;
    at::ScalarType type;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
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
    const at::ScalarType type = dtype_from_name(entry["dtype"].get<std::string>(), path, name);
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
    overflow = __builtin_mul_overflow(numel, static_cast<uint64_t>(c10::elementSize(type)), &expected) || overflow;
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
           entry["dtype"].get<std::string>(), expected);
    entries.push_back({name, type, std::move(shape), begin, end});
  }
  std::vector<const Entry*> by_offset;
  for (const auto& e : entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      fail("{}: tensors '{}' and '{}' overlap in the data section", path, by_offset[i - 1]->name, by_offset[i]->name);

  for (const auto& e : entries) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.type));
    in.seekg(static_cast<std::streamoff>(8 + header_len + e.begin));
    in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(e.end - e.begin));
    if (!in) fail("{}: tensor '{}': read failed", path, e.name);
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") fail("safetensors: '__metadata__' is not a valid tensor name");
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    uint64_t bytes = t.numel() * t.element_size();
    header[name] = {{"dtype", dtype_name(t.scalar_type(), name)},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(t);
  }
  std::string text = header.dump();
  while (text.size() % 8 != 0) text.push_back(' ');  // data section 8-byte aligned, as HF writes it

  AtomicFile out(path);
  uint64_t len = text.size();
  char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<char>(len >> (8 * i));
  out.write(std::string_view(len_bytes, 8));
  out.write(text);
  for (const auto& t : data)
    out.write(std::string_view(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size()));
  out.commit();
}

}  // namespace coe
