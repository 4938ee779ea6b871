#pragma once
// AdamW with decoupled weight decay and bias correction, written out so every operation and its
// order is visible (it is torch.optim.AdamW's single-tensor algorithm, amsgrad off):
//
//   t += 1                      (per parameter, counted only when it has a gradient)
//   p  *= 1 - lr * weight_decay (parameters selected for decay)
//   m   = beta1 * m + (1 - beta1) * g
//   v   = beta2 * v + (1 - beta2) * g^2
//   p  -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//
// Moments are float32 tensors beside float32 (master) parameters on the parameters' device. The
// update is deterministic: the same gradients give bit-identical parameters and moments, and
// state() / load_state() round-trip them exactly (saved as safetensors).
#include "coe/train/train_config.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace coe {

class CausalLMImpl;

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.01;

  // The run config's optimizer section (the learning rate goes to step()).
  static AdamWOptions from(const OptimConfig& optim) {
    return {optim.beta1, optim.beta2, optim.eps, optim.weight_decay};
  }
};

struct NamedParameter {
  std::string name;
  at::Tensor param;   // the module's parameter (shares storage with the model)
  bool decay = true;  // weight decay applies
};

// The model's parameters in registration order, with decay chosen by `mode` (kNoNormsBiases:
// tensors of dim < 2, i.e. norm weights and biases, are not decayed).
std::vector<NamedParameter> optimizer_parameters(const CausalLMImpl& model, DecayMode mode);

// One AdamW update of `p` (in place) from gradient `g` with moments `m`, `v` (in place) at step
// `t` (>= 1): the formula above, in its order. The one home of the update: AdamW and ZeRO-1's
// ShardedAdamW (on a parameter's owned elements) both call it.
void adamw_update(at::Tensor p, const at::Tensor& g, at::Tensor& m, at::Tensor& v, int64_t t, double lr, bool decay,
                  const AdamWOptions& options);

// Reads a saved optimizer state (AdamW::state()'s layout) for `params`: each parameter's two
// moments (float32, the parameter's shape) and step count (one int64) go to `take(i, exp_avg,
// exp_avg_sq, step)`; a missing, extra or wrong-shaped tensor is an error naming it and `source`.
void read_adamw_state(
    const std::vector<NamedParameter>& params, const std::map<std::string, at::Tensor>& tensors,
    const std::string& source,
    const std::function<void(size_t i, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq, int64_t step)>& take);

// Non-finite checks run per parameter over (the parameter, exp_avg, exp_avg_sq): the name of check
// k in messages ("<name>" or "<name>'s AdamW exp_avg").
std::string adamw_tensor_name(const std::vector<NamedParameter>& params, size_t k);

class AdamW {
 public:
  AdamW(std::vector<NamedParameter> params, AdamWOptions options);

  // One update with learning rate `lr` from each parameter's .grad(); parameters without a
  // gradient are left untouched (their step count does not advance).
  void step(double lr);
  // Drops every gradient (set to undefined, as torch's zero_grad(set_to_none=True)).
  void zero_grad();

  // The first parameter (or its moment, "<name>'s AdamW exp_avg") holding a NaN or an infinity, ""
  // when every value is finite. One host sync.
  std::string first_non_finite() const;

  const std::vector<NamedParameter>& parameters() const { return params_; }
  const AdamWOptions& options() const { return options_; }

  // "<name>.exp_avg", "<name>.exp_avg_sq" (float32, CPU copies) and "<name>.step" (int64 scalar)
  // for every parameter.
  std::map<std::string, at::Tensor> state() const;
  // Restores what state() returned; a missing, extra or wrong-shaped tensor is an error naming
  // it and `source`.
  void load_state(const std::map<std::string, at::Tensor>& tensors, const std::string& source);

 private:
  std::vector<NamedParameter> params_;
  AdamWOptions options_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  std::vector<int64_t> steps_;
};

}  // namespace coe
