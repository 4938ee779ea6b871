#include "coe/train/sweep.h"

#include "coe/util/run_files.h"

#include "coe/model/chunked_loss.h"
#include "coe/train/model_vocab.h"
#include "coe/util/config_reader.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/json_limits.h"
#include "coe/util/subprocess.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

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

// A config path in a sweep file: absolute, relative to the sweep file's directory, or relative to
// the working directory (in this order).
std::string resolve_path(const ConfigReader& r, const std::string& key, const std::string& p) {
  const fs::path path(p);
  if (path.is_absolute()) {
    if (!fs::exists(path)) r.fail_key(key, fmt::format("'{}' not found", p));
    return p;
  }
  const fs::path beside = fs::path(r.file()).parent_path() / path;
  if (fs::exists(beside)) return beside.lexically_normal().string();
  if (fs::exists(path)) return path.string();
  r.fail_key(
      key, fmt::format("'{}' not found (relative to {} or to the working directory)", p,
                       fs::path(r.file()).parent_path().string().empty() ? std::string(".")
                                                                         : fs::path(r.file()).parent_path().string()));
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

// `overrides:` as a map (`section.key: value`, nested maps flattened) or a list of "k=v" strings.
void flatten(const ConfigReader& r, const std::string& what, const YAML::Node& node, const std::string& prefix,
             int depth, std::vector<std::string>* out) {
  if (depth > kMaxOverrideDepth) r.fail_key(what, fmt::format("nested deeper than {} levels", kMaxOverrideDepth));
  for (const auto& kv : node) {
    const std::string key = prefix.empty() ? kv.first.as<std::string>() : prefix + "." + kv.first.as<std::string>();
    if (kv.second.IsMap() && kv.second.size() > 0) flatten(r, what, kv.second, key, depth + 1, out);
    else out->push_back(key + "=" + emit_value(kv.second));
    if (out->size() > kMaxOverrides) r.fail_key(what, fmt::format("more than {} overrides", kMaxOverrides));
  }
}

std::vector<std::string> read_overrides(ConfigReader& r, const std::string& key) {
  std::vector<std::string> out;
  if (!r.has(key) || r.is_null(key)) {
    r.ignore(key);
    return out;
  }
  const YAML::Node n = r.node()[key];
  r.ignore(key);
  if (n.IsMap()) {
    flatten(r, key, n, "", 0, &out);
  } else if (n.IsSequence()) {
    for (size_t i = 0; i < n.size(); ++i) {
      if (!n[i].IsScalar() || n[i].Scalar().find('=') == std::string::npos || n[i].Scalar().front() == '=')
        r.fail_key(key, fmt::format("item {}: expected \"section.key=value\"", i));
      out.push_back(n[i].Scalar());
    }
  } else {
    r.fail_key(key, "expected a mapping of section.key: value or a list of \"section.key=value\" strings");
  }
  for (const auto& o : out)
    if (!valid_override_key(o.substr(0, o.find('='))))
      r.fail_key(key, fmt::format("'{}': keys are section.key (model, data, optim or trainer)", o));
  return out;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string fmt_loss(const std::optional<double>& v) { return v ? fmt::format("{:.4f}", *v) : std::string("-"); }

std::string fmt_millions(int64_t v) { return fmt::format("{:.2f}M", double(v) / 1e6); }

std::string pct(double value, double base) {
  if (!(base > 0)) return "-";
  return fmt::format("{:.1f}%", 100.0 * value / base);
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
      YAML::Emitter e;
      e << base;
      spec.inline_base = e.c_str();
    } else if (base.IsScalar()) {
      base_path = resolve_path(r, "base", base.Scalar());
    } else {
      r.fail_key("base", "expected a file name or a mapping");
    }
  }
  spec.out_dir = r.get<std::string>("out_dir", "runs/sweeps/" + spec.name);
  const std::vector<std::string> common = read_overrides(r, "overrides");
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
    spec.routing.data = g.optional<std::string>("data").value_or("");
    spec.routing.max_records = g.get<int64_t>("max_records", spec.routing.max_records);
    g.finish();
  }

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
    var.config = config ? resolve_path(v, "config", *config) : base_path;
    var.overrides = common;
    for (auto& o : read_overrides(v, "overrides")) var.overrides.push_back(o);
    v.finish();
    spec.variants.push_back(std::move(var));
  }
  spec.baseline = r.get<std::string>("baseline", spec.variants.front().name);
  if (!names.count(spec.baseline))
    r.fail_key("baseline", fmt::format("'{}' is not one of the variants", spec.baseline));
  r.finish();
  return spec;
}

