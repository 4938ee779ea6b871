#pragma once
// One pass of a model over a validation split, for the trainer's validation and for coe-eval:
// the token-averaged loss (the training loss's averaging) always; with details, also perplexity,
// next-token accuracy, loss per record `type`, and routing statistics per layer and CoE
// iteration.
#include "coe/data/loader.h"

#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace coe {

class CausalLMImpl;

// How evenly a router spread its token slots over the experts: max load / mean load (1 =
// perfectly balanced) and the coefficient of variation (population standard deviation / mean).
// Both 0 when nothing was routed. The trainer's metrics.jsonl and coe-eval report these.
struct LoadBalance {
  double max_over_mean = 0;
  double cv = 0;
};
LoadBalance load_balance(const std::vector<int64_t>& load);

struct IterationRouting {
  int64_t layer = 0, iteration = 0;
  std::vector<int64_t> expert_load;  // routed (token, slot) pairs per expert
  double load_imbalance = 0;         // max load / mean load (1 = perfectly balanced)
  double load_cv = 0;                // coefficient of variation of the loads
  // Mean over tokens of the entropy (nats) of the router's scores as a distribution over experts
  // (softmax scores as they are; sigmoid scores normalised to sum to 1).
  double router_entropy = 0;
};

struct LayerChain {  // how a CoE layer's iterations combine experts
  int64_t layer = 0;
  int64_t iterations = 0;
  int64_t distinct_expert_sets = 0;  // distinct (set at iteration 1, ..., set at iteration C)
  double mean_unique_experts = 0;    // per token, experts used in any iteration (K..C*K)
  // coactivation[a][b]: tokens that chose expert a at iteration t and b at t+1, summed over t.
  std::vector<std::vector<int64_t>> coactivation;
};

struct TypeLoss {
  double loss = 0;
  int64_t tokens = 0;
};

struct EvalReport {
  double val_loss = 0, perplexity = 0, accuracy = 0;
  double loss_sum = 0;  // sum of the per-token losses (val_loss * tokens): summed over ranks when sharded
  int64_t tokens = 0, records = 0, rows = 0, batches = 0;
  std::map<std::string, TypeLoss> per_type;  // only when the split has record types
  std::vector<IterationRouting> routing;
  std::vector<LayerChain> chains;

  nlohmann::json to_json(bool with_coactivation = false) const;
};

struct EvalOptions {
  bool bf16_autocast = false;  // forward under the device's autocast (CUDA or CPU) to bfloat16
  // Accuracy, per-type losses and routing statistics: they need the [B, S, V] logits and the
  // split (record types). Without details the loss goes through the fused chunked lm_head +
  // cross-entropy and no logits are materialised (the trainer's validation).
  const PreparedSplit* details = nullptr;
};

// One pass of `loader` (reset first) in eval mode without gradients; restores training mode.
EvalReport evaluate(CausalLMImpl& model, SequentialLoader& loader, const c10::Device& device,
                    const EvalOptions& options = {});

}  // namespace coe
