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

const EnumName<TopkMethod> kTopkMethodNames[] = {
    {TopkMethod::kGreedy, "greedy"},
    {TopkMethod::kGroupLimitedGreedy, "group_limited_greedy"},
    {TopkMethod::kNoauxTc, "noaux_tc"},
};
const EnumName<ScoringFunc> kScoringFuncNames[] = {
    {ScoringFunc::kSoftmax, "softmax"},
    {ScoringFunc::kSigmoid, "sigmoid"},
};

// RopeScaling::type stays a string (the rotary tables compare it); its valid values.
const char* const kRopeTypes[] = {"linear", "dynamic", "yarn"};

bool is_rope_type(const std::string& type) {
  for (const char* t : kRopeTypes)
    if (type == t) return true;
  return false;
}

// residual_mode: a name per combination of InnerResidual and outer_residual; "+outer" adds the
// outer residual to any of them.
struct ResidualModeName {
  InnerResidual inner;
  bool outer;
  const char* name;
};
const ResidualModeName kResidualModeNames[] = {
    {InnerResidual::kPrevious, false, "inner"},
    {InnerResidual::kNone, true, "outer"},
    {InnerResidual::kInput, false, "addinit"},
    {InnerResidual::kNone, false, "none"},
};
constexpr const char* kOuterSuffix = "+outer";

}  // namespace

const char* to_string(TopkMethod method) { return enum_name(kTopkMethodNames, method); }
const char* to_string(ScoringFunc func) { return enum_name(kScoringFuncNames, func); }

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
  // Layers and iterations are loops (here, in the model, the memory model): an absurd count must be
  // an error, not an endless loop.
  constexpr int64_t kMaxLoopCount = 1 << 16;
  if (num_hidden_layers > kMaxLoopCount)
    bad("num_hidden_layers", fmt::format("must be <= {}, got {}", kMaxLoopCount, num_hidden_layers));
  if (inner_iter > kMaxLoopCount) bad("inner_iter", fmt::format("must be <= {}, got {}", kMaxLoopCount, inner_iter));
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
    // Group-limited selection: group_limited_greedy ranks groups by their best expert; noaux_tc
    // (n_group > 1) by the sum of their two best biased scores, so a group needs two experts.
    const bool noaux = topk_method == TopkMethod::kNoauxTc;
    const bool grouped = topk_method == TopkMethod::kGroupLimitedGreedy || (noaux && n_group > 1);
    if (grouped) {
      positive("n_group", n_group);
      if (n_routed_experts % n_group != 0)
        bad("n_group", fmt::format("n_routed_experts {} is not divisible by n_group {}", n_routed_experts, n_group));
      if (noaux && n_routed_experts / n_group < 2)
        bad("n_group", fmt::format("noaux_tc ranks a group by its two best experts, but n_group {} leaves {} per group",
                                   n_group, n_routed_experts / n_group));
      if (topk_group <= 0 || topk_group > n_group)
        bad("topk_group", fmt::format("must be in [1, n_group={}], got {}", n_group, topk_group));
      if (num_experts_per_tok > topk_group * (n_routed_experts / n_group))
        bad("num_experts_per_tok",
            fmt::format("top-k {} exceeds the {} experts of the {} selected groups", num_experts_per_tok,
                        topk_group * (n_routed_experts / n_group), topk_group));
    } else if (noaux && n_group != 1) {
      bad("n_group", fmt::format("must be >= 1, got {}", n_group));
    }
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
    if (!is_rope_type(r.type))
      bad("rope_scaling.type", fmt::format("unknown rope type '{}' ({})", r.type, join_names(kRopeTypes, " | ")));
    if (!(r.factor > 0)) bad("rope_scaling.factor", "must be > 0");
    if (r.type == "yarn" && r.original_max_position_embeddings <= 0)
      bad("rope_scaling.original_max_position_embeddings", "must be > 0");
  }
  for (auto [key, id] :
       {std::pair{"bos_token_id", bos_token_id}, {"eos_token_id", eos_token_id}, {"pad_token_id", pad_token_id}})
    if (id && (*id < 0 || *id >= vocab_size))
      bad(key, fmt::format("id {} is outside the vocabulary [0, {})", *id, vocab_size));
}

