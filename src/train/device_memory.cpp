#include "coe/util/device_memory.h"

#include "coe/util/error.h"

#ifdef COE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <fstream>
#include <sstream>

namespace coe {
namespace {

int64_t read_vmhwm_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) != 0) continue;
    std::istringstream fields(line.substr(6));
    int64_t kib = 0;
    fields >> kib;
    return kib * 1024;
  }
  return 0;
}

}  // namespace

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
  return {read_vmhwm_bytes(), "cpu-vmhwm"};
}

void synchronize(const c10::Device& device) {
  if (!device.is_cuda()) return;
#ifdef COE_WITH_CUDA
  c10::cuda::device_synchronize();
#endif
}

}  // namespace coe
