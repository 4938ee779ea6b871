#pragma once
// ModelConfig: the single source of every shape in the model. Field names are the reference's
// (HF config.json of the CoE paper), so one struct reads a YAML `model:` section or a config.json.
#include <cstdint>
#include <optional>
#include <string>

namespace YAML {
class Node;
}

namespace coe {

class ConfigReader;

struct RopeScaling {
  std::string type;  // "linear" | "dynamic" | "yarn"
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
  // The factor on the rotary tables' cos/sin: YaRN's mscale / mscale_all_dim ratio as DeepSeek's
  // code derives it (yarn_mscale of each), 1 for the other types.
  double attention_factor() const;
};

// How a router picks its top-k experts (config names in config.cpp's kTopkMethodNames).
enum class TopkMethod {
  kGreedy,              // greedy: the top-k scores
  kGroupLimitedGreedy,  // group_limited_greedy (DeepSeek-V2): top-k within the best groups
  kNoauxTc,             // noaux_tc (DeepSeek-V3): top-k of the scores plus a per-router
                        // e_score_correction_bias, moved by the trainer towards balanced load
};
// How router logits become scores (config names in config.cpp's kScoringFuncNames).
enum class ScoringFunc {
  kSoftmax,  // softmax (DeepSeek-V2)
  kSigmoid,  // sigmoid (DeepSeek-V3)
};
const char* to_string(TopkMethod method);
const char* to_string(ScoringFunc func);

// What the CoE iteration adds back: x(t) = f(x(t-1)) + r(t).
enum class InnerResidual {
  kNone,      // r = 0
  kPrevious,  // r = x(t-1)  (the reference's inner_residual: true; the paper's best)
  kInput,     // r = x(0)    (the paper's "add input" variant; not in the reference)
};

// The keys of a `model:` section / config.json are listed once, in visit_fields (config.cpp):
// a new field there is read, written to config.json and config.yaml, and diffed.
struct ModelConfig {
  int64_t vocab_size = 102400;
  int64_t hidden_size = 1024;
  int64_t intermediate_size = 5472;  // dense (non-MoE) layers
  int64_t moe_intermediate_size = 704;
  int64_t num_hidden_layers = 4;
  int64_t num_attention_heads = 8;
  std::optional<int64_t> q_lora_rank;  // nullopt: plain q_proj
  int64_t kv_lora_rank = 512;
  int64_t qk_nope_head_dim = 128;
  int64_t qk_rope_head_dim = 64;
  int64_t v_head_dim = 128;

  int64_t n_routed_experts = 63;  // 0: every layer dense
  int64_t n_shared_experts = 1;
  int64_t num_experts_per_tok = 8;
  double routed_scaling_factor = 1.0;
  TopkMethod topk_method = TopkMethod::kGreedy;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  bool norm_topk_prob = false;
  ScoringFunc scoring_func = ScoringFunc::kSoftmax;
  double aux_loss_alpha = 0.001;
  bool seq_aux = true;
  // ST-MoE's router z-loss alpha * mean_t(logsumexp(logits_t)^2) per router; 0: off.
  double router_z_loss_alpha = 0.0;
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;

  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<RopeScaling> rope_scaling;
  int64_t max_position_embeddings = 4096;
  bool tie_word_embeddings = false;
  double initializer_range = 0.02;

  // Chain-of-Experts.
  int64_t inner_iter = 1;  // C
  bool use_igate = true;   // one router per iteration (true) or one shared router (false)
  InnerResidual inner_residual = InnerResidual::kPrevious;
  bool outer_residual = false;

  std::optional<int64_t> bos_token_id, eos_token_id, pad_token_id;

  int64_t q_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool uses_score_correction_bias() const { return topk_method == TopkMethod::kNoauxTc; }
  bool is_moe_layer(int64_t layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  // Softmax scale of attention, with YaRN's mscale correction as in the reference.
  double softmax_scale() const;
  // Weights of one MLA block's projections (q or q-LoRA a/b, kv_a with the rope key, kv_b, o),
  // without its norms: what the parameter count and the FLOP count both build on.
  int64_t attention_q_weights() const;
  int64_t attention_kv_weights() const;
  int64_t attention_o_weights() const { return num_attention_heads * v_head_dim * hidden_size; }

  // Throws naming the key (and `source`) for impossible combinations.
  void validate(const std::string& source) const;
};

// YaRN's attention-magnitude correction 0.1 * mscale * ln(scale) + 1 (1 for scale <= 1): for the
// rotary tables' cos/sin and for the softmax scale (mscale_all_dim).
double yarn_mscale(double scale, double mscale);

// An HF config.json's model_type (config.cpp's kHfModelTypeNames): coe's own ("coe", written by
// coe-export with coe's transformers code; the reference's "coe_deepseekv2" and a YAML section
// without one read the same way), or transformers' native DeepSeek-V2 / V3.
enum class HfModelType { kCoe, kDeepseekV2, kDeepseekV3 };
const char* to_string(HfModelType type);

// Reads the fields of a YAML `model:` section or an HF config.json (unknown keys are errors;
// HF bookkeeping keys such as architectures/torch_dtype are accepted and ignored). model_type
// deepseek_v2 / deepseek_v3 reads with DeepSeek's wiring (C = 1, one gate per layer, the MLP added
// to the layer input; V3: sigmoid scores, noaux_tc) and rejects coe's CoE keys; transformers 5's
// rope_parameters, head_dim, qk_head_dim and mlp_bias are read and checked. A value coe does not
// compute as transformers does is an error naming the key.
ModelConfig parse_model_config(ConfigReader& reader);
ModelConfig load_model_config(const std::string& path);  // .json or .yaml, whole file
// HF config.json text with the reference's names (+ residual_mode when not expressible there).
std::string model_config_to_json(const ModelConfig& config);

// Why transformers' native `type` (deepseek_v2 or deepseek_v3) does not compute what coe computes
// for `config`, "" when it does.
std::string hf_native_obstacle(const ModelConfig& config, HfModelType type);
// The model_type coe-export writes: deepseek_v2, else deepseek_v3 (sigmoid scores with noaux_tc),
// else coe (transformers' remote code); `why_not_native` receives the obstacle to the native one.
HfModelType hf_export_model_type(const ModelConfig& config, std::string* why_not_native = nullptr);
// A config.json transformers 5 loads as `type` (model_type, architectures, dtype and torch_dtype,
// rope_parameters with an explicit attention_factor, auto_map for coe), which coe reads back as the
// same model. `dtype`: "float32" | "bfloat16". Throws naming the key for what transformers would
// compute differently (dynamic rope scaling) or a native type that does not fit (hf_native_obstacle).
std::string model_config_to_hf_json(const ModelConfig& config, HfModelType type, const std::string& dtype);
// The same fields as a YAML mapping (for resolved run configs).
void model_config_to_yaml(const ModelConfig& config, YAML::Node& out);

}  // namespace coe
