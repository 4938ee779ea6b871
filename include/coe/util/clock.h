#pragma once
// Wall-clock intervals for logs and reports (steady: immune to clock changes).
#include <chrono>

namespace coe {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace coe
