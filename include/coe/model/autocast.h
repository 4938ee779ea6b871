#pragma once
// Mixed precision: libtorch's `with torch.autocast(device_type, dtype)`, on CUDA and on CPU, and the
// weight cast that coe's own expert GEMMs (at::_grouped_mm has no autocast rule) make under it.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/grad_mode.h>

namespace coe {

inline bool autocast_enabled(c10::DeviceType device) { return at::autocast::is_autocast_enabled(device); }

// The dtype the GEMMs on `x` run in: autocast's for a float32 `x` under autocast, else x's own.
inline at::ScalarType autocast_compute_dtype(const at::Tensor& x) {
  const c10::DeviceType device = x.device().type();
  if (x.scalar_type() == at::kFloat && autocast_enabled(device)) return at::autocast::get_autocast_dtype(device);
  return x.scalar_type();
}

// A float32 weight as `dtype`, through autocast's per-forward cast cache when autocast is on and
// gradients are recorded (a CoE layer's iterations then share one cast of the expert stacks, which
// backward keeps anyway); a plain cast otherwise, so that the no-grad forward of a checkpointed
// layer does not hold the copies until the end of the whole forward.
inline at::Tensor autocast_weight(const at::Tensor& w, at::ScalarType dtype) {
  if (w.scalar_type() == dtype) return w;
  const c10::DeviceType device = w.device().type();
  if (autocast_enabled(device) && dtype == at::autocast::get_autocast_dtype(device) && at::GradMode::is_enabled())
    return at::autocast::cached_cast(dtype, w, device);
  return w.to(dtype);
}

// `with torch.autocast(device, dtype)`: enabled for the guard's lifetime, then restored; the cast
// cache is cleared when the outermost guard exits. A disabled guard changes nothing.
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device, bool enabled, at::ScalarType dtype) : device_(device), active_(enabled) {
    if (!active_) return;
    prev_enabled_ = at::autocast::is_autocast_enabled(device_);
    prev_dtype_ = at::autocast::get_autocast_dtype(device_);
    at::autocast::set_autocast_enabled(device_, true);
    at::autocast::set_autocast_dtype(device_, dtype);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!active_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(device_, prev_enabled_);
    at::autocast::set_autocast_dtype(device_, prev_dtype_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_;
  bool active_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kBFloat16;
};

}  // namespace coe
