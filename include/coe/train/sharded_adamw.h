#pragma once
// ShardedAdamW: ZeRO-1 (parallel.shard_optimizer, docs/distributed.md). AdamW (train/adamw.h: the
// same formula and order of operations) whose two moments are split over the ranks of each
// parameter's data-parallel group, so a rank keeps 8 / G bytes of optimizer state per parameter
// instead of 8 (G: the group's size).
//
// Layout: within a group, its parameters in order form one flat float32 sequence cut into buckets
// of <= bucket_mb (whole parameters; a larger one is a bucket alone), each padded to a multiple
// of G; rank r owns chunk r of every bucket. A step:
//   reduce_gradients  per bucket, the ranks' gradients are reduce-scattered: this rank receives
//                     the group's sum over the elements it owns (and which parameters had a
//                     gradient on any rank, one small all-reduce); the full .grad()s are freed
//   clip_grad_norm    the squares of the owned gradients summed over the job (per parameter):
//                     every element is owned by exactly one rank of the job
//   step              AdamW on the owned elements, then per bucket the owned chunks are
//                     all-gathered into every rank's parameters
// The traffic equals an all-reduce's (a reduce-scatter plus an all-gather). With a group of one
// rank this is AdamW exactly.
#include "coe/distributed/context.h"
#include "coe/train/adamw.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace coe {

class ShardedAdamW {
 public:
  // params: the optimizer parameters (float32, contiguous); group_of[i]: the data-parallel group
  // of params[i], the ranks holding the same tensor (the job's context for replicated parameters;
  // with expert parallelism the group of the ranks holding the same experts). Every element of
  // the model must be held by exactly one such group across the job. The groups outlive this.
  ShardedAdamW(std::vector<NamedParameter> params, std::vector<DistContext*> group_of, AdamWOptions options,
               double bucket_mb = 25);

  // After the last backward of a step (each rank's .grad(): its micro-batches' sum, undefined
  // where none): the owned elements' sums over the group. A parameter without a gradient on any
  // rank of its group is skipped by step(), as AdamW skips it.
  void reduce_gradients();
  // The global L2 norm of the summed gradients (float32 scalar, all-reduced over `job`); with
  // max_norm > 0 the owned gradients are scaled by min(1, max_norm / (norm + 1e-6)). One rank:
  // train_step.h's clip_grad_norm bit for bit. Every rank of `job` holds as many parameters.
  at::Tensor clip_grad_norm(double max_norm, DistContext& job);
  // AdamW on the owned elements, then the parameters all-gathered within each group.
  void step(double lr);
  void zero_grad();
  // Collective over `job`: the first parameter or moment holding a NaN or an infinity on any
  // rank (AdamW's wording), "" when all are finite.
  std::string first_non_finite(DistContext& job) const;
  // Collective within the groups: AdamW::state()'s tensors (whole moments, CPU), on every rank.
  std::map<std::string, at::Tensor> state() const;
  // This rank's shares of a state() (AdamW::load_state's checks and messages).
  void load_state(const std::map<std::string, at::Tensor>& tensors, const std::string& source);

  const std::vector<NamedParameter>& parameters() const { return params_; }
  const AdamWOptions& options() const { return options_; }
  // Bytes of the moments this rank holds.
  int64_t moment_bytes() const;

 private:
  struct Bucket {
    DistContext* group;
    std::vector<size_t> params;
    int64_t chunk = 0;  // elements per rank (the padded bucket is group size x chunk)
    at::Tensor grad;    // this rank's chunk of the summed gradient (after reduce_gradients)
  };
  // Parameter i's owned elements: [lo, hi) of its flat view, at `pos` in its bucket's chunk.
  struct Owned {
    size_t bucket = 0;
    int64_t offset = 0;  // the parameter's first element in the (unpadded) bucket
    int64_t lo = 0, hi = 0, pos = 0;
  };
  // The bucket's chunk of this rank assembled from per-parameter pieces (`piece(i)` gives the
  // owned elements of parameter i, flat), zero padded.
  template <typename Piece>
  at::Tensor assemble(const Bucket& b, Piece piece) const;
  // Every rank's chunk of a bucket gathered: the bucket's flat elements (padding cut).
  at::Tensor gather(const Bucket& b, const at::Tensor& chunk, const std::string& what) const;

  std::vector<NamedParameter> params_;
  AdamWOptions options_;
  std::vector<Bucket> buckets_;
  std::vector<Owned> owned_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;  // owned elements, flat
  std::vector<int64_t> steps_;
  std::vector<bool> has_grad_;  // from the last reduce_gradients
};

}  // namespace coe
