#include "coe/train/memory_model.h"

#include "coe/model/attention.h"
#include "coe/model/chunked_loss.h"
#include "coe/model/dispatch_name.h"
#include "coe/model/flops.h"
#include "coe/train/train_config.h"
#include "coe/util/error.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>

namespace coe {

// ---- parameters ------------------------------------------------------------------------------

ParamCounts count_parameters(const ModelConfig& c) {
  ParamCounts p;
  const int64_t H = c.hidden_size;
  p.embeddings = c.vocab_size * H;
  p.lm_head = c.tie_word_embeddings ? 0 : c.vocab_size * H;
  p.norms = H;  // model.norm
  int64_t unused_routed = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    // MLA
    p.attention += c.attention_q_weights() + c.attention_kv_weights() + c.attention_o_weights();
    if (c.q_lora_rank) p.norms += *c.q_lora_rank;  // q_a_layernorm
    p.norms += c.kv_lora_rank + 2 * H;             // kv_a_layernorm, input_layernorm, post_attention_layernorm
    if (c.is_moe_layer(l)) {
      const int64_t E = c.n_routed_experts, I = c.moe_intermediate_size;
      const int64_t expert = 3 * H * I;
      p.gates += (c.use_igate ? c.inner_iter : 1) * E * H;
      p.routed_experts += E * expert;
      p.shared_experts += c.n_shared_experts > 0 ? 3 * H * I * c.n_shared_experts : 0;
      unused_routed += (E - std::min(E, c.inner_iter * c.num_experts_per_tok)) * expert;
      p.expert_calls_per_token += c.inner_iter * (c.num_experts_per_tok + c.n_shared_experts);
    } else {
      p.dense_mlps += 3 * H * c.intermediate_size;
    }
  }
  p.active_per_token = p.total() - unused_routed;
  return p;
}

double log_choose(int64_t n, int64_t k) {
  if (k < 0 || k > n) return -INFINITY;
  return std::lgamma(double(n) + 1) - std::lgamma(double(k) + 1) - std::lgamma(double(n - k) + 1);
}

double combinatorial_ratio(int64_t n, int64_t k, int64_t c) {
  return std::exp(double(c) * log_choose(n, k) - log_choose(n, c * k));
}

std::string format_bytes(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  const double a = std::fabs(b);
  if (a >= 1024.0 * 1024 * 1024) return fmt::format("{:.2f} GiB", b / (1024.0 * 1024 * 1024));
  if (a >= 1024.0 * 1024) return fmt::format("{:.1f} MiB", b / (1024.0 * 1024));
  if (a >= 1024.0) return fmt::format("{:.1f} KiB", b / 1024.0);
  return fmt::format("{} B", bytes);
}

// ---- activations -----------------------------------------------------------------------------
//
// Notation (docs/memory.md): B micro-batch rows, S sequence length, T = B*S tokens, T' = B*(S-1)
// loss positions, H hidden, V vocab, h heads, dq = nope + rope, dv v_head_dim, r kv_lora_rank,
// rq q_lora_rank, E routed experts, K top-k, C iterations, R = T*K routed rows, I expert width,
// Is = I * n_shared, Id dense width. f = 4 bytes (float32), c = compute bytes (2 under bf16
// autocast, else 4), i = 8 bytes (int64). Layout: W ranks, EP expert-parallel ranks (E/EP experts
// per rank), Pr replicated parameters (all but the routed experts), Pe routed-expert parameters.

