#include "coe/distributed/grad_reducer.h"

#include "coe/util/clock.h"

#include "coe/util/error.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <chrono>

namespace coe {

struct GradReducer::Bucket {
  std::vector<size_t> params;    // indices into params_
  std::vector<int64_t> offsets;  // element offset of each parameter in `flat`
  int64_t numel = 0;             // gradient elements; one count per parameter follows them
  at::Tensor flat;               // float32 [numel + params.size()] on the communication device
  at::Tensor ones;               // float32 [params.size()] of 1 on the same device (the usual counts)
  std::unique_ptr<PendingOp> op;
  std::vector<char> had_grad;  // this rank's gradient existed at launch
  int pending = 0;             // hooked parameters not yet accumulated in the armed backward
  int hooked = 0;
  bool launched = false;
};

// Runs after a parameter's AccumulateGrad node: .grad() holds this backward's contribution.
struct GradReducer::Hook : torch::autograd::FunctionPostHook {
  Hook(GradReducer* reducer, size_t param) : reducer(reducer), param(param) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    reducer->on_accumulated(param);
    return outputs;
  }
  GradReducer* reducer;
  size_t param;
};

GradReducer::GradReducer(DistContext& context, std::vector<at::Tensor> params, GradReducerOptions options)
    : ctx_(context), params_(std::move(params)), options_(options) {
  if (!ctx_.distributed() || params_.empty()) return;
  if (options_.bucket_mb <= 0) fail("trainer.dist_bucket_mb must be positive, got {}", options_.bucket_mb);
  const c10::Device device = params_.front().device();
  for (const auto& p : params_)
    if (p.device() != device) fail("GradReducer: parameters on {} and {}", device.str(), p.device().str());

  // Buckets over the parameters in reverse order, ~bucket_mb MB of float32 each.
  const int64_t cap = std::max<int64_t>(1, static_cast<int64_t>(options_.bucket_mb * 1024 * 1024 / 4));
  bucket_of_.assign(params_.size(), 0);
  for (size_t k = params_.size(); k-- > 0;) {
    const int64_t n = params_[k].numel();
    if (buckets_.empty() || (buckets_.back().numel > 0 && buckets_.back().numel + n > cap)) buckets_.emplace_back();
    Bucket& b = buckets_.back();
    b.params.push_back(k);
    b.offsets.push_back(b.numel);
    b.numel += n;
    bucket_of_[k] = buckets_.size() - 1;
  }
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  for (auto& b : buckets_) {
    b.flat = at::zeros({b.numel + static_cast<int64_t>(b.params.size())}, f32);
    b.ones = at::ones({static_cast<int64_t>(b.params.size())}, f32);
    b.had_grad.assign(b.params.size(), 0);
  }
  stats_.buckets = static_cast<int64_t>(buckets_.size());

  fired_.assign(params_.size(), 0);
  if (options_.overlap) {
    for (size_t k = 0; k < params_.size(); ++k) {
      if (!params_[k].requires_grad()) continue;
      std::shared_ptr<torch::autograd::Node> acc = torch::autograd::impl::grad_accumulator(params_[k]);
      if (!acc) continue;
      hook_keys_.push_back(acc->add_post_hook(std::make_unique<Hook>(this, k)));
      accumulators_.push_back(acc);
      ++buckets_[bucket_of_[k]].hooked;
    }
  }
}

GradReducer::~GradReducer() {
  for (size_t i = 0; i < accumulators_.size(); ++i)
    std::static_pointer_cast<torch::autograd::Node>(accumulators_[i])->del_post_hook(hook_keys_[i]);
}

int64_t GradReducer::num_buckets() const { return static_cast<int64_t>(buckets_.size()); }

void GradReducer::arm(bool last) {
  if (buckets_.empty()) return;
  armed_ = last && !accumulators_.empty();
  if (!last) return;
  std::fill(fired_.begin(), fired_.end(), 0);
  for (auto& b : buckets_) {
    b.pending = b.hooked;
    b.launched = false;
    b.op.reset();
  }
  next_launch_ = 0;
  stats_.launched_by_hooks = 0;
}

void GradReducer::on_accumulated(size_t param) {
  if (!armed_) return;
  if (++fired_[param] > 1) {
    Bucket& b = buckets_[bucket_of_[param]];
    if (b.launched)
      fail("data parallelism: the gradient of parameter #{} was accumulated twice in one backward pass after its "
           "bucket was sent (a reentrant use the overlap hooks cannot follow); set trainer.dist_overlap: false",
           param);
    return;
  }
  Bucket& b = buckets_[bucket_of_[param]];
  if (--b.pending == 0) launch_ready_prefix();
}

void GradReducer::launch_ready_prefix() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    launch(next_launch_);
    ++next_launch_;
    if (armed_) ++stats_.launched_by_hooks;
  }
}

void GradReducer::launch(size_t index) {
  at::NoGradGuard no_grad;
  Bucket& b = buckets_[index];
  // Device-side copies only: no host synchronisation inside backward (CUDA).
  bool all = true;
  for (size_t j = 0; j < b.params.size(); ++j) {
    const at::Tensor& g = params_[b.params[j]].grad();
    at::Tensor slot = b.flat.narrow(0, b.offsets[j], params_[b.params[j]].numel());
    b.had_grad[j] = g.defined();
    if (g.defined()) {
      slot.copy_(g.reshape({-1}));
    } else {
      slot.zero_();
      all = false;
    }
  }
  at::Tensor counts = b.flat.narrow(0, b.numel, static_cast<int64_t>(b.params.size()));
  if (all) {
    counts.copy_(b.ones);
  } else {
    counts.zero_();
    for (size_t j = 0; j < b.params.size(); ++j)
      if (b.had_grad[j]) counts.narrow(0, static_cast<int64_t>(j), 1).fill_(1.0);
  }
  b.launched = true;
  b.op =
      ctx_.all_reduce_sum_async(b.flat, fmt::format("gradient all-reduce (bucket {}/{})", index + 1, buckets_.size()));
}

void GradReducer::finish() {
  if (buckets_.empty()) return;
  const bool was_armed = armed_;
  armed_ = false;
  if (!was_armed) {
    // arm(true) was not called (or nothing is hooked): every bucket goes now.
    for (auto& b : buckets_) b.launched = false;
    next_launch_ = 0;
    stats_.launched_by_hooks = 0;
  }
  for (; next_launch_ < buckets_.size(); ++next_launch_) launch(next_launch_);

  const auto t0 = Clock::now();
  for (auto& b : buckets_) {
    b.op->wait();
    b.op.reset();
  }
  stats_.wait_s = seconds_since(t0);
  stats_.total_wait_s += stats_.wait_s;
  ++stats_.reductions;

  at::NoGradGuard no_grad;
  for (auto& b : buckets_) {
    at::Tensor counts;  // fetched only when this rank lacked a gradient that another rank had
    for (size_t j = 0; j < b.params.size(); ++j) {
      at::Tensor& p = params_[b.params[j]];
      at::Tensor sum = b.flat.narrow(0, b.offsets[j], p.numel()).view(p.sizes());
      if (b.had_grad[j]) {
        p.mutable_grad().copy_(sum);
        continue;
      }
      if (!counts.defined())
        counts = b.flat.narrow(0, b.numel, static_cast<int64_t>(b.params.size())).to(at::kCPU).contiguous();
      if (counts.data_ptr<float>()[j] > 0) p.mutable_grad() = sum.to(p.scalar_type()).clone();
    }
  }
}

}  // namespace coe
