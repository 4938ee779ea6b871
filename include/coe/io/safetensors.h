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
  // CPU tensors over the file's memory map (util/mapped_file.h): the bytes are read from the page
  // cache when first used, e.g. by the copy_ into a model's parameters, never first into a buffer.
  // Each tensor keeps the mapping alive, so none outlives it; the mapping is private and
  // copy-on-write, so writing to a tensor never changes the file. (A tensor whose bytes are not
  // aligned to its element size is an owned copy.)
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> metadata;  // "__metadata__"
};

// Maps the file and validates the header completely (size cap, JSON depth, dtype, shape vs byte
// range without overflow, ranges inside the file, no overlap) before making any tensor; every
// error names the file and, where it applies, the tensor.
SafetensorsFile load_safetensors(const std::string& path);

// Writes to `path` atomically (temp file + rename). Tensors are converted to contiguous CPU.
void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace coe
