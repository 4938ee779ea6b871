#include "coe/train/adamw.h"

#include "coe/model/causal_lm.h"
#include "coe/util/error.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <array>
#include <cmath>
#include <set>

namespace coe {

std::vector<NamedParameter> optimizer_parameters(const CausalLMImpl& model, DecayMode mode) {
  std::vector<NamedParameter> out;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (!item.value().requires_grad()) continue;
    const bool decay = mode == DecayMode::kAll || item.value().dim() >= 2;
    out.push_back({item.key(), item.value(), decay});
  }
  return out;
}

AdamW::AdamW(std::vector<NamedParameter> params, AdamWOptions options) : params_(std::move(params)), options_(options) {
  for (const auto& p : params_) {
    if (p.param.scalar_type() != at::kFloat)
      fail("AdamW: parameter '{}' is {}, expected float32 master weights", p.name,
           c10::toString(p.param.scalar_type()));
    exp_avg_.push_back(at::zeros_like(p.param, at::MemoryFormat::Contiguous));
    exp_avg_sq_.push_back(at::zeros_like(p.param, at::MemoryFormat::Contiguous));
    steps_.push_back(0);
  }
}

void adamw_update(at::Tensor p, const at::Tensor& g, at::Tensor& m, at::Tensor& v, int64_t t, double lr, bool decay,
                  const AdamWOptions& options) {
  const double b1 = options.beta1, b2 = options.beta2;
  if (decay && options.weight_decay != 0.0) p.mul_(1.0 - lr * options.weight_decay);
  m.mul_(b1).add_(g, 1.0 - b1);
  v.mul_(b2).addcmul_(g, g, 1.0 - b2);
  const double bias1 = 1.0 - std::pow(b1, static_cast<double>(t));
  const double bias2 = 1.0 - std::pow(b2, static_cast<double>(t));
  at::Tensor denom = (v.sqrt() / std::sqrt(bias2)).add_(options.eps);
  p.addcdiv_(m, denom, -lr / bias1);
}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& g = params_[i].param.grad();
    if (!g.defined()) continue;
    adamw_update(params_[i].param, g, exp_avg_[i], exp_avg_sq_[i], ++steps_[i], lr, params_[i].decay, options_);
  }
}

std::string AdamW::first_non_finite() const {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> flags;
  flags.reserve(3 * params_.size());
  for (size_t i = 0; i < params_.size(); ++i)
    for (const at::Tensor* t : {&params_[i].param, &exp_avg_[i], &exp_avg_sq_[i]})
      flags.push_back(at::isfinite(*t).all());
  if (flags.empty()) return "";
  const at::Tensor ok = at::stack(flags).to(at::kCPU);  // one host sync
  const bool* v = ok.data_ptr<bool>();
  for (size_t i = 0; i < flags.size(); ++i)
    if (!v[i]) return adamw_tensor_name(params_, i);
  return "";
}

std::string adamw_tensor_name(const std::vector<NamedParameter>& params, size_t k) {
  const std::string& name = params[k / 3].name;
  return k % 3 == 0 ? name : fmt::format("{}'s AdamW {}", name, k % 3 == 1 ? "exp_avg" : "exp_avg_sq");
}

void AdamW::zero_grad() {
  for (auto& p : params_) p.param.mutable_grad().reset();
}

std::map<std::string, at::Tensor> AdamW::state() const {
  std::map<std::string, at::Tensor> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& name = params_[i].name;
    out[name + ".exp_avg"] = exp_avg_[i].to(at::kCPU).contiguous();
    out[name + ".exp_avg_sq"] = exp_avg_sq_[i].to(at::kCPU).contiguous();
    out[name + ".step"] = at::scalar_tensor(steps_[i], at::kLong);
  }
  return out;
}

void read_adamw_state(
    const std::vector<NamedParameter>& params, const std::map<std::string, at::Tensor>& tensors,
    const std::string& source,
    const std::function<void(size_t i, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq, int64_t step)>& take) {
  std::set<std::string> used;
  auto find = [&](const std::string& key) -> const at::Tensor& {
    auto it = tensors.find(key);
    if (it == tensors.end()) fail("{}: missing optimizer tensor '{}'", source, key);
    used.insert(key);
    return it->second;
  };
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string& name = params[i].name;
    const at::Tensor& p = params[i].param;
    std::array<const at::Tensor*, 2> moments{};
    for (int k = 0; k < 2; ++k) {
      const char* suffix = k == 0 ? ".exp_avg" : ".exp_avg_sq";
      const at::Tensor& src = find(name + suffix);
      if (src.sizes() != p.sizes() || src.scalar_type() != at::kFloat)
        fail("{}: optimizer tensor '{}{}' is {} [{}], expected float32 [{}]", source, name, suffix,
             c10::toString(src.scalar_type()), fmt::join(src.sizes(), ", "), fmt::join(p.sizes(), ", "));
      moments[k] = &src;
    }
    const at::Tensor& step = find(name + ".step");
    if (step.numel() != 1 || step.scalar_type() != at::kLong)
      fail("{}: optimizer tensor '{}.step' must be one int64", source, name);
    take(i, *moments[0], *moments[1], step.item<int64_t>());
  }
  for (const auto& kv : tensors)
    if (!used.count(kv.first))
      fail("{}: unexpected optimizer tensor '{}' (not a parameter of this model)", source, kv.first);
}

void AdamW::load_state(const std::map<std::string, at::Tensor>& tensors, const std::string& source) {
  torch::NoGradGuard no_grad;
  read_adamw_state(params_, tensors, source,
                   [&](size_t i, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq, int64_t step) {
                     exp_avg_[i].copy_(exp_avg);
                     exp_avg_sq_[i].copy_(exp_avg_sq);
                     steps_[i] = step;
                   });
}

}  // namespace coe