namespace {

struct Dims {
  int64_t B, S, T, Tl, H, V, heads, dq, nope, rope, dv, r, rq, E, K, C, R, I, Is, Id;
  int64_t EP, El;  // expert-parallel ranks, routed experts a rank holds (E/EP)
  std::string el;  // how El is written in formulas
};

Dims dims(const ModelConfig& c, const MemoryOptions& o) {
  Dims d{};
  d.B = o.micro_batch;
  d.S = o.seq_len;
  d.T = d.B * d.S;
  d.Tl = d.B * std::max<int64_t>(d.S - 1, 0);
  d.H = c.hidden_size;
  d.V = c.vocab_size;
  d.heads = c.num_attention_heads;
  d.dq = c.q_head_dim();
  d.nope = c.qk_nope_head_dim;
  d.rope = c.qk_rope_head_dim;
  d.dv = c.v_head_dim;
  d.r = c.kv_lora_rank;
  d.rq = c.q_lora_rank ? *c.q_lora_rank : 0;
  d.E = c.n_routed_experts;
  d.K = c.num_experts_per_tok;
  d.C = c.inner_iter;
  d.R = d.T * d.K;
  d.I = c.moe_intermediate_size;
  d.Is = c.moe_intermediate_size * c.n_shared_experts;
  d.Id = c.intermediate_size;
  d.EP = o.expert_parallel;
  d.El = d.E / d.EP;
  d.el = d.EP > 1 ? "(E/EP)" : "E";
  return d;
}

constexpr int64_t kF32 = 4, kI64 = 8;
constexpr const char* kReduceScatter = "gradient reduce-scatter (ZeRO-1)";

// Non-expert matmul weights of one decoder layer (what autocast casts to bf16 and caches).
int64_t layer_linear_params(const ModelConfig& c, int64_t l) {
  ModelConfig one = c;
  one.num_hidden_layers = 1;
  one.first_k_dense_replace = c.is_moe_layer(l) ? 0 : 1;
  one.moe_layer_freq = 1;
  if (!c.is_moe_layer(l)) one.n_routed_experts = 0;
  const ParamCounts p = count_parameters(one);
  return p.attention + p.shared_experts + p.gates + p.dense_mlps;
}

// This rank's routed experts that receive at least one of R rows: min(E/EP, R) (an upper bound;
// with balanced routing and R >> E every expert is hit). With expert parallelism the R rows are
// those that arrive from the group's ranks (balanced routing: as many as the rank sends).
int64_t active_experts(const Dims& d) { return std::min(d.El, d.R); }

struct LayerActivations {
  std::vector<MemoryTerm> terms;  // saved for backward, the layer input excluded
  int64_t input = 0;              // the layer input h [T, H] float32
  int64_t saved = 0;              // sum of terms
  int64_t largest = 0;            // largest single saved tensor
  int64_t working_set = 0;        // extra memory while this layer runs backward
  std::string working_formula;
};

LayerActivations layer_activations(const ModelConfig& c, int64_t l, const Dims& d, bool ac, const MemoryOptions& o) {
  LayerActivations a;
  const int64_t cb = ac ? 2 : 4;  // compute dtype bytes
  auto add = [&](std::string name, int64_t bytes, std::string formula, int64_t single = -1) {
    a.terms.push_back({std::move(name), bytes, std::move(formula)});
    a.saved += bytes;
    a.largest = std::max(a.largest, single < 0 ? bytes : single);
  };
  const int64_t T = d.T, H = d.H;
  a.input = kF32 * T * H;

  // ---- MLA ----
  add("input_layernorm: normalized x (f32) + rsqrt", kF32 * T * H + kF32 * T, "f*T*H + f*T", kF32 * T * H);
  if (ac) add("q/kv_a inputs: two bf16 casts of the norm output", 2 * 2 * T * H, "2 * 2*T*H", 2 * T * H);
  else add("q/kv_a input: norm output", kF32 * T * H, "f*T*H");
  if (d.rq > 0) {
    add("q_a_layernorm: input (f32), normalized, rsqrt", kF32 * T * d.rq + cb * T * d.rq + kF32 * T,
        "f*T*rq + c*T*rq + f*T", kF32 * T * d.rq);
    add("q_b_proj input", (ac ? 2 : 4) * T * d.rq, ac ? "2*T*rq" : "f*T*rq");
  }
  if (ac) add("kv_a_layernorm input: f32 copy of the latent", kF32 * T * d.r, "f*T*r");
  else add("kv_a_layernorm input: view of kv_a output [T, r+rope]", kF32 * T * (d.r + d.rope), "f*T*(r+rope)");
  add("kv_a_layernorm: normalized + rsqrt", cb * T * d.r + kF32 * T, "c*T*r + f*T", cb * T * d.r);
  add("kv_b_proj input", (ac ? 2 : 4) * T * d.r, ac ? "2*T*r" : "f*T*r");
  const int64_t qk = cb * d.B * d.heads * d.S * d.dq;
  add("attention: query and key (after rope)", 2 * qk, "2 * c*B*h*S*dq", qk);
  const int64_t value = cb * d.B * d.heads * d.S * d.dv;
  if (o.fused_attention) {
    add("fused attention: value, output, logsumexp", 2 * value + kF32 * d.B * d.heads * d.S, "2 * c*B*h*S*dv + f*B*h*S",
        value);
  } else {
    const int64_t probs = kF32 * d.B * d.heads * d.S * d.S;
    add("attention: softmax probabilities (f32)", probs, "f*B*h*S^2");
    if (ac) add("attention: bf16 copy of the probabilities", 2 * d.B * d.heads * d.S * d.S, "2*B*h*S^2");
    if (d.B == 1)
      add("attention: value (a view keeping kv_b output alive)", cb * T * d.heads * (d.nope + d.dv), "c*T*h*(nope+dv)");
    else add("attention: value (contiguous copy)", value, "c*B*h*S*dv");
    add("attention: causal mask (bool)", d.S * d.S, "S^2");
  }
  add("o_proj input", cb * T * d.heads * d.dv, "c*T*h*dv");
  add("post_attention_layernorm: input (residual) + normalized + rsqrt", 2 * kF32 * T * H + kF32 * T, "2*f*T*H + f*T",
      kF32 * T * H);
  if (ac) {
    // Rope tables cast to bf16 per apply_rotary call (query and key), saved by the multiply.
    add("rope: bf16 cos/sin copies", 2 * 2 * 2 * d.S * d.rope, "2*2*2*S*rope");
  }

  // ---- feed-forward ----
  if (c.is_moe_layer(l)) {
    const bool shared = c.n_shared_experts > 0;
    const int64_t R = d.R;
    for (int64_t t = 0; t < d.C; ++t) {
      const std::string it = d.C > 1 ? fmt::format("iteration {}: ", t + 1) : std::string();
      if (ac)
        add(it + "router/shared inputs: bf16 casts of x(t-1)", (shared ? 3 : 1) * 2 * T * H,
            shared ? "3 * 2*T*H" : "2*T*H", 2 * T * H);
      else add(it + "x(t-1) (router and shared-expert input)", kF32 * T * H, "f*T*H");
      int64_t router = kF32 * T * d.E + kI64 * T * d.K;
      std::string rf = "f*T*E + i*T*K";
      if (c.norm_topk_prob && d.K > 1) router += kF32 * T * d.K + kF32 * T, rf += " + f*T*K + f*T";
      if (c.topk_method == TopkMethod::kGroupLimitedGreedy) router += T * d.E, rf += " + T*E";
      if (c.aux_loss_alpha > 0)
        router += c.seq_aux ? kF32 * d.B * d.E : kF32 * d.E, rf += c.seq_aux ? " + f*B*E" : " + f*E";
      add(it + "router: softmax scores, top-k indices, aux", router, rf, kF32 * T * d.E);
      if (o.grouped_dispatch) {
        // M = R + E*8 rows (this rank's E/EP experts with expert parallelism): every expert's
        // group padded to a multiple of 8 (at least 8).
        const int64_t M = R + d.El * 8, c = ac ? 2 : kF32;
        const std::string cf = ac ? "2" : "f";
        add(it + "grouped dispatch: gathered rows [M, H] (one tensor for gate and up)", c * M * H, cf + "*M*H",
            c * M * H);
        add(it + "grouped dispatch: gate, silu, up, product [M, I]", 4 * c * M * d.I, "4 * " + cf + "*M*I",
            c * M * d.I);
        add(it + "grouped dispatch: f32 expert outputs of the K slots [R, H]", kF32 * R * H, "f*R*H");
        add(it + "grouped dispatch: slot weights, row and token indices", kF32 * R + kI64 * (R + M), "f*R + i*(R+M)",
            kI64 * M);
        if (ac && t == 0)
          add("grouped dispatch: bf16 copies of the expert stacks (autocast cache, shared by the iterations)",
              3 * 2 * d.El * d.I * H, "3 * 2*" + d.el + "*I*H", 2 * d.El * d.I * H);
      } else if (ac) {
        add(it + "dispatch: bf16 casts of the R gathered rows (gate, up)", 2 * 2 * R * H, "2 * 2*R*H", 2 * R * H);
        add(it + "dispatch: gate, silu, up, product [R, I]", 4 * 2 * R * d.I, "4 * 2*R*I", 2 * R * d.I);
        add(it + "dispatch: f32 expert outputs [R, H]", kF32 * R * H, "f*R*H");
        const int64_t n = active_experts(d);
        add(it + "dispatch: bf16 casts of the used experts' weights", n * 3 * 2 * d.I * H,
            fmt::format("min({},R)={} * 3 * 2*I*H", d.EP > 1 ? "E/EP" : "E", n), 2 * d.I * H);
      } else {
        add(it + "dispatch: gathered rows [R, H]", kF32 * R * H, "f*R*H");
        add(it + "dispatch: gate, silu, up, product [R, I]", 4 * kF32 * R * d.I, "4 * f*R*I", kF32 * R * d.I);
        add(it + "dispatch: expert outputs [R, H]", kF32 * R * H, "f*R*H");
      }
      if (!o.grouped_dispatch) {
        add(it + "dispatch: weighted rows (kept by index_add)", kF32 * R * H, "f*R*H");
        add(it + "dispatch: row weights, token and order indices", kF32 * R + 2 * kI64 * R, "f*R + 2*i*R", kI64 * R);
      }
      if (d.EP > 1) {
        // ExpertParallelDispatch: the rows go out and come back by all-to-all in x's dtype
        // (float32: the dispatch casts after the exchange). The local dispatch above runs on the
        // rows that arrive (R with balanced routing); at home the returned rows are weighted by
        // the K slot weights, which saves them, and the send order and its inverse are saved by
        // the two index_selects. The sent and received buffers are transient (working set).
        add(it + "expert parallel: returned rows [R, H] (f32, saved by the slot weighting)", kF32 * R * H, "f*R*H");
        add(it + "expert parallel: slot weights, send order and its inverse", kF32 * R + 2 * kI64 * R, "f*R + 2*i*R",
            kI64 * R);
      }
      if (shared) add(it + "shared experts: gate, silu, up, product", 4 * cb * T * d.Is, "4 * c*T*Is", cb * T * d.Is);
    }
  } else {
    if (ac) add("dense mlp: bf16 casts of the input (gate, up)", 2 * 2 * T * H, "2 * 2*T*H", 2 * T * H);
    else add("dense mlp: input", kF32 * T * H, "f*T*H");
    add("dense mlp: gate, silu, up, product", 4 * cb * T * d.Id, "4 * c*T*Id", cb * T * d.Id);
  }
  if (ac) {
    const int64_t p = layer_linear_params(c, l);
    add("bf16 copies of the layer's non-expert weights (autocast cache)", 2 * p, fmt::format("2 * {} params", p),
        2 * p);
  }

  // Working set of the layer's backward: one gradient the size of the largest saved tensor (the
  // other gradients of the layer are freed as backward walks it; calibrated with coe-memory
  // --measure on CPU, docs/memory.md), and for MoE layers the stacked experts' gradient buffers: every
  // expert's w[e] (a select of the [E, I, H] stack) gets a full-size zero-filled gradient in
  // backward (select_backward), summed into one buffer per stack; 3 buffers (gate, up, down) live
  // until the layer's dispatch backward is done. Measured on CPU (first on libtorch 1.13; the
  // measured-vs-estimate tests hold it on torch 2.11): the backward of such a layer peaks 5 stack
  // sizes above its start, whether or not .grad already exists.
  a.working_set = a.largest;
  a.working_formula = "largest saved tensor";
  if (c.is_moe_layer(l) && d.E > 0) {
    const int64_t stack = kF32 * d.El * d.I * H;
    a.working_set += 5 * stack;
    a.working_formula += " + 5 * f*" + d.el + "*I*H (expert-stack gradient buffers)";
    if (d.EP > 1) {
      // One all-to-all of R float32 rows in flight: its send and receive buffers (backward sends
      // the gradient rows the opposite way; the forward's recomputation under checkpointing too).
      a.working_set += 2 * kF32 * d.R * H;
      a.working_formula += " + 2 * f*R*H (all-to-all send and receive buffers)";
    }
  }
  return a;
}

}  // namespace

