#include "coe/train/device.h"

#include "coe/train/memory_model.h"
#include "coe/util/error.h"

#ifdef COE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <fstream>

namespace coe {
namespace {

// The kB value of a "Key:   123 kB" line of a /proc file; -1 when absent.
int64_t proc_field_kib(const char* file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  const std::string prefix = key + ":";
  while (std::getline(in, line))
    if (line.rfind(prefix, 0) == 0) return std::strtoll(line.c_str() + prefix.size(), nullptr, 10);
  return -1;
}

}  // namespace

c10::Device resolve_device(const std::string& spec, const std::string& what) {
  const bool cuda = spec == "cuda" || spec.rfind("cuda:", 0) == 0;
  if (spec != "cpu" && !cuda) fail("{}: unknown device '{}' (cpu | cuda | cuda:N)", what, spec);
  if (!cuda) return c10::Device(c10::kCPU);
  int index = 0;
  if (spec.size() > 5) {
    const std::string digits = spec.substr(5);
    if (digits.empty() || digits.size() > 3 || digits.find_first_not_of("0123456789") != std::string::npos)
      fail("{}: unknown device '{}' (cpu | cuda | cuda:N)", what, spec);
    index = std::stoi(digits);
  }
#ifdef COE_WITH_CUDA
  const int count = static_cast<int>(c10::cuda::device_count());
  if (count == 0) fail("{}: '{}' asked for, but no CUDA device is visible to this process", what, spec);
  if (index >= count) fail("{}: '{}' asked for, but this process sees only {} CUDA device(s)", what, spec, count);
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
#else
  fail("{}: '{}' asked for, but this coe was built against a CPU-only libtorch", what, spec);
#endif
}

int64_t proc_status_kib(const std::string& key) {
  return std::max<int64_t>(0, proc_field_kib("/proc/self/status", key));
}

int64_t host_memory_available() {
  const int64_t kib = proc_field_kib("/proc/meminfo", "MemAvailable");
  return kib < 0 ? -1 : kib * 1024;
}

void reset_peak_memory(const c10::Device& device) {
  if (device.is_cuda()) {
#ifdef COE_WITH_CUDA
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? c10::cuda::current_device() : device.index());
#else
    fail("this build of coe has no CUDA support");
#endif
  }
  // VmHWM cannot be reset portably; the CPU figure is the process peak.
}

int64_t current_memory(const c10::Device& device) {
  if (device.is_cuda()) {
#ifdef COE_WITH_CUDA
    const int index = device.index() < 0 ? c10::cuda::current_device() : device.index();
    return c10::cuda::CUDACachingAllocator::getDeviceStats(index).allocated_bytes[0].current;
#else
    fail("this build of coe has no CUDA support");
#endif
  }
  return proc_status_kib("VmRSS") * 1024;
}

PeakMemory peak_memory(const c10::Device& device) {
  if (device.is_cuda()) {
#ifdef COE_WITH_CUDA
    const int index = device.index() < 0 ? c10::cuda::current_device() : device.index();
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
    // Index 0 is StatType::AGGREGATE (the enum moved namespaces across torch 2.x releases).
    return {stats.allocated_bytes[0].peak, "cuda-allocator"};
#else
    fail("this build of coe has no CUDA support");
#endif
  }
  return {proc_status_kib("VmHWM") * 1024, "cpu-vmhwm"};
}

void synchronize(const c10::Device& device) {
  if (!device.is_cuda()) return;
#ifdef COE_WITH_CUDA
  c10::cuda::device_synchronize();
#endif
}

void check_host_memory(int64_t needed_bytes, const std::string& what, const std::string& remedy) {
  const int64_t available = host_memory_available();
  if (available < 0 || needed_bytes <= available) return;
  fail("{}: needs about {} of memory (coe-memory's estimate), but this machine has only {} available; {}", what,
       format_bytes(needed_bytes), format_bytes(available), remedy);
}

}  // namespace coe
