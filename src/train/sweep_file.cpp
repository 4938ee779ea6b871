#include "coe/train/sweep.h"

#include "coe/util/config_reader.h"
#include "coe/util/data_root.h"
#include "coe/util/error.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>

// load_sweep, torch-free (the fuzz target fuzz/fuzz_run_config.cpp compiles this file alone).

namespace fs = std::filesystem;

namespace coe {
namespace {

bool valid_name(const std::string& s) {
  if (s.empty() || s == "." || s == "..") return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  });
}

// "section.key" or "section.key.sub": a letter first, then letters, digits, '_' and '.'. It becomes
// an argument of coe-train (--set KEY=VALUE), so it must never read as an option.
bool valid_override_key(const std::string& k) {
  if (k.empty() || !std::isalpha(static_cast<unsigned char>(k.front())) || k.find('.') == std::string::npos)
    return false;
  return std::all_of(k.begin(), k.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'; });
}

// A path written in the sweep file, like every path of a config file relative to the file's
// directory or under $COE_DATA (docs/training.md#paths-in-config-files); absolute once read.
std::string resolve_path(const ConfigReader& r, const std::string& key, const std::string& p) {
  try {
    return resolve_config_path(p, r.path_base(key));
  } catch (const Error& e) {
    r.fail_key(key, e.what());
  }
}

// A config file the sweep file names (base, a variant's config).
std::string resolve_config_file(const ConfigReader& r, const std::string& key, const std::string& p) {
  const std::string path = resolve_path(r, key, p);
  if (!fs::exists(path)) r.fail_key(key, fmt::format("'{}' not found ({}: relative to this file)", p, path));
  return path;
}

std::string emit_value(const YAML::Node& value) {
  YAML::Emitter e;
  e << YAML::Flow << value;
  return e.c_str();
}

// Bounds on a flattened `overrides:` map. YAML aliases let a few lines name a map of maps with
// billions of leaves (`a1: &a1 {k0: *a0, k1: *a0, ...}`); flattening it must stop early.
constexpr size_t kMaxOverrides = 10000;
constexpr int kMaxOverrideDepth = 16;

// "file:line: what" of a node in the sweep file: where an override is written.
std::string origin_of(const ConfigReader& r, const YAML::Node& node, const std::string& what) {
  const int line = node.Mark().line >= 0 ? node.Mark().line + 1 : 0;
  return line > 0 ? fmt::format("{}:{}: {}", r.file(), line, what) : fmt::format("{}: {}", r.file(), what);
}

struct Overrides {
  std::vector<std::string> assignments;  // "section.key=value"
  std::vector<std::string> origins;      // where each is written (origin_of)
};

// `overrides:` as a map (`section.key: value`, nested maps flattened) or a list of "k=v" strings.
// `key` is its key in `r`, `what` its dotted path in the sweep file ("variants.b.overrides").
void flatten(const ConfigReader& r, const std::string& key, const std::string& what, const YAML::Node& node,
             const std::string& prefix, int depth, Overrides* out) {
  if (depth > kMaxOverrideDepth) r.fail_key(key, fmt::format("nested deeper than {} levels", kMaxOverrideDepth));
  for (const auto& kv : node) {
    const std::string name = key_text(kv.first, r.file());
    const std::string dotted = prefix.empty() ? name : prefix + "." + name;
    if (kv.second.IsMap() && kv.second.size() > 0) {
      flatten(r, key, what, kv.second, dotted, depth + 1, out);
    } else {
      out->assignments.push_back(dotted + "=" + emit_value(kv.second));
      out->origins.push_back(origin_of(r, kv.first, what));
    }
    if (out->assignments.size() > kMaxOverrides) r.fail_key(key, fmt::format("more than {} overrides", kMaxOverrides));
  }
}

Overrides read_overrides(ConfigReader& r, const std::string& key, const std::string& what) {
  Overrides out;
  if (!r.has(key) || r.is_null(key)) {
    r.ignore(key);
    return out;
  }
  const YAML::Node n = r.node()[key];
  r.ignore(key);
  if (n.IsMap()) {
    flatten(r, key, what, n, "", 0, &out);
  } else if (n.IsSequence()) {
    for (size_t i = 0; i < n.size(); ++i) {
      if (!n[i].IsScalar() || n[i].Scalar().find('=') == std::string::npos || n[i].Scalar().front() == '=')
        r.fail_key(key, fmt::format("item {}: expected \"section.key=value\"", i));
      out.assignments.push_back(n[i].Scalar());
      out.origins.push_back(origin_of(r, n[i], fmt::format("{}[{}]", what, i)));
    }
  } else {
    r.fail_key(key, "expected a mapping of section.key: value or a list of \"section.key=value\" strings");
  }
  for (auto& o : out.assignments) {
    if (!valid_override_key(o.substr(0, o.find('='))))
      r.fail_key(key, fmt::format("'{}': keys are section.key (model, data, optim or trainer)", o));
    // A path here is the sweep file's: coe-train, which reads --set paths against its working
    // directory, gets it absolute.
    try {
      o = resolve_override_paths(o, r.file());
    } catch (const Error& e) {
      r.fail_key(key, fmt::format("'{}': {}", o, e.what()));
    }
  }
  return out;
}

}  // namespace

