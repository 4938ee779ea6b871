#pragma once
// coe's model for transformers (python/coe_hf/: configuration_coe.py, modeling_coe.py), compiled
// into coe by CMake (cmake/CoeEmbedFiles.cmake) so that coe-export writes it into a CoE folder
// without looking for data files next to the binary.
#include <string_view>

namespace coe {

struct EmbeddedFile {
  std::string_view name;  // the file name, e.g. "modeling_coe.py"
  std::string_view text;
};

// Both files of python/coe_hf/, in that order.
extern const EmbeddedFile kHfRemoteCode[2];

}  // namespace coe
