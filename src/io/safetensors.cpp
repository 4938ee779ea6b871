#include "coe/io/safetensors.h"

#include "coe/io/safetensors_header.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
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
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open safetensors file", path);
  const uint64_t file_size = std::filesystem::file_size(path);
  // The whole header is checked (safetensors_header.h) before anything is allocated or read.
  SafetensorsHeader header = read_safetensors_header(in, file_size, path);
  SafetensorsFile out;
  out.metadata = std::move(header.metadata);
  for (const auto& e : header.entries) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(dtype_from_name(e.dtype)));
    in.seekg(static_cast<std::streamoff>(8 + header.header_len + e.begin));
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
