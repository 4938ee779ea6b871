#include "coe/train/train_config.h"

#include "coe/model/dispatch_name.h"

#include "coe/util/config_reader.h"
#include "coe/util/error.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>

namespace fs = std::filesystem;

namespace coe {

const char* to_string(LrScheduleKind kind) {
  switch (kind) {
    case LrScheduleKind::kConstant: return "constant";
    case LrScheduleKind::kCosine: return "cosine";
    case LrScheduleKind::kLinear: return "linear";
  }
  return "?";
}

const char* to_string(DecayMode mode) { return mode == DecayMode::kAll ? "all" : "no_norms_biases"; }

int64_t OptimConfig::resolved_warmup_steps(int64_t total_steps) const {
  if (warmup_steps) return *warmup_steps;
  const double ratio = warmup_ratio ? *warmup_ratio : 0.1;
  return static_cast<int64_t>(std::floor(ratio * static_cast<double>(total_steps)));
}

namespace {

// model.from: relative to the working directory, else to the directory of the run config.
std::string resolve_from(const ConfigReader& model, const std::string& from) {
  fs::path p(from);
  if (p.is_absolute() || fs::exists(p)) return p.string();
  fs::path beside = fs::path(model.file()).parent_path() / p;
  if (fs::exists(beside)) return beside.string();
  model.fail_key("from", fmt::format("model config '{}' not found (relative to the working directory or to {})", from,
                                     model.file()));
}

ModelConfig parse_model_section(ConfigReader& model, TrainConfig* out) {
  auto from = model.optional<std::string>("from");
  if (!from) {
    out->model_vocab_given = model.has("vocab_size");
    return parse_model_config(model);
  }
  const std::string path = resolve_from(model, *from);
  YAML::Node base;
  try {
    base = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    model.fail_key("from", fmt::format("cannot parse {}: line {}: {}", path, e.mark.line + 1, e.msg));
  }
  if (!base.IsMap()) model.fail_key("from", fmt::format("{} does not hold a mapping of model fields", path));
  // The section's other keys override the file's.
  YAML::Node merged = YAML::Clone(base);
  for (const auto& kv : model.node()) {
    const std::string key = kv.first.as<std::string>();
    if (key != "from") merged[key] = kv.second;
  }
  out->model_from = *from;
  out->model_vocab_given = true;
  ConfigReader reader(merged, fmt::format("{} (model.from: {})", model.file(), path), "model");
  return parse_model_config(reader);
}

OptimConfig parse_optim(ConfigReader& r) {
  OptimConfig o;
  o.lr = r.get("lr", o.lr);
  if (!(o.lr > 0) || !std::isfinite(o.lr)) r.fail_key("lr", fmt::format("must be > 0, got {}", o.lr));
  auto betas = r.get<std::vector<double>>("betas", {o.beta1, o.beta2});
  if (betas.size() != 2) r.fail_key("betas", fmt::format("expected two values [beta1, beta2], got {}", betas.size()));
  for (double b : betas)
    if (!(b >= 0.0 && b < 1.0)) r.fail_key("betas", fmt::format("each beta must be in [0, 1), got {}", b));
  o.beta1 = betas[0];
  o.beta2 = betas[1];
  o.weight_decay = r.get("weight_decay", o.weight_decay);
  if (!(o.weight_decay >= 0)) r.fail_key("weight_decay", fmt::format("must be >= 0, got {}", o.weight_decay));
  o.eps = r.get("eps", o.eps);
  if (!(o.eps > 0)) r.fail_key("eps", fmt::format("must be > 0, got {}", o.eps));
  o.warmup_ratio = r.optional<double>("warmup_ratio");
  o.warmup_steps = r.optional<int64_t>("warmup_steps");
  if (o.warmup_ratio && o.warmup_steps) r.fail_key("warmup_steps", "set warmup_ratio or warmup_steps, not both");
  if (o.warmup_ratio && !(*o.warmup_ratio >= 0.0 && *o.warmup_ratio <= 1.0))
    r.fail_key("warmup_ratio", fmt::format("must be in [0, 1], got {}", *o.warmup_ratio));
  if (o.warmup_steps && *o.warmup_steps < 0)
    r.fail_key("warmup_steps", fmt::format("must be >= 0, got {}", *o.warmup_steps));
  const std::string schedule = r.get<std::string>("schedule", "constant");
  if (schedule == "constant") o.schedule = LrScheduleKind::kConstant;
  else if (schedule == "cosine") o.schedule = LrScheduleKind::kCosine;
  else if (schedule == "linear") o.schedule = LrScheduleKind::kLinear;
  else r.fail_key("schedule", fmt::format("unknown schedule '{}' (constant | cosine | linear)", schedule));
  o.min_lr = r.get("min_lr", o.min_lr);
  if (!(o.min_lr >= 0 && o.min_lr <= o.lr))
    r.fail_key("min_lr", fmt::format("must be in [0, lr={}], got {}", o.lr, o.min_lr));
  o.clip_grad = r.get("clip_grad", o.clip_grad);
  if (!(o.clip_grad >= 0))
    r.fail_key("clip_grad", fmt::format("must be >= 0 (0 disables clipping), got {}", o.clip_grad));
  const std::string decay = r.get<std::string>("decay", "all");
  if (decay == "all") o.decay = DecayMode::kAll;
  else if (decay == "no_norms_biases") o.decay = DecayMode::kNoNormsBiases;
  else r.fail_key("decay", fmt::format("unknown value '{}' (all | no_norms_biases)", decay));
  r.finish();
  return o;
}

TrainerConfig parse_trainer(ConfigReader& r) {
  TrainerConfig t;
  auto at_least = [&](const char* key, int64_t v, int64_t min) {
    if (v < min) r.fail_key(key, fmt::format("must be >= {}, got {}", min, v));
    return v;
  };
  t.total_steps = at_least("total_steps", r.get("total_steps", t.total_steps), 1);
  t.global_batch = at_least("global_batch", r.get("global_batch", t.global_batch), 1);
  t.micro_batch = at_least("micro_batch", r.get("micro_batch", t.micro_batch), 1);
  if (t.global_batch % t.micro_batch != 0)
    r.fail_key("micro_batch", fmt::format("{} does not divide global_batch {} (gradient accumulation needs "
                                          "global_batch = k * micro_batch)",
                                          t.micro_batch, t.global_batch));
  t.val_interval = at_least("val_interval", r.get("val_interval", t.val_interval), 0);
  t.val_batches = at_least("val_batches", r.get("val_batches", t.val_batches), 0);
  t.val_micro_batch = at_least("val_micro_batch", r.get("val_micro_batch", t.micro_batch), 1);
  t.save_interval = at_least("save_interval", r.get("save_interval", t.save_interval), 0);
  t.keep_last = at_least("keep_last", r.get("keep_last", t.keep_last), 0);
  t.out_dir = r.get("out_dir", t.out_dir);
  if (t.out_dir.empty()) r.fail_key("out_dir", "must not be empty");
  t.seed = static_cast<uint64_t>(at_least("seed", r.get<int64_t>("seed", static_cast<int64_t>(t.seed)), 0));
  t.device = r.get("device", t.device);
  if (t.device != "cpu" && t.device != "cuda" && t.device.rfind("cuda:", 0) != 0)
    r.fail_key("device", fmt::format("unknown device '{}' (cpu | cuda | cuda:N)", t.device));
  t.dtype = r.get("dtype", t.dtype);
  if (t.dtype == "bf16") t.dtype = "bfloat16";
  if (t.dtype == "fp32") t.dtype = "float32";
  if (t.dtype != "float32" && t.dtype != "bfloat16")
    r.fail_key("dtype", fmt::format("unknown dtype '{}' (float32 | bfloat16)", t.dtype));
  t.activation_checkpointing = r.get("activation_checkpointing", t.activation_checkpointing);
  t.memory_check = r.get("memory_check", t.memory_check);
  t.expert_dispatch = r.get("expert_dispatch", t.expert_dispatch);
  if (!is_expert_dispatch_name(t.expert_dispatch))
    r.fail_key("expert_dispatch", fmt::format("unknown dispatch '{}' ({})", t.expert_dispatch, kExpertDispatchChoices));
  t.log_interval = at_least("log_interval", r.get("log_interval", t.log_interval), 1);
  t.tensorboard = r.get("tensorboard", t.tensorboard);
  t.peak_tflops = r.get("peak_tflops", t.peak_tflops);
  if (!(t.peak_tflops >= 0) || !std::isfinite(t.peak_tflops))
    r.fail_key("peak_tflops", fmt::format("must be >= 0 (0: unknown), got {}", t.peak_tflops));
  t.threads = static_cast<int>(at_least("threads", r.get<int>("threads", t.threads), 0));
  if (r.is_null("resume")) {
    r.ignore("resume");
  } else {
    const std::string resume = r.get<std::string>("resume", t.resume);
    if (resume.empty()) r.fail_key("resume", "expected never, auto or a checkpoint directory");
    t.resume = resume == "false" ? "never" : resume == "true" ? "auto" : resume;
  }
  t.router_bias_update_rate = r.get("router_bias_update_rate", t.router_bias_update_rate);
  if (!(t.router_bias_update_rate >= 0) || !std::isfinite(t.router_bias_update_rate))
    r.fail_key("router_bias_update_rate", fmt::format("must be >= 0, got {}", t.router_bias_update_rate));
  if (r.is_null("init_from")) r.ignore("init_from");
  else t.init_from = r.get("init_from", t.init_from);
  if (!t.init_from.empty() && t.resume != "never" && t.resume != "auto")
    r.fail_key("init_from",
               fmt::format("a run starts either from trainer.resume ({}) or from init_from, not both", t.resume));
  t.dist_timeout_s = r.get("dist_timeout_s", t.dist_timeout_s);
  if (!(t.dist_timeout_s > 0) || !std::isfinite(t.dist_timeout_s))
    r.fail_key("dist_timeout_s", fmt::format("must be > 0 seconds, got {}", t.dist_timeout_s));
  t.dist_bucket_mb = r.get("dist_bucket_mb", t.dist_bucket_mb);
  if (!(t.dist_bucket_mb > 0) || !std::isfinite(t.dist_bucket_mb))
    r.fail_key("dist_bucket_mb", fmt::format("must be > 0 MB, got {}", t.dist_bucket_mb));
  t.dist_overlap = r.get("dist_overlap", t.dist_overlap);
  r.finish();
  return t;
}

}  // namespace

namespace {

// Every key a section's parser reads, found by running it over the section's defaults (what
// finish() would accept). A parser that rejects its defaults (data: no inputs) has read every
// key before that check.
template <typename Parse>
std::set<std::string> keys_read_by(Parse parse, const YAML::Node& defaults, const std::string& section) {
  ConfigReader reader(defaults, "(defaults)", section);
  try {
    parse(reader);
  } catch (const Error&) {
  }
  return reader.known_keys();
}

// The unknown key to report instead of a value error: a typo ("micro_bach") leaves a default in
// place that a later check may trip over, and the typo is the mistake to name.
void throw_first_unknown_key(const YAML::Node& root, const std::string& file,
                             std::shared_ptr<const KeyOrigins> origins) {
  TrainConfig defaults;
  YAML::Node model_defaults;
  model_config_to_yaml(defaults.model, model_defaults);
  const YAML::Node resolved = YAML::Load(train_config_to_yaml(defaults));
  std::map<std::string, std::set<std::string>> known;
  known["model"] = keys_read_by([](ConfigReader& r) { parse_model_config(r); }, model_defaults, "model");
  known["model"].insert("from");
  known["data"] = keys_read_by([](ConfigReader& r) { parse_data_config(r); }, resolved["data"], "data");
  known["optim"] = keys_read_by([](ConfigReader& r) { parse_optim(r); }, resolved["optim"], "optim");
  known["trainer"] = keys_read_by([](ConfigReader& r) { parse_trainer(r); }, resolved["trainer"], "trainer");
  for (const auto& [section, keys] : known) {
    const YAML::Node node = root[section];
    if (!node || !node.IsMap()) continue;
    ConfigReader reader(node, file, section);
    reader.set_key_origins(origins);
    for (const auto& key : keys) reader.ignore(key);
    reader.finish();  // throws naming the first unknown key and the nearest known one
  }
}

// Loads `path` with its `base:` chain merged underneath: mappings merge key by key, anything
// else (scalars, lists) is replaced. `origins` receives the location of every key that came
// from a base file.
YAML::Node load_with_bases(const std::string& path, KeyOrigins& origins, std::vector<std::string>& chain) {
  YAML::Node doc = load_yaml_file(path);
  if (!doc.IsMap()) fail("{}: expected a mapping with sections model, data, optim, trainer", path);
  const YAML::Node base_key = doc["base"];
  if (!base_key) return doc;
  const int line = base_key.Mark().line + 1;
  if (!base_key.IsScalar() || base_key.Scalar().empty())
    fail("{}:{}: base: expected the path of another run config", path, line);
  fs::path base = base_key.Scalar();
  if (base.is_relative()) base = fs::path(path).parent_path() / base;
  const std::string base_path = base.lexically_normal().string();
  if (!fs::exists(base_path)) fail("{}:{}: base: {} not found (relative to this file)", path, line, base_path);
  for (const auto& seen : chain)
    if (fs::equivalent(seen, base_path))
      fail("{}:{}: base: {} is already in the chain (a cycle)", path, line, base_path);
  chain.push_back(base_path);
  KeyOrigins base_origins;
  YAML::Node merged = load_with_bases(base_path, base_origins, chain);  // not cloned: keep the lines

  // Every leaf of the base, with where it came from; the leaves this file sets are erased below.
  std::function<void(const YAML::Node&, const std::string&)> note = [&](const YAML::Node& n, const std::string& key) {
    if (n.IsMap() && n.size() > 0) {
      for (const auto& kv : n) note(kv.second, key + "." + kv.first.as<std::string>());
      return;
    }
    auto it = base_origins.find(key);
    origins[key] = it != base_origins.end() ? it->second : fmt::format("{}:{}", base_path, n.Mark().line + 1);
  };
  for (const auto& kv : merged) note(kv.second, kv.first.as<std::string>());

  std::function<void(YAML::Node, const YAML::Node&, const std::string&)> overlay =
      [&](YAML::Node into, const YAML::Node& from, const std::string& prefix) {
        for (const auto& kv : from) {
          const std::string key = kv.first.as<std::string>();
          if (prefix.empty() && key == "base") continue;
          const std::string dotted = prefix.empty() ? key : prefix + "." + key;
          if (kv.second.IsMap() && into[key] && into[key].IsMap()) {
            overlay(into[key], kv.second, dotted);
            continue;
          }
          into[key] = kv.second;
          for (auto it = origins.begin(); it != origins.end();)
            it = it->first == dotted || it->first.rfind(dotted + ".", 0) == 0 ? origins.erase(it) : std::next(it);
        }
      };
  overlay(merged, doc, "");
  return merged;
}

TrainConfig parse_with_origins(const YAML::Node& root, const std::string& file,
                               std::shared_ptr<const KeyOrigins> origins) {
  if (!root || !root.IsMap()) fail("{}: expected a mapping with sections model, data, optim, trainer", file);
  ConfigReader top(root, file);
  top.set_key_origins(origins);
  TrainConfig c;
  c.source = file;
  try {
    {
      ConfigReader model = top.section("model");
      c.model = parse_model_section(model, &c);
    }
    {
      if (!top.has("data")) top.fail_key("data", "the data section is required (train_files or prepared_dir)");
      ConfigReader data = top.section("data");
      c.data = parse_data_config(data);
    }
    {
      ConfigReader optim = top.section("optim");
      c.optim = parse_optim(optim);
    }
    ConfigReader trainer = top.section("trainer");
    c.trainer = parse_trainer(trainer);
  } catch (const Error&) {
    throw_first_unknown_key(root, file, origins);
    throw;
  }
  top.finish();

  if (c.optim.resolved_warmup_steps(c.trainer.total_steps) > c.trainer.total_steps) {
    ConfigReader optim = top.section("optim");
    optim.fail_key("warmup_steps",
                   fmt::format("{} exceeds trainer.total_steps {}", *c.optim.warmup_steps, c.trainer.total_steps));
  }
  if (c.data.max_length > c.model.max_position_embeddings) {
    ConfigReader data = top.section("data");
    data.fail_key("max_length", fmt::format("{} exceeds model.max_position_embeddings {}", c.data.max_length,
                                            c.model.max_position_embeddings));
  }
  return c;
}

}  // namespace

TrainConfig parse_train_config(const YAML::Node& root, const std::string& file) {
  return parse_with_origins(root, file, nullptr);
}

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  auto origins = std::make_shared<KeyOrigins>();
  std::vector<std::string> chain{path};
  YAML::Node root = load_with_bases(path, *origins, chain);
  for (const auto& o : overrides) {
    const std::string key = apply_override(root, o);
    for (auto it = origins->begin(); it != origins->end();)
      it = it->first == key || it->first.rfind(key + ".", 0) == 0 ? origins->erase(it) : std::next(it);
    (*origins)[key] = fmt::format("{}: --set {}", path, o);
  }
  return parse_with_origins(root, path, origins);
}