namespace {

std::string residual_mode_name(const ModelConfig& c) {
  for (const auto& m : kResidualModeNames)
    if (m.inner == c.inner_residual && m.outer == c.outer_residual) return m.name;
  for (const auto& m : kResidualModeNames)
    if (m.inner == c.inner_residual && !m.outer) return std::string(m.name) + kOuterSuffix;
  return "?";
}

// The reference's `residual: "inner"` string is accepted as an alias when consistent: it writes it
// next to its booleans, which win; residual_mode wins over both.
void read_residual_mode(ConfigReader& r, ModelConfig& c) {
  for (const char* key : {"residual_mode", "residual"}) {
    auto mode = r.optional<std::string>(key);
    if (!mode) continue;
    if (std::string(key) == "residual" &&
        (r.has("residual_mode") || r.has("inner_residual") || r.has("outer_residual")))
      continue;
    std::string m = *mode;
    bool outer = false;
    const size_t suffix = std::char_traits<char>::length(kOuterSuffix);
    if (auto plus = m.find(kOuterSuffix); plus != std::string::npos && plus + suffix == m.size()) {
      outer = true;
      m = m.substr(0, plus);
    }
    const ResidualModeName* found = nullptr;
    for (const auto& n : kResidualModeNames)
      if (m == n.name) found = &n;
    if (!found)
      r.fail_key(key, fmt::format("unknown residual mode '{}' ({}, optionally {})", *mode,
                                  join_names(kResidualModeNames, " | "), kOuterSuffix));
    c.inner_residual = found->inner;
    c.outer_residual = outer || found->outer;
  }
}

template <class V>
void visit_fields(RopeScaling& s, V& v) {
  if constexpr (!V::kReads) v.field("type", s.type);  // read with its rope_type alias (read_rope_scaling)
  v.field("factor", s.factor, kRequired);
  v.field("original_max_position_embeddings", s.original_max_position_embeddings);
  v.field("beta_fast", s.beta_fast);
  v.field("beta_slow", s.beta_slow);
  v.field("mscale", s.mscale);
  v.field("mscale_all_dim", s.mscale_all_dim);
}

void read_rope_scaling(ConfigReader& r, ModelConfig& c) {
  if (!r.has("rope_scaling") || r.is_null("rope_scaling")) {
    r.ignore("rope_scaling");
    return;
  }
  ConfigReader rs = r.section("rope_scaling");
  RopeScaling s;
  auto type = rs.optional<std::string>("type");
  auto rope_type = rs.optional<std::string>("rope_type");
  if (!type && !rope_type)
    rs.fail_key("type", fmt::format("rope_scaling needs a type ({})", join_names(kRopeTypes, " | ")));
  if (type && rope_type && *type != *rope_type)
    rs.fail_key("rope_type", fmt::format("'{}' disagrees with type '{}'", *rope_type, *type));
  s.type = type ? *type : *rope_type;
  FieldReader reader(rs);
  visit_fields(s, reader);
  if (auto theta = rs.optional<double>("rope_theta"); theta && *theta != c.rope_theta)
    rs.fail_key("rope_theta", fmt::format("{} disagrees with the model's rope_theta {}", *theta, c.rope_theta));
  rs.finish();
  c.rope_scaling = s;
}

std::string unknown_topk_method(const std::string& name) {
  return fmt::format("unknown method '{}' ({})", name, join_names(kTopkMethodNames, " | "));
}

std::string unknown_scoring_func(const std::string& name) {
  return fmt::format("unknown scoring function '{}' ({})", name, join_names(kScoringFuncNames, " | "));
}

// Every key of a `model:` section / config.json, in the order config.json and config.yaml list
// them. Ranges are checked by ModelConfig::validate once every key is read.
template <class V>
void visit_fields(ModelConfig& c, V& v) {
  v.field("vocab_size", c.vocab_size);
  v.field("hidden_size", c.hidden_size);
  v.field("intermediate_size", c.intermediate_size);
  v.field("moe_intermediate_size", c.moe_intermediate_size);
  v.field("num_hidden_layers", c.num_hidden_layers);
  v.field("num_attention_heads", c.num_attention_heads);
  int64_t kv_heads = c.num_attention_heads;  // written for HF readers
  v.field("num_key_value_heads", kv_heads, null_is(kv_heads), [&](int64_t n) {
    return n == c.num_attention_heads ? std::string()
                                      : "MLA uses one KV head per query head: must equal num_attention_heads";
  });
  v.field("kv_lora_rank", c.kv_lora_rank);
  v.field("qk_nope_head_dim", c.qk_nope_head_dim);
  v.field("qk_rope_head_dim", c.qk_rope_head_dim);
  v.field("v_head_dim", c.v_head_dim);
  v.field("n_routed_experts", c.n_routed_experts, null_is<int64_t>(0));
  v.field("n_shared_experts", c.n_shared_experts, null_is<int64_t>(0));
  v.field("num_experts_per_tok", c.num_experts_per_tok);
  v.field("routed_scaling_factor", c.routed_scaling_factor);
  v.choice("topk_method", c.topk_method, kTopkMethodNames, unknown_topk_method, NameErrors::kAtFile);
  v.field("n_group", c.n_group);
  v.field("topk_group", c.topk_group);
  v.field("norm_topk_prob", c.norm_topk_prob);
  v.choice("scoring_func", c.scoring_func, kScoringFuncNames, unknown_scoring_func, NameErrors::kAtFile);
  v.field("aux_loss_alpha", c.aux_loss_alpha);
  v.field("seq_aux", c.seq_aux);
  v.field("router_z_loss_alpha", c.router_z_loss_alpha);
  v.field("first_k_dense_replace", c.first_k_dense_replace);
  v.field("moe_layer_freq", c.moe_layer_freq);
  v.field("rms_norm_eps", c.rms_norm_eps);
  v.field("rope_theta", c.rope_theta);
  v.field("max_position_embeddings", c.max_position_embeddings);
  v.field("tie_word_embeddings", c.tie_word_embeddings);
  v.field("initializer_range", c.initializer_range);
  v.field("inner_iter", c.inner_iter);
  v.field("use_igate", c.use_igate);

  // Residuals: the reference's two booleans, or one `residual_mode` (inner | outer | addinit |
  // none | inner+outer | addinit+outer), written both ways.
  bool inner = c.inner_residual == InnerResidual::kPrevious;
  v.field("inner_residual", inner);
  v.field("outer_residual", c.outer_residual);
  if constexpr (V::kReads) {
    c.inner_residual = inner ? InnerResidual::kPrevious : InnerResidual::kNone;
    read_residual_mode(v.reader(), c);
  } else {
    std::string mode = residual_mode_name(c);
    v.field("residual_mode", mode);
  }

  // What the model supports of HF's options: written for HF readers, checked when read.
  std::string act = "silu";
  v.field("hidden_act", act, null_is(act), [](const std::string& a) {
    return a == "silu" ? std::string() : fmt::format("unsupported activation '{}' (silu)", a);
  });
  bool attention_bias = false;
  v.field("attention_bias", attention_bias, null_is(false),
          [](bool b) { return b ? "attention biases are not supported (false)" : std::string(); });

  v.field("q_lora_rank", c.q_lora_rank);
  if constexpr (V::kReads) read_rope_scaling(v.reader(), c);
  else v.object("rope_scaling", c.rope_scaling.has_value(), [&](auto& w) { visit_fields(*c.rope_scaling, w); });
  v.field("bos_token_id", c.bos_token_id);
  v.field("eos_token_id", c.eos_token_id);
  v.field("pad_token_id", c.pad_token_id);
}

// Writes the visited fields into config.json (nlohmann's ordered JSON keeps the visiting order).
class JsonWriter {
 public:
  static constexpr bool kReads = false;
  explicit JsonWriter(nlohmann::ordered_json& out) : out_(out) {}

