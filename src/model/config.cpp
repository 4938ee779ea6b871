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
    "architectures",
    "auto_map",
    "dtype",
    "torch_dtype",
    "transformers_version",
    "use_cache",
    "pretraining_tp",
    "_name_or_path",
    "ep_size",
    "save_routing_logits",
    "attention_dropout",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "_attn_implementation",
    "output_router_logits",
};

const EnumName<HfModelType> kHfModelTypeNames[] = {
    {HfModelType::kCoe, "coe"},
    {HfModelType::kDeepseekV2, "deepseek_v2"},
    {HfModelType::kDeepseekV3, "deepseek_v3"},
};
// The reference's model_type: its config.json is coe's own schema.
constexpr const char* kReferenceModelType = "coe_deepseekv2";
// Keys of coe's CoE wiring, which transformers' DeepSeek models do not have.
const char* const kCoeOnlyKeys[] = {"inner_iter",     "use_igate",     "inner_residual",
                                    "outer_residual", "residual_mode", "residual"};

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
const char* to_string(HfModelType type) { return enum_name(kHfModelTypeNames, type); }
const char* to_string(ScoringFunc func) { return enum_name(kScoringFuncNames, func); }

double yarn_mscale(double scale, double mscale) { return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

double RopeScaling::attention_factor() const {
  return type == "yarn" ? yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim) : 1.0;
}

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

bool nearly_equal(double a, double b) { return std::abs(a - b) <= 1e-9 * std::max(1.0, std::abs(b)); }

// transformers 5's `rope_parameters`: rope_theta inside, rope_type "default" for no scaling, and
// YaRN's attention factor either given or derived by transformers' rule (mscale / mscale_all_dim
// only when both are set, else 0.1 ln(factor) + 1). coe computes DeepSeek's rule
// (RopeScaling::attention_factor), so a config on which the two rules differ is an error.
void read_rope_parameters(ConfigReader& r, ModelConfig& c) {
  if (r.has("rope_scaling") && !r.is_null("rope_scaling"))
    r.fail_key("rope_parameters", "give rope_scaling or rope_parameters, not both");
  r.ignore("rope_scaling");
  ConfigReader rp = r.section("rope_parameters");
  const auto rope_type = rp.optional<std::string>("rope_type");
  const auto type = rp.optional<std::string>("type");
  if (!rope_type && !type) rp.fail_key("rope_type", "rope_parameters needs a rope_type (default | linear | yarn)");
  if (rope_type && type && *rope_type != *type)
    rp.fail_key("type", fmt::format("'{}' disagrees with rope_type '{}'", *type, *rope_type));
  const std::string name = rope_type ? *rope_type : *type;
  const double theta = rp.require<double>("rope_theta");
  if (r.has("rope_theta") && r.require<double>("rope_theta") != theta)
    r.fail_key("rope_theta", fmt::format("disagrees with rope_parameters.rope_theta {}", theta));
  c.rope_theta = theta;
  if (name == "default") {
    rp.finish();
    c.rope_scaling.reset();
    return;
  }
  if (name != "linear" && name != "yarn")
    rp.fail_key("rope_type", fmt::format("'{}' is not supported (default | linear | yarn){}", name,
                                         name == "dynamic" ? ": transformers grows dynamic NTK's base with the running "
                                                             "length, coe with the rotary table's"
                                                           : ""));
  RopeScaling s;
  s.type = name;
  FieldReader reader(rp);
  visit_fields(s, reader);
  if (!rp.get<bool>("truncate", true))
    rp.fail_key("truncate", "false is not supported (coe rounds YaRN's correction range, as DeepSeek's code does)");
  const double coe_factor = s.attention_factor();
  if (const auto given = rp.optional<double>("attention_factor")) {
    if (!nearly_equal(*given, coe_factor))
      rp.fail_key("attention_factor", fmt::format("{} is not the {} coe derives from factor, mscale and mscale_all_dim "
                                                  "(DeepSeek's rule)",
                                                  *given, coe_factor));
  } else if (name == "yarn") {
    const bool both = rp.has("mscale") && s.mscale != 0 && rp.has("mscale_all_dim") && s.mscale_all_dim != 0;
    const double hf_factor = both ? coe_factor : yarn_mscale(s.factor, 1.0);
    if (!nearly_equal(hf_factor, coe_factor))
      rp.fail_key("mscale_all_dim", fmt::format("transformers derives YaRN's attention factor {} from these values and "
                                                "DeepSeek's code {}: give rope_parameters.attention_factor",
                                                hf_factor, coe_factor));
  }
  rp.finish();
  c.rope_scaling = s;
}

