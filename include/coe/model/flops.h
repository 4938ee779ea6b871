#pragma once
// Model FLOPs per trained token (forward + backward = 3x forward, multiply-add = 2 FLOPs), counted
// from the config: every matmul a token goes through (attention projections, K routed experts and
// the shared experts in each of the C iterations, routers, lm_head) plus causal attention scores.
// Embedding lookups, norms and elementwise work are left out, as MFU conventions do.
#include "coe/model/config.h"

#include <cstdint>

namespace coe {

struct FlopsPerToken {
  double attention_proj = 0, attention_scores = 0, experts = 0, routers = 0, dense_mlp = 0, lm_head = 0;
  double total() const { return attention_proj + attention_scores + experts + routers + dense_mlp + lm_head; }
};

FlopsPerToken training_flops_per_token(const ModelConfig& config, int64_t seq_len);

}  // namespace coe