MemoryOptions memory_options(const TrainConfig& config) {
  MemoryOptions o;
  o.micro_batch = config.trainer.micro_batch;
  o.seq_len = config.data.max_length;
  o.checkpointing = config.trainer.activation_checkpointing;
  o.bf16 = config.trainer.dtype == "bfloat16";
  const bool cuda = config.trainer.device.rfind("cuda", 0) == 0;
  // What the model's attention runs (else the explicit softmax, which keeps the probabilities).
  o.fused_attention = auto_attention_uses_sdpa(config.model.qk_nope_head_dim + config.model.qk_rope_head_dim,
                                               config.model.v_head_dim, cuda);
  o.grouped_dispatch = uses_grouped_dispatch(config.trainer.expert_dispatch);
  o.loss_chunk_tokens = default_loss_chunk_tokens(config.model.vocab_size, cuda ? c10::kCUDA : c10::kCPU);
  o.expert_parallel = config.parallel.expert_parallel;
  o.world_size = config.parallel.expert_parallel;  // the fewest ranks this config runs on
  o.shard_optimizer = config.parallel.shard_optimizer;
  o.dist_bucket_mb = config.trainer.dist_bucket_mb;
  return o;
}

std::string layout_description(const MemoryOptions& o) {
  return fmt::format("{} rank{}, expert parallel {}, optimizer {}", o.world_size, o.world_size == 1 ? "" : "s",
                     o.expert_parallel, o.shard_optimizer ? "sharded" : "replicated");
}