void read_rope_scaling(ConfigReader& r, ModelConfig& c) {
  if (r.has("rope_parameters") && !r.is_null("rope_parameters")) {
    read_rope_parameters(r, c);
    return;
  }
  r.ignore("rope_parameters");
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
  v.field("num_experts_per_tok", c.num_experts_per_tok, null_is<int64_t>(0));  // null: unset (validate names it)
  v.field("routed_scaling_factor", c.routed_scaling_factor);
  v.choice("topk_method", c.topk_method, kTopkMethodNames, unknown_topk_method, NameErrors::kAtFile);
  v.field("n_group", c.n_group, null_is<int64_t>(1));  // transformers writes null for ungrouped routing
  v.field("topk_group", c.topk_group, null_is<int64_t>(1));
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

namespace {

HfModelType read_model_type(ConfigReader& r) {
  const auto name = r.optional<std::string>("model_type");
  if (!name || *name == kReferenceModelType) return HfModelType::kCoe;
  if (const auto type = enum_value(kHfModelTypeNames, *name)) return *type;
  r.fail_key("model_type", fmt::format("'{}' is not a model coe runs ({}, {})", *name,
                                       join_names(kHfModelTypeNames, ", "), kReferenceModelType));
}

// transformers' DeepSeek models: one router per layer, run once, its output added to the layer's
// input (coe's residual_mode outer); V3 scores with sigmoid and routes with noaux_tc.
void start_as_deepseek(ConfigReader& r, HfModelType type, ModelConfig& c) {
  for (const char* key : kCoeOnlyKeys)
    if (r.has(key))
      r.fail_key(key, fmt::format("not a field of model_type {} (a Chain-of-Experts model is model_type coe)",
                                  to_string(type)));
  c.inner_iter = 1;
  c.use_igate = false;
  c.inner_residual = InnerResidual::kNone;
  c.outer_residual = true;
  if (type == HfModelType::kDeepseekV3) {
    c.topk_method = TopkMethod::kNoauxTc;
    c.scoring_func = ScoringFunc::kSigmoid;
  }
}

// transformers 5 writes these derived values; coe checks that they say what coe computes.
void check_hf_fields(ConfigReader& r, HfModelType type, const ModelConfig& c) {
  if (const auto head_dim = r.optional<int64_t>("head_dim"); head_dim && *head_dim != c.qk_rope_head_dim)
    r.fail_key("head_dim", fmt::format("{} is not qk_rope_head_dim {} (transformers' DeepSeek rope width)", *head_dim,
                                       c.qk_rope_head_dim));
  if (const auto qk = r.optional<int64_t>("qk_head_dim"); qk && *qk != c.q_head_dim())
    r.fail_key("qk_head_dim", fmt::format("{} is not qk_nope_head_dim + qk_rope_head_dim = {}", *qk, c.q_head_dim()));
  if (r.get<bool>("mlp_bias", false)) r.fail_key("mlp_bias", "MLP biases are not supported (false)");
  if (type != HfModelType::kDeepseekV3) return;
  // DeepSeek's own V3 config.json names these; transformers' deepseek_v3 has them fixed.
  if (c.topk_method != TopkMethod::kNoauxTc)
    r.fail_key("topk_method", "transformers' deepseek_v3 always routes with noaux_tc");
  if (c.scoring_func != ScoringFunc::kSigmoid)
    r.fail_key("scoring_func", "transformers' deepseek_v3 always scores with sigmoid");
  if (!r.get<bool>("rope_interleave", true))
    r.fail_key("rope_interleave", "false (rotate-half without DeepSeek's interleaved pairs) is not supported");
  // The multi-token-prediction layers are training-only and transformers builds none; their
  // weights, if a folder holds them, are unexpected tensors (an error when loading).
  if (r.get<int64_t>("num_nextn_predict_layers", 0) < 0) r.fail_key("num_nextn_predict_layers", "must be >= 0");
}

}  // namespace

ModelConfig parse_model_config(ConfigReader& r) {
  ModelConfig c;
  const HfModelType type = read_model_type(r);
  if (type != HfModelType::kCoe) start_as_deepseek(r, type, c);
  FieldReader reader(r);
  visit_fields(c, reader);
  check_hf_fields(r, type, c);
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

std::string hf_native_obstacle(const ModelConfig& c, HfModelType type) {
  bool any_moe = false;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    any_moe = any_moe || c.is_moe_layer(l);
    if (c.is_moe_layer(l) != (c.n_routed_experts > 0 && l >= c.first_k_dense_replace))
      return fmt::format(
          "moe_layer_freq {} (transformers makes every layer from first_k_dense_replace on an MoE layer)",
          c.moe_layer_freq);
  }
  if (any_moe && c.inner_iter > 1) return fmt::format("inner_iter {} (Chain-of-Experts)", c.inner_iter);
  if (c.inner_residual != InnerResidual::kNone || !c.outer_residual)
    return fmt::format("residual_mode {} (DeepSeek adds the feed-forward's output to the layer's input: residual_mode "
                       "outer)",
                       residual_mode_name(c));
  if (any_moe && c.n_shared_experts == 0) return "n_shared_experts 0 (transformers always builds shared experts)";
  if (type == HfModelType::kDeepseekV2) {
    if (c.scoring_func != ScoringFunc::kSoftmax || c.topk_method == TopkMethod::kNoauxTc)
      return fmt::format("scoring_func {} with topk_method {} (transformers' deepseek_v2: softmax, greedy or "
                         "group_limited_greedy)",
                         to_string(c.scoring_func), to_string(c.topk_method));
    if (any_moe && c.norm_topk_prob && c.num_experts_per_tok > 1)
      return "norm_topk_prob true (transformers' deepseek_v2 does not normalise the top-k weights)";
  } else if (type == HfModelType::kDeepseekV3) {
    if (c.scoring_func != ScoringFunc::kSigmoid || c.topk_method != TopkMethod::kNoauxTc)
      return fmt::format("scoring_func {} with topk_method {} (transformers' deepseek_v3: sigmoid with noaux_tc)",
                         to_string(c.scoring_func), to_string(c.topk_method));
  }
  return "";
}

HfModelType hf_export_model_type(const ModelConfig& c, std::string* why_not_native) {
  const bool v3 = c.scoring_func == ScoringFunc::kSigmoid && c.topk_method == TopkMethod::kNoauxTc;
  const HfModelType native = v3 ? HfModelType::kDeepseekV3 : HfModelType::kDeepseekV2;
  const std::string obstacle = hf_native_obstacle(c, native);
  if (why_not_native) *why_not_native = obstacle;
  return obstacle.empty() ? native : HfModelType::kCoe;
}

std::string model_config_to_hf_json(const ModelConfig& config, HfModelType type, const std::string& dtype) {
  if (dtype != "float32" && dtype != "bfloat16") fail("dtype: '{}' is not float32 or bfloat16", dtype);
  if (config.rope_scaling && config.rope_scaling->type == "dynamic")
    fail("rope_scaling.type: dynamic is not exported (transformers grows dynamic NTK's base with the running "
         "length, coe with the rotary table's)");
  // transformers' DeepSeek configs check this of every model, though MLA does not need it.
  if (config.hidden_size % config.num_attention_heads != 0)
    fail("num_attention_heads: transformers requires hidden_size {} to be a multiple of it, got {}", config.hidden_size,
         config.num_attention_heads);
  if (type != HfModelType::kCoe)
    if (const std::string why = hf_native_obstacle(config, type); !why.empty())
      fail("model_type {}: transformers' model does not compute {}", to_string(type), why);
  nlohmann::ordered_json j;
  ModelConfig c = config;
  JsonWriter writer(j);
  visit_fields(c, writer);
  // transformers 5's form of the rotary settings, with YaRN's attention factor spelled out: its
  // own rule for an absent one differs from DeepSeek's when mscale_all_dim is 0.
  nlohmann::ordered_json rope = {{"rope_type", c.rope_scaling ? c.rope_scaling->type : "default"},
                                 {"rope_theta", c.rope_theta}};
  if (c.rope_scaling) {
    nlohmann::ordered_json fields;
    JsonWriter rope_writer(fields);
    visit_fields(*c.rope_scaling, rope_writer);
    for (auto& [key, value] : fields.items())
      if (key != "type") rope[key] = value;
    rope["attention_factor"] = c.rope_scaling->attention_factor();
  }
  j.erase("rope_theta");
  j.erase("rope_scaling");
  j["rope_parameters"] = rope;
  if (type == HfModelType::kCoe) {
    j["model_type"] = to_string(type);
    j["architectures"] = {"CoeForCausalLM"};
    j["auto_map"] = {{"AutoConfig", "configuration_coe.CoeConfig"},
                     {"AutoModelForCausalLM", "modeling_coe.CoeForCausalLM"}};
  } else {
    for (const char* key : kCoeOnlyKeys) j.erase(key);
    // Every layer dense: transformers has no "no experts" switch, but its dense prefix can be all.
    if (c.n_routed_experts == 0) j["first_k_dense_replace"] = c.num_hidden_layers;
    j["model_type"] = to_string(type);
    if (type == HfModelType::kDeepseekV2) {
      j["architectures"] = {"DeepseekV2ForCausalLM"};
    } else {
      j["architectures"] = {"DeepseekV3ForCausalLM"};
      j["rope_interleave"] = true;              // DeepSeek's pairs, coe's layout
      j["num_nextn_predict_layers"] = 0;        // no multi-token-prediction layers
      if (c.n_group == 1) j["topk_group"] = 1;  // transformers ranks the single group even when ungrouped
    }
  }
  j["dtype"] = dtype;
  j["torch_dtype"] = dtype;  // transformers 4's name
  return j.dump(2) + "\n";
}

void model_config_to_yaml(const ModelConfig& config, YAML::Node& out) {
  ModelConfig c = config;
  YamlWriter writer(out);
  visit_fields(c, writer);
}

}  // namespace coe
