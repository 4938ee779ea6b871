#include "coe/train/train_config.h"

#include "coe/model/dispatch_name.h"

#include "coe/util/config_reader.h"
#include "coe/util/data_root.h"
#include "coe/util/error.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>

namespace fs = std::filesystem;

namespace coe {

namespace {

const EnumName<LrScheduleKind> kScheduleNames[] = {
    {LrScheduleKind::kConstant, "constant"},
    {LrScheduleKind::kCosine, "cosine"},
    {LrScheduleKind::kLinear, "linear"},
};
const EnumName<DecayMode> kDecayNames[] = {
    {DecayMode::kAll, "all"},
    {DecayMode::kNoNormsBiases, "no_norms_biases"},
};

}  // namespace

const char* to_string(LrScheduleKind kind) { return enum_name(kScheduleNames, kind); }

const char* to_string(DecayMode mode) { return enum_name(kDecayNames, mode); }

int64_t OptimConfig::resolved_warmup_steps(int64_t total_steps) const {
  if (warmup_steps) return *warmup_steps;
  const double ratio = warmup_ratio ? *warmup_ratio : 0.1;
  return static_cast<int64_t>(std::floor(ratio * static_cast<double>(total_steps)));
}

namespace {

// model.from: a path like any other (relative to the file that wrote it), read at once.
std::string resolve_from(const ConfigReader& model, const std::string& from) {
  std::string path;
  try {
    path = resolve_config_path(from, model.path_base("from"));
  } catch (const Error& e) {
    model.fail_key("from", e.what());
  }
  check_path_exists(model.where("from"), path);
  return path;
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
    base = load_yaml_file(path);  // bounded in size (and nesting, for JSON)
  } catch (const Error& e) {
    model.fail_key("from", e.what());
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

// Rules of visit_fields: why a value is invalid, "" when it is fine.
auto at_least(int64_t min) {
  return [min](int64_t v) { return v < min ? fmt::format("must be >= {}, got {}", min, v) : std::string(); };
}

template <typename Ok>
auto finite_and(Ok ok, const char* bound) {
  return [ok, bound](double v) {
    return ok(v) && std::isfinite(v) ? std::string() : fmt::format("must be {}, got {}", bound, v);
  };
}

// Every key of the optim: section, in the order config.yaml lists them.
template <class V>
void visit_fields(OptimConfig& o, V& v) {
  v.field("lr", o.lr, finite_and([](double lr) { return lr > 0; }, "> 0"));
  std::vector<double> betas{o.beta1, o.beta2};
  v.field(
      "betas", betas,
      [](const std::vector<double>& b) {
        return b.size() == 2 ? std::string() : fmt::format("expected two values [beta1, beta2], got {}", b.size());
      },
      [](const std::vector<double>& b) {
        for (double x : b)
          if (!(x >= 0.0 && x < 1.0)) return fmt::format("each beta must be in [0, 1), got {}", x);
        return std::string();
      });
  o.beta1 = betas[0];
  o.beta2 = betas[1];
  v.field("weight_decay", o.weight_decay,
          [](double w) { return w >= 0 ? std::string() : fmt::format("must be >= 0, got {}", w); });
  v.field("eps", o.eps, [](double e) { return e > 0 ? std::string() : fmt::format("must be > 0, got {}", e); });
  // At most one of warmup_ratio / warmup_steps is read; the one in effect is written.
  if constexpr (V::kReads) {
    ConfigReader& r = v.reader();
    v.field("warmup_ratio", o.warmup_ratio);
    v.field("warmup_steps", o.warmup_steps);
    if (o.warmup_ratio && o.warmup_steps) r.fail_key("warmup_steps", "set warmup_ratio or warmup_steps, not both");
    if (o.warmup_ratio && !(*o.warmup_ratio >= 0.0 && *o.warmup_ratio <= 1.0))
      r.fail_key("warmup_ratio", fmt::format("must be in [0, 1], got {}", *o.warmup_ratio));
    if (o.warmup_steps && *o.warmup_steps < 0)
      r.fail_key("warmup_steps", fmt::format("must be >= 0, got {}", *o.warmup_steps));
  } else if (o.warmup_steps) {
    v.field("warmup_steps", o.warmup_steps);
  } else {
    double ratio = o.warmup_ratio.value_or(0.1);
    v.field("warmup_ratio", ratio);
  }
  v.choice("schedule", o.schedule, kScheduleNames, [](const std::string& s) {
    return fmt::format("unknown schedule '{}' ({})", s, join_names(kScheduleNames, " | "));
  });
  v.field("min_lr", o.min_lr, [&](double m) {
    return m >= 0 && m <= o.lr ? std::string() : fmt::format("must be in [0, lr={}], got {}", o.lr, m);
  });
  v.field("clip_grad", o.clip_grad, [](double c) {
    return c >= 0 ? std::string() : fmt::format("must be >= 0 (0 disables clipping), got {}", c);
  });
  v.choice("decay", o.decay, kDecayNames, [](const std::string& s) {
    return fmt::format("unknown value '{}' ({})", s, join_names(kDecayNames, " | "));
  });
}

// Every key of the trainer: section, in the order config.yaml lists them.
template <class V>
void visit_fields(TrainerConfig& t, V& v) {
  v.field("total_steps", t.total_steps, at_least(1));
  v.field("global_batch", t.global_batch, at_least(1));
  v.field("micro_batch", t.micro_batch, at_least(1), [&](int64_t m) {
    return t.global_batch % m == 0 ? std::string()
                                   : fmt::format("{} does not divide global_batch {} (gradient accumulation needs "
                                                 "global_batch = k * micro_batch)",
                                                 m, t.global_batch);
  });
  v.field("val_interval", t.val_interval, at_least(0));
  v.field("val_batches", t.val_batches, at_least(0));
  v.field("val_micro_batch", t.val_micro_batch, fallback(t.micro_batch), at_least(1));
  v.field("save_interval", t.save_interval, at_least(0));
  v.field("keep_last", t.keep_last, at_least(0));
  v.field("out_dir", t.out_dir, kPath,
          [](const std::string& d) { return d.empty() ? "must not be empty" : std::string(); });
  v.field("seed", t.seed, at_least(0));
  v.field("device", t.device, [](const std::string& d) {
    return d == "cpu" || d == "cuda" || d.rfind("cuda:", 0) == 0
               ? std::string()
               : fmt::format("unknown device '{}' (cpu | cuda | cuda:N)", d);
  });
  v.field("dtype", t.dtype, [](std::string& d) {
    if (d == "bf16") d = "bfloat16";
    if (d == "fp32") d = "float32";
    return d == "float32" || d == "bfloat16" ? std::string()
                                             : fmt::format("unknown dtype '{}' (float32 | bfloat16)", d);
  });
  v.field("activation_checkpointing", t.activation_checkpointing);
  v.field("memory_check", t.memory_check);
  v.field("expert_dispatch", t.expert_dispatch, [](const std::string& d) {
    return is_expert_dispatch_name(d) ? std::string()
                                      : fmt::format("unknown dispatch '{}' ({})", d, kExpertDispatchChoices);
  });
  v.field("log_interval", t.log_interval, at_least(1));
  v.field("tensorboard", t.tensorboard);
  v.field("peak_tflops", t.peak_tflops, finite_and([](double p) { return p >= 0; }, ">= 0 (0: unknown)"));
  v.field("threads", t.threads, at_least(0));
  // null: the default; false / true: never / auto.
  v.field("resume", t.resume, null_is(t.resume), path_or({"never", "auto", "false", "true"}), [](std::string& r) {
    if (r.empty()) return std::string("expected never, auto or a checkpoint directory");
    r = r == "false" ? "never" : r == "true" ? "auto" : r;
    return std::string();
  });
  v.field("router_bias_update_rate", t.router_bias_update_rate, finite_and([](double r) { return r >= 0; }, ">= 0"));
  v.field("init_from", t.init_from, kEmptyIsNull, kPath, [&](const std::string& from) {
    return from.empty() || t.resume == "never" || t.resume == "auto"
               ? std::string()
               : fmt::format("a run starts either from trainer.resume ({}) or from init_from, not both", t.resume);
  });
  v.field("dist_timeout_s", t.dist_timeout_s, finite_and([](double s) { return s > 0; }, "> 0 seconds"));
  v.field("dist_bucket_mb", t.dist_bucket_mb, finite_and([](double mb) { return mb > 0; }, "> 0 MB"));
  v.field("dist_overlap", t.dist_overlap);
}

// Every key of the parallel: section.
template <class V>
void visit_fields(ParallelConfig& p, V& v) {
  v.field("expert_parallel", p.expert_parallel, at_least(1));
  v.field("shard_optimizer", p.shard_optimizer);
}

template <typename Config>
Config read_section(ConfigReader& r) {
  Config c;
  FieldReader reader(r);
  visit_fields(c, reader);
  r.finish();
  return c;
}

OptimConfig parse_optim(ConfigReader& r) { return read_section<OptimConfig>(r); }

TrainerConfig parse_trainer(ConfigReader& r) { return read_section<TrainerConfig>(r); }

ParallelConfig parse_parallel(ConfigReader& r) { return read_section<ParallelConfig>(r); }

}  // namespace

namespace {

// Drops `key` and the keys below it from a map of dotted keys (KeyOrigins, KeyDirs).
void forget(std::map<std::string, std::string>& keys, const std::string& key) {
  for (auto it = keys.begin(); it != keys.end();)
    it = it->first == key || it->first.rfind(key + ".", 0) == 0 ? keys.erase(it) : std::next(it);
}

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
  known["parallel"] = keys_read_by([](ConfigReader& r) { parse_parallel(r); }, resolved["parallel"], "parallel");
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
// from a base file, `dirs` that file's directory (its relative paths are relative to it).
YAML::Node load_with_bases(const std::string& path, KeyOrigins& origins, KeyDirs& dirs,
                           std::vector<std::string>& chain) {
  YAML::Node doc = load_yaml_file(path);
  if (!doc.IsMap()) fail("{}: expected a mapping with sections model, data, optim, trainer, parallel", path);
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
  KeyDirs base_dirs;
  YAML::Node merged = load_with_bases(base_path, base_origins, base_dirs, chain);  // not cloned: keep the lines

  // Every leaf of the base, with where it came from; the leaves this file sets are erased below.
  std::function<void(const YAML::Node&, const std::string&)> note = [&](const YAML::Node& n, const std::string& key) {
    if (n.IsMap() && n.size() > 0) {
      for (const auto& kv : n) note(kv.second, key + "." + key_text(kv.first, base_path));
      return;
    }
    auto it = base_origins.find(key);
    origins[key] = it != base_origins.end() ? it->second : fmt::format("{}:{}", base_path, n.Mark().line + 1);
    auto dir = base_dirs.find(key);
    dirs[key] = dir != base_dirs.end() ? dir->second : fs::path(base_path).parent_path().string();
  };
  for (const auto& kv : merged) note(kv.second, key_text(kv.first, base_path));

  std::function<void(YAML::Node, const YAML::Node&, const std::string&)> overlay =
      [&](YAML::Node into, const YAML::Node& from, const std::string& prefix) {
        for (const auto& kv : from) {
          const std::string key = key_text(kv.first, path);
          if (prefix.empty() && key == "base") continue;
          const std::string dotted = prefix.empty() ? key : prefix + "." + key;
          if (kv.second.IsMap() && into[key] && into[key].IsMap()) {
            overlay(into[key], kv.second, dotted);
            continue;
          }
          into[key] = kv.second;
          forget(origins, dotted);
          forget(dirs, dotted);
        }
      };
  overlay(merged, doc, "");
  return merged;
}

TrainConfig parse_with_origins(const YAML::Node& root, const std::string& file,
                               std::shared_ptr<const KeyOrigins> origins, std::shared_ptr<const KeyDirs> dirs) {
  if (!root || !root.IsMap()) fail("{}: expected a mapping with sections model, data, optim, trainer, parallel", file);
  ConfigReader top(root, file);
  top.set_key_origins(origins);
  top.set_key_dirs(dirs);
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
    {
      ConfigReader trainer = top.section("trainer");
      c.trainer = parse_trainer(trainer);
    }
    ConfigReader parallel = top.section("parallel");
    c.parallel = parse_parallel(parallel);
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
  if (c.model.n_routed_experts % c.parallel.expert_parallel != 0) {
    ConfigReader parallel = top.section("parallel");
    parallel.fail_key("expert_parallel", fmt::format("{} does not divide model.n_routed_experts {}",
                                                     c.parallel.expert_parallel, c.model.n_routed_experts));
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
  return parse_with_origins(root, file, nullptr, nullptr);
}

namespace {

// Applies the overrides to `root`, noting where each overridden key now comes from; their paths
// are relative to the working directory, as a user typing them expects.
void apply_overrides(YAML::Node root, const std::string& file, const std::vector<std::string>& overrides,
                     const std::vector<std::string>& override_origins, KeyOrigins& origins, KeyDirs& dirs) {
  for (size_t i = 0; i < overrides.size(); ++i) {
    const std::string& o = overrides[i];
    const bool located = i < override_origins.size();
    std::string key;
    try {
      key = apply_override(root, o);
    } catch (const Error& e) {
      if (!located) throw;
      fail("{}: {}", override_origins[i], e.what());
    }
    forget(origins, key);
    forget(dirs, key);
    origins[key] = located ? override_origins[i] : fmt::format("{}: --set {}", file, o);
    dirs[key] = "";
  }
}

}  // namespace

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides,
                              const std::vector<std::string>& override_origins) {
  auto origins = std::make_shared<KeyOrigins>();
  auto dirs = std::make_shared<KeyDirs>();
  std::vector<std::string> chain{path};
  YAML::Node root = load_with_bases(path, *origins, *dirs, chain);
  apply_overrides(root, path, overrides, override_origins, *origins, *dirs);
  return parse_with_origins(root, path, origins, dirs);
}

TrainConfig parse_train_config(YAML::Node root, const std::string& file, const std::vector<std::string>& overrides,
                               const std::vector<std::string>& override_origins) {
  auto origins = std::make_shared<KeyOrigins>();
  auto dirs = std::make_shared<KeyDirs>();
  if (root.IsMap()) apply_overrides(root, file, overrides, override_origins, *origins, *dirs);
  return parse_with_origins(root, file, origins, dirs);
}

const PathKeys& config_path_keys() {
  static const PathKeys keys = [] {
    PathKeys out{{"model.from", {}}};
    for (const auto& [key, words] : data_path_keys()) out["data." + key] = words;
    TrainerConfig t;
    PathKeyLister lister;
    visit_fields(t, lister);
    for (const auto& [key, words] : lister.keys()) out["trainer." + key] = words;
    return out;
  }();
  return keys;
}

namespace {

// The paths of `value` (a scalar or a list of them) of the path key `key`, resolved against `dir`.
void resolve_value_paths(YAML::Node value, const std::vector<std::string>& words, const std::string& dir) {
  const auto resolve = [&](YAML::Node n) {
    if (!n.IsScalar() || n.Scalar().empty()) return;
    if (std::find(words.begin(), words.end(), n.Scalar()) != words.end()) return;
    n = resolve_config_path(n.Scalar(), dir);
  };
  if (value.IsSequence()) {
    for (YAML::Node item : value) resolve(item);
  } else {
    resolve(value);
  }
}

}  // namespace

std::string resolve_override_paths(const std::string& assignment, const std::string& file) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos) return assignment;
  const auto key = config_path_keys().find(assignment.substr(0, eq));
  if (key == config_path_keys().end()) return assignment;
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(eq + 1));
  } catch (const YAML::Exception&) {
    return assignment;  // load_train_config reports it
  }
  if (!value.IsScalar() && !value.IsSequence()) return assignment;
  resolve_value_paths(value, key->second, fs::path(file).parent_path().string());
  YAML::Emitter e;
  e << YAML::Flow << value;
  return key->first + "=" + e.c_str();
}

