#pragma once
// Bounds on JSON from files coe does not write itself or that travel between people (checkpoint
// headers and indexes, prepared-dataset manifests, data records, run directories). nlohmann's
// parser is iterative, but comparing, copying and printing a value recurse once per level, so a
// file nested a million levels deep would overflow the stack later; it is refused at parse time.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace coe {

// Far deeper than any file coe reads (a safetensors header is 3 levels, a record 2 or 3).
inline constexpr int kMaxJsonDepth = 64;

// A parser callback for nlohmann::json::parse(input, callback) that throws the one-line
// coe::Error "<what>: JSON nested deeper than <max_depth> levels" and otherwise keeps every value.
nlohmann::json::parser_callback_t json_depth_limit(std::string what, int max_depth = kMaxJsonDepth);

// Size limits of the small files coe reads whole, checked before a byte is read (a 20 MB
// config.json nested deeply took yaml-cpp 12.5 s and 2.9 GB).
// Configs read by yaml-cpp (run configs and their base: files, sweep files, a model's
// config.json): yaml-cpp takes about 850 bytes of memory per byte of a JSON list, so 1 MiB, some
// 300 times the largest config in configs/, costs at most about 2 s and 0.9 GB.
inline constexpr std::uintmax_t kMaxConfigFileBytes = std::uintmax_t{1} << 20;
// JSON files of run directories, checkpoints and prepared datasets (state.json, final.json,
// routing.json, meta.json, manifest.json, model.safetensors.index.json), read by nlohmann: 16 MiB
// parse in under a second in under 300 MB.
inline constexpr std::uintmax_t kMaxJsonFileBytes = std::uintmax_t{16} << 20;

// The bytes of `path`; a file longer than `max_bytes` is the one-line coe::Error
// "<path>: N bytes, more than the M-byte limit for <kind>", raised before reading (from its size;
// a pipe or a file that grows is cut off at the limit instead). `kind`: "a config file".
std::string read_bounded_file(const std::string& path, std::uintmax_t max_bytes, const std::string& kind);

// A small JSON file: read_bounded_file, then nlohmann's parser with json_depth_limit. Throws
// coe::Error (too large, unreadable, too deep) or nlohmann::json::exception (not JSON: the caller
// words it, e.g. "<path>: cannot parse: ...").
nlohmann::json read_json_file(const std::string& path, const std::string& kind,
                              std::uintmax_t max_bytes = kMaxJsonFileBytes);

}  // namespace coe
