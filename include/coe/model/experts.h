#pragma once
// Routed experts and the dispatch that runs them.
//
// The experts' SwiGLU weights are stacked ([E, I, H] gate/up, [E, H, I] down) so that one grouped
// GEMM can serve all experts; checkpoints keep the reference's per-expert names (io/hf_checkpoint).
// How tokens reach their experts is an ExpertDispatch, so a faster device implementation can
// replace the default without touching the model.
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <functional>
#include <memory>
#include <string>

namespace coe {

struct ExpertWeights {
  const torch::Tensor& gate_proj;  // [E, I, H]
  const torch::Tensor& up_proj;    // [E, I, H]
  const torch::Tensor& down_proj;  // [E, H, I]
};

class ExpertDispatch {
 public:
  virtual ~ExpertDispatch() = default;
  // x [T, H]; topk_idx [T, K] int64; topk_weight [T, K] float32 -> sum_k w[t,k] * E_{idx[t,k]}(x[t]),
  // [T, H] in x's dtype (the weighted sum is accumulated in float32).
  virtual torch::Tensor run(const torch::Tensor& x, const torch::Tensor& topk_idx, const torch::Tensor& topk_weight,
                            const ExpertWeights& w) const = 0;
  virtual std::string name() const = 0;
};

// Sorts the T*K (token, expert) pairs by expert and runs each expert once on its contiguous
// segment: work proportional to routed tokens, never a mask over all tokens per expert.
class SegmentedDispatch final : public ExpertDispatch {
 public:
  torch::Tensor run(const torch::Tensor& x, const torch::Tensor& topk_idx, const torch::Tensor& topk_weight,
                    const ExpertWeights& w) const override;
  std::string name() const override { return "segmented"; }
};

// The reference's training path (a boolean mask over all T*K slots per expert). Slow; kept as an
// independent implementation that tests compare the fast ones against.
class MaskedDispatch final : public ExpertDispatch {
 public:
  torch::Tensor run(const torch::Tensor& x, const torch::Tensor& topk_idx, const torch::Tensor& topk_weight,
                    const ExpertWeights& w) const override;
  std::string name() const override { return "masked"; }
};

// Where each of the T*K (token, slot) pairs goes in the row buffer of a grouped GEMM, computed on
// the device with no host synchronisation: pairs sorted by expert, each expert's group padded to a
// multiple of `align` rows and to at least `align` rows (at::_grouped_mm's weight gradient wants
// non-empty groups whose row counts are multiples of 8), in a buffer whose row count depends only
// on T, K and E, so nothing has to wait for the routing to be known on the host.
struct GroupedLayout {
  torch::Tensor row_of_pair;   // [T*K] int64: buffer row of pair p = t*K + k
  torch::Tensor token_of_row;  // [rows] int64: the token each row holds; T (a zero row) for padding
  torch::Tensor offs;          // [E] int32: cumulative group ends, at::_grouped_mm's `offs`
  int64_t rows() const { return token_of_row.size(0); }  // T*K + E*align, an upper bound of offs[E-1]
};
GroupedLayout grouped_layout(const torch::Tensor& topk_idx, int64_t n_experts, int64_t align);

// out[offs[g-1]:offs[g]] = a[offs[g-1]:offs[g]] @ b[g] for a [M, K], b [G, K, N], offs [G] int32;
// rows of `out` past offs[G-1] are unspecified (at::_grouped_mm leaves them uninitialised).
using GroupedMm =
    std::function<torch::Tensor(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& offs)>;
// One GEMM per group on the host-known group ends (copies `offs` to the host); rows past offs[G-1]
// are zero. Differentiable; the fallback where at::_grouped_mm cannot take the shapes.
torch::Tensor grouped_mm_loop(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& offs);
// at::_grouped_mm where it applies (CPU or CUDA, 16-byte aligned rows), else grouped_mm_loop.
torch::Tensor grouped_mm(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& offs);
// Whether grouped_mm runs at::_grouped_mm for these operands.
bool native_grouped_mm_applies(const torch::Tensor& a, const torch::Tensor& b);

// All experts in three grouped GEMMs (gate, up, down) over the rows of grouped_layout: one gather
// in, one gather out, then the weighted sum over each token's K slots (no scatter-add). Free of host
// syncs when the GEMM is at::_grouped_mm, the GPU fast path (torch's CPU kernel runs it too).
class GroupedDispatch final : public ExpertDispatch {
 public:
  // `mm` replaces the grouped GEMM (tests use it to poison the unspecified rows).
  explicit GroupedDispatch(int64_t align = 8, GroupedMm mm = {});
  torch::Tensor run(const torch::Tensor& x, const torch::Tensor& topk_idx, const torch::Tensor& topk_weight,
                    const ExpertWeights& w) const override;
  std::string name() const override { return "grouped"; }

 private:
  int64_t align_;
  GroupedMm mm_;
};

// The dispatch a model starts with (segmented).
std::shared_ptr<ExpertDispatch> default_dispatch();
// "segmented", "grouped", "masked", or "auto" (grouped). Throws coe::Error for any other name.
std::shared_ptr<ExpertDispatch> make_dispatch(const std::string& name);

class RoutedExpertsImpl : public torch::nn::Module {
 public:
  // Weights drawn from normal(0, init_std), as the reference initialises its per-expert Linears.
  RoutedExpertsImpl(int64_t n_experts, int64_t hidden, int64_t intermediate, double init_std);
  ExpertWeights weights() const { return {gate_proj, up_proj, down_proj}; }
  // Expert parallelism: keeps experts [first, first + count) of the stacks (the rest live on other
  // ranks); checkpoints name them by their index in the whole model (first_expert + e).
  void keep_experts(int64_t first, int64_t count);
  torch::Tensor gate_proj, up_proj, down_proj;
  int64_t first_expert = 0;
};
TORCH_MODULE(RoutedExperts);

}  // namespace coe
