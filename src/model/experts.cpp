#include "coe/model/experts.h"

#include "coe/model/autocast.h"
#include "coe/model/dispatch_name.h"
#include "coe/model/layers.h"
#include "coe/util/error.h"

#include <ATen/ATen.h>

#include <vector>

namespace coe {

RoutedExpertsImpl::RoutedExpertsImpl(int64_t n_experts, int64_t hidden, int64_t intermediate, double init_std) {
  gate_proj = register_parameter("gate_proj", torch::randn({n_experts, intermediate, hidden}) * init_std);
  up_proj = register_parameter("up_proj", torch::randn({n_experts, intermediate, hidden}) * init_std);
  down_proj = register_parameter("down_proj", torch::randn({n_experts, hidden, intermediate}) * init_std);
}

void RoutedExpertsImpl::keep_experts(int64_t first, int64_t count) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(first >= 0 && count > 0 && first + count <= gate_proj.size(0), "keep_experts: experts [", first, ", ",
              first + count, ") outside the ", gate_proj.size(0), " held");
  for (auto* w : {&gate_proj, &up_proj, &down_proj}) w->set_data(w->narrow(0, first, count).clone());
  first_expert += first;
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

// sum_k w[t, k] * slots[t*K + k] for slots [T*K, H], in the accumulation dtype; returned in `out`.
at::Tensor weighted_slot_sum(const at::Tensor& slots, const at::Tensor& topk_weight, at::ScalarType out) {
  const auto acc = accumulate_dtype(slots);
  const int64_t T = topk_weight.size(0), K = topk_weight.size(1);
  return (slots.view({T, K, -1}).to(acc) * topk_weight.to(acc).unsqueeze(-1)).sum(1).to(out);
}

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
  at::Tensor weighted =
      at::cat(outputs, 0).to(acc) * topk_weight.to(acc).reshape(-1).index_select(0, order).unsqueeze(1);
  return out.index_add_(0, token, weighted).to(x.scalar_type());
}

torch::Tensor MaskedDispatch::run(const torch::Tensor& x, const torch::Tensor& topk_idx,
                                  const torch::Tensor& topk_weight, const ExpertWeights& w) const {
  const int64_t K = topk_idx.size(1), E = w.gate_proj.size(0);
  at::Tensor repeated = x.repeat_interleave(K, 0);
  at::Tensor flat = topk_idx.reshape(-1);
  at::Tensor y = at::zeros_like(repeated);
  for (int64_t e = 0; e < E; ++e) {
    at::Tensor mask = flat == e;
    // The reference's per-expert Linear: index the stacked weight directly.
    const at::Tensor xe = repeated.index({mask});
    y = y.index_put(
        {mask}, at::linear(at::silu(at::linear(xe, w.gate_proj[e])) * at::linear(xe, w.up_proj[e]), w.down_proj[e]));
  }
  return weighted_slot_sum(y, topk_weight, x.scalar_type());
}

GroupedLayout grouped_layout(const at::Tensor& topk_idx, int64_t n_experts, int64_t align) {
  TORCH_CHECK(align >= 1, "grouped_layout: align must be >= 1");
  const int64_t T = topk_idx.size(0), K = topk_idx.size(1), R = T * K, E = n_experts;
  const auto i64 = topk_idx.options().dtype(at::kLong);
  at::Tensor flat = topk_idx.reshape(-1).to(at::kLong);
  at::Tensor order = std::get<1>(flat.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false));
  // Counts by scatter-add: CUDA's bincount reads the largest index back to the host.
  at::Tensor counts = at::zeros({E}, i64).scatter_add_(0, flat, at::ones({R}, i64));
  at::Tensor padded = counts.add(align - 1).div(align, "floor").clamp_min(1).mul(align);
  at::Tensor pad_end = padded.cumsum(0);
  at::Tensor pad_start = pad_end - padded;
  at::Tensor start = counts.cumsum(0) - counts;
  at::Tensor sorted_expert = flat.index_select(0, order);
  // Sorted pair i of expert e is the (i - start[e])-th row of e's group.
  at::Tensor row = pad_start.index_select(0, sorted_expert) + at::arange(R, i64) - start.index_select(0, sorted_expert);

  GroupedLayout layout;
  layout.row_of_pair = at::empty({R}, i64).scatter_(0, order, row);
  layout.token_of_row = at::full({R + E * align}, T, i64).scatter_(0, row, order.div(K, "floor"));
  layout.offs = pad_end.to(at::kInt);
  return layout;
}