SweepSpec load_sweep(const std::string& path) {
  const YAML::Node root = load_yaml_file(path);
  if (!root.IsMap()) fail("{}: expected a mapping with base and variants", path);
  ConfigReader r(root, path);
  SweepSpec spec;
  spec.file = path;
  spec.name = r.get<std::string>("name", fs::path(path).stem().string());
  if (!valid_name(spec.name)) r.fail_key("name", fmt::format("'{}': use letters, digits, '.', '_' and '-'", spec.name));

  std::string base_path;
  if (!r.has("base") || r.is_null("base"))
    r.fail_key("base", "is required: a training config file, or an inline mapping with model/data/optim/trainer");
  {
    const YAML::Node base = root["base"];
    r.ignore("base");
    if (base.IsMap()) {
      // Written to <out_dir>/base.yaml for coe-train: with its paths resolved here, against the
      // sweep file, as resolve_variants reads them.
      YAML::Node resolved = YAML::Clone(base);
      resolve_document_paths(resolved, path);
      YAML::Emitter e;
      e << resolved;
      spec.inline_base = e.c_str();
    } else if (base.IsScalar()) {
      base_path = resolve_config_file(r, "base", base.Scalar());
    } else {
      r.fail_key("base", "expected a file name or a mapping");
    }
  }
  // Written: relative to this file; the default: to the working directory.
  spec.out_dir = "runs/sweeps/" + spec.name;
  if (r.has("out_dir")) {
    const auto out_dir = r.require<std::string>("out_dir");
    if (out_dir.empty()) r.fail_key("out_dir", "must not be empty");
    spec.out_dir = resolve_path(r, "out_dir", out_dir);
  }
  const Overrides common = read_overrides(r, "overrides", "overrides");
  {
    ConfigReader m = r.section("memory");
    spec.memory.micro_batch = m.optional<int64_t>("micro_batch");
    spec.memory.seq = m.optional<int64_t>("seq");
    spec.memory.checkpointing = m.optional<bool>("checkpointing");
    spec.memory.measure = m.get("measure", false);
    if (spec.memory.micro_batch && *spec.memory.micro_batch < 1) m.fail_key("micro_batch", "must be >= 1");
    if (spec.memory.seq && *spec.memory.seq < 1) m.fail_key("seq", "must be >= 1");
    m.finish();
  }
  {
    ConfigReader g = r.section("routing");
    spec.routing.enabled = g.get("enabled", false);
    const auto data = g.optional<std::string>("data");
    spec.routing.data = data ? resolve_path(g, "data", *data) : "";
    spec.routing.max_records = g.get<int64_t>("max_records", spec.routing.max_records);
    g.finish();
  }

  // Bounded like every list of a config: a seed is a whole training run.
  constexpr size_t kMaxSeeds = 1000;
  std::string seeds_origin;
  if (r.has("seeds") && !r.is_null("seeds")) {
    const YAML::Node seeds = root["seeds"];
    if (!seeds.IsSequence() || seeds.size() == 0 || seeds.size() > kMaxSeeds)
      r.fail_key("seeds", fmt::format("expected a list of 1 to {} integers >= 0, e.g. [1, 2, 3]", kMaxSeeds));
    spec.seeds = r.get<std::vector<int64_t>>("seeds", {});
    std::set<int64_t> seen;
    for (int64_t s : spec.seeds) {
      if (s < 0) r.fail_key("seeds", fmt::format("{}: a seed is an integer >= 0", s));
      if (!seen.insert(s).second) r.fail_key("seeds", fmt::format("{} appears twice", s));
    }
    seeds_origin = origin_of(r, seeds, "seeds");
  } else {
    r.ignore("seeds");
  }
  const auto sets_seed = [](const std::string& o) { return o.rfind("trainer.seed=", 0) == 0; };
  if (!spec.seeds.empty() && std::any_of(common.assignments.begin(), common.assignments.end(), sets_seed))
    r.fail_key("overrides", "trainer.seed: set by seeds: (each run gets one of them); remove it here");

  if (!r.has("variants")) r.fail_key("variants", "is required: a list of {name, overrides}");
  const YAML::Node list = root["variants"];
  r.ignore("variants");
  if (!list.IsSequence() || list.size() == 0) r.fail_key("variants", "expected a non-empty list of {name, overrides}");
  std::set<std::string> names;
  for (size_t i = 0; i < list.size(); ++i) {
    const YAML::Node item = list[i];
    if (!item.IsMap()) {
      ConfigReader(list, path, "variants").fail_key(std::to_string(i), "expected a mapping with name and overrides");
    }
    std::string name;
    {
      ConfigReader probe(item, path, fmt::format("variants[{}]", i));
      name = probe.require<std::string>("name");
      if (!valid_name(name))
        probe.fail_key("name", fmt::format("'{}': use letters, digits, '.', '_' and '-' (it names a directory)", name));
      if (!names.insert(name).second) probe.fail_key("name", fmt::format("variant '{}' appears twice", name));
    }
    ConfigReader v(item, path, "variants." + name);
    v.ignore("name");
    SweepVariant var;
    var.name = name;
    auto config = v.optional<std::string>("config");
    var.config = config ? resolve_config_file(v, "config", *config) : base_path;
    var.overrides = common.assignments;
    var.override_origins = common.origins;
    Overrides own = read_overrides(v, "overrides", "variants." + name + ".overrides");
    if (!spec.seeds.empty() && std::any_of(own.assignments.begin(), own.assignments.end(), sets_seed))
      v.fail_key("overrides", "trainer.seed: set by seeds: (each run gets one of them); remove it here");
    var.overrides.insert(var.overrides.end(), own.assignments.begin(), own.assignments.end());
    var.override_origins.insert(var.override_origins.end(), own.origins.begin(), own.origins.end());
    v.finish();
    var.variant = name;
    spec.variant_names.push_back(name);
    spec.variants.push_back(std::move(var));
  }
  if (!spec.seeds.empty()) {
    std::vector<SweepVariant> runs;
    for (int64_t seed : spec.seeds) {
      for (const SweepVariant& v : spec.variants) {
        SweepVariant run = v;
        run.name = fmt::format("{}/seed-{}", v.variant, seed);
        run.seed = seed;
        run.overrides.push_back(fmt::format("trainer.seed={}", seed));
        run.override_origins.push_back(seeds_origin);
        runs.push_back(std::move(run));
      }
    }
    spec.variants = std::move(runs);
  }
  spec.baseline = r.get<std::string>("baseline", spec.variant_names.front());
  if (!names.count(spec.baseline))
    r.fail_key("baseline", fmt::format("'{}' is not one of the variants", spec.baseline));
  r.finish();
  return spec;
}

void add_cli_overrides(SweepSpec& spec, const std::vector<std::string>& overrides) {
  for (const auto& o : overrides) {
    const size_t eq = o.find('=');
    if (eq == std::string::npos || !valid_override_key(o.substr(0, eq)))
      fail("--set {}: expected section.key=value (model, data, optim or trainer)", o);
    if (!spec.seeds.empty() && o.rfind("trainer.seed=", 0) == 0)
      fail("--set {}: trainer.seed is set by the sweep's seeds: (each run gets one of them)", o);
  }
  for (auto& run : spec.variants) {
    // Before a seed's trainer.seed, which stays the last override.
    const size_t at = run.seed ? run.overrides.size() - 1 : run.overrides.size();
    for (size_t i = 0; i < overrides.size(); ++i) {
      run.overrides.insert(run.overrides.begin() + static_cast<std::ptrdiff_t>(at + i), overrides[i]);
      run.override_origins.insert(run.override_origins.begin() + static_cast<std::ptrdiff_t>(at + i),
                                  "--set " + overrides[i]);
    }
  }
}

}  // namespace coe
