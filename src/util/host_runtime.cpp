#include "coe/util/host_runtime.h"

#include <cstdlib>
#include <filesystem>

#if defined(__GLIBC__)
#include <dlfcn.h>
#include <malloc.h>
#endif

namespace coe {

void tune_host_allocator() {
#if defined(__GLIBC__)
  for (const char* var : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX"})
    if (std::getenv(var) != nullptr) return;
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // blocks up to 32 MiB (glibc's maximum) come from the heap
  mallopt(M_TRIM_THRESHOLD, -1);        // never shrink the heap
  mallopt(M_TOP_PAD, 256 << 20);        // grow it in 256 MiB steps
#endif
}

std::string blas_library() {
#if defined(__GLIBC__)
  void* symbol = dlsym(RTLD_DEFAULT, "sgemm_");
  Dl_info info{};
  if (symbol == nullptr || dladdr(symbol, &info) == 0 || info.dli_fname == nullptr) return {};
  std::error_code ec;
  const auto resolved = std::filesystem::canonical(info.dli_fname, ec);
  return ec ? std::string(info.dli_fname) : resolved.string();
#else
  return {};
#endif
}

}  // namespace coe
