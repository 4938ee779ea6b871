#pragma once
// One pass of a model over a validation split, for the trainer's validation and for coe-eval:
// the token-averaged loss (the training loss's averaging) always; with details, also perplexity,
// next-token accuracy, loss per record `type`, and routing statistics per layer and CoE
// iteration.
#include "coe/data/loader.h"
#include "coe/util/run_files.h"

#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace coe {

class CausalLMImpl;

struct TypeLoss {
  double loss = 0;
  int64_t tokens = 0;
};

struct EvalReport {
  double val_loss = 0, perplexity = 0, accuracy = 0;
  double loss_sum = 0;  // sum of the per-token losses (val_loss * tokens): summed over ranks when sharded
  int64_t tokens = 0, records = 0, rows = 0, batches = 0;
  std::map<std::string, TypeLoss> per_type;  // only when the split has record types
  std::vector<IterationRouting> routing;     // util/run_files.h: routing.json's schema
  std::vector<LayerChain> chains;

  RoutingReport routing_report() const { return {routing, chains, std::nullopt}; }
  nlohmann::json to_json(bool with_coactivation = false) const;
};

struct EvalOptions {
  bool bf16_autocast = false;  // forward under the device's autocast (CUDA or CPU) to bfloat16
  // Accuracy, per-type losses and routing statistics: they need the [B, S, V] logits and the
  // split (record types). Without details the loss goes through the fused chunked lm_head +
  // cross-entropy and no logits are materialised (the trainer's validation).
  const PreparedSplit* details = nullptr;
  // Expert parallelism: the ranks of an expert group exchange tokens in every forward, so each
  // must run the same number of them. >= 0: exactly this many forwards (at least the loader's
  // batches): a batch with nothing to score and the forwards after the last batch run a dummy
  // one-token sequence whose result is discarded. Only without `details`.
  int64_t lockstep_forwards = -1;
};

// One pass of `loader` (reset first) in eval mode without gradients; restores training mode.
EvalReport evaluate(CausalLMImpl& model, SequentialLoader& loader, const c10::Device& device,
                    const EvalOptions& options = {});

}  // namespace coe
