#include "coe/train/adamw.h"

#include "coe/model/causal_lm.h"
#include "coe/util/error.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

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

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  const double b1 = options_.beta1, b2 = options_.beta2;
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor p = params_[i].param;
    const at::Tensor& g = p.grad();
    if (!g.defined()) continue;
    const int64_t t = ++steps_[i];
    if (params_[i].decay && options_.weight_decay != 0.0) p.mul_(1.0 - lr * options_.weight_decay);
    at::Tensor& m = exp_avg_[i];
    at::Tensor& v = exp_avg_sq_[i];
    m.mul_(b1).add_(g, 1.0 - b1);
    v.mul_(b2).addcmul_(g, g, 1.0 - b2);
    const double bias1 = 1.0 - std::pow(b1, static_cast<double>(t));
    const double bias2 = 1.0 - std::pow(b2, static_cast<double>(t));
    at::Tensor denom = (v.sqrt() / std::sqrt(bias2)).add_(options_.eps);
    p.addcdiv_(m, denom, -lr / bias1);
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
  for (size_t i = 0; i < flags.size(); ++i) {
    if (v[i]) continue;
    const std::string& name = params_[i / 3].name;
    return i % 3 == 0 ? name : fmt::format("{}'s AdamW {}", name, i % 3 == 1 ? "exp_avg" : "exp_avg_sq");
  }
  return "";
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

void AdamW::load_state(const std::map<std::string, at::Tensor>& tensors, const std::string& source) {
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  auto find = [&](const std::string& key) -> const at::Tensor& {
    auto it = tensors.find(key);
    if (it == tensors.end()) fail("{}: missing optimizer tensor '{}'", source, key);
    used.insert(key);
    return it->second;
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& name = params_[i].name;
    for (auto [suffix, dst] : {std::pair{".exp_avg", &exp_avg_[i]}, {".exp_avg_sq", &exp_avg_sq_[i]}}) {
      const at::Tensor& src = find(name + suffix);
      if (src.sizes() != dst->sizes() || src.scalar_type() != at::kFloat)
        fail("{}: optimizer tensor '{}{}' is {} [{}], expected float32 [{}]", source, name, suffix,
             c10::toString(src.scalar_type()), fmt::join(src.sizes(), ", "), fmt::join(dst->sizes(), ", "));
      dst->copy_(src);
    }
    const at::Tensor& step = find(name + ".step");
    if (step.numel() != 1 || step.scalar_type() != at::kLong)
      fail("{}: optimizer tensor '{}.step' must be one int64", source, name);
    steps_[i] = step.item<int64_t>();
  }
  for (const auto& kv : tensors)
    if (!used.count(kv.first))
      fail("{}: unexpected optimizer tensor '{}' (not a parameter of this model)", source, kv.first);
}

}  // namespace coe