std::vector<TrainConfig> resolve_variants(const SweepSpec& spec) {
  std::vector<TrainConfig> out;
  for (const auto& v : spec.variants) {
    try {
      if (!v.config.empty()) {
        out.push_back(load_train_config(v.config, v.overrides));
      } else {
        YAML::Node root = YAML::Load(spec.inline_base);
        for (const auto& o : v.overrides) apply_override(root, o);
        out.push_back(parse_train_config(root, spec.file + " (base)"));
      }
      TrainConfig& c = out.back();
      // Once per variant: the tables and memory estimates below reuse the resolved vocabulary.
      resolve_model_vocab(c);
      c.model.validate(c.source);
    } catch (const std::exception& e) {
      fail("{}: variant '{}': {}", spec.file, v.name, first_line(e));
    }
  }
  return out;
}

void materialise_inline_base(SweepSpec& spec) {
  if (spec.inline_base.empty()) return;
  fs::create_directories(spec.out_dir);
  const fs::path base = fs::path(spec.out_dir) / "base.yaml";
  // The sweep file's name goes into a comment: one line, whatever characters it has.
  std::string source = spec.file;
  std::replace(source.begin(), source.end(), '\n', ' ');
  write_file_atomic(base,
                    "# The inline base config of " + source + " (written by coe-sweep).\n" + spec.inline_base + "\n");
  for (auto& v : spec.variants)
    if (v.config.empty()) v.config = base.string();
}

std::string variant_dir(const SweepSpec& spec, const SweepVariant& variant) {
  return (fs::path(spec.out_dir) / variant.name).string();
}

ModelConfig sweep_model(const TrainConfig& config) {
  TrainConfig resolved = config;
  resolve_model_vocab(resolved);
  return resolved.model;
}

MemoryOptions sweep_memory_options(const TrainConfig& config, const SweepMemory& memory) {
  TrainConfig resolved = config;
  resolve_model_vocab(resolved);
  MemoryOptions o = memory_options(resolved);
  o.micro_batch = memory.micro_batch.value_or(o.micro_batch);
  o.seq_len = memory.seq.value_or(o.seq_len);
  o.checkpointing = memory.checkpointing.value_or(o.checkpointing);
  return o;
}

namespace {

// The texts of the states; a failure's also carries its exit status.
constexpr std::pair<VariantStatus::State, const char*> kStateNames[] = {
    {VariantStatus::State::kNotRun, "not run"},
    {VariantStatus::State::kComplete, "complete"},
    {VariantStatus::State::kIncomplete, "incomplete"},
    {VariantStatus::State::kFailed, "failed"},
};

}  // namespace

std::string to_string(const VariantStatus& status) {
  for (const auto& [state, name] : kStateNames) {
    if (state != status.state) continue;
    if (state == VariantStatus::State::kFailed) return fmt::format("{} (exit {})", name, status.exit_code);
    return name;
  }
  return "?";
}

std::optional<VariantStatus> parse_variant_status(const std::string& text, int exit_code) {
  for (const auto& [state, name] : kStateNames) {
    const bool match = state == VariantStatus::State::kFailed ? text.rfind(name, 0) == 0 : text == name;
    if (match) return VariantStatus{state, exit_code};
  }
  return std::nullopt;
}

