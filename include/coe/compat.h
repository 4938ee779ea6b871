#pragma once
// Every libtorch-version-dependent switch lives here (Debian's libtorch 1.13 on CPU, pip torch 2.x
// with CUDA on the GPU machine).
#include <torch/version.h>

#define COE_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// at::scaled_dot_product_attention (flash / memory-efficient / cuDNN kernels) exists from 2.0.
#define COE_HAS_SDPA COE_TORCH_AT_LEAST(2, 0)