at::Tensor grouped_mm_loop(const at::Tensor& a, const at::Tensor& b, const at::Tensor& offs) {
  const at::Tensor ends = offs.to(at::kCPU, at::kLong);
  const int64_t* end = ends.data_ptr<int64_t>();
  const std::vector<at::Tensor> groups = b.unbind(0);  // one unbind: one stacked gradient for b
  std::vector<at::Tensor> pieces;
  int64_t begin = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    if (end[g] > begin) pieces.push_back(at::mm(a.narrow(0, begin, end[g] - begin), groups[g]));
    begin = end[g];
  }
  if (begin < a.size(0)) pieces.push_back(at::zeros({a.size(0) - begin, b.size(2)}, a.options()));
  return at::cat(pieces, 0);
}

bool native_grouped_mm_applies(const at::Tensor& a, const at::Tensor& b) {
  // Torch's kernels (TMA on CUDA; the CPU kernel checks the same) want every non-unit stride (here:
  // rows of a, of b and of the output) 16-byte aligned.
  if (!a.is_cuda() && !a.is_cpu()) return false;
  const auto dtype = a.scalar_type();
  if (dtype != b.scalar_type() || (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf)) return false;
  const int64_t bytes = a.element_size();
  return (a.size(1) * bytes) % 16 == 0 && (b.size(1) * bytes) % 16 == 0 && (b.size(2) * bytes) % 16 == 0;
}

at::Tensor grouped_mm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& offs) {
  return native_grouped_mm_applies(a, b) ? at::_grouped_mm(a, b, offs) : grouped_mm_loop(a, b, offs);
}

GroupedDispatch::GroupedDispatch(int64_t align, GroupedMm mm) : align_(align), mm_(std::move(mm)) {
  TORCH_CHECK(align_ >= 1, "GroupedDispatch: align must be >= 1");
  if (!mm_) mm_ = grouped_mm;
}

torch::Tensor GroupedDispatch::run(const torch::Tensor& x, const torch::Tensor& topk_idx,
                                   const torch::Tensor& topk_weight, const ExpertWeights& w) const {
  const int64_t H = x.size(1), E = w.gate_proj.size(0);
  const GroupedLayout layout = grouped_layout(topk_idx, E, align_);
  // GEMMs in the autocast dtype (at::_grouped_mm has no autocast rule of its own).
  const auto dtype = autocast_compute_dtype(x);
  auto weight_t = [&](const at::Tensor& stack) { return autocast_weight(stack, dtype).transpose(1, 2); };

  // Padding rows and the unused tail read the zero row T; whatever the GEMM leaves in the tail
  // (uninitialised for at::_grouped_mm) is never gathered, and its gradient lands on that row.
  at::Tensor rows =
      at::cat({x.to(dtype), at::zeros({1, H}, x.options().dtype(dtype))}, 0).index_select(0, layout.token_of_row);
  at::Tensor h = at::silu(mm_(rows, weight_t(w.gate_proj), layout.offs)) * mm_(rows, weight_t(w.up_proj), layout.offs);
  at::Tensor y = mm_(h, weight_t(w.down_proj), layout.offs);
  return weighted_slot_sum(y.index_select(0, layout.row_of_pair), topk_weight, x.scalar_type());
}

std::shared_ptr<ExpertDispatch> default_dispatch() { return std::make_shared<SegmentedDispatch>(); }

std::shared_ptr<ExpertDispatch> make_dispatch(const std::string& name) {
  const std::string resolved = resolve_dispatch_name(name);
  if (resolved == "segmented") return std::make_shared<SegmentedDispatch>();
  if (resolved == "grouped") return std::make_shared<GroupedDispatch>();
  if (resolved == "masked") return std::make_shared<MaskedDispatch>();
  fail("unknown expert dispatch '{}' ({})", name, kExpertDispatchChoices);
}

}  // namespace coe