SweepStatus read_sweep_status(const SweepSpec& spec) {
  SweepStatus out;
  const fs::path p = fs::path(spec.out_dir) / "sweep-status.json";
  if (!fs::exists(p)) return out;
  try {
    std::ifstream in(p);
    const nlohmann::json j = nlohmann::json::parse(in, json_depth_limit(p.string()));
    for (const auto& [name, v] : j.items())
      if (auto s = parse_variant_status(v.value("status", ""), v.value("exit_code", 0))) out[name] = *s;
  } catch (...) {
    // A damaged status file only loses the "failed" labels of earlier invocations.
  }
  return out;
}

void write_sweep_status(const SweepSpec& spec, const SweepStatus& status) {
  fs::create_directories(spec.out_dir);
  nlohmann::ordered_json j;
  for (const auto& [name, s] : status) j[name] = {{"status", to_string(s)}, {"exit_code", s.exit_code}};
  write_file_atomic(fs::path(spec.out_dir) / "sweep-status.json", j.dump(2) + "\n");
}

VariantResult read_variant_result(const SweepSpec& spec, const SweepVariant& variant, const TrainConfig& config) {
  VariantResult r;
  r.name = variant.name;
  r.total_steps = config.trainer.total_steps;
  const fs::path dir = variant_dir(spec, variant);
  const ModelConfig model = sweep_model(config);
  const ParamCounts p = count_parameters(model);
  r.params_total = p.total();
  r.params_active = p.active_per_token;
  r.estimate_bytes = estimate_memory(model, sweep_memory_options(config, spec.memory)).total_bytes();

  // The run directory's files through their one schema (util/run_files.h); a file that does not
  // read is a note in the report, not a failure of the sweep.
  try {
    for (const ValRow& v : read_val_file(dir / "val.jsonl")) r.val_curve.push_back({v.step, v.val_loss});
  } catch (const Error& e) {
    r.notes.push_back(fmt::format("val.jsonl unreadable: {}", e.what()));
  }
  if (fs::exists(dir / "final.json")) {
    r.status = "complete";
    try {
      const FinalSummary f = read_final_summary(dir / "final.json");
      r.steps = f.steps;
      r.final_val_loss = f.final_val_loss;
      r.best_val_loss = f.best_val_loss;
      r.tokens = f.tokens;
      r.tokens_per_s = f.tokens_per_s;
      if (f.peak_memory_bytes) {
        r.measured_peak_bytes = *f.peak_memory_bytes;
        r.measured_source = "final.json";
      }
    } catch (const Error& e) {
      r.notes.push_back(fmt::format("final.json unreadable: {}", e.what()));
    }
  } else {
    try {
      const std::vector<MetricsRow> metrics =
          fs::exists(dir / "metrics.jsonl") ? read_metrics_file(dir / "metrics.jsonl") : std::vector<MetricsRow>{};
      if (!metrics.empty()) r.status = "incomplete";
      double tps = 0;
      for (const MetricsRow& m : metrics) {
        r.steps = m.step;
        r.tokens += m.tokens.value_or(0);
        tps += m.tokens_per_s.value_or(0.0);
      }
      if (!metrics.empty()) r.tokens_per_s = tps / double(metrics.size());
    } catch (const Error& e) {
      r.notes.push_back(fmt::format("metrics.jsonl unreadable: {}", e.what()));
    }
    if (!r.val_curve.empty()) {
      r.final_val_loss = r.val_curve.back().second;
      double best = r.val_curve.front().second;
      for (const auto& [s, v] : r.val_curve) best = std::min(best, v);
      r.best_val_loss = best;
    }
  }
  if (fs::exists(dir / "memory.json")) {
    try {
      std::ifstream in(dir / "memory.json");
      const auto j = nlohmann::json::parse(in, json_depth_limit((dir / "memory.json").string()));
      if (j.contains("measured_peak_bytes")) {
        r.measured_peak_bytes = j["measured_peak_bytes"].get<int64_t>();
        r.measured_source = j.value("measured_source", std::string("coe-memory --measure"));
      }
    } catch (...) {
      r.notes.push_back("memory.json unreadable");
    }
  }
  if (fs::exists(dir / "routing.json")) {
    try {
      const RoutingReport routing = read_routing_report(dir / "routing.json");
      for (const LayerChain& c : routing.chains) {
        r.distinct_expert_sets.push_back(c.distinct_expert_sets);
        r.unique_experts_per_token.push_back(c.mean_unique_experts);
      }
      if (routing.combinatorial_bound) {
        r.bound_formula = routing.combinatorial_bound->formula;
        r.bound_value = routing.combinatorial_bound->value;
      }
    } catch (const Error& e) {
      r.notes.push_back(fmt::format("routing.json unreadable: {}", e.what()));
    }
  }
  return r;
}

