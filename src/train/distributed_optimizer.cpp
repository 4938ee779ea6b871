#include "coe/train/distributed_optimizer.h"

#include "coe/io/hf_checkpoint.h"
#include "coe/train/sharded_adamw.h"
#include "coe/train/train_step.h"
#include "coe/util/error.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

namespace coe {

ParallelLayout ParallelLayout::create(DistContext& job, const ParallelConfig& parallel, const ModelConfig& model,
                                      const std::string& source) {
  ParallelLayout l;
  const int64_t E = parallel.expert_parallel, W = job.world_size();
  if (W % E != 0)
    fail("{}: parallel.expert_parallel {} does not divide the {} ranks of this job (WORLD_SIZE)", source, E, W);
  l.expert_parallel = E;
  l.experts_per_rank = model.n_routed_experts / E;
  if (E == 1) return l;
  const int rank = job.rank();
  const int first = static_cast<int>(rank / E * E);
  std::vector<int> exchange, replicas;
  for (int q = 0; q < E; ++q) exchange.push_back(first + q);
  for (int q = static_cast<int>(rank % E); q < W; q += static_cast<int>(E)) replicas.push_back(q);
  l.expert_group = job.group("experts", exchange);
  l.expert_data = job.group("expert_data", replicas);
  l.first_expert = (rank % E) * l.experts_per_rank;
  return l;
}

DistributedOptimizer::DistributedOptimizer(DistContext& job, ParallelLayout layout, const ParallelConfig& parallel,
                                           CausalLM model, std::vector<NamedParameter> params, AdamWOptions options,
                                           GradReducerOptions reducer)
    : job_(job), layout_(std::move(layout)), model_(std::move(model)) {
  for (const auto& p : params) split_expert_.push_back(layout_.experts_split() && !hf_expert_name(p.name, 0).empty());
  if (parallel.shard_optimizer) {
    std::vector<DistContext*> group_of;
    for (size_t i = 0; i < params.size(); ++i) group_of.push_back(split_expert_[i] ? layout_.expert_data.get() : &job_);
    sharded_ = std::make_unique<ShardedAdamW>(std::move(params), group_of, options, reducer.bucket_mb);
    return;
  }
  std::vector<at::Tensor> dense, experts;
  for (size_t i = 0; i < params.size(); ++i) (split_expert_[i] ? experts : dense).push_back(params[i].param);
  dense_reducer_ = std::make_unique<GradReducer>(job_, dense, reducer);
  if (layout_.experts_split()) expert_reducer_ = std::make_unique<GradReducer>(*layout_.expert_data, experts, reducer);
  adamw_ = std::make_unique<AdamW>(std::move(params), options);
}

DistributedOptimizer::~DistributedOptimizer() = default;

const std::vector<NamedParameter>& DistributedOptimizer::parameters() const {
  return sharded_ ? sharded_->parameters() : adamw_->parameters();
}

const GradReducerStats* DistributedOptimizer::reducer_stats() const {
  return dense_reducer_ ? &dense_reducer_->stats() : nullptr;
}

int64_t DistributedOptimizer::reducer_buckets() const {
  return (dense_reducer_ ? dense_reducer_->num_buckets() : 0) + (expert_reducer_ ? expert_reducer_->num_buckets() : 0);
}

void DistributedOptimizer::before_backward(bool last) {
  if (dense_reducer_) dense_reducer_->arm(last);
  if (expert_reducer_) expert_reducer_->arm(last);
}

at::Tensor DistributedOptimizer::reduce_and_clip(double max_norm) {
  if (sharded_) {
    sharded_->reduce_gradients();
    return sharded_->clip_grad_norm(max_norm, job_);
  }
  dense_reducer_->finish();
  if (!expert_reducer_) return clip_grad_norm(adamw_->parameters(), max_norm);
  expert_reducer_->finish();
  // The norm over the whole model: this rank's replicated gradients (the same everywhere) plus
  // the expert gradients of the E ranks that split the experts.
  torch::NoGradGuard no_grad;
  const auto& params = adamw_->parameters();
  std::vector<at::Tensor> dense, expert, grads;
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& g = params[i].param.grad();
    if (!g.defined()) continue;
    grads.push_back(g);
    (split_expert_[i] ? expert : dense).push_back(at::norm(g, 2).to(at::kFloat));
  }
  const auto options = at::TensorOptions().dtype(at::kFloat).device(params.front().param.device());
  auto squares = [&](const std::vector<at::Tensor>& norms) {
    return norms.empty() ? at::zeros({1}, options) : at::stack(norms).square().sum().reshape({1});
  };
  at::Tensor expert_sq = squares(expert).contiguous();
  layout_.expert_group->all_reduce_sum(expert_sq, "expert gradient norm all-reduce");
  at::Tensor total = (squares(dense) + expert_sq).sqrt().reshape({});
  scale_to_max_norm(grads, total, max_norm);
  return total;
}

