#pragma once
// Routed experts and the dispatch that runs them.
//
// The experts' SwiGLU weights are stacked ([E, I, H] gate/up, [E, H, I] down) so that one grouped
// GEMM can serve all experts; checkpoints keep the reference's per-expert names (io/hf_checkpoint).
// How tokens reach their experts is an ExpertDispatch, so a faster device implementation can
// replace the default without touching the model.
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

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

// The default dispatch for the current build and device.
std::shared_ptr<ExpertDispatch> default_dispatch();

class RoutedExpertsImpl : public torch::nn::Module {
 public:
  // Weights drawn from normal(0, init_std), as the reference initialises its per-expert Linears.
  RoutedExpertsImpl(int64_t n_experts, int64_t hidden, int64_t intermediate, double init_std);
  ExpertWeights weights() const { return {gate_proj, up_proj, down_proj}; }
  torch::Tensor gate_proj, up_proj, down_proj;
};
TORCH_MODULE(RoutedExperts);

}  // namespace coe