bool uses_grouped_dispatch(const std::string& expert_dispatch) {
  return resolve_dispatch_name(expert_dispatch) == "grouped";
}

MemoryEstimate estimate_memory(const ModelConfig& c, const MemoryOptions& o) {
  MemoryEstimate m;
  m.config = c;
  m.options = o;
  m.params = count_parameters(c);
  const int64_t W = o.world_size, EP = o.expert_parallel;
  if (W < 1 || EP < 1) fail("memory estimate: world size {} and expert parallel {} must be positive", W, EP);
  if (W % EP != 0) fail("memory estimate: expert parallel {} does not divide the world size {}", EP, W);
  if (c.n_routed_experts % EP != 0)
    fail("memory estimate: expert parallel {} does not divide model.n_routed_experts {}", EP, c.n_routed_experts);
  const Dims d = dims(c, o);
  const bool ac = o.bf16;

  // ---- states, per rank ----
  // Pr replicated parameters (held by all W ranks), Pe routed-expert parameters (Pe/EP held by
  // each rank, replicated over the W/EP ranks holding the same experts).
  const int64_t Pe = m.params.routed_experts, Pr = m.params.total() - Pe, Pl = Pe / EP, G = W / EP;
  const int64_t P = Pr + Pl;
  m.params_per_rank = P;
  const bool one = W == 1;
  const std::string held = EP > 1 ? "(Pr + Pe/EP)" : "P", per = one ? "" : ", per rank";
  m.states.push_back({ac ? "weights (fp32 master; bf16 autocast)" : "weights (fp32)", kF32 * P, "4*" + held + per});
  m.states.push_back({"gradients (fp32)", kF32 * P,
                      "4*" + held + per + (o.shard_optimizer && !one ? " (full size until reduce-scattered)" : "")});
  auto ceil_div = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  if (o.shard_optimizer && !one) {
    // ZeRO-1: each parameter's moments are split over its data-parallel group (W ranks for the
    // replicated ones, W/EP for this rank's experts); shards rounded up.
    const int64_t moments = 2 * kF32 * (ceil_div(Pr, W) + ceil_div(Pl, G));
    m.states.push_back({"AdamW moments (2 x fp32), sharded", moments,
                        EP > 1 ? "8*(Pr/W + (Pe/EP)/(W/EP)) = 8*P/W, per rank" : "8*P/W, per rank"});
  } else {
    m.states.push_back({"AdamW moments (2 x fp32)", 2 * kF32 * P, "8*" + held + per});
  }
  // ZeRO-1 holds no buffer across steps: ShardedAdamW's buckets are built when the gradients are
  // reduced (a phase, below).
  if (!one && !o.shard_optimizer) {
    // GradReducer: every gradient it sums has a float32 slot in its flat buckets (allocated once;
    // + one float per parameter tensor, left out): the replicated parameters over W ranks, this
    // rank's experts over the W/EP ranks holding them (none when W/EP = 1).
    const int64_t buckets = kF32 * (EP > 1 ? Pr + (G > 1 ? Pl : 0) : P);
    m.states.push_back({"gradient all-reduce buckets (fp32 copy of the gradients)", buckets,
                        EP > 1 ? (G > 1 ? "4*(Pr + Pe/EP), per rank" : "4*Pr (W/EP = 1: experts not reduced), per rank")
                               : "4*P, per rank"});
  }
  for (const auto& s : m.states) m.states_bytes += s.bytes;
  if (EP > 1) m.all_to_all_bytes = kF32 * d.R * d.H;

  // ---- saved activations, per part ----
  // The micro-batch's input ids and labels (int64) exist through the step (not counted as saved);
  // the rope tables (float32 cos and sin [S, rope]) are built once per forward and saved.
  const int64_t inputs_bytes = 2 * kI64 * d.T;
  const int64_t embed_saved = 2 * kF32 * d.S * d.rope;
  std::vector<LayerActivations> layers, recompute;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    layers.push_back(layer_activations(c, l, d, ac, o));
    recompute.push_back(layer_activations(c, l, d, ac && o.recompute_autocast, o));
  }
  // Final norm (input, normalized, rsqrt) and the chunked loss, which keeps its gradients with
  // respect to the hidden states [T', H] and the head weight [V, H] (float32) for backward.
  const int64_t final_norm = 2 * kF32 * d.T * d.H + kF32 * d.T;
  const int64_t loss_saved = kF32 * d.Tl * d.H + kF32 * d.V * d.H;
  const int64_t final_saved = final_norm + loss_saved;

  m.saved_by_part.push_back({"rope tables (cos, sin)", embed_saved, "2*f*S*rope"});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    m.saved_by_part.push_back({fmt::format("layer {} ({})", l, c.is_moe_layer(l) ? "MoE" : "dense"),
                               layers[l].input + layers[l].saved, "layer input f*T*H + its saved tensors"});
  m.saved_by_part.push_back(
      {"final norm + chunked loss (grad_hidden, grad_weight)", final_saved, "2*f*T*H + f*T + f*T'*H + f*V*H"});
  for (int64_t l = 1; l < c.num_hidden_layers; ++l)
    if (layers[l].saved > layers[m.detail_layer].saved) m.detail_layer = l;
  if (!layers.empty()) {
    m.layer_detail.push_back({"layer input h [T, H]", layers[m.detail_layer].input, "f*T*H"});
    for (const auto& t : layers[m.detail_layer].terms) m.layer_detail.push_back(t);
  }

  // ---- working sets ----
  const int64_t n_loss = std::min(std::max<int64_t>(o.loss_chunk_tokens, 1), d.Tl);
  // Forward of the chunked loss: one chunk of float32 logits (plus its bf16 original and the
  // bf16 cast of the gradient under autocast) and the [V, H] product added to grad_weight.
  const int64_t loss_forward = kF32 * n_loss * d.V + (ac ? 4 * n_loss * d.V : 0) + (ac ? 2 : 4) * d.V * d.H;
  // Backward of the loss: grad_weight and grad_hidden scaled (new tensors), and the [B, S, H]
  // zero-filled gradient of the narrowed hidden states.
  const int64_t loss_backward = kF32 * d.V * d.H + kF32 * d.Tl * d.H + kF32 * d.T * d.H;
  int64_t all_linear = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) all_linear += layer_linear_params(c, l);
  // Under autocast the cast cache holds bf16 copies of the leaf weights for the whole forward:
  // the lm_head's always; the layers' ones too with checkpointing (without it they are saved for
  // backward and already counted in the layers).
  const int64_t head_cast = ac ? 2 * d.V * d.H : 0;
  const int64_t layers_cast = ac ? 2 * all_linear : 0;
  // AdamW: v.sqrt() / sqrt(1 - beta2^t) makes two temporaries of the largest parameter.
  int64_t largest_param = d.V * d.H;
  if (d.E > 0) largest_param = std::max(largest_param, d.El * d.I * d.H);
  const int64_t optimizer = 2 * kF32 * largest_param;
  // ZeRO-1 (ShardedAdamW::reduce_gradients): bucket after bucket, the full gradients are copied
  // into a flat float32 bucket (up to trainer.dist_bucket_mb MiB; a larger parameter is a bucket
  // alone) and reduce-scattered into this rank's owned shard of the summed gradient; the full
  // gradients are freed only after the last bucket, so at that point the rank holds them, every
  // shard (4*P/W, as the moments) and one bucket. The all-gather of the parameters after the
  // update needs no more (the full gradients are gone by then).
  int64_t reduce_scatter = 0;
  std::string reduce_scatter_formula;
  if (o.shard_optimizer && W > 1) {
    const int64_t cap = std::max<int64_t>(1, static_cast<int64_t>(o.dist_bucket_mb * 1024 * 1024 / 4));
    const int64_t bucket = kF32 * std::min(std::max(cap, largest_param), P);
    reduce_scatter = kF32 * (ceil_div(Pr, W) + ceil_div(Pl, G)) + bucket;
    reduce_scatter_formula =
        std::string(EP > 1 ? "gradient shards 4*(Pr/W + (Pe/EP)/(W/EP))" : "gradient shards 4*P/W") +
        " + one flat bucket f * max(trainer.dist_bucket_mb MiB / f, largest parameter)";
  }
  m.reduce_scatter_bytes = reduce_scatter;

  auto finish = [&](ActivationEstimate& a) {
    // The input ids and labels are alive in every phase of the micro-batch.
    for (auto& p : a.phases)
      if (p.name != "optimizer step" && p.name != kReduceScatter)
        p.bytes += inputs_bytes, p.formula += " + ids/labels 2*i*T";
    a.peak_bytes = 0;
    for (const auto& p : a.phases)
      if (p.bytes > a.peak_bytes) a.peak_bytes = p.bytes, a.peak_phase = p.name;
  };

  // ---- without checkpointing ----
  {
    ActivationEstimate& a = m.without_checkpointing;
    int64_t layers_total = 0;
    for (const auto& l : layers) layers_total += l.input + l.saved;
    a.saved_bytes = embed_saved + layers_total + final_saved;
    a.phases.push_back({"end of forward (chunked loss forward)", a.saved_bytes + head_cast + loss_forward,
                        "saved + lm_head bf16 cast + loss chunk working set"});
    a.phases.push_back({"backward of the loss", a.saved_bytes + loss_backward, "saved + loss backward working set"});
    int64_t below = embed_saved;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      below += layers[l].input + layers[l].saved;
      a.phases.push_back({fmt::format("backward of layer {}", l), below + layers[l].working_set,
                          "saved up to this layer + " + layers[l].working_formula});
    }
    if (reduce_scatter > 0) a.phases.push_back({kReduceScatter, reduce_scatter, reduce_scatter_formula});
    a.phases.push_back({"optimizer step", optimizer, "2 * f * largest parameter"});
    finish(a);
    m.autocast_copies_bytes = ac ? layers_cast + head_cast : 0;
  }

  // ---- with checkpointing: only layer inputs are saved; one layer is recomputed at a time ----
  {
    ActivationEstimate& a = m.with_checkpointing;
    const int64_t inputs = kF32 * d.T * d.H * c.num_hidden_layers;
    a.saved_bytes = embed_saved + inputs + final_saved;
    a.phases.push_back({"end of forward (chunked loss forward)", a.saved_bytes + layers_cast + head_cast + loss_forward,
                        "saved + bf16 weight cache + loss chunk working set"});
    a.phases.push_back({"backward of the loss", a.saved_bytes + loss_backward, "saved + loss backward working set"});
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const int64_t held = embed_saved + kF32 * d.T * d.H * (l + 1);
      a.phases.push_back(
          {fmt::format("backward of layer {} (recomputed)", l), held + recompute[l].saved + recompute[l].working_set,
           "layer inputs up to this layer + its recomputed saved tensors + " + recompute[l].working_formula});
    }
    if (reduce_scatter > 0) a.phases.push_back({kReduceScatter, reduce_scatter, reduce_scatter_formula});
    a.phases.push_back({"optimizer step", optimizer, "2 * f * largest parameter"});
    finish(a);
  }
  return m;
}

