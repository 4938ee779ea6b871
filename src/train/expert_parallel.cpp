#include "coe/train/expert_parallel.h"

#include "coe/util/error.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <numeric>

namespace coe {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Rows of `x` to the group's ranks by `send` counts, `recv` counts back; backward sends the
// gradient rows the opposite way.
struct Exchange {
  DistContext* group;
  std::vector<int64_t> send, recv;
};

// (Function::apply moves from its non-tensor arguments: they arrive through a pointer.)
struct AllToAllRows : torch::autograd::Function<AllToAllRows> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const Exchange* exchange) {
    DistContext* group = exchange->group;
    const std::vector<int64_t>& send = exchange->send;
    const std::vector<int64_t>& recv = exchange->recv;
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(group);
    ctx->saved_data["send"] = send;
    ctx->saved_data["recv"] = recv;
    ctx->saved_data["cols"] = x.size(1);
    ctx->saved_data["like"] = at::empty({0}, x.options());
    return group->all_to_all(x.contiguous(), send, recv, "expert-parallel all-to-all");
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* group = reinterpret_cast<DistContext*>(ctx->saved_data["group"].toInt());
    const auto send = ctx->saved_data["send"].toIntVector();
    const auto recv = ctx->saved_data["recv"].toIntVector();
    at::Tensor g =
        grads[0].defined()
            ? grads[0].contiguous()
            : at::zeros({std::accumulate(recv.begin(), recv.end(), int64_t{0}), ctx->saved_data["cols"].toInt()});
    return {group->all_to_all(g, recv, send, "expert-parallel all-to-all (backward)"), at::Tensor()};
  }
};

}  // namespace

ExpertParallelDispatch::ExpertParallelDispatch(std::shared_ptr<DistContext> group, int64_t n_experts,
                                               std::shared_ptr<ExpertDispatch> local)
    : group_(std::move(group)), n_experts_(n_experts), local_(std::move(local)) {
  const int64_t e = group_->world_size();
  if (n_experts_ <= 0 || n_experts_ % e != 0)
    fail("expert parallelism: {} ranks do not split {} routed experts evenly", e, n_experts_);
  per_rank_ = n_experts_ / e;
}

std::string ExpertParallelDispatch::name() const {
  return fmt::format("{} over {} expert-parallel ranks", local_->name(), group_->world_size());
}

torch::Tensor ExpertParallelDispatch::run(const torch::Tensor& x, const torch::Tensor& topk_idx,
                                          const torch::Tensor& topk_weight, const ExpertWeights& w) const {
  const int64_t T = x.size(0), K = topk_idx.size(1), H = x.size(1), E = group_->world_size();
  const at::Tensor pair_expert = topk_idx.reshape({-1});
  // Pairs sorted by expert, hence by destination rank (stable: a fixed order for equal experts).
  const at::Tensor order =
      std::get<1>(pair_expert.sort(/*stable=*/std::optional<bool>(true), /*dim=*/0, /*descending=*/false));
  const at::Tensor sorted_expert = pair_expert.index_select(0, order);
  const at::Tensor dest = sorted_expert.div(per_rank_, "floor");
  const at::Tensor counts = at::zeros({E}, dest.options()).scatter_add_(0, dest, at::ones_like(dest)).to(at::kCPU);
  const std::vector<int64_t> send(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + E);
  const std::vector<int64_t> recv = group_->all_to_all_counts(send, "expert-parallel count all-to-all");

  const Exchange there{group_.get(), send, recv}, back{group_.get(), recv, send};
  // Token rows out (differentiable), with the index of their expert among the receiver's.
  const at::Tensor rows_out = x.index_select(0, order.div(K, "floor"));
  const at::Tensor rows_in = AllToAllRows::apply(rows_out, &there);
  at::Tensor local_ids;
  {
    torch::NoGradGuard no_grad;
    local_ids = group_->all_to_all(sorted_expert - dest * per_rank_, send, recv, "expert-parallel index all-to-all");
  }
  // This rank's experts on the rows it received, each row with weight 1: the gate weights are
  // applied at home, where the K slots of a token meet again.
  const at::Tensor ones = at::ones({rows_in.size(0), 1}, topk_weight.options());
  at::Tensor out_local = local_->run(rows_in, local_ids.view({-1, 1}), ones, w);
  // No rows for this rank's experts: the stacks still take part in the graph (a zero gradient),
  // as they would in one process, where the stack of all experts gets a gradient whenever any
  // expert does (AdamW then decays and updates them alike).
  if (rows_in.size(0) == 0)
    out_local =
        out_local +
        (w.gate_proj.view(-1)[0] + w.up_proj.view(-1)[0] + w.down_proj.view(-1)[0]).to(out_local.scalar_type()) * 0;
  const at::Tensor rows_back = AllToAllRows::apply(out_local, &back);
  // Back to (token, slot) order, weighted, summed over the slots in float32.
  const at::Tensor inverse = at::empty_like(order).scatter_(0, order, at::arange(T * K, order.options()));
  const at::Tensor per_slot = rows_back.index_select(0, inverse).view({T, K, H});
  return (per_slot.to(at::kFloat) * topk_weight.unsqueeze(-1)).sum(1).to(x.scalar_type());
}

}  // namespace coe
