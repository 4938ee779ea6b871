#pragma once
// Sweeps: one YAML file naming a base training config and a list of variants (name + overrides).
// coe-sweep trains each variant in its own coe-train process into <out_dir>/<name>/, skips the
// complete ones (final.json), resumes the partial ones, and summarises them (summary.csv,
// summary.md, plots). See docs/sweeps.md for the file format.
//
//   name: gsm8k-small                 # default: the file's stem
//   base: ../paper/moe-k8.yaml        # a training config, or an inline mapping with model/data/optim/trainer
//   out_dir: ../../runs/sweeps/gsm8k-small  # default: runs/sweeps/<name> in the working directory
//   # Every path written here (base, config, out_dir, routing.data, the paths of an inline base and of
//   # overrides) is relative to this file's directory or begins with $COE_DATA/ (train_config.h).
//   baseline: moe                     # the variant plots are relative to (default: the first)
//   overrides: {trainer.threads: 2}   # applied to every variant first; a map or a list of "k=v"
//   memory: {micro_batch: 1, seq: 512, checkpointing: true, measure: false}
//   routing: {enabled: true, data: null, max_records: 100}
//   seeds: [1, 2, 3]                  # optional: every variant once per seed (trainer.seed), into
//                                     # <out_dir>/<variant>/seed-<s>/; the summary gives means and intervals
//   variants:
//     - name: moe
//     - name: coe
//       config: other.yaml            # optional, instead of base
//       overrides: {model.inner_iter: 2, model.num_experts_per_tok: 2}
#include "coe/train/memory_model.h"
#include "coe/train/train_config.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace coe {

// One run of a sweep: a variant of the sweep file, with one of its seeds when the file has `seeds:`.
struct SweepVariant {
  std::string name;                    // the run's: the variant's name, "<variant>/seed-<s>" with seeds (its directory)
  std::string variant;                 // the variant's name in the sweep file
  std::optional<int64_t> seed;         // with `seeds:`: its trainer.seed (the last override)
  std::string config;                  // the training config file it starts from
  std::vector<std::string> overrides;  // "section.key=value": the sweep's, then the variant's
  // Where each override is written, for messages about its key: "sweep.yaml:8: variants.b.overrides"
  // (one per override; load_sweep fills it).
  std::vector<std::string> override_origins;
};

struct SweepMemory {
  std::optional<int64_t> micro_batch, seq;  // default: the variant's trainer.micro_batch / data.max_length
  std::optional<bool> checkpointing;        // default: trainer.activation_checkpointing
  bool measure = false;                     // after training, coe-memory --measure into <variant>/memory.json
};

struct SweepRouting {
  bool enabled = false;  // after training, coe-eval --routing into <variant>/routing.json
  std::string data;      // default: the run's prepared dataset (its validation split)
  int64_t max_records = 100;
};

struct SweepSpec {
  std::string file;  // the sweep file
  std::string name;
  std::string out_dir;
  std::string baseline;
  SweepMemory memory;
  SweepRouting routing;
  std::vector<int64_t> seeds;              // `seeds:`, empty without
  std::vector<std::string> variant_names;  // the sweep file's variants, in order
  // The runs: each variant, or with seeds each (seed, variant) pair, seed by seed (all variants of
  // the first seed come first, so a sweep stopped early has comparable runs).
  std::vector<SweepVariant> variants;
  std::string inline_base;  // YAML text of an inline base config ("" when base is a file)
};

// Parses and checks a sweep file (unknown keys, missing names, duplicate names, names that are
// not [A-Za-z0-9._-]+, a baseline that is no variant, seeds that repeat or are negative, an
// override of trainer.seed beside `seeds:`). Errors are one line naming the file, the
// variant and the key. An inline base is written to <out_dir>/base.yaml when the sweep runs.
SweepSpec load_sweep(const std::string& path);

// coe-sweep --set KEY=VALUE: appended to every run's overrides, after the sweep file's (a seed's
// trainer.seed stays last); their paths are relative to the working directory, as coe-train's
// --set. trainer.seed is refused in a sweep with seeds:.
void add_cli_overrides(SweepSpec& spec, const std::vector<std::string>& overrides);

// The full training config of every variant (its config file with all overrides applied, the
// vocabulary resolved from the tokenizer when the config leaves it out), in
// order. Throws "<sweep file>: variant '<name>': <the config error naming the key>" for the first
// variant that does not resolve.
std::vector<TrainConfig> resolve_variants(const SweepSpec& spec);

// Writes the inline base config (if any) to <out_dir>/base.yaml and points the variants at it.
void materialise_inline_base(SweepSpec& spec);

// The directory of one variant's run.
std::string variant_dir(const SweepSpec& spec, const SweepVariant& variant);

// The model a config trains (vocab_size from the tokenizer when the config leaves it unset, as
// the trainer does; resolve_variants' configs have it resolved already) and the memory-model
// options for the sweep's memory settings.
ModelConfig sweep_model(const TrainConfig& config);
MemoryOptions sweep_memory_options(const TrainConfig& config, const SweepMemory& memory);

// Where a variant stands: what its run directory says, or the outcome of the last coe-train a
// sweep launched for it.
struct VariantStatus {
  enum class State { kNotRun, kComplete, kIncomplete, kFailed };
  State state = State::kNotRun;
  int exit_code = 0;  // of the last coe-train launched by the sweep
};
// "not run", "complete", "incomplete", "failed (exit N)": the status column of the summaries and
// the text of sweep-status.json.
std::string to_string(const VariantStatus& status);
// The inverse of to_string, with the exit code stored beside the text. Any text starting with
// "failed" is kFailed (what sweep-status.json files were always read as); other text is nullopt.
std::optional<VariantStatus> parse_variant_status(const std::string& text, int exit_code = 0);

// What a variant's run directory says.
struct VariantResult {
  std::string name;     // the run's (SweepVariant::name), or the variant's in a VariantSummary
  std::string variant;  // the variant's
  std::optional<int64_t> seed;
  std::string status = "not run";  // to_string(VariantStatus)
  int exit_code = 0;               // of the last coe-train launched by this sweep
  int64_t steps = 0, total_steps = 0;
  std::optional<double> final_val_loss, best_val_loss;
  int64_t tokens = 0;
  double tokens_per_s = 0;
  int64_t params_total = 0, params_active = 0;
  int64_t estimate_bytes = 0;
  std::optional<int64_t> measured_peak_bytes;
  std::string measured_source;
  std::vector<std::pair<int64_t, double>> val_curve;  // (step, val_loss)
  // Routing (from routing.json): distinct expert sets per CoE layer and the combinatorial bound.
  std::vector<int64_t> distinct_expert_sets;
  std::vector<double> unique_experts_per_token;
  std::string bound_formula;
  std::optional<double> bound_value;
  // The expert load's worst max / mean over layers and iterations: routing.json's (validation
  // split, final checkpoint) when there is one, else the last training log interval's.
  std::optional<double> load_max_over_mean;
  std::string load_source;  // "routing.json" or "training"
  std::vector<std::string> notes;
};

VariantResult read_variant_result(const SweepSpec& spec, const SweepVariant& variant, const TrainConfig& config);

// Per-variant launch status kept in <out_dir>/sweep-status.json across invocations:
// {"<variant>": {"status": to_string(s), "exit_code": N}, ...}. Entries whose text does not parse
// are left out; a file that is not JSON reads as empty.
using SweepStatus = std::map<std::string, VariantStatus>;
SweepStatus read_sweep_status(const SweepSpec& spec);
void write_sweep_status(const SweepSpec& spec, const SweepStatus& status);

}  // namespace coe
