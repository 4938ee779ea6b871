#include "coe/model/config.h"

#include "coe/util/config_reader.h"
#include "coe/util/error.h"

#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include <cmath>

namespace coe {
namespace {

// Keys HF writes into config.json that do not change the model we build. Accepted and ignored.
const char* const kIgnoredHfKeys[] = {
    "architectures",     "auto_map",          "model_type",           "torch_dtype", "transformers_version",
    "use_cache",         "pretraining_tp",    "_name_or_path",        "ep_size",     "save_routing_logits",
    "attention_dropout", "output_attentions", "output_hidden_states", "return_dict", "_attn_implementation",
};

}  // namespace

double yarn_mscale(double scale, double mscale) { return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

int64_t ModelConfig::attention_q_weights() const {
  const int64_t q = num_attention_heads * q_head_dim();
  return q_lora_rank ? hidden_size * *q_lora_rank + *q_lora_rank * q : hidden_size * q;
}

int64_t ModelConfig::attention_kv_weights() const {
  return hidden_size * (kv_lora_rank + qk_rope_head_dim) +
         kv_lora_rank * num_attention_heads * (qk_nope_head_dim + v_head_dim);
}

double ModelConfig::softmax_scale() const {
  double scale = 1.0 / std::sqrt(static_cast<double>(q_head_dim()));
  if (rope_scaling && rope_scaling->mscale_all_dim != 0.0) {
    double m = yarn_mscale(rope_scaling->factor, rope_scaling->mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

void ModelConfig::validate(const std::string& source) const {
  auto bad = [&](const char* key, const std::string& why) { fail("{}: {}: {}", source, key, why); };
  auto positive = [&](const char* key, int64_t v) {
    if (v <= 0) bad(key, fmt::format("must be > 0, got {}", v));
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("kv_lora_rank", kv_lora_rank);
  positive("qk_nope_head_dim", qk_nope_head_dim);
  positive("qk_rope_head_dim", qk_rope_head_dim);
  positive("v_head_dim", v_head_dim);
  positive("max_position_embeddings", max_position_embeddings);
  positive("inner_iter", inner_iter);
  if (qk_rope_head_dim % 2 != 0) bad("qk_rope_head_dim", fmt::format("must be even, got {}", qk_rope_head_dim));
  if (q_lora_rank && *q_lora_rank <= 0) bad("q_lora_rank", fmt::format("must be > 0 or null, got {}", *q_lora_rank));
  if (n_routed_experts < 0) bad("n_routed_experts", fmt::format("must be >= 0, got {}", n_routed_experts));
  if (n_shared_experts < 0) bad("n_shared_experts", fmt::format("must be >= 0, got {}", n_shared_experts));
  if (first_k_dense_replace < 0) bad("first_k_dense_replace", "must be >= 0");
  positive("moe_layer_freq", moe_layer_freq);
  bool any_dense = false, any_moe = false;
  for (int64_t l = 0; l < num_hidden_layers; ++l) (is_moe_layer(l) ? any_moe : any_dense) = true;
  if (any_dense) positive("intermediate_size", intermediate_size);
  if (any_moe) {
    positive("moe_intermediate_size", moe_intermediate_size);
    positive("num_experts_per_tok", num_experts_per_tok);
    if (num_experts_per_tok > n_routed_experts)
      bad("num_experts_per_tok",
          fmt::format("top-k {} exceeds n_routed_experts {}", num_experts_per_tok, n_routed_experts));
    if (topk_method != "greedy" && topk_method != "group_limited_greedy" && topk_method != "noaux_tc")
      bad("topk_method", fmt::format("unknown method '{}' (greedy | group_limited_greedy | noaux_tc)", topk_method));
    // Group-limited selection: group_limited_greedy ranks groups by their best expert; noaux_tc
    // (n_group > 1) by the sum of their two best biased scores, so a group needs two experts.
    const bool grouped = topk_method == "group_limited_greedy" || (topk_method == "noaux_tc" && n_group > 1);
    if (grouped) {
      positive("n_group", n_group);
      if (n_routed_experts % n_group != 0)
        bad("n_group", fmt::format("n_routed_experts {} is not divisible by n_group {}", n_routed_experts, n_group));
      if (topk_method == "noaux_tc" && n_routed_experts / n_group < 2)
        bad("n_group", fmt::format("noaux_tc ranks a group by its two best experts, but n_group {} leaves {} per group",
                                   n_group, n_routed_experts / n_group));
      if (topk_group <= 0 || topk_group > n_group)
        bad("topk_group", fmt::format("must be in [1, n_group={}], got {}", n_group, topk_group));
      if (num_experts_per_tok > topk_group * (n_routed_experts / n_group))
        bad("num_experts_per_tok",
            fmt::format("top-k {} exceeds the {} experts of the {} selected groups", num_experts_per_tok,
                        topk_group * (n_routed_experts / n_group), topk_group));
    } else if (topk_method == "noaux_tc" && n_group != 1) {
      bad("n_group", fmt::format("must be >= 1, got {}", n_group));
    }
    if (scoring_func != "softmax" && scoring_func != "sigmoid")
      bad("scoring_func", fmt::format("unknown scoring function '{}' (softmax | sigmoid)", scoring_func));
    if (!(aux_loss_alpha >= 0) || !std::isfinite(aux_loss_alpha))
      bad("aux_loss_alpha", fmt::format("must be >= 0, got {}", aux_loss_alpha));
    if (!(router_z_loss_alpha >= 0) || !std::isfinite(router_z_loss_alpha))
      bad("router_z_loss_alpha", fmt::format("must be >= 0, got {}", router_z_loss_alpha));
  }
  if (!(rms_norm_eps > 0)) bad("rms_norm_eps", "must be > 0");
  if (!(rope_theta > 0)) bad("rope_theta", "must be > 0");
  if (!(initializer_range > 0)) bad("initializer_range", "must be > 0");
  if (rope_scaling) {
    const auto& r = *rope_scaling;
    if (r.type != "linear" && r.type != "dynamic" && r.type != "yarn")
      bad("rope_scaling.type", fmt::format("unknown rope type '{}' (linear | dynamic | yarn)", r.type));
    if (!(r.factor > 0)) bad("rope_scaling.factor", "must be > 0");
    if (r.type == "yarn" && r.original_max_position_embeddings <= 0)
      bad("rope_scaling.original_max_position_embeddings", "must be > 0");
  }
  for (auto [key, id] :
       {std::pair{"bos_token_id", bos_token_id}, {"eos_token_id", eos_token_id}, {"pad_token_id", pad_token_id}})
    if (id && (*id < 0 || *id >= vocab_size))
      bad(key, fmt::format("id {} is outside the vocabulary [0, {})", *id, vocab_size));
}

ModelConfig parse_model_config(ConfigReader& r) {
  ModelConfig c;
  c.vocab_size = r.get("vocab_size", c.vocab_size);
  c.hidden_size = r.get("hidden_size", c.hidden_size);
  c.intermediate_size = r.get("intermediate_size", c.intermediate_size);
  c.moe_intermediate_size = r.get("moe_intermediate_size", c.moe_intermediate_size);
  c.num_hidden_layers = r.get("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = r.get("num_attention_heads", c.num_attention_heads);
  if (auto kv = r.optional<int64_t>("num_key_value_heads"); kv && *kv != c.num_attention_heads)
    r.fail_key("num_key_value_heads", "MLA uses one KV head per query head: must equal num_attention_heads");
  c.q_lora_rank = r.has("q_lora_rank") ? r.optional<int64_t>("q_lora_rank") : std::nullopt;
  c.kv_lora_rank = r.get("kv_lora_rank", c.kv_lora_rank);
  c.qk_nope_head_dim = r.get("qk_nope_head_dim", c.qk_nope_head_dim);
  c.qk_rope_head_dim = r.get("qk_rope_head_dim", c.qk_rope_head_dim);
  c.v_head_dim = r.get("v_head_dim", c.v_head_dim);
  c.n_routed_experts =
      r.is_null("n_routed_experts") ? (r.ignore("n_routed_experts"), 0) : r.get("n_routed_experts", c.n_routed_experts);
  c.n_shared_experts =
      r.is_null("n_shared_experts") ? (r.ignore("n_shared_experts"), 0) : r.get("n_shared_experts", c.n_shared_experts);
  c.num_experts_per_tok = r.get("num_experts_per_tok", c.num_experts_per_tok);
  c.routed_scaling_factor = r.get("routed_scaling_factor", c.routed_scaling_factor);
  c.topk_method = r.get("topk_method", c.topk_method);
  c.n_group = r.get("n_group", c.n_group);
  c.topk_group = r.get("topk_group", c.topk_group);
  c.norm_topk_prob = r.get("norm_topk_prob", c.norm_topk_prob);
  c.scoring_func = r.get("scoring_func", c.scoring_func);
  c.aux_loss_alpha = r.get("aux_loss_alpha", c.aux_loss_alpha);
  c.seq_aux = r.get("seq_aux", c.seq_aux);
  c.router_z_loss_alpha = r.get("router_z_loss_alpha", c.router_z_loss_alpha);
  c.first_k_dense_replace = r.get("first_k_dense_replace", c.first_k_dense_replace);
  c.moe_layer_freq = r.get("moe_layer_freq", c.moe_layer_freq);
  c.rms_norm_eps = r.get("rms_norm_eps", c.rms_norm_eps);
  c.rope_theta = r.get("rope_theta", c.rope_theta);
  c.max_position_embeddings = r.get("max_position_embeddings", c.max_position_embeddings);
  c.tie_word_embeddings = r.get("tie_word_embeddings", c.tie_word_embeddings);
  c.initializer_range = r.get("initializer_range", c.initializer_range);
  c.inner_iter = r.get("inner_iter", c.inner_iter);
  c.use_igate = r.get("use_igate", c.use_igate);
  c.bos_token_id = r.optional<int64_t>("bos_token_id");
  c.eos_token_id = r.optional<int64_t>("eos_token_id");
  c.pad_token_id = r.optional<int64_t>("pad_token_id");
  if (auto act = r.optional<std::string>("hidden_act"); act && *act != "silu")
    r.fail_key("hidden_act", fmt::format("unsupported activation '{}' (silu)", *act));
  if (auto bias = r.optional<bool>("attention_bias"); bias && *bias)
    r.fail_key("attention_bias", "attention biases are not supported (false)");

  // Residuals: the reference's two booleans, or one `residual_mode` (inner | outer | addinit |
  // none | inner+outer | addinit+outer). The reference's `residual: "inner"` string is accepted
  // as an alias when consistent.
  bool inner = r.get("inner_residual", true);
  c.outer_residual = r.get("outer_residual", false);
  c.inner_residual = inner ? InnerResidual::kPrevious : InnerResidual::kNone;
  for (const char* key : {"residual_mode", "residual"}) {
    auto mode = r.optional<std::string>(key);
    if (!mode) continue;
    // The reference writes residual: "inner" next to its booleans, which win; residual_mode wins
    // over both.
    if (std::string(key) == "residual" &&
        (r.has("residual_mode") || r.has("inner_residual") || r.has("outer_residual")))
      continue;
    std::string m = *mode;
    bool outer = false;
    if (auto plus = m.find("+outer"); plus != std::string::npos && plus + 6 == m.size()) {
      outer = true;
      m = m.substr(0, plus);
    }
    if (m == "inner") c.inner_residual = InnerResidual::kPrevious;
    else if (m == "addinit") c.inner_residual = InnerResidual::kInput;
    else if (m == "none") c.inner_residual = InnerResidual::kNone;
    else if (m == "outer") c.inner_residual = InnerResidual::kNone, outer = true;
    else
      r.fail_key(key,
                 fmt::format("unknown residual mode '{}' (inner | outer | addinit | none, optionally +outer)", *mode));
    c.outer_residual = outer;
  }

  if (r.has("rope_scaling") && !r.is_null("rope_scaling")) {
    ConfigReader rs = r.section("rope_scaling");
    RopeScaling s;
    auto type = rs.optional<std::string>("type");
    auto rope_type = rs.optional<std::string>("rope_type");
    if (!type && !rope_type) rs.fail_key("type", "rope_scaling needs a type (linear | dynamic | yarn)");
    if (type && rope_type && *type != *rope_type)
      rs.fail_key("rope_type", fmt::format("'{}' disagrees with type '{}'", *rope_type, *type));
    s.type = type ? *type : *rope_type;
    s.factor = rs.require<double>("factor");
    s.original_max_position_embeddings = rs.get("original_max_position_embeddings", s.original_max_position_embeddings);
    s.beta_fast = rs.get("beta_fast", s.beta_fast);
    s.beta_slow = rs.get("beta_slow", s.beta_slow);
    s.mscale = rs.get("mscale", s.mscale);
    s.mscale_all_dim = rs.get("mscale_all_dim", s.mscale_all_dim);
    if (auto theta = rs.optional<double>("rope_theta"); theta && *theta != c.rope_theta)
      rs.fail_key("rope_theta", fmt::format("{} disagrees with the model's rope_theta {}", *theta, c.rope_theta));
    rs.finish();
    c.rope_scaling = s;
  } else {
    r.ignore("rope_scaling");
  }
  for (const char* key : kIgnoredHfKeys) r.ignore(key);
  r.finish();
  c.validate(r.file());
  return c;
}

ModelConfig load_model_config(const std::string& path) {
  ConfigReader reader = ConfigReader::from_file(path);
  return parse_model_config(reader);
}

namespace {

std::string residual_mode_name(const ModelConfig& c) {
  std::string m = c.inner_residual == InnerResidual::kPrevious ? "inner"
                  : c.inner_residual == InnerResidual::kInput  ? "addinit"
                                                               : "none";
  if (c.outer_residual) m = (m == "none") ? "outer" : m + "+outer";
  return m;
}

template <typename Out>
void write_fields(const ModelConfig& c, Out&& put) {
  put("vocab_size", c.vocab_size);
  put("hidden_size", c.hidden_size);
  put("intermediate_size", c.intermediate_size);
  put("moe_intermediate_size", c.moe_intermediate_size);
  put("num_hidden_layers", c.num_hidden_layers);
  put("num_attention_heads", c.num_attention_heads);
  put("num_key_value_heads", c.num_attention_heads);
  put("kv_lora_rank", c.kv_lora_rank);
  put("qk_nope_head_dim", c.qk_nope_head_dim);
  put("qk_rope_head_dim", c.qk_rope_head_dim);
  put("v_head_dim", c.v_head_dim);
  put("n_routed_experts", c.n_routed_experts);
  put("n_shared_experts", c.n_shared_experts);
  put("num_experts_per_tok", c.num_experts_per_tok);
  put("routed_scaling_factor", c.routed_scaling_factor);
  put("topk_method", c.topk_method);
  put("n_group", c.n_group);
  put("topk_group", c.topk_group);
  put("norm_topk_prob", c.norm_topk_prob);
  put("scoring_func", c.scoring_func);
  put("aux_loss_alpha", c.aux_loss_alpha);
  put("seq_aux", c.seq_aux);
  put("router_z_loss_alpha", c.router_z_loss_alpha);
  put("first_k_dense_replace", c.first_k_dense_replace);
  put("moe_layer_freq", c.moe_layer_freq);
  put("rms_norm_eps", c.rms_norm_eps);
  put("rope_theta", c.rope_theta);
  put("max_position_embeddings", c.max_position_embeddings);
  put("tie_word_embeddings", c.tie_word_embeddings);
  put("initializer_range", c.initializer_range);
  put("inner_iter", c.inner_iter);
  put("use_igate", c.use_igate);
  put("inner_residual", c.inner_residual == InnerResidual::kPrevious);
  put("outer_residual", c.outer_residual);
  put("residual_mode", residual_mode_name(c));
  put("hidden_act", std::string("silu"));
  put("attention_bias", false);
}

}  // namespace

std::string model_config_to_json(const ModelConfig& c) {
  nlohmann::ordered_json j;
  write_fields(c, [&](const char* k, const auto& v) { j[k] = v; });
  j["q_lora_rank"] = c.q_lora_rank ? nlohmann::ordered_json(*c.q_lora_rank) : nlohmann::ordered_json(nullptr);
  if (c.rope_scaling) {
    const auto& r = *c.rope_scaling;
    j["rope_scaling"] = {{"type", r.type},
                         {"factor", r.factor},
                         {"original_max_position_embeddings", r.original_max_position_embeddings},
                         {"beta_fast", r.beta_fast},
                         {"beta_slow", r.beta_slow},
                         {"mscale", r.mscale},
                         {"mscale_all_dim", r.mscale_all_dim}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  for (auto [k, v] :
       {std::pair{"bos_token_id", c.bos_token_id}, {"eos_token_id", c.eos_token_id}, {"pad_token_id", c.pad_token_id}})
    j[k] = v ? nlohmann::ordered_json(*v) : nlohmann::ordered_json(nullptr);
  j["model_type"] = "coe_deepseekv2";
  j["architectures"] = {"CoeForCausalLM"};
  j["torch_dtype"] = "float32";
  return j.dump(2) + "\n";
}

void model_config_to_yaml(const ModelConfig& c, YAML::Node& out) {
  write_fields(c, [&](const char* k, const auto& v) { out[k] = v; });
  out["q_lora_rank"] = c.q_lora_rank ? YAML::Node(*c.q_lora_rank) : YAML::Node(YAML::NodeType::Null);
  if (c.rope_scaling) {
    YAML::Node r;
    r["type"] = c.rope_scaling->type;
    r["factor"] = c.rope_scaling->factor;
    r["original_max_position_embeddings"] = c.rope_scaling->original_max_position_embeddings;
    r["beta_fast"] = c.rope_scaling->beta_fast;
    r["beta_slow"] = c.rope_scaling->beta_slow;
    r["mscale"] = c.rope_scaling->mscale;
    r["mscale_all_dim"] = c.rope_scaling->mscale_all_dim;
    out["rope_scaling"] = r;
  } else {
    out["rope_scaling"] = YAML::Node(YAML::NodeType::Null);
  }
  for (auto [k, v] :
       {std::pair{"bos_token_id", c.bos_token_id}, {"eos_token_id", c.eos_token_id}, {"pad_token_id", c.pad_token_id}})
    out[k] = v ? YAML::Node(*v) : YAML::Node(YAML::NodeType::Null);
}

}  // namespace coe