std::string sweep_results_table(const std::vector<VariantResult>& results) {
  std::string md =
      "| variant | status | steps | final val loss | best val loss | tokens | tokens/s | params | active params/token "
      "| memory estimate | measured peak |\n"
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
  for (const auto& r : results)
    md += fmt::format("| {} | {} | {}/{} | {} | {} | {} | {:.0f} | {} | {} | {} | {} |\n", r.name, r.status, r.steps,
                      r.total_steps, fmt_loss(r.final_val_loss), fmt_loss(r.best_val_loss), r.tokens, r.tokens_per_s,
                      fmt_millions(r.params_total), fmt_millions(r.params_active), format_bytes(r.estimate_bytes),
                      r.measured_peak_bytes ? format_bytes(*r.measured_peak_bytes) : std::string("-"));
  return md;
}

namespace {

// The baseline's result (nullptr when results has none).
const VariantResult* find_baseline(const SweepSpec& spec, const std::vector<VariantResult>& results) {
  const VariantResult* base = nullptr;
  for (const auto& r : results)
    if (r.name == spec.baseline) base = &r;
  return base;
}

// bars.dat: parameters, active parameters and memory of every variant as % of the baseline's.
std::string relative_bars(const SweepSpec& spec, const std::vector<VariantResult>& results, const VariantResult* base,
                          bool measured) {
  std::string bars =
      fmt::format("# variant params% active% memory_estimate% memory_measured% (relative to {})\n", spec.baseline);
  auto rel = [&](double v, double b) { return b > 0 ? fmt::format("{:.3f}", 100.0 * v / b) : std::string("?"); };
  for (const auto& r : results) {
    bars += fmt::format("{} {} {} {} {}\n", r.name, rel(double(r.params_total), base ? double(base->params_total) : 0),
                        rel(double(r.params_active), base ? double(base->params_active) : 0),
                        rel(double(r.estimate_bytes), base ? double(base->estimate_bytes) : 0),
                        measured && r.measured_peak_bytes
                            ? rel(double(*r.measured_peak_bytes), double(*base->measured_peak_bytes))
                            : std::string("?"));
  }
  return bars;
}

// summary.md's "Relative to <baseline>" section.
std::string relative_table(const SweepSpec& spec, const std::vector<VariantResult>& results,
                           const VariantResult& base) {
  std::string md = fmt::format("\n## Relative to {}\n\n", spec.baseline);
  md += "| variant | params | active params/token | memory estimate | measured peak | best val loss - baseline |\n";
  md += "| --- | --- | --- | --- | --- | --- |\n";
  for (const auto& r : results) {
    std::string dv = "-";
    if (r.best_val_loss && base.best_val_loss) dv = fmt::format("{:+.4f}", *r.best_val_loss - *base.best_val_loss);
    md +=
        fmt::format("| {} | {} | {} | {} | {} | {} |\n", r.name, pct(double(r.params_total), double(base.params_total)),
                    pct(double(r.params_active), double(base.params_active)),
                    pct(double(r.estimate_bytes), double(base.estimate_bytes)),
                    r.measured_peak_bytes && base.measured_peak_bytes
                        ? pct(double(*r.measured_peak_bytes), double(*base.measured_peak_bytes))
                        : std::string("-"),
                    dv);
  }
  return md;
}

// summary.md's routing section ("" when no variant has a routing analysis).
std::string routing_table(const std::vector<VariantResult>& results) {
  bool any_routing = false;
  for (const auto& r : results) any_routing = any_routing || !r.distinct_expert_sets.empty() || r.bound_value;
  if (!any_routing) return "";
  std::string md = "\n## Routing (coe-eval --routing on the final checkpoint)\n\n";
  md += "| variant | distinct expert sets per layer | unique experts per token | combinatorial bound |\n";
  md += "| --- | --- | --- | --- |\n";
  for (const auto& r : results) {
    std::string sets, uniq;
    for (size_t i = 0; i < r.distinct_expert_sets.size(); ++i) {
      sets += (i ? ", " : "") + std::to_string(r.distinct_expert_sets[i]);
      uniq += (i ? ", " : "") + fmt::format("{:.2f}", r.unique_experts_per_token[i]);
    }
    md += fmt::format("| {} | {} | {} | {} |\n", r.name, sets.empty() ? "-" : sets, uniq.empty() ? "-" : uniq,
                      r.bound_value ? fmt::format("{} = {:.4g}", r.bound_formula, *r.bound_value) : std::string("-"));
  }
  return md;
}

}  // namespace