// ---- reports ---------------------------------------------------------------------------------

namespace {

std::string group_digits(int64_t v) {
  std::string s = std::to_string(v < 0 ? -v : v);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return (v < 0 ? "-" : "") + s;
}

struct Line {
  std::string name;
  int64_t value;
  bool bytes;
};

std::vector<Line> param_lines(const ParamCounts& p) {
  return {{"embeddings", p.embeddings, false},
          {"attention (MLA projections)", p.attention, false},
          {"routed experts", p.routed_experts, false},
          {"shared experts", p.shared_experts, false},
          {"gates (routers)", p.gates, false},
          {"norms", p.norms, false},
          {"lm_head", p.lm_head, false},
          {"dense MLPs", p.dense_mlps, false},
          {"total", p.total(), false},
          {"active per token (upper bound)", p.active_per_token, false}};
}

std::vector<Line> memory_lines(const MemoryEstimate& m) {
  std::vector<Line> out;
  for (const auto& s : m.states) out.push_back({s.name, s.bytes, true});
  out.push_back({"activations saved, no checkpointing", m.without_checkpointing.saved_bytes, true});
  out.push_back({"activation peak, no checkpointing", m.without_checkpointing.peak_bytes, true});
  out.push_back({"activations saved, checkpointing", m.with_checkpointing.saved_bytes, true});
  out.push_back({"activation peak, checkpointing", m.with_checkpointing.peak_bytes, true});
  out.push_back({"total, no checkpointing", m.states_bytes + m.without_checkpointing.peak_bytes, true});
  out.push_back({"total, checkpointing", m.states_bytes + m.with_checkpointing.peak_bytes, true});
  return out;
}

std::string setup_line(const MemoryEstimate& m) {
  const auto& o = m.options;
  return fmt::format("micro-batch {} x {} tokens, {}, attention {}, {} expert dispatch, checkpointing {}",
                     o.micro_batch, o.seq_len, o.bf16 ? "bf16 autocast over float32 master weights" : "float32",
                     o.fused_attention ? "fused (SDPA)" : "materialised softmax",
                     o.grouped_dispatch ? "grouped" : "segmented", o.checkpointing ? "on" : "off");
}

}  // namespace