void resolve_document_paths(YAML::Node root, const std::string& file) {
  if (!root.IsMap()) return;
  const std::string dir = fs::path(file).parent_path().string();
  for (const auto& [dotted, words] : config_path_keys()) {
    const size_t dot = dotted.find('.');
    const YAML::Node section = static_cast<const YAML::Node&>(root)[dotted.substr(0, dot)];
    if (!section || !section.IsMap()) continue;
    const YAML::Node value = section[dotted.substr(dot + 1)];
    if (!value) continue;
    try {
      resolve_value_paths(value, words, dir);
    } catch (const Error& e) {
      fail("{}:{}: {}: {}", file, value.Mark().line + 1, dotted, e.what());
    }
  }
}

namespace {

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

}  // namespace

std::string train_config_to_yaml(const TrainConfig& c) {
  YAML::Node root;
  YAML::Node model;
  model_config_to_yaml(c.model, model);
  tidy_numbers(model);
  root["model"] = model;
  YAML::Node data;
  data_config_to_yaml(c.data, data);
  root["data"] = data;

  YAML::Node optim;
  OptimConfig o = c.optim;  // visit_fields takes a mutable config (it also reads)
  YamlWriter optim_writer(optim);
  visit_fields(o, optim_writer);
  tidy_numbers(optim);
  root["optim"] = optim;

  // Shortest round-trip form for the doubles (not tidy_numbers over the section: out_dir or
  // resume may look numeric).
  YAML::Node trainer;
  TrainerConfig t = c.trainer;
  YamlWriter trainer_writer(trainer, /*shortest_doubles=*/true);
  visit_fields(t, trainer_writer);
  root["trainer"] = trainer;

  YAML::Node parallel;
  ParallelConfig p = c.parallel;
  YamlWriter parallel_writer(parallel);
  visit_fields(p, parallel_writer);
  root["parallel"] = parallel;

  YAML::Emitter out;
  out << root;
  return std::string("# Resolved coe-train configuration: every key with its value in effect.\n") + out.c_str() + "\n";
}

