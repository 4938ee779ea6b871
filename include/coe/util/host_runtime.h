#pragma once
// Process-wide settings for CPU training that do not change any result, only its speed.

#include <string>

namespace coe {

// Keeps freed large blocks in glibc's heap instead of returning them to the kernel. libtorch frees
// and re-allocates the same activation-sized buffers every step; with glibc's defaults each of
// them is a fresh mmap whose pages fault in again (a third of the CPU time of a small model's
// step went to page faults and zero fills). No-op on other C libraries, and when the user set any
// MALLOC_*_ environment variable (theirs wins).
void tune_host_allocator();

// The shared library that provides BLAS sgemm_ to libtorch (Debian's libtorch uses the system
// BLAS chosen by update-alternatives: the reference BLAS is ~7x slower than OpenBLAS here).
// Empty when it cannot be found.
std::string blas_library();

}  // namespace coe
