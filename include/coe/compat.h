#pragma once
// Every libtorch-version-dependent switch lives here (Debian's libtorch 1.13 on CPU, pip torch 2.x
// with CUDA on the GPU machine).
#include <torch/version.h>

#define COE_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// at::scaled_dot_product_attention (flash / memory-efficient / cuDNN kernels) exists from 2.0;
// its `scale` argument from 2.1.
#define COE_HAS_SDPA COE_TORCH_AT_LEAST(2, 1)
#if COE_HAS_SDPA
#include <ATen/ops/scaled_dot_product_attention.h>
#endif

// at::_grouped_mm (ragged 2D x 3D and 2D x 2D GEMMs with device-side `offs`, differentiable; a
// CUTLASS kernel for bf16 on sm_90 / sm_100) exists from 2.8.
#define COE_HAS_GROUPED_MM COE_TORCH_AT_LEAST(2, 8)
#if COE_HAS_GROUPED_MM
#include <ATen/ops/_grouped_mm.h>
#endif

// ---- CUDA autocast (trainer: bf16 compute over float32 master weights) ------------------------
// torch 2.4 replaced the CUDA-only at::autocast::set_enabled / set_autocast_gpu_dtype with
// per-device-type functions (the old ones warn as deprecated).
#include <ATen/autocast_mode.h>
#include <ATen/core/grad_mode.h>

namespace coe::compat {

inline constexpr bool kHasSdpa = COE_HAS_SDPA;
inline constexpr bool kHasGroupedMm = COE_HAS_GROUPED_MM;

// Causal at::scaled_dot_product_attention with an explicit softmax scale; callers check kHasSdpa.
inline at::Tensor causal_sdpa(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
#if COE_HAS_SDPA
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true, scale);
#else
  (void)q, (void)k, (void)v, (void)scale;
  TORCH_CHECK(false, "at::scaled_dot_product_attention with a scale needs libtorch >= 2.1");
  return {};
#endif
}

// at::_grouped_mm(a, b, offs); callers check kHasGroupedMm first.
inline at::Tensor native_grouped_mm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& offs) {
#if COE_HAS_GROUPED_MM
  return at::_grouped_mm(a, b, offs);
#else
  (void)a, (void)b, (void)offs;
  TORCH_CHECK(false, "at::_grouped_mm needs libtorch >= 2.8");
  return {};
#endif
}

inline bool cuda_autocast_enabled() {
#if COE_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(at::kCUDA);
#else
  return at::autocast::is_enabled();
#endif
}

inline at::ScalarType cuda_autocast_dtype() {
#if COE_TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(at::kCUDA);
#else
  return at::autocast::get_autocast_gpu_dtype();
#endif
}

inline void set_cuda_autocast(bool enabled, at::ScalarType dtype) {
#if COE_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(at::kCUDA, enabled);
  at::autocast::set_autocast_dtype(at::kCUDA, dtype);
#else
  at::autocast::set_enabled(enabled);
  at::autocast::set_autocast_gpu_dtype(dtype);
#endif
}

// A float32 weight as the CUDA autocast dtype, through autocast's per-forward cast cache when
// autocast is on and gradients are recorded (a CoE layer's iterations then share one cast of the
// expert stacks, which backward keeps anyway); a plain cast otherwise, so that the no-grad forward
// of a checkpointed layer does not hold the copies until the end of the whole forward.
inline at::Tensor autocast_weight(const at::Tensor& w, at::ScalarType dtype) {
  if (w.scalar_type() == dtype) return w;
  if (w.is_cuda() && cuda_autocast_enabled() && dtype == cuda_autocast_dtype() && at::GradMode::is_enabled())
    return at::autocast::cached_cast(dtype, w, at::kCUDA);
  return w.to(dtype);
}

// `with torch.autocast("cuda", dtype)`: enabled for the guard's lifetime, then restored; the cast
// cache is cleared when the outermost guard exits. A disabled guard changes nothing.
class CudaAutocastGuard {
 public:
  CudaAutocastGuard(bool enabled, at::ScalarType dtype) : active_(enabled) {
    if (!active_) return;
    prev_enabled_ = cuda_autocast_enabled();
    prev_dtype_ = cuda_autocast_dtype();
    set_cuda_autocast(true, dtype);
    at::autocast::increment_nesting();
  }
  ~CudaAutocastGuard() {
    if (!active_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    set_cuda_autocast(prev_enabled_, prev_dtype_);
  }
  CudaAutocastGuard(const CudaAutocastGuard&) = delete;
  CudaAutocastGuard& operator=(const CudaAutocastGuard&) = delete;

 private:
  bool active_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kHalf;
};

}  // namespace coe::compat