std::string format_memory_report(const MemoryEstimate& m, const std::string& title) {
  const ModelConfig& c = m.config;
  std::string out;
  out += fmt::format("== {} ==\n", title);
  out +=
      fmt::format("model: {} layers, hidden {}, vocab {}, {} routed + {} shared experts of width {}, top-{}, C={}{}\n",
                  c.num_hidden_layers, c.hidden_size, c.vocab_size, c.n_routed_experts, c.n_shared_experts,
                  c.moe_intermediate_size, c.num_experts_per_tok, c.inner_iter,
                  c.inner_iter > 1 ? (c.use_igate ? " (one router per iteration)" : " (one shared router)") : "");
  out += "\nparameters                              count       float32 bytes\n";
  for (const auto& l : param_lines(m.params))
    out += fmt::format("  {:<34} {:>15}   {:>11}\n", l.name, group_digits(l.value), format_bytes(4 * l.value));
  const FlopsPerToken f = training_flops_per_token(c, m.options.seq_len);
  out += fmt::format("  {:<34} {:>15}\n", "expert calls per token", m.params.expert_calls_per_token);
  out += fmt::format("  {:<34} {:>15.3f}\n", "training GFLOP per token", f.total() / 1e9);
  if (m.options.expert_parallel > 1)
    out += fmt::format("  {:<34} {:>15}   {:>11}   all but the routed experts + {}/{} of them\n", "held per rank",
                       group_digits(m.params_per_rank), format_bytes(4 * m.params_per_rank),
                       m.config.n_routed_experts / m.options.expert_parallel, m.config.n_routed_experts);

  out += fmt::format("\ntraining memory per rank ({})\n  setup: {}\n", layout_description(m.options), setup_line(m));
  if (m.all_to_all_bytes > 0)
    out += fmt::format("  expert-parallel all-to-all: {} out and {} back per MoE iteration (f*T*K*H), forward and "
                       "backward; balanced routing assumed\n",
                       format_bytes(m.all_to_all_bytes), format_bytes(m.all_to_all_bytes));
  for (const auto& s : m.states) out += fmt::format("  {:<58} {:>11}   {}\n", s.name, format_bytes(s.bytes), s.formula);
  const ActivationEstimate& a = m.activations();
  out += fmt::format("  {:<58} {:>11}   (saved {}; peak at {})\n", "activations (peak of one micro-batch)",
                     format_bytes(a.peak_bytes), format_bytes(a.saved_bytes), a.peak_phase);
  if (m.options.bf16)
    out += fmt::format("  {:<58} {:>11}\n", "  of which bf16 weight copies (autocast), at most",
                       format_bytes(m.autocast_copies_bytes));
  out += fmt::format("  {:<58} {:>11}   ({} bytes)\n", "total (estimate)", format_bytes(m.total_bytes()),
                     group_digits(m.total_bytes()));
  const ActivationEstimate& other = m.options.checkpointing ? m.without_checkpointing : m.with_checkpointing;
  out += fmt::format("  {:<58} {:>11}   (activation peak {}, saved {})\n",
                     m.options.checkpointing ? "total without checkpointing" : "total with checkpointing",
                     format_bytes(m.states_bytes + other.peak_bytes), format_bytes(other.peak_bytes),
                     format_bytes(other.saved_bytes));

  out += "\nactivation peak candidates (" +
         std::string(m.options.checkpointing ? "checkpointing" : "no checkpointing") + ")\n";
  for (const auto& p : a.phases) out += fmt::format("  {:<44} {:>11}   {}\n", p.name, format_bytes(p.bytes), p.formula);
  out += "\nsaved for backward without checkpointing, per part\n";
  for (const auto& p : m.saved_by_part) out += fmt::format("  {:<58} {:>11}\n", p.name, format_bytes(p.bytes));
  out += fmt::format("\nsaved tensors of layer {} (one forward, no checkpointing)\n", m.detail_layer);
  for (const auto& t : m.layer_detail)
    out += fmt::format("  {:<66} {:>11}   {}\n", t.name, format_bytes(t.bytes), t.formula);
  return out;
}

