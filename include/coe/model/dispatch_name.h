#pragma once
// The names of the expert dispatches (model/experts.h) and what "auto" resolves to. Torch-free, so
// config checks and memory estimates can use them without the model's headers.
#include <string>

namespace coe {

inline constexpr const char* kExpertDispatchChoices = "auto | grouped | segmented | masked";

inline bool is_expert_dispatch_name(const std::string& name) {
  return name == "auto" || name == "grouped" || name == "segmented" || name == "masked";
}

// "auto": "grouped" (at::_grouped_mm), the fastest on CUDA and, with torch's CPU kernel, on the
// CPU too (docs/performance.md); any other valid name stands for itself.
inline std::string resolve_dispatch_name(const std::string& name) { return name == "auto" ? "grouped" : name; }

}  // namespace coe
