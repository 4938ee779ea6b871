#pragma once
// Peak memory as the benchmarks report it. CUDA: the caching allocator's peak allocated bytes
// (exact). CPU: the process's peak resident set (VmHWM), a best-effort figure that includes
// everything the process ever touched (libraries, data), so it is labelled as such.
#include <c10/core/Device.h>

#include <cstdint>
#include <string>

namespace coe {

struct PeakMemory {
  int64_t bytes = 0;
  std::string source;  // "cuda-allocator" | "cpu-vmhwm"
};

void reset_peak_memory(const c10::Device& device);
PeakMemory peak_memory(const c10::Device& device);
// Waits for all queued work on `device` (no-op on CPU); call before reading a wall clock.
void synchronize(const c10::Device& device);

}  // namespace coe