std::string format_memory_comparison(const MemoryEstimate& a, const std::string& name_a, const MemoryEstimate& b,
                                     const std::string& name_b) {
  auto rel = [](int64_t x, int64_t y) -> std::string {
    if (x == 0) return y == 0 ? "0.0%" : "n/a";
    return fmt::format("{:+.1f}%", 100.0 * double(y - x) / double(x));
  };
  std::string out;
  out += fmt::format("A: {}\nB: {}\n", name_a, name_b);
  out += fmt::format("A setup: {}; per rank ({})\nB setup: {}; per rank ({})\n", setup_line(a),
                     layout_description(a.options), setup_line(b), layout_description(b.options));
  out += fmt::format("\n{:<44} {:>16} {:>16} {:>9}\n", "parameters", "A", "B", "(B-A)/A");
  const auto pa = param_lines(a.params), pb = param_lines(b.params);
  for (size_t i = 0; i < pa.size(); ++i)
    out += fmt::format("  {:<42} {:>16} {:>16} {:>9}\n", pa[i].name, group_digits(pa[i].value),
                       group_digits(pb[i].value), rel(pa[i].value, pb[i].value));
  out += fmt::format("  {:<42} {:>16} {:>16} {:>9}\n", "expert calls per token", a.params.expert_calls_per_token,
                     b.params.expert_calls_per_token,
                     rel(a.params.expert_calls_per_token, b.params.expert_calls_per_token));
  out += fmt::format("\n{:<44} {:>16} {:>16} {:>9}\n", "training memory", "A", "B", "(B-A)/A");
  const auto ma = memory_lines(a), mb = memory_lines(b);
  for (size_t i = 0; i < ma.size(); ++i)
    out += fmt::format("  {:<42} {:>16} {:>16} {:>9}\n", ma[i].name, format_bytes(ma[i].value),
                       format_bytes(mb[i].value), rel(ma[i].value, mb[i].value));
  out += fmt::format("  {:<42} {:>16} {:>16} {:>9}\n", "total (selected checkpointing)", format_bytes(a.total_bytes()),
                     format_bytes(b.total_bytes()), rel(a.total_bytes(), b.total_bytes()));

  // Where the difference of the totals comes from.
  const int64_t dt = b.total_bytes() - a.total_bytes();
  const int64_t ds = b.states_bytes - a.states_bytes;
  const int64_t da = b.activations().peak_bytes - a.activations().peak_bytes;
  const double per_param = double(a.states_bytes) / double(std::max<int64_t>(a.params.total(), 1));
  // Bytes per parameter are uniform in one process only: with several ranks the experts are split
  // and the moments sharded, so only the parameter differences are listed.
  const bool one = a.options.world_size == 1 && b.options.world_size == 1;
  out += fmt::format("\nwhere the difference comes from (B - A = {})\n", format_bytes(dt));
  if (one)
    out += fmt::format("  states (weights + gradients + AdamW moments, {:.0f} bytes per parameter): {}\n", per_param,
                       format_bytes(ds));
  else out += fmt::format("  states per rank (weights, gradients, AdamW moments, buffers): {}\n", format_bytes(ds));
  const std::vector<std::pair<std::string, int64_t>> parts = {
      {"routed experts", b.params.routed_experts - a.params.routed_experts},
      {"shared experts", b.params.shared_experts - a.params.shared_experts},
      {"gates", b.params.gates - a.params.gates},
      {"attention", b.params.attention - a.params.attention},
      {"embeddings + lm_head", b.params.embeddings + b.params.lm_head - a.params.embeddings - a.params.lm_head},
      {"dense MLPs + norms", b.params.dense_mlps + b.params.norms - a.params.dense_mlps - a.params.norms}};
  for (const auto& [name, dp] : parts)
    if (dp != 0)
      out += fmt::format("    {:<22} {:>16} parameters{}\n", name, (dp > 0 ? "+" : "") + group_digits(dp),
                         one ? " -> " + format_bytes(static_cast<int64_t>(std::llround(double(dp) * per_param)))
                             : std::string(" (whole model)"));
  out += fmt::format("  activation peak difference: {} (A: {} at {}; B: {} at {})\n", format_bytes(da),
                     format_bytes(a.activations().peak_bytes), a.activations().peak_phase,
                     format_bytes(b.activations().peak_bytes), b.activations().peak_phase);
  const int64_t ra = a.config.num_experts_per_tok * a.config.inner_iter,
                rb = b.config.num_experts_per_tok * b.config.inner_iter;
  out += fmt::format("  routed rows per token over a layer's iterations: A {} (C={} x K={}), B {} (C={} x K={})\n", ra,
                     a.config.inner_iter, a.config.num_experts_per_tok, rb, b.config.inner_iter,
                     b.config.num_experts_per_tok);
  return out;
}

