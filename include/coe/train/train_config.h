#pragma once
// The run configuration of coe-train: one YAML file with four sections.
//
//   model:    ModelConfig fields inline, or `from: path/to/config.json` plus overriding fields
//   data:     the data library's DataConfig (coe/data/data_config.h)
//   optim:    AdamW, learning-rate schedule, clipping (OptimConfig)
//   trainer:  steps, batch sizes, validation, checkpoints, device (TrainerConfig)
//   parallel: expert parallelism and optimizer sharding over the ranks of a job (ParallelConfig)
//
// Every key is checked: unknown keys are errors that suggest the nearest valid key; a wrong type
// or an out-of-range value names file:line and the dotted key. `--set section.key=value`
// overrides are applied to the YAML document before it is read. docs/training.md lists every key.
// Paths: see config_path_keys below.
#include "coe/data/data_config.h"
#include "coe/model/config.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace YAML {
class Node;
}

namespace coe {

enum class LrScheduleKind { kConstant, kCosine, kLinear };
// Which parameters weight decay applies to: every one (the reference: torch AdamW over
// model.parameters()), or only matrices/expert stacks (dim >= 2; norms and biases excluded).
enum class DecayMode { kAll, kNoNormsBiases };

const char* to_string(LrScheduleKind kind);
const char* to_string(DecayMode mode);

// The keys of the optim: and trainer: sections are listed once, in visit_fields
// (train_config.cpp): a new field there is read, checked, written to config.yaml, and diffed.
struct OptimConfig {
  double lr = 3e-4;
  double beta1 = 0.9, beta2 = 0.95;  // `betas: [0.9, 0.95]`
  double weight_decay = 0.01;
  double eps = 1e-8;
  // At most one of them; neither given: warmup_ratio 0.1 (the reference's warmup_steps_ratio).
  std::optional<double> warmup_ratio;   // fraction of trainer.total_steps, in [0, 1]
  std::optional<int64_t> warmup_steps;  // absolute, >= 0
  LrScheduleKind schedule = LrScheduleKind::kConstant;
  double min_lr = 0.0;     // floor of cosine / linear decay (ignored by constant)
  double clip_grad = 1.0;  // max global L2 norm of the gradients; 0 disables clipping
  DecayMode decay = DecayMode::kAll;

  // Warmup length for a run of `total_steps` (warmup_steps, or floor(warmup_ratio * total_steps)
  // as verl/HF compute it).
  int64_t resolved_warmup_steps(int64_t total_steps) const;
};

struct TrainerConfig {
  int64_t total_steps = 1000;  // optimizer steps
  int64_t global_batch = 64;   // sequences per optimizer step
  int64_t micro_batch = 16;    // sequences per forward/backward; must divide global_batch
  int64_t val_interval = 0;    // validate every N steps (0: only at the end)
  int64_t val_batches = 0;     // val_micro_batch-sized validation batches per evaluation (0: whole split)
  // Rows per validation forward (default: micro_batch). Validation keeps no activations for
  // backward, so it can use bigger batches than training; val_batches * val_micro_batch records
  // are scored, independent of the training micro-batch.
  int64_t val_micro_batch = 16;
  int64_t save_interval = 0;  // checkpoint every N steps (0: only the final / interrupt checkpoint)
  int64_t keep_last = 3;      // keep the newest K step-N checkpoints (0: keep all)
  std::string out_dir = "runs/coe";
  uint64_t seed = 1;              // model init (torch's generator) and data shuffling
  std::string device = "cpu";     // cpu | cuda | cuda:N
  std::string dtype = "float32";  // float32 | bfloat16 (autocast on CUDA or CPU, float32 master weights)
  bool activation_checkpointing = false;
  // Refuse (before allocating) a CPU run whose estimated memory exceeds the machine's MemAvailable.
  bool memory_check = true;
  // How tokens reach their experts (model/experts.h): auto (grouped GEMMs, torch's
  // at::_grouped_mm, on every device) | grouped | segmented | masked.
  std::string expert_dispatch = "auto";
  int64_t log_interval = 10;  // console line every N steps (metrics.jsonl gets every step)
  bool tensorboard = true;    // TensorBoard event files in <out_dir>/tb (util/tensorboard.h)
  // The device's dense peak in TFLOP/s (989 for an H100 SXM in bf16): the progress line then shows
  // the model FLOPs utilisation. 0: unknown, no MFU.
  double peak_tflops = 0;
  int threads = 0;               // torch intra-op threads (0: torch's default)
  std::string resume = "never";  // never | auto | a checkpoint directory
  // Aux-loss-free balancing (model.topk_method noaux_tc): after every optimizer step each router's
  // e_score_correction_bias moves by this much against its experts' load error (DeepSeek-V3's
  // gamma). Unused by the other top-k methods.
  double router_bias_update_rate = 0.001;
  // Warm start: a checkpoint (or run directory) whose weights initialise this run's model where
  // the shapes allow (init_from.h); "" none. Only for a run that starts fresh.
  std::string init_from;
  // Data parallelism (docs/distributed.md); used only when a launcher starts several ranks.
  double dist_timeout_s = 300;  // rendezvous, each collective, heartbeat silence before an abort
  double dist_bucket_mb = 25;   // gradient all-reduce bucket size
  bool dist_overlap = true;     // start bucket all-reduces from backward hooks (else after backward)

