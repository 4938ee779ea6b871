#pragma once
// Reader and writer for the safetensors format (8-byte little-endian header length, JSON header,
// raw little-endian data). Supported dtypes: F64, F32, BF16, F16, I64, I32, I16, I8, U8, BOOL.
#include "coe/io/safetensors_header.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>

namespace coe {

struct SafetensorsFile {
  std::map<std::string, at::Tensor> tensors;    // CPU, owning
  std::map<std::string, std::string> metadata;  // "__metadata__"
};

// Validates the header completely (size cap, JSON depth, dtype, shape vs byte range without
// overflow, ranges inside the file, no overlap) before allocating or reading any tensor; every
// error names the file and, where it applies, the tensor.
SafetensorsFile load_safetensors(const std::string& path);

// Writes to `path` atomically (temp file + rename). Tensors are converted to contiguous CPU.
void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace coe