nlohmann::json memory_to_json(const MemoryEstimate& m) {
  nlohmann::ordered_json j;
  const ParamCounts& p = m.params;
  j["params_total"] = p.total();
  j["params_active_per_token"] = p.active_per_token;
  j["params"] = {{"embeddings", p.embeddings},
                 {"attention", p.attention},
                 {"routed_experts", p.routed_experts},
                 {"shared_experts", p.shared_experts},
                 {"gates", p.gates},
                 {"norms", p.norms},
                 {"lm_head", p.lm_head},
                 {"dense_mlps", p.dense_mlps}};
  j["expert_calls_per_token"] = p.expert_calls_per_token;
  j["training_flops_per_token"] = training_flops_per_token(m.config, m.options.seq_len).total();
  j["options"] = {{"micro_batch", m.options.micro_batch},
                  {"seq_len", m.options.seq_len},
                  {"checkpointing", m.options.checkpointing},
                  {"dtype", m.options.bf16 ? "bfloat16" : "float32"},
                  {"fused_attention", m.options.fused_attention},
                  {"expert_dispatch", m.options.grouped_dispatch ? "grouped" : "segmented"},
                  {"recompute_autocast", m.options.recompute_autocast},
                  {"loss_chunk_tokens", m.options.loss_chunk_tokens}};
  j["parallel"] = {{"world_size", m.options.world_size},
                   {"expert_parallel", m.options.expert_parallel},
                   {"shard_optimizer", m.options.shard_optimizer},
                   {"dist_bucket_mb", m.options.dist_bucket_mb}};
  // Every byte figure below is per rank (one process: the whole model).
  j["per_rank"] = "per rank (" + layout_description(m.options) + ")";
  j["params_per_rank"] = m.params_per_rank;
  j["weights_bytes"] = m.states[0].bytes;
  j["gradients_bytes"] = m.states[1].bytes;
  j["optimizer_bytes"] = m.states[2].bytes;
  j["communication_buffers_bytes"] = m.states.size() > 3 ? m.states[3].bytes : 0;
  j["zero1_reduce_scatter_bytes"] = m.reduce_scatter_bytes;
  j["all_to_all_bytes_per_iteration"] = m.all_to_all_bytes;
  j["states_bytes"] = m.states_bytes;
  j["autocast_weight_copies_bytes"] = m.autocast_copies_bytes;
  j["activations_saved_bytes"] = m.activations().saved_bytes;
  j["activations_peak_bytes"] = m.activations().peak_bytes;
  j["activations_peak_phase"] = m.activations().peak_phase;
  j["activations_no_checkpointing"] = {{"saved_bytes", m.without_checkpointing.saved_bytes},
                                       {"peak_bytes", m.without_checkpointing.peak_bytes},
                                       {"peak_phase", m.without_checkpointing.peak_phase}};
  j["activations_checkpointing"] = {{"saved_bytes", m.with_checkpointing.saved_bytes},
                                    {"peak_bytes", m.with_checkpointing.peak_bytes},
                                    {"peak_phase", m.with_checkpointing.peak_phase}};
  j["estimate_bytes"] = m.total_bytes();
  j["estimate_no_checkpointing_bytes"] = m.states_bytes + m.without_checkpointing.peak_bytes;
  j["estimate_checkpointing_bytes"] = m.states_bytes + m.with_checkpointing.peak_bytes;
  return nlohmann::json(j);
}

}  // namespace coe
