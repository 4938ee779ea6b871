#pragma once
// Content fingerprints for change detection of prepared datasets (not for security).
#include <cstdint>
#include <string>
#include <string_view>

namespace coe {

// XXH64 (Yann Collet's xxHash, 64-bit variant; Debian's libxxhash) of `bytes` with the given seed.
uint64_t xxh64(std::string_view bytes, uint64_t seed = 0);
// "xxh64:<16 hex digits>" of a file's whole content (memory-mapped).
std::string hash_file(const std::string& path);
// 16 lowercase hex digits.
std::string hex64(uint64_t value);

}  // namespace coe