namespace {

YAML::Node string_list(const std::vector<std::string>& v) {
  YAML::Node n(YAML::NodeType::Sequence);
  for (const auto& s : v) n.push_back(s);
  return n;
}

YAML::Node null_node() { return YAML::Node(YAML::NodeType::Null); }

// yaml-cpp writes doubles with 17 significant digits (3e-4 -> 0.00029999999999999997); rewrite
// every non-integer number in the shortest form that reads back to the same double.
void tidy_numbers(YAML::Node node) {
  if (node.IsMap()) {
    for (auto kv : node) tidy_numbers(kv.second);
  } else if (node.IsSequence()) {
    for (auto item : node) tidy_numbers(item);
  } else if (node.IsScalar()) {
    const std::string s = node.Scalar();
    if (s.find_first_of(".eE") == std::string::npos || s.find_first_not_of("0123456789.eE+-") != std::string::npos)
      return;
    try {
      size_t pos = 0;
      const double v = std::stod(s, &pos);
      if (pos == s.size() && std::isfinite(v)) node = fmt::format("{}", v);
    } catch (...) {
    }
  }
}

// Every field of DataConfig under the key parse_data_config reads it from.
YAML::Node data_to_yaml(const DataConfig& d) {
  YAML::Node n;
  n["train_files"] = string_list(d.train_files);
  n["val_files"] = string_list(d.val_files);
  n["prepared_dir"] = d.prepared_dir;
  n["tokenizer"] = d.tokenizer;
  n["text_keys"] = string_list(d.text.text_keys);
  n["template"] = d.text.template_text ? YAML::Node(*d.text.template_text) : null_node();
  n["val_count"] = d.split.val_count ? YAML::Node(*d.split.val_count) : null_node();
  n["val_fraction"] = d.split.val_fraction ? YAML::Node(*d.split.val_fraction) : null_node();
  n["split_seed"] = static_cast<int64_t>(d.split.seed);
  n["split_rng"] = to_string(d.split.rng);
  n["group_by"] = d.split.group_by.empty() ? null_node() : YAML::Node(d.split.group_by);
  n["max_length"] = d.max_length;
  n["truncation"] = to_string(d.truncation);
  n["packing"] = d.packing;
  n["add_eos"] = d.add_eos;
  n["shuffle"] = d.shuffle;
  n["threads"] = d.threads;
  return n;
}

}  // namespace

