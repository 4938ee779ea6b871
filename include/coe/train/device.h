#pragma once
// The device a run computes on, and what it can tell about memory.
//
// resolve_device checks a "cpu" | "cuda" | "cuda:N" setting against this libtorch and machine
// (errors name the setting). Peak memory as the benchmarks report it: CUDA, the caching
// allocator's peak allocated bytes (exact); CPU, the process's peak resident set (VmHWM), a
// best-effort figure that includes everything the process ever touched (libraries, data), so it
// is labelled as such.
#include <c10/core/Device.h>

#include <cstdint>
#include <string>

namespace coe {

// `spec` parsed and checked: an unknown name, CUDA on a CPU-only libtorch or machine, or an index
// past the last GPU is a coe::Error beginning with `what` (e.g. "--device", "run.yaml:
// trainer.device"). "cuda" means cuda:0.
c10::Device resolve_device(const std::string& spec, const std::string& what);

struct PeakMemory {
  int64_t bytes = 0;
  std::string source;  // "cuda-allocator" | "cpu-vmhwm"
};

void reset_peak_memory(const c10::Device& device);
// Memory in use now: the CUDA allocator's allocated bytes, or the process's RSS on the CPU.
int64_t current_memory(const c10::Device& device);
PeakMemory peak_memory(const c10::Device& device);
// Waits for all queued work on `device` (no-op on CPU); call before reading a wall clock.
void synchronize(const c10::Device& device);

// A "<key>:" field of /proc/self/status in kB (VmRSS, VmHWM, ...); 0 when absent.
int64_t proc_status_kib(const std::string& key);
// MemAvailable of /proc/meminfo in bytes (what the kernel can give without swapping); -1 if unknown.
int64_t host_memory_available();
// Refuses, before anything is allocated, a job whose estimated memory exceeds MemAvailable (an
// out-of-memory kill ends a process without a word): a coe::Error "<what>: needs about X ... only
// Y available; <remedy>".
void check_host_memory(int64_t needed_bytes, const std::string& what, const std::string& remedy);

}  // namespace coe
