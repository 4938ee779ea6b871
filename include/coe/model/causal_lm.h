#pragma once
// The causal language model: embeddings, decoder layers, final norm, lm_head, and the shifted
// next-token loss (mean over labels != kIgnoreLabel, the reference's CrossEntropyLoss semantics).
#include "coe/model/coe_layer.h"
#include "coe/model/config.h"
#include "coe/model/experts.h"
#include "coe/model/kv_cache.h"

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <functional>
#include <memory>
#include <vector>

namespace coe {

struct ForwardOptions {
  // false: the loss comes from the fused, chunked lm_head + cross-entropy (model/chunked_loss.h)
  // and the [B, S, V] logits are never materialised.
  bool return_logits = true;
  bool record_routing = false;    // fill LmOutput::routing
  int64_t loss_chunk_tokens = 0;  // rows per loss chunk; 0: default_loss_chunk_tokens
  // Fill LmOutput::loss_tokens. Counting needs a device->host copy, which stalls the GPU stream;
  // the trainer counts on the host from the batch instead.
  bool count_loss_tokens = false;
  // Called with the embedding output (layer -1, no aux loss) and each decoder layer's output, in
  // order: lets a caller inspect every stage without re-implementing the layer loop (the
  // trainer's non-finite diagnosis).
  std::function<void(int64_t layer, const LayerOutput& out)> on_layer;
};

struct LmOutput {
  torch::Tensor logits;  // [B, S, V] float32 (if requested)
  torch::Tensor loss;    // scalar float32 LM loss (if labels were given)
  // Each term the sum over all routers, a scalar (0 when none): add them to the loss for backward,
  // as the reference does with its aux loss, but report them separately.
  RouterLosses router_losses;
  int64_t loss_tokens = 0;  // labels that count (labels[:,1:] != kIgnoreLabel); 0 unless requested
  std::vector<RoutingTrace> routing;
};

class CausalLMImpl : public torch::nn::Module {
 public:
  explicit CausalLMImpl(const ModelConfig& config);

  // input_ids [B, S] int64; labels [B, S] int64 (or undefined): position s predicts labels[s+1].
  LmOutput forward(const torch::Tensor& input_ids, const torch::Tensor& labels = {},
                   const ForwardOptions& options = {});

  // Incremental decoding, without gradients: input_ids [B, S] fill slots [cache.length(),
  // cache.length() + S) of `cache` (B = cache.batch()). The first left_padding[b] tokens of row b
  // are padding (empty: none): never attended to, no rope position. Returns float32 logits of the
  // last new slot [B, V], or of every new slot [B, S, V] with `all_positions`. A row whose
  // sequence would pass max_position_embeddings, or a chunk past the cache's capacity, throws.
  torch::Tensor forward_cached(const torch::Tensor& input_ids, KvCache& cache,
                               const std::vector<int64_t>& left_padding = {}, bool all_positions = false);

  // Draws every weight as the reference initialises it (normal(0, initializer_range) for
  // linear/embedding/expert weights, kaiming-uniform(a=sqrt(5)) for routers, ones for norms),
  // from torch's global generator: seed it first for reproducible runs.
  void reset_parameters();
  // Recompute each decoder layer in backward instead of keeping its activations.
  void set_activation_checkpointing(bool enabled) { checkpointing_ = enabled; }
  bool activation_checkpointing() const { return checkpointing_; }
  // Replaces the expert dispatch of every MoE layer.
  void set_dispatch(const std::shared_ptr<ExpertDispatch>& dispatch);
  // Expert parallelism: every MoE layer keeps routed experts [first, first + count) only
  // (RoutedExpertsImpl::keep_experts); its dispatch must bring the tokens to the other experts.
  void keep_experts(int64_t first, int64_t count);

  // Expert load (what the trainer's balancing and load statistics use): with tracking on, every
  // forward in training mode counts, per MoE layer and CoE iteration, the token slots each expert
  // receives (on the device; activation checkpointing's recomputation is not counted twice).
  void set_expert_load_tracking(bool on);
  // The counts since the last call, int64 [moe_layers().size(), C, E], and a fresh count;
  // undefined for a model without MoE layers.
  torch::Tensor take_expert_load();
  // The indices of the MoE layers, in order (the rows of take_expert_load).
  std::vector<int64_t> moe_layers() const;
  // Aux-loss-free balancing (topk_method noaux_tc, DeepSeek-V3): every router's
  // e_score_correction_bias += rate * sign(mean load - load), with `load` as take_expert_load
  // returns it (summed over a global batch). A no-op for the other top-k methods.
  void update_router_bias(const torch::Tensor& load, double rate);

  const ModelConfig& config() const { return config_; }
  torch::Tensor lm_head_weight() const;

  // Parameter names follow the reference: "model.embed_tokens.weight", "model.layers.N....",
  // "model.norm.weight", "lm_head.weight".
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  torch::nn::Linear lm_head{nullptr};  // null with tie_word_embeddings

 private:
  ModelConfig config_;
  bool checkpointing_ = false;
};
TORCH_MODULE(CausalLM);

}  // namespace coe
