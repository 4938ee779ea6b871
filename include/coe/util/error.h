#pragma once
// One exception type for every user-facing failure. Its message is a single line that names the
// file, line, key or tensor at fault and the reason; tools print it and exit non-zero.
#include <fmt/format.h>

#include <stdexcept>
#include <string>

// One fmt in every TU: the system's, which libfmt is, not the torch wheel's copy (see
// cmake/CoeDependencies.cmake).
#if defined(COE_FMT_VERSION)
static_assert(FMT_VERSION == COE_FMT_VERSION, "fmt headers differ from the linked libfmt: torch's fmt shadows it");
#endif

namespace coe {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The first line of an error's message, trailing blanks dropped: torch's errors carry a C++
// backtrace after it, and coe prints every failure as one line.
inline std::string first_line(const std::exception& e) {
  std::string message = e.what();
  if (const auto nl = message.find('\n'); nl != std::string::npos) message.resize(nl);
  while (!message.empty() && (message.back() == ' ' || message.back() == '\r')) message.pop_back();
  return message;
}

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace coe