std::vector<std::string> write_sweep_summary(const SweepSpec& spec, const std::vector<VariantResult>& results,
                                             const std::string& plot_script) {
  fs::create_directories(spec.out_dir);
  const fs::path out(spec.out_dir);
  std::vector<std::string> written;
  write_file_atomic(out / "summary.csv", sweep_summary_csv(results));
  written.push_back((out / "summary.csv").string());
  const SweepPlots plots = draw_sweep_plots(spec, results, plot_script);
  for (const auto& p : plots.pngs) written.push_back((out / p).string());
  write_file_atomic(out / "summary.md", sweep_summary_md(spec, results, plots));
  written.push_back((out / "summary.md").string());
  return written;
}

std::string sweep_summary_csv(const std::vector<VariantResult>& results) {
  std::ostringstream csv;
  csv << "variant,status,steps,total_steps,final_val_loss,best_val_loss,tokens,tokens_per_s,params_total,"
         "params_active_per_token,estimate_bytes,measured_peak_bytes,distinct_expert_sets,combinatorial_bound\n";
  for (const auto& r : results) {
    std::string sets;
    for (size_t i = 0; i < r.distinct_expert_sets.size(); ++i)
      sets += (i ? ";" : "") + std::to_string(r.distinct_expert_sets[i]);
    csv << csv_field(r.name) << ',' << csv_field(r.status) << ',' << r.steps << ',' << r.total_steps << ','
        << (r.final_val_loss ? fmt::format("{:.6f}", *r.final_val_loss) : "") << ','
        << (r.best_val_loss ? fmt::format("{:.6f}", *r.best_val_loss) : "") << ',' << r.tokens << ','
        << fmt::format("{:.1f}", r.tokens_per_s) << ',' << r.params_total << ',' << r.params_active << ','
        << r.estimate_bytes << ',' << (r.measured_peak_bytes ? std::to_string(*r.measured_peak_bytes) : "") << ','
        << csv_field(sets) << ',' << (r.bound_value ? fmt::format("{:.6g}", *r.bound_value) : "") << '\n';
  }
  return csv.str();
}

