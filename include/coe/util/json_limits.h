#pragma once
// Bounds on JSON from files coe does not write itself or that travel between people (checkpoint
// headers and indexes, prepared-dataset manifests, data records, run directories). nlohmann's
// parser is iterative, but comparing, copying and printing a value recurse once per level, so a
// file nested a million levels deep would overflow the stack later; it is refused at parse time.
#include <nlohmann/json.hpp>

#include <string>

namespace coe {

// Far deeper than any file coe reads (a safetensors header is 3 levels, a record 2 or 3).
inline constexpr int kMaxJsonDepth = 64;

// A parser callback for nlohmann::json::parse(input, callback) that throws the one-line
// coe::Error "<what>: JSON nested deeper than <max_depth> levels" and otherwise keeps every value.
nlohmann::json::parser_callback_t json_depth_limit(std::string what, int max_depth = kMaxJsonDepth);

}  // namespace coe