std::string train_config_to_yaml(const TrainConfig& c) {
  YAML::Node root;
  YAML::Node model;
  model_config_to_yaml(c.model, model);
  tidy_numbers(model);
  root["model"] = model;
  root["data"] = data_to_yaml(c.data);

  YAML::Node optim;
  optim["lr"] = c.optim.lr;
  YAML::Node betas(YAML::NodeType::Sequence);
  betas.push_back(c.optim.beta1);
  betas.push_back(c.optim.beta2);
  betas.SetStyle(YAML::EmitterStyle::Flow);
  optim["betas"] = betas;
  optim["weight_decay"] = c.optim.weight_decay;
  optim["eps"] = c.optim.eps;
  if (c.optim.warmup_steps) optim["warmup_steps"] = *c.optim.warmup_steps;
  else optim["warmup_ratio"] = c.optim.warmup_ratio ? *c.optim.warmup_ratio : 0.1;
  optim["schedule"] = to_string(c.optim.schedule);
  optim["min_lr"] = c.optim.min_lr;
  optim["clip_grad"] = c.optim.clip_grad;
  optim["decay"] = to_string(c.optim.decay);
  tidy_numbers(optim);
  root["optim"] = optim;

  const TrainerConfig& t = c.trainer;
  YAML::Node trainer;
  trainer["total_steps"] = t.total_steps;
  trainer["global_batch"] = t.global_batch;
  trainer["micro_batch"] = t.micro_batch;
  trainer["val_interval"] = t.val_interval;
  trainer["val_batches"] = t.val_batches;
  trainer["val_micro_batch"] = t.val_micro_batch;
  trainer["save_interval"] = t.save_interval;
  trainer["keep_last"] = t.keep_last;
  trainer["out_dir"] = t.out_dir;
  trainer["seed"] = static_cast<int64_t>(t.seed);
  trainer["device"] = t.device;
  trainer["dtype"] = t.dtype;
  trainer["activation_checkpointing"] = t.activation_checkpointing;
  trainer["memory_check"] = t.memory_check;
  trainer["expert_dispatch"] = t.expert_dispatch;
  trainer["log_interval"] = t.log_interval;
  trainer["tensorboard"] = t.tensorboard;
  trainer["peak_tflops"] = fmt::format("{}", t.peak_tflops);
  trainer["threads"] = t.threads;
  trainer["resume"] = t.resume;
  trainer["router_bias_update_rate"] = fmt::format("{}", t.router_bias_update_rate);
  trainer["init_from"] = t.init_from.empty() ? null_node() : YAML::Node(t.init_from);
  // Shortest round-trip form (not tidy_numbers over the section: out_dir or resume may look numeric).
  trainer["dist_timeout_s"] = fmt::format("{}", t.dist_timeout_s);
  trainer["dist_bucket_mb"] = fmt::format("{}", t.dist_bucket_mb);
  trainer["dist_overlap"] = t.dist_overlap;
  root["trainer"] = trainer;

  YAML::Emitter out;
  out << root;
  return std::string("# Resolved coe-train configuration: every key with its value in effect.\n") + out.c_str() + "\n";
}

}  // namespace coe