SweepPlots draw_sweep_plots(const SweepSpec& spec, const std::vector<VariantResult>& results,
                            const std::string& plot_script) {
  SweepPlots plots;
  if (plot_script.empty()) {
    plots.note = "the gnuplot script tools/plot_sweep.gp was not found (set COE_PLOT_SCRIPT)";
    return plots;
  }
  if (!find_gnuplot()) {
    plots.note = "gnuplot is not installed (apt-get install gnuplot-nox)";
    return plots;
  }
  const fs::path out(spec.out_dir);
  // Absolute paths: gnuplot would open a relative name starting with '<' or '|' through a shell.
  const fs::path abs_out = fs::absolute(out);
  const fs::path data = abs_out / "plots";
  fs::create_directories(data);
  std::string names;
  for (const auto& r : results) {
    if (r.val_curve.empty()) continue;
    std::string dat = "# step val_loss\n";
    for (const auto& [s, v] : r.val_curve) dat += fmt::format("{} {:.6f}\n", s, v);
    write_file_atomic(data / ("val-" + r.name + ".dat"), dat);
    names += (names.empty() ? "" : " ") + r.name;
  }
  const VariantResult* base = find_baseline(spec, results);
  const bool measured = base && base->measured_peak_bytes;
  write_file_atomic(data / "bars.dat", relative_bars(spec, results, base, measured));
  // gnuplot draws into fresh names; a finished PNG replaces the previous one by rename.
  const std::string tmp = ".tmp-" + std::to_string(::getpid());
  const char* const png_names[] = {"val_loss.png", "relative.png"};
  const fs::path log = data / "gnuplot.log";
  int rc = 0;
  try {
    write_file_atomic(log, "");
    rc = run_gnuplot(plot_script,
                     {data.string(), (abs_out / (png_names[0] + tmp)).string(),
                      (abs_out / (png_names[1] + tmp)).string(), names, spec.baseline, spec.name, measured ? "1" : "0"},
                     log);
  } catch (const Error& e) {
    plots.note = e.what();
    rc = -1;
  }
  for (const char* png : png_names) {
    const fs::path drawn = abs_out / (png + tmp);
    std::error_code ec;
    if (rc == 0 && fs::is_regular_file(drawn, ec) && fs::file_size(drawn, ec) > 0) {
      fs::rename(drawn, out / png);
      plots.pngs.push_back(png);
    } else {
      fs::remove(drawn, ec);
    }
  }
  if (plots.note.empty() && (rc != 0 || plots.pngs.empty()))
    plots.note = fmt::format("gnuplot failed (exit {}); see {}", rc, log.string());
  return plots;
}

std::string sweep_summary_md(const SweepSpec& spec, const std::vector<VariantResult>& results,
                             const SweepPlots& plots) {
  std::string md;
  md += fmt::format("# Sweep {}\n\nSweep file: `{}`. Run directories: `{}/<variant>/`. Baseline: `{}`.\n\n", spec.name,
                    spec.file, spec.out_dir, spec.baseline);
  md += sweep_results_table(results);
  const auto& mem = spec.memory;
  md += fmt::format(
      "\nMemory estimate: `coe-memory`'s analytical training total (docs/memory.md) at micro-batch {}, sequence {}, "
      "checkpointing {} (defaults: each variant's trainer.micro_batch, data.max_length, "
      "trainer.activation_checkpointing). Measured peak: {}.\n",
      mem.micro_batch ? std::to_string(*mem.micro_batch) : "(config)", mem.seq ? std::to_string(*mem.seq) : "(config)",
      mem.checkpointing ? (*mem.checkpointing ? "on" : "off") : "(config)",
      mem.measure ? "`coe-memory --measure` after training, same settings (CUDA: caching-allocator peak; CPU: peak "
                    "live tensor storage)"
                  : "not measured (set memory.measure: true)");
  if (const VariantResult* base = find_baseline(spec, results)) md += relative_table(spec, results, *base);
  md += routing_table(results);
  md += fmt::format(
      "\nCombinatorial bound: C(N,K)^C / C(N,C*K) counts ordered sequences of C expert sets of size K against "
      "unordered sets of C*K experts. The paper's \"823x\" is quoted for C(64,4)^2 / C(64,8), which evaluates to "
      "{:.1f}; coe-eval uses the routed-expert count N = n_routed_experts.\n",
      combinatorial_ratio(64, 4, 2));

  md += "\n## Plots\n\n";
  if (!plots.pngs.empty()) {
    for (const auto& p : plots.pngs) md += fmt::format("![{}]({})\n\n", p, p);
    md += fmt::format("Data behind them: `{}/plots/` (val-<variant>.dat, bars.dat).\n", spec.out_dir);
  } else {
    md += "Plots skipped: " + plots.note + ".\n";
  }
  bool any_notes = false;
  for (const auto& r : results) any_notes = any_notes || !r.notes.empty();
  if (any_notes) {
    md += "\n## Notes\n\n";
    for (const auto& r : results)
      for (const auto& n : r.notes) md += fmt::format("- {}: {}\n", r.name, n);
  }
  return md;
}

}  // namespace coe
