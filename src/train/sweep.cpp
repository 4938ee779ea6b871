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
#include <fmt/ranges.h>
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

// The inline base of a sweep file as written there (its lines name the sweep file's), or as
// load_sweep kept it.
YAML::Node inline_base_node(const SweepSpec& spec) {
  try {
    const YAML::Node base = load_yaml_file(spec.file)["base"];
    if (base && base.IsMap()) return base;
  } catch (const std::exception&) {
  }
  return YAML::Load(spec.inline_base);
}

}  // namespace

std::vector<TrainConfig> resolve_variants(const SweepSpec& spec) {
  std::vector<TrainConfig> out;
  for (const auto& v : spec.variants) {
    try {
      if (!v.config.empty()) {
        out.push_back(load_train_config(v.config, v.overrides, v.override_origins));
      } else {
        out.push_back(parse_train_config(inline_base_node(spec), spec.file, v.overrides, v.override_origins));
      }
      TrainConfig& c = out.back();
      // Once per variant: the tables and memory estimates below reuse the resolved vocabulary.
      resolve_model_vocab(c);
      c.model.validate(c.source);
    } catch (const std::exception& e) {
      const std::string message = first_line(e);
      // An error located in the sweep file (an override, the inline base) names its line first;
      // its key path names the variant.
      if (message.rfind(spec.file + ":", 0) == 0) throw Error(message);
      fail("{}: variant '{}': {}", spec.file, v.name, message);
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
    const nlohmann::json j = read_json_file(p.string(), "a sweep-status.json");
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
  r.variant = variant.variant.empty() ? variant.name : variant.variant;
  r.seed = variant.seed;
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
  }
  // metrics.jsonl: progress of a run without final.json, and the training's last expert load.
  try {
    const std::vector<MetricsRow> metrics =
        fs::exists(dir / "metrics.jsonl") ? read_metrics_file(dir / "metrics.jsonl") : std::vector<MetricsRow>{};
    for (const MetricsRow& m : metrics) {
      if (m.router.empty()) continue;
      double worst = 0;
      for (const auto& [name, load] : m.router) worst = std::max(worst, load.max_over_mean);
      r.load_max_over_mean = worst;
      r.load_source = "training";
    }
    if (r.status != "complete" && !metrics.empty()) {
      r.status = "incomplete";
      double tps = 0;
      for (const MetricsRow& m : metrics) {
        r.steps = m.step;
        r.tokens += m.tokens.value_or(0);
        tps += m.tokens_per_s.value_or(0.0);
      }
      r.tokens_per_s = tps / double(metrics.size());
    }
  } catch (const Error& e) {
    r.notes.push_back(fmt::format("metrics.jsonl unreadable: {}", e.what()));
  }
  if (r.status != "complete" && !r.val_curve.empty()) {
    r.final_val_loss = r.val_curve.back().second;
    double best = r.val_curve.front().second;
    for (const auto& [s, v] : r.val_curve) best = std::min(best, v);
    r.best_val_loss = best;
  }
  if (fs::exists(dir / "memory.json")) {
    try {
      const auto j = read_json_file((dir / "memory.json").string(), "a memory.json");
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
      if (!routing.routing.empty()) {
        double worst = 0;
        for (const IterationRouting& it : routing.routing) worst = std::max(worst, it.load_imbalance);
        r.load_max_over_mean = worst;
        r.load_source = "routing.json";
      }
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

}  // namespace coe
