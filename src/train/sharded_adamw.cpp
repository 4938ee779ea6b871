#include "coe/train/sharded_adamw.h"

#include "coe/train/train_step.h"
#include "coe/util/error.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cmath>
#include <set>

namespace coe {

ShardedAdamW::ShardedAdamW(std::vector<NamedParameter> params, std::vector<DistContext*> group_of, AdamWOptions options,
                           double bucket_mb)
    : params_(std::move(params)), options_(options) {
  if (group_of.size() != params_.size())
    fail("ShardedAdamW: {} groups for {} parameters", group_of.size(), params_.size());
  const int64_t cap = std::max<int64_t>(1, static_cast<int64_t>(bucket_mb * 1024 * 1024 / 4));
  owned_.resize(params_.size());
  // Buckets per group, in parameter order; a group's buckets follow each other.
  std::vector<DistContext*> groups;
  for (size_t i = 0; i < group_of.size(); ++i)
    if (!group_of[i]) fail("ShardedAdamW: parameter '{}' has no group", params_[i].name);
  for (DistContext* g : group_of)
    if (std::find(groups.begin(), groups.end(), g) == groups.end()) groups.push_back(g);
  for (DistContext* g : groups) {
    int64_t filled = 0;
    for (size_t i = 0; i < params_.size(); ++i) {
      if (group_of[i] != g) continue;
      const at::Tensor& p = params_[i].param;
      if (p.scalar_type() != at::kFloat || !p.is_contiguous())
        fail("ShardedAdamW: parameter '{}' must be contiguous float32 (master weights)", params_[i].name);
      if (buckets_.empty() || buckets_.back().group != g || (filled > 0 && filled + p.numel() > cap)) {
        buckets_.push_back(Bucket{g, {}, 0, {}});
        filled = 0;
      }
      owned_[i].bucket = buckets_.size() - 1;
      owned_[i].offset = filled;
      buckets_.back().params.push_back(i);
      filled += p.numel();
    }
  }
  for (size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& bucket = buckets_[b];
    const size_t last = bucket.params.back();
    const int64_t n = owned_[last].offset + params_[last].param.numel();
    const int64_t G = bucket.group->world_size(), r = bucket.group->rank();
    bucket.chunk = (n + G - 1) / G;
    const int64_t begin = r * bucket.chunk, end = begin + bucket.chunk;
    for (size_t i : bucket.params) {
      Owned& o = owned_[i];
      const int64_t lo = std::clamp(begin - o.offset, int64_t{0}, params_[i].param.numel());
      const int64_t hi = std::clamp(end - o.offset, lo, params_[i].param.numel());
      // Nothing owned: an empty range at 0 (its position would fall outside the chunk).
      o.lo = hi > lo ? lo : 0;
      o.hi = hi > lo ? hi : 0;
      o.pos = hi > lo ? o.offset + lo - begin : 0;
    }
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t n = owned_[i].hi - owned_[i].lo;
    exp_avg_.push_back(at::zeros({n}, params_[i].param.options()));
    exp_avg_sq_.push_back(at::zeros({n}, params_[i].param.options()));
    steps_.push_back(0);
  }
  has_grad_.assign(params_.size(), false);
}

template <typename Piece>
at::Tensor ShardedAdamW::assemble(const Bucket& b, Piece piece) const {
  const auto options = params_[b.params.front()].param.options();
  at::Tensor chunk = at::zeros({b.chunk}, options);
  for (size_t i : b.params) {
    const Owned& o = owned_[i];
    if (o.hi > o.lo) chunk.narrow(0, o.pos, o.hi - o.lo).copy_(piece(i));
  }
  return chunk;
}

at::Tensor ShardedAdamW::gather(const Bucket& b, const at::Tensor& chunk, const std::string& what) const {
  return b.group->all_gather(chunk, what).view({-1});
}

void ShardedAdamW::reduce_gradients() {
  torch::NoGradGuard no_grad;
  // Which parameters had a gradient on any rank of their group: one count per parameter, one
  // all-reduce per group (a group's buckets follow each other).
  for (size_t b = 0; b < buckets_.size();) {
    DistContext* group = buckets_[b].group;
    std::vector<size_t> members;
    std::vector<int64_t> flags;
    for (; b < buckets_.size() && buckets_[b].group == group; ++b)
      for (size_t i : buckets_[b].params) {
        members.push_back(i);
        flags.push_back(params_[i].param.grad().defined() ? 1 : 0);
      }
    const auto sums = group->all_reduce_sum(flags, "sharded optimizer gradient flags");
    for (size_t k = 0; k < members.size(); ++k) has_grad_[members[k]] = sums[k] > 0;
  }
  for (Bucket& b : buckets_) {
    const int64_t G = b.group->world_size();
    at::Tensor flat = at::zeros({G * b.chunk}, params_[b.params.front()].param.options());
    for (size_t i : b.params) {
      const at::Tensor& g = params_[i].param.grad();
      if (g.defined()) flat.narrow(0, owned_[i].offset, g.numel()).copy_(g.reshape({-1}));
    }
    b.grad = b.group->reduce_scatter_sum(flat, "sharded optimizer gradient reduce-scatter");
  }
  for (auto& p : params_) p.param.mutable_grad().reset();
}

at::Tensor ShardedAdamW::clip_grad_norm(double max_norm, DistContext& job) {
  torch::NoGradGuard no_grad;
  const int64_t n = static_cast<int64_t>(params_.size());
  const auto options = at::TensorOptions()
                           .dtype(at::kFloat)
                           .device(params_.empty() ? c10::Device(c10::kCPU) : params_.front().param.device());
  if (n == 0) return at::zeros({}, options);
  // Per parameter, summed over the job: the squared norm of the owned gradient and whether its
  // group had one. The total is then train_step.h's norm of the per-parameter norms over those
  // with a gradient, so one rank gives clip_grad_norm's value bit for bit (sqrt(x * x) == x for
  // binary floats). Every rank of the job has the same number of parameters (the same model).
  std::vector<at::Tensor> squares;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Owned& o = owned_[i];
    const at::Tensor& chunk = buckets_[o.bucket].grad;
    squares.push_back(has_grad_[i] && chunk.defined() ? at::norm(chunk.narrow(0, o.pos, o.hi - o.lo), 2).square()
                                                      : at::zeros({}, options));
  }
  std::vector<float> had(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) had[i] = has_grad_[i] ? 1.0f : 0.0f;
  at::Tensor sums = at::cat({at::stack(squares), at::tensor(had).to(options.device())}).contiguous();
  job.all_reduce_sum(sums, "gradient norm all-reduce");
  const at::Tensor norms = sums.narrow(0, 0, n).sqrt().masked_select(sums.narrow(0, n, n) > 0);
  if (norms.numel() == 0) return at::zeros({}, options);
  at::Tensor total = at::norm(norms, 2);
  std::vector<at::Tensor> grads;
  for (const Bucket& b : buckets_)
    if (b.grad.defined()) grads.push_back(b.grad);
  scale_to_max_norm(grads, total, max_norm);
  return total;
}

void ShardedAdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!has_grad_[i]) continue;
    const int64_t t = ++steps_[i];
    const Owned& o = owned_[i];
    if (o.hi == o.lo) continue;
    adamw_update(params_[i].param.view({-1}).narrow(0, o.lo, o.hi - o.lo),
                 buckets_[o.bucket].grad.narrow(0, o.pos, o.hi - o.lo), exp_avg_[i], exp_avg_sq_[i], t, lr,
                 params_[i].decay, options_);
  }
  // Every rank of a group receives the others' updated elements.
  for (const Bucket& b : buckets_) {
    const at::Tensor mine = assemble(
        b, [&](size_t i) { return params_[i].param.view({-1}).narrow(0, owned_[i].lo, owned_[i].hi - owned_[i].lo); });
    const at::Tensor all = gather(b, mine, "sharded optimizer parameter all-gather");
    for (size_t i : b.params)
      params_[i].param.view({-1}).copy_(all.narrow(0, owned_[i].offset, params_[i].param.numel()));
  }
}

void ShardedAdamW::zero_grad() {
  for (auto& p : params_) p.param.mutable_grad().reset();
  for (auto& b : buckets_) b.grad = at::Tensor();
}

std::string ShardedAdamW::first_non_finite(DistContext& job) const {
  torch::NoGradGuard no_grad;
  // Per parameter: its owned elements, exp_avg, exp_avg_sq; summed over the job.
  std::vector<at::Tensor> flags;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Owned& o = owned_[i];
    const at::Tensor p = params_[i].param.view({-1}).narrow(0, o.lo, o.hi - o.lo);
    for (const at::Tensor* t : {&p, &exp_avg_[i], &exp_avg_sq_[i]})
      flags.push_back(at::isfinite(*t).all().logical_not().to(at::kLong));
  }
  if (flags.empty()) return "";
  at::Tensor bad = at::stack(flags).contiguous();
  job.all_reduce_sum(bad, "non-finite check");
  const at::Tensor host = bad.to(at::kCPU);
  const int64_t* v = host.data_ptr<int64_t>();
  for (int64_t k = 0; k < host.numel(); ++k)
    if (v[k] != 0) return adamw_tensor_name(params_, static_cast<size_t>(k));
  return "";
}

std::map<std::string, at::Tensor> ShardedAdamW::state() const {
  torch::NoGradGuard no_grad;
  std::map<std::string, at::Tensor> out;
  for (const Bucket& b : buckets_) {
    for (auto [suffix, moments] : {std::pair{".exp_avg", &exp_avg_}, {".exp_avg_sq", &exp_avg_sq_}}) {
      const at::Tensor all =
          gather(b, assemble(b, [&](size_t i) { return (*moments)[i]; }), "sharded optimizer state all-gather");
      for (size_t i : b.params) {
        const at::Tensor& p = params_[i].param;
        out[params_[i].name + suffix] =
            all.narrow(0, owned_[i].offset, p.numel()).view(p.sizes()).to(at::kCPU).contiguous();
      }
    }
    for (size_t i : b.params) out[params_[i].name + ".step"] = at::scalar_tensor(steps_[i], at::kLong);
  }
  return out;
}

void ShardedAdamW::load_state(const std::map<std::string, at::Tensor>& tensors, const std::string& source) {
  torch::NoGradGuard no_grad;
  read_adamw_state(params_, tensors, source,
                   [&](size_t i, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq, int64_t step) {
                     const Owned& o = owned_[i];
                     exp_avg_[i].copy_(exp_avg.reshape({-1}).narrow(0, o.lo, o.hi - o.lo));
                     exp_avg_sq_[i].copy_(exp_avg_sq.reshape({-1}).narrow(0, o.lo, o.hi - o.lo));
                     steps_[i] = step;
                   });
}

int64_t ShardedAdamW::moment_bytes() const {
  int64_t n = 0;
  for (size_t i = 0; i < params_.size(); ++i) n += exp_avg_[i].nbytes() + exp_avg_sq_[i].nbytes();
  return n;
}

}  // namespace coe
