#pragma once
// Analytical parameter counts and training-memory estimate of a ModelConfig (coe-memory,
// coe-sweep). Pure arithmetic, no tensors: every term is derived from what CausalLM registers and
// what autograd saves in its forward pass (docs/memory.md lists each tensor and formula).
//
// Parameters are counted per component exactly as CausalLM registers them, so
// ParamCounts::total() equals the sum of numel over CausalLM::parameters() (tests check this).
//
// Training memory = states (float32 weights, float32 gradients, AdamW's two float32 moments)
// + the activation peak of one micro-batch: the tensors autograd saves for backward (per decoder
// layer: MLA, router, each CoE iteration's dispatch of T*K rows, shared experts; the fused chunked
// lm_head + cross-entropy), plus the largest working set on top of them (forward end, backward of
// a layer, optimizer step). With activation checkpointing only each layer's input is saved and
// one layer at a time is recomputed in backward.
//
// The estimate is per rank of a job laid out by MemoryOptions' world_size / expert_parallel /
// shard_optimizer (docs/distributed.md): a rank holds every replicated parameter and 1/EP of the
// routed experts, its gradients, its share of AdamW's moments, the gradient buckets of the
// data-parallel reduction, and the activations of its own micro-batch. One process (the default)
// is world_size 1.
#include "coe/model/config.h"

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace coe {

struct TrainConfig;

struct ParamCounts {
  int64_t embeddings = 0;      // model.embed_tokens
  int64_t attention = 0;       // q_proj | q_a_proj + q_b_proj, kv_a_proj_with_mqa, kv_b_proj, o_proj
  int64_t routed_experts = 0;  // mlp.experts (stacked gate/up/down)
  int64_t shared_experts = 0;  // mlp.shared_experts
  int64_t gates = 0;           // mlp.gate (one router per iteration with use_igate, else one)
  int64_t norms = 0;           // input/post-attention, q_a/kv_a layernorms, final norm
  int64_t lm_head = 0;         // 0 with tie_word_embeddings
  int64_t dense_mlps = 0;      // mlp of dense layers (first_k_dense_replace, moe_layer_freq)

  // Parameters one token's forward can touch: every parameter except the routed experts it is
  // not sent to. Per MoE layer at most min(C*K, E) distinct routed experts (the bound: iterations
  // may pick the same expert again). The embedding table is counted whole, as the reference's and
  // DeepSeek-V2's "activated parameters" are.
  int64_t active_per_token = 0;
  // Expert evaluations per token over the whole model: sum over MoE layers of C * (K + shared).
  int64_t expert_calls_per_token = 0;

  int64_t total() const {
    return embeddings + attention + routed_experts + shared_experts + gates + norms + lm_head + dense_mlps;
  }
};

ParamCounts count_parameters(const ModelConfig& config);

struct MemoryOptions {
  int64_t micro_batch = 1;
  int64_t seq_len = 512;
  bool checkpointing = false;
  // bf16 autocast over float32 master weights (trainer.dtype: bfloat16); false: float32.
  bool bf16 = false;
  // Attention through a fused kernel (at::scaled_dot_product_attention's flash / memory-efficient
  // path, which the model runs) instead of materialised [B, heads, S, S] probabilities.
  bool fused_attention = false;
  // Whether the checkpointed layer's recomputation in backward runs under the same autocast as
  // the forward (true) or in float32 (false).
  bool recompute_autocast = true;
  int64_t loss_chunk_tokens = 2048;  // ForwardOptions::loss_chunk_tokens
  // The grouped expert dispatch (trainer.expert_dispatch grouped, or auto on CUDA) instead of the
  // segmented one: rows padded per expert, one gather for gate and up, expert stacks cast once.
  bool grouped_dispatch = false;

  // The job's layout (docs/distributed.md#data-expert-and-optimizer-parallelism-which-to-use).
  // world_size W ranks; expert_parallel EP splits the routed experts over groups of EP ranks (EP
  // divides W and n_routed_experts); shard_optimizer (ZeRO-1) splits AdamW's moments over each
  // parameter's data-parallel group (replicated parameters: W ranks, expert shards: W/EP).
  int64_t world_size = 1;
  int64_t expert_parallel = 1;
  bool shard_optimizer = false;
  double dist_bucket_mb = 25;  // trainer.dist_bucket_mb: the gradient buckets' size
};

// The options a run's config trains with: trainer.micro_batch, data.max_length, checkpointing,
// dtype, and the attention, dispatch and loss chunks this build uses on trainer.device (CUDA
// configurations are estimated for libtorch 2.x), and the parallel: section. A config does not
// say how many ranks run it: world_size is parallel.expert_parallel, the fewest ranks the config
// runs on (1 without expert parallelism); callers that know the job's size set it.
// config.model.vocab_size must be resolved.
MemoryOptions memory_options(const TrainConfig& config);

// Whether a run with this trainer.expert_dispatch uses the grouped dispatch.
bool uses_grouped_dispatch(const std::string& expert_dispatch);

struct MemoryTerm {
  std::string name;
  int64_t bytes = 0;
  std::string formula;  // how it was computed, in the notation of docs/memory.md
};

// The activation side of one training configuration (checkpointing on or off).
struct ActivationEstimate {
  int64_t saved_bytes = 0;         // held by autograd when backward starts (whole model)
  int64_t peak_bytes = 0;          // activations + working set at the activation peak
  std::string peak_phase;          // where that peak happens
  std::vector<MemoryTerm> phases;  // the candidates the peak is the maximum of
};

struct MemoryEstimate {
  ModelConfig config;
  MemoryOptions options;
  ParamCounts params;
  // Parameters one rank holds: every one but the routed experts, plus 1/EP of those.
  int64_t params_per_rank = 0;
  // Per rank: weights, gradients, AdamW moments (persistent across steps), and with several ranks
  // and replicated moments the gradient all-reduce buckets (allocated once).
  std::vector<MemoryTerm> states;
  int64_t states_bytes = 0;
  // Saved tensors: embedding, one entry per decoder layer, final norm + loss.
  std::vector<MemoryTerm> saved_by_part;
  // The saved tensors of the largest decoder layer, one line each.
  int64_t detail_layer = 0;
  std::vector<MemoryTerm> layer_detail;
  ActivationEstimate without_checkpointing, with_checkpointing;
  // bf16 copies of weights made by autocast (included in the activation figures).
  int64_t autocast_copies_bytes = 0;
  // Expert parallelism: float32 bytes one rank's all-to-all sends (and receives back) per MoE
  // iteration and direction, T*K*H*4 (0 without expert parallelism).
  int64_t all_to_all_bytes = 0;
  // ZeRO-1: what the gradient reduction holds beside the states at its end (the rank's shards of
  // the summed gradients and one flat bucket); one of the peak candidates. 0 otherwise.
  int64_t reduce_scatter_bytes = 0;

  const ActivationEstimate& activations() const {
    return options.checkpointing ? with_checkpointing : without_checkpointing;
  }
  int64_t total_bytes() const { return states_bytes + activations().peak_bytes; }
};

// Throws coe::Error for a layout the trainer would refuse (EP not dividing W or n_routed_experts).
MemoryEstimate estimate_memory(const ModelConfig& config, const MemoryOptions& options);
// "8 ranks, expert parallel 8, optimizer sharded": the layout an estimate is per rank of.
std::string layout_description(const MemoryOptions& options);

// The human-readable report of coe-memory (parameters per component, then training memory).
std::string format_memory_report(const MemoryEstimate& estimate, const std::string& title);
// Two estimates side by side with the relative difference (B - A) / A of every line, and where
// the difference of the totals comes from.
std::string format_memory_comparison(const MemoryEstimate& a, const std::string& name_a, const MemoryEstimate& b,
                                     const std::string& name_b);
// {"params_total", "params_active_per_token", "params": {...}, "estimate_bytes", ...}
nlohmann::json memory_to_json(const MemoryEstimate& estimate);

// "1.23 GiB", "456.0 MiB", "12 B".
std::string format_bytes(int64_t bytes);

// ln C(n, k) (lgamma), and the paper's combinatorial ratio C(N, K)^C / C(N, C*K): ordered
// sequences of C expert sets of size K against unordered sets of C*K experts.
double log_choose(int64_t n, int64_t k);
double combinatorial_ratio(int64_t n, int64_t k, int64_t c);

}  // namespace coe