  template <typename T, typename... Options>
  void field(const char* key, const T& value, const Options&...) {
    out_[key] = value;
  }
  template <typename T, typename... Options>
  void field(const char* key, const std::optional<T>& value, const Options&...) {
    out_[key] = value ? nlohmann::ordered_json(*value) : nlohmann::ordered_json(nullptr);
  }
  template <typename E, size_t N, typename... Ignored>
  void choice(const char* key, const E& value, const EnumName<E> (&names)[N], const Ignored&...) {
    out_[key] = enum_name(names, value);
  }
  template <typename Fill>
  void object(const char* key, bool present, Fill&& fill) {
    if (!present) {
      out_[key] = nullptr;
      return;
    }
    nlohmann::ordered_json sub = nlohmann::ordered_json::object();
    JsonWriter writer(sub);
    fill(writer);
    out_[key] = sub;
  }

 private:
  nlohmann::ordered_json& out_;
};

}  // namespace

ModelConfig parse_model_config(ConfigReader& r) {
  ModelConfig c;
  FieldReader reader(r);
  visit_fields(c, reader);
  for (const char* key : kIgnoredHfKeys) r.ignore(key);
  r.finish();
  c.validate(r.file());
  return c;
}

ModelConfig load_model_config(const std::string& path) {
  ConfigReader reader = ConfigReader::from_file(path);
  return parse_model_config(reader);
}

std::string model_config_to_json(const ModelConfig& config) {
  nlohmann::ordered_json j;
  ModelConfig c = config;  // visit_fields takes a mutable config (it also reads)
  JsonWriter writer(j);
  visit_fields(c, writer);
  j["model_type"] = "coe_deepseekv2";
  j["architectures"] = {"CoeForCausalLM"};
  j["torch_dtype"] = "float32";
  return j.dump(2) + "\n";
}

void model_config_to_yaml(const ModelConfig& config, YAML::Node& out) {
  ModelConfig c = config;
  YamlWriter writer(out);
  visit_fields(c, writer);
}

}  // namespace coe
