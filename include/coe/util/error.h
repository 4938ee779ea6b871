#pragma once
// One exception type for every user-facing failure. Its message is a single line that names the
// file, line, key or tensor at fault and the reason; tools print it and exit non-zero.
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace coe {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace coe