  // Micro-batches per optimizer step on each of `world` ranks (a rank reads global_batch / world
  // rows per step); the one place this is computed.
  int64_t accumulation_steps(int64_t world = 1) const { return global_batch / world / micro_batch; }
};

// How the ranks of a job share the model (docs/distributed.md). Without a launcher (one process)
// both must keep their defaults.
struct ParallelConfig {
  // E: each rank holds n_routed_experts / E routed experts; tokens reach them by all-to-all within
  // groups of E consecutive ranks. E divides the world size and n_routed_experts; 1: every rank
  // holds every expert (data parallelism).
  int64_t expert_parallel = 1;
  // ZeRO-1: AdamW's moments are split over the ranks that hold the same parameters; gradients are
  // reduce-scattered and the updated parameters all-gathered.
  bool shard_optimizer = false;
};

struct TrainConfig {
  std::string source;  // the YAML file it came from
  ModelConfig model;
  bool model_vocab_given = true;  // false: vocab_size was not set; the trainer takes the tokenizer's
  std::string model_from;         // model.from, when used
  DataConfig data;
  OptimConfig optim;
  TrainerConfig trainer;
  ParallelConfig parallel;
};

// Reads `path`, applies `overrides` ("section.key=value", parsed as YAML values) and checks every
// key. Throws coe::Error with a one-line message naming the file, line and key. A message about an
// overridden key names where the override was written: `override_origins[i]` when given (coe-sweep:
// "sweep.yaml:8: variants.b.overrides"), else "<path>: --set KEY=VALUE".
TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides = {},
                              const std::vector<std::string>& override_origins = {});
// The same for a parsed document; `file` is used in messages and to resolve model.from.
TrainConfig parse_train_config(const YAML::Node& root, const std::string& file);
// A parsed document with overrides, as load_train_config (a sweep file's inline base).
TrainConfig parse_train_config(YAML::Node root, const std::string& file, const std::vector<std::string>& overrides,
                               const std::vector<std::string>& override_origins);

// Paths (docs/training.md#paths-in-config-files): a path a file writes is relative to that file's
// directory (a base file's to the base file), one given with --set to the working directory, and
// `$COE_DATA/` begins a path under the data root (coe/util/data_root.h). Once read, every path
// written anywhere is absolute, and config.yaml keeps it so, for a resume from any directory.
//
// The keys that hold paths ("data.tokenizer", ...) with the values that name no path ("byte").
const PathKeys& config_path_keys();
// An override "section.key=value" written in `file` (a sweep file), with the paths of a path key
// resolved against that file's directory: coe-train reads --set paths relative to its working
// directory. Other overrides are returned as they are.
std::string resolve_override_paths(const std::string& assignment, const std::string& file);
// The same for every path key of a run-config document written in `file` (a sweep file's inline
// base, which coe-sweep writes into its out_dir). Errors name file:line and the key.
void resolve_document_paths(YAML::Node root, const std::string& file);

// The resolved configuration (every key with its value, defaults filled in) as YAML text that
// load_train_config reads back to the same TrainConfig.
std::string train_config_to_yaml(const TrainConfig& config);

// The keys whose values differ between two resolved configurations (train_config_to_yaml texts),
// as "trainer.total_steps (100 -> 200)"; a key present on one side only shows "-" on the other.
std::vector<std::string> changed_config_keys(const std::string& yaml_a, const std::string& yaml_b);

}  // namespace coe
