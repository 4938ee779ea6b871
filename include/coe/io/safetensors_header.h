#pragma once
// The parsing half of safetensors (coe/io/safetensors.h) and of an HF checkpoint's
// model.safetensors.index.json, torch-free: what a file says is checked here, before any tensor
// is allocated, so the fuzz targets (fuzz/) reach it without libtorch.
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace coe {

// The largest JSON header load_safetensors reads (as the safetensors library's own limit): a
// corrupt or hostile length field must not make it allocate gigabytes before checking anything.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// The dtype names coe reads and writes, with their element sizes in bytes.
struct SafetensorsDtype {
  const char* name;
  int64_t element_size;
};
inline constexpr SafetensorsDtype kSafetensorsDtypes[] = {
    {"F64", 8}, {"F32", 4}, {"BF16", 2}, {"F16", 2}, {"I64", 8},
    {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U8", 1},  {"BOOL", 1},
};

struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // one of kSafetensorsDtypes' names
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range in the data section
};

struct SafetensorsHeader {
  uint64_t header_len = 0;                      // the JSON's length: the data section starts at 8 + header_len
  std::vector<SafetensorsEntry> entries;        // in the header's key order
  std::map<std::string, std::string> metadata;  // "__metadata__"
};

// Reads the length field and the JSON header from the start of `file` (the whole file's bytes, as
// mapped by load_safetensors) and checks it completely: size cap, JSON depth, dtype, shape vs byte
// range without overflow, every range inside the data section, no two overlapping. Errors name
// `path` and, where it applies, the tensor.
SafetensorsHeader read_safetensors_header(std::string_view file, const std::string& path);

// model.safetensors.index.json: its weight_map (tensor name -> shard file name), every shard a
// plain file name beside the index. Errors name `index_path`.
std::map<std::string, std::string> read_safetensors_index(const std::string& index_path);

}  // namespace coe
