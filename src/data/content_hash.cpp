#include "coe/data/content_hash.h"

#include "coe/util/mapped_file.h"

#include <fmt/format.h>
#include <xxhash.h>

namespace coe {

uint64_t xxh64(std::string_view bytes, uint64_t seed) { return XXH64(bytes.data(), bytes.size(), seed); }

std::string hex64(uint64_t value) { return fmt::format("{:016x}", value); }

std::string hash_file(const std::string& path) {
  MappedFile file(path);
  return "xxh64:" + hex64(xxh64(std::string_view(file.data() ? file.data() : "", file.size())));
}

}  // namespace coe
