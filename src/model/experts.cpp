#include "coe/model/experts.h"

#include "coe/model/layers.h"

#include <ATen/ATen.h>

#include <vector>

namespace coe {

RoutedExpertsImpl::RoutedExpertsImpl(int64_t n_experts, int64_t hidden, int64_t intermediate, double init_std) {
  gate_proj = register_parameter("gate_proj", torch::randn({n_experts, intermediate, hidden}) * init_std);
  up_proj = register_parameter("up_proj", torch::randn({n_experts, intermediate, hidden}) * init_std);
  down_proj = register_parameter("down_proj", torch::randn({n_experts, hidden, intermediate}) * init_std);
}

namespace {

// Per-expert views of the stacked weights, made once per call: one unbind's backward stacks the
// experts' gradients into one [E, ...] tensor, where indexing w[e] per expert would make every
// expert's backward allocate and fill a zero gradient of the whole stack. Under autocast the
// weights are cast once here instead of once per expert GEMM (the same bf16 values).
struct ExpertSlices {
  std::vector<at::Tensor> gate, up, down;

  ExpertSlices(const ExpertWeights& w, const at::Tensor& x) {
    auto slices = [&](const at::Tensor& t) {
      const auto dt = x.scalar_type();
      const bool cast = (dt == at::kBFloat16 || dt == at::kHalf) && t.scalar_type() != dt;
      return (cast ? t.to(x.scalar_type()) : t).unbind(0);
    };
    gate = slices(w.gate_proj);
    up = slices(w.up_proj);
    down = slices(w.down_proj);
  }

  at::Tensor mlp(const at::Tensor& x, int64_t e) const {
    return at::linear(at::silu(at::linear(x, gate[e])) * at::linear(x, up[e]), down[e]);
  }
};

}  // namespace

torch::Tensor SegmentedDispatch::run(const torch::Tensor& x, const torch::Tensor& topk_idx,
                                     const torch::Tensor& topk_weight, const ExpertWeights& w) const {
  const int64_t T = x.size(0), K = topk_idx.size(1), E = w.gate_proj.size(0);
  at::Tensor flat = topk_idx.reshape(-1);
  at::Tensor order = std::get<1>(flat.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false));
  at::Tensor token = order.div(K, "floor");
  at::Tensor counts = at::bincount(flat, {}, E).to(at::kCPU);
  at::Tensor sorted_x = x.index_select(0, token);
  const ExpertSlices experts(w, x);

  std::vector<at::Tensor> outputs;
  const int64_t* count = counts.data_ptr<int64_t>();
  int64_t start = 0;
  for (int64_t e = 0; e < E; ++e) {
    if (count[e] == 0) continue;
    outputs.push_back(experts.mlp(sorted_x.narrow(0, start, count[e]), e));
    start += count[e];
  }
  const auto acc = accumulate_dtype(x);
  at::Tensor out = at::zeros({T, x.size(1)}, x.options().dtype(acc));
  if (outputs.empty()) return out.to(x.scalar_type());
  at::Tensor weighted = at::cat(outputs, 0).to(acc) * topk_weight.to(acc).reshape(-1).index_select(0, order).unsqueeze(1);
  return out.index_add_(0, token, weighted).to(x.scalar_type());
}

torch::Tensor MaskedDispatch::run(const torch::Tensor& x, const torch::Tensor& topk_idx,
                                  const torch::Tensor& topk_weight, const ExpertWeights& w) const {
  const int64_t T = x.size(0), K = topk_idx.size(1), E = w.gate_proj.size(0);
  at::Tensor repeated = x.repeat_interleave(K, 0);
  at::Tensor flat = topk_idx.reshape(-1);
  at::Tensor y = at::zeros_like(repeated);
  for (int64_t e = 0; e < E; ++e) {
    at::Tensor mask = flat == e;
    // The reference's per-expert Linear: index the stacked weight directly.
    const at::Tensor xe = repeated.index({mask});
    y = y.index_put({mask}, at::linear(at::silu(at::linear(xe, w.gate_proj[e])) * at::linear(xe, w.up_proj[e]),
                                       w.down_proj[e]));
  }
  return (y.view({T, K, -1}).to(accumulate_dtype(x)) * topk_weight.to(accumulate_dtype(x)).unsqueeze(-1)).sum(1).to(x.scalar_type());
}

std::shared_ptr<ExpertDispatch> default_dispatch() { return std::make_shared<SegmentedDispatch>(); }

}  // namespace coe