void DistributedOptimizer::step(double lr) { sharded_ ? sharded_->step(lr) : adamw_->step(lr); }

void DistributedOptimizer::zero_grad() { sharded_ ? sharded_->zero_grad() : adamw_->zero_grad(); }

std::string DistributedOptimizer::first_non_finite() {
  if (sharded_) return sharded_->first_non_finite(job_);
  const std::string local = adamw_->first_non_finite();
  if (!layout_.experts_split()) return local;  // replicas: every rank finds the same
  const auto bad = job_.all_reduce_sum(std::vector<int64_t>{local.empty() ? 0 : 1}, "non-finite check");
  if (bad[0] == 0 || !local.empty()) return local;
  return "the experts another rank holds (expert parallelism)";
}

void DistributedOptimizer::broadcast_parameters(double bucket_mb) {
  const auto& params = parameters();
  std::vector<at::Tensor> dense, experts;
  for (size_t i = 0; i < params.size(); ++i) (split_expert_[i] ? experts : dense).push_back(params[i].param);
  job_.broadcast_tensors(dense, 0, bucket_mb, "initial parameter broadcast");
  if (layout_.experts_split())
    layout_.expert_data->broadcast_tensors(experts, 0, bucket_mb, "initial expert parameter broadcast");
}

std::string DistributedOptimizer::first_mismatch() {
  const auto& params = parameters();
  std::vector<size_t> dense, experts;
  for (size_t i = 0; i < params.size(); ++i) (split_expert_[i] ? experts : dense).push_back(i);
  auto check = [&](DistContext& group, const std::vector<size_t>& which) -> std::string {
    std::vector<at::Tensor> tensors;
    for (size_t i : which) tensors.push_back(params[i].param);
    const int64_t bad = group.first_mismatch(tensors, "parameter check before saving");
    return bad >= 0 ? params[which[static_cast<size_t>(bad)]].name : std::string();
  };
  std::string bad = check(job_, dense);
  if (layout_.experts_split()) {
    const std::string expert_bad = check(*layout_.expert_data, experts);
    if (bad.empty()) bad = expert_bad;
  }
  // Every rank must agree on whether to save.
  const auto any = job_.all_reduce_sum(std::vector<int64_t>{bad.empty() ? 0 : 1}, "parameter check before saving");
  if (any[0] > 0 && bad.empty()) bad = "a parameter another rank checked";
  return bad;
}

CheckpointTensors DistributedOptimizer::full_state() {
  torch::NoGradGuard no_grad;
  CheckpointTensors out;
  out.optimizer_options = sharded_ ? sharded_->options() : adamw_->options();
  out.weights = hf_state_dict(*model_);
  out.optimizer = sharded_ ? sharded_->state() : adamw_->state();
  if (!layout_.experts_split()) return out;
  // Experts: the E ranks' stacks, concatenated in expert order.
  DistContext& group = *layout_.expert_group;
  const auto& params = parameters();
  const int64_t n = layout_.experts_per_rank;
  for (size_t i = 0; i < params.size(); ++i) {
    if (!split_expert_[i]) continue;
    const std::string& name = params[i].name;
    const at::Tensor all = group.all_gather(params[i].param.detach(), "checkpoint expert gather");
    for (int64_t q = 0; q < group.world_size(); ++q)
      for (int64_t e = 0; e < n; ++e) out.weights[hf_expert_name(name, q * n + e)] = all[q][e].to(at::kCPU);
    for (const char* moment : {".exp_avg", ".exp_avg_sq"}) {
      at::Tensor& m = out.optimizer.at(name + moment);
      const at::Tensor gathered = group.all_gather(m.to(params[i].param.device()), "checkpoint optimizer gather");
      m = gathered.flatten(0, 1).to(at::kCPU);
    }
  }
  return out;
}

void DistributedOptimizer::load_state(const std::map<std::string, at::Tensor>& tensors, const std::string& source) {
  std::map<std::string, at::Tensor> local = tensors;
  if (layout_.experts_split()) {
    const auto& params = parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      if (!split_expert_[i]) continue;
      for (const char* moment : {".exp_avg", ".exp_avg_sq"}) {
        auto it = local.find(params[i].name + moment);
        if (it == local.end()) continue;  // load_state names it
        if (it->second.dim() < 1 || it->second.size(0) != layout_.expert_parallel * layout_.experts_per_rank)
          fail("{}: optimizer tensor '{}{}' holds {} experts, the model {}", source, params[i].name, moment,
               it->second.dim() < 1 ? 0 : it->second.size(0), layout_.expert_parallel * layout_.experts_per_rank);
        it->second = it->second.narrow(0, layout_.first_expert, layout_.experts_per_rank);
      }
    }
  }
  sharded_ ? sharded_->load_state(local, source) : adamw_->load_state(local, source);
}

}  // namespace coe
