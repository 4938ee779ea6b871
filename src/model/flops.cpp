#include "coe/model/flops.h"

namespace coe {

FlopsPerToken training_flops_per_token(const ModelConfig& c, int64_t seq_len) {
  const double H = double(c.hidden_size), heads = double(c.num_attention_heads);
  const double qd = double(c.q_head_dim()), vd = double(c.v_head_dim);
  // Forward multiply-adds per token, times 2 FLOPs, times 3 for forward + backward.
  const double k = 2.0 * 3.0;
  FlopsPerToken f;
  const double L = double(c.num_hidden_layers);
  f.attention_proj = k * L * double(c.attention_q_weights() + c.attention_kv_weights() + c.attention_o_weights());
  // Causal attention: on average seq_len / 2 keys per query, for QK^T (qd) and PV (vd).
  f.attention_scores = k * L * heads * (seq_len / 2.0) * (qd + vd);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    if (c.is_moe_layer(l)) {
      const double C = double(c.inner_iter);
      const double expert = 3.0 * H * c.moe_intermediate_size;
      f.experts += k * C * (c.num_experts_per_tok + c.n_shared_experts) * expert;
      f.routers += k * C * H * c.n_routed_experts;
    } else {
      f.dense_mlp += k * 3.0 * H * c.intermediate_size;
    }
  }
  f.lm_head = k * H * c.vocab_size;
  return f;
}

}  // namespace coe