std::vector<std::string> changed_config_keys(const std::string& yaml_a, const std::string& yaml_b) {
  std::map<std::string, std::string> flat_a, flat_b;
  std::function<void(const YAML::Node&, const std::string&, std::map<std::string, std::string>&)> flatten =
      [&](const YAML::Node& n, const std::string& key, std::map<std::string, std::string>& out) {
        if (n.IsMap()) {
          for (const auto& kv : n) flatten(kv.second, (key.empty() ? "" : key + ".") + kv.first.as<std::string>(), out);
          return;
        }
        YAML::Emitter e;
        e << YAML::Flow << n;
        out[key] = e.c_str();
      };
  std::vector<std::string> out;
  try {
    flatten(YAML::Load(yaml_a), "", flat_a);
    flatten(YAML::Load(yaml_b), "", flat_b);
  } catch (const YAML::Exception&) {
    return {"(the configuration could not be read)"};
  }
  for (const auto& [key, value] : flat_a) {
    auto it = flat_b.find(key);
    const std::string other = it == flat_b.end() ? "-" : it->second;
    if (other != value) out.push_back(fmt::format("{} ({} -> {})", key, value, other));
  }
  for (const auto& [key, value] : flat_b)
    if (!flat_a.count(key)) out.push_back(fmt::format("{} (- -> {})", key, value));
  return out;
}

}  // namespace coe
