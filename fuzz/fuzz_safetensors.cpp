// A safetensors file (length field, JSON header, data) as load_safetensors checks it before reading
// any tensor; an input starting with '{' is a model.safetensors.index.json instead.
#include "coe/io/safetensors_header.h"
#include "fuzz_files.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  coe::fuzz::expect_only_coe_errors([&] {
    if (!input.empty() && input.front() == '{') {
      const auto weight_map = coe::read_safetensors_index(coe::fuzz::write_file("model.safetensors.index.json", input));
      for (const auto& [tensor, shard] : weight_map)
        if (shard.empty() || shard.find('/') != std::string::npos) std::abort();  // the check it promises
      return;
    }
    const coe::SafetensorsHeader header = coe::read_safetensors_header(input, "fuzz.safetensors");
    // What load_safetensors relies on: every range inside the file, its length the shape's bytes.
    for (const auto& e : header.entries) {
      if (e.begin > e.end || 8 + header.header_len + e.end > size) std::abort();
      uint64_t numel = 1;
      for (int64_t d : e.shape) numel *= static_cast<uint64_t>(d);
      int64_t element = 0;
      for (const auto& d : coe::kSafetensorsDtypes)
        if (e.dtype == d.name) element = d.element_size;
      if (element == 0 || numel * static_cast<uint64_t>(element) != e.end - e.begin) std::abort();
    }
  });
  return 0;
}
