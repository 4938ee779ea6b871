#include "coe/io/safetensors.h"

#include "coe/io/safetensors_header.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/mapped_file.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>
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

// read_safetensors_header has checked the name against kSafetensorsDtypes, which lists these.
at::ScalarType dtype_from_name(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.type;
  fail("safetensors: unsupported dtype '{}'", name);
}

const char* dtype_name(at::ScalarType type, const std::string& tensor) {
  for (const auto& d : kDtypes)
    if (type == d.type) return d.name;
  fail("safetensors: tensor '{}': cannot store dtype {}", tensor, c10::toString(type));
}

}  // namespace

SafetensorsFile load_safetensors(const std::string& path) {
  // Copy-on-write: a tensor a caller modifies in place gets private pages and the file stays as it
  // is; a read-only mapping would make that write a segmentation fault.
  auto file = std::make_shared<const MappedFile>(path, MappedFile::Access::kCopyOnWrite);
  // The whole header is checked (safetensors_header.h) before any tensor is made.
  SafetensorsHeader header = read_safetensors_header(std::string_view(file->data(), file->size()), path);
  SafetensorsFile out;
  out.metadata = std::move(header.metadata);
  for (const auto& e : header.entries) {
    const auto options = at::TensorOptions().dtype(dtype_from_name(e.dtype));
    char* data = file->writable_data() + 8 + header.header_len + e.begin;
    at::Tensor t;
    if (e.end == e.begin) {
      t = at::empty(e.shape, options);
    } else if (reinterpret_cast<uintptr_t>(data) % at::elementSize(options.dtype().toScalarType()) == 0) {
      // Each tensor holds a reference to the mapping, which is unmapped when the last one is freed.
      t = at::from_blob(
          data, e.shape, [file](void*) {}, options);
    } else {
      // The format does not align the data; ATen's kernels expect element-aligned pointers.
      t = at::empty(e.shape, options);
      std::memcpy(t.data_ptr(), data, e.end - e.begin);
    }
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
