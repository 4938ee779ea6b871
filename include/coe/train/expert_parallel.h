#pragma once
// Expert parallelism (docs/distributed.md): the routed experts of every MoE layer are split over a
// group of E ranks, rank q of the group holding experts [q * N/E, (q + 1) * N/E). Each CoE
// iteration's routed tokens travel to the ranks of their chosen experts and back:
//
//   sort the T*K (token, slot) pairs by expert -> counts per rank -> all-to-all of the counts ->
//   all-to-all of the token rows (and of their local expert indices) -> this rank's experts run
//   on the rows they received -> all-to-all of the outputs back -> weighted sum over the K slots
//
// The row all-to-alls are autograd functions whose backward is the reverse all-to-all, so expert
// gradients come from every rank's tokens. Every rank of the group must run the same sequence of
// MoE forwards and backwards (the same number of layers, iterations and micro-batches): a rank
// with no tokens for another still takes part with empty splits. The communicator is the group's
// own, so these collectives never interleave with the gradient all-reduces of another group.
#include "coe/distributed/context.h"
#include "coe/model/experts.h"

#include <memory>

namespace coe {

class ExpertParallelDispatch final : public ExpertDispatch {
 public:
  // `group`: the E ranks sharing the experts; `n_experts`: N, the model's routed experts (E
  // divides it); `local`: the dispatch that runs this rank's N/E experts.
  ExpertParallelDispatch(std::shared_ptr<DistContext> group, int64_t n_experts, std::shared_ptr<ExpertDispatch> local);
  // x [T, H] this rank's tokens; topk_idx [T, K] global expert indices; w: this rank's experts.
  torch::Tensor run(const torch::Tensor& x, const torch::Tensor& topk_idx, const torch::Tensor& topk_weight,
                    const ExpertWeights& w) const override;
  std::string name() const override;

 private:
  std::shared_ptr<DistContext> group_;
  int64_t n_experts_, per_rank_;
  std::shared_ptr<ExpertDispatch> local_;
};

}  // namespace coe
