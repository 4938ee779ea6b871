#pragma once
// The schema of a run directory's files (docs/training.md#the-run-directory): one typed value per
// file with to_json / from_json, used by every writer and every reader.
//
//   metrics.jsonl  one MetricsRow per optimizer step    (the trainer; coe-plot, coe-sweep, TensorBoard)
//   val.jsonl      one ValRow per validation             (the trainer; coe-plot, coe-sweep, TensorBoard)
//   final.json     FinalSummary, when total_steps is reached (the trainer; coe-sweep)
//   routing.json   RoutingReport (coe-eval --routing, run by coe-sweep per variant; coe-sweep, coe-plot)
//
// A new metric is a field here (with its line in to_json / from_json) and the line of the trainer
// that fills it: TensorBoard's scalars (metrics_scalars) follow the JSON, not a list of names.
// Readers ignore keys they do not know, so files of newer coe versions stay readable.
#include "coe/util/tensorboard.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coe {

// How evenly a router spread its token slots over the experts: max load / mean load (1 =
// perfectly balanced) and the coefficient of variation (population standard deviation / mean).
// Both 0 when nothing was routed. metrics.jsonl's "router" and routing.json report these.
struct LoadStats {
  double max_over_mean = 0;
  double cv = 0;
};
LoadStats load_balance(const std::vector<int64_t>& load);

// One metrics.jsonl line.
struct MetricsRow {
  int64_t step = 0;
  double loss = 0;  // NaN when non-finite (written as null: the step that stops a run)
  // The router losses the model logs (model/router.h, RouterLosses::kTerms), in its order, e.g.
  // {"aux_loss", 0.0012}, {"z_loss", 0.0031}. In the JSON: top-level keys after "loss"; a reader
  // takes every numeric "<name>_loss" key as one.
  std::vector<std::pair<std::string, double>> router_losses;
  std::optional<double> lr, grad_norm;
  std::optional<int64_t> tokens, loss_tokens;  // positions processed; labels counted in the loss
  std::optional<double> tokens_per_s;          // this step's throughput
  std::optional<double> time;                  // training seconds of the run up to this step
  std::optional<double> comm_wait_s;           // data parallel: waiting for the gradient all-reduce
  // Memory after the step: on a GPU the CUDA allocator's allocated bytes and their peak (since the
  // start), on the CPU the process's RSS and its peak (VmRSS, VmHWM).
  std::optional<int64_t> memory_bytes, peak_memory_bytes;
  std::optional<double> mfu;  // model FLOPs utilisation of the step, 0..1 (with trainer.peak_tflops)
  // At console log lines: the expert load since the previous one, per "layer<L>_iter<T>".
  std::vector<std::pair<std::string, LoadStats>> router;

  std::optional<double> router_loss(std::string_view name) const;
  nlohmann::ordered_json to_json() const;
  // Throws a one-line coe::Error "<where>: <reason>" unless `step` is an integer, `loss` a number
  // (or null), and every known key present has its type.
  static MetricsRow from_json(const nlohmann::json& j, const std::string& where);
};

// One val.jsonl line.
struct ValRow {
  int64_t step = 0;
  double val_loss = 0;
  std::optional<int64_t> tokens, rows, batches;  // scored labels, rows and batches
  std::optional<double> seconds;                 // the validation's wall time

  nlohmann::ordered_json to_json() const;
  static ValRow from_json(const nlohmann::json& j, const std::string& where);
};

// final.json: the summary of a completed run.
struct FinalSummary {
  int64_t steps = 0;
  std::optional<double> final_val_loss, best_val_loss;  // null without validation
  double final_train_loss = 0;
  int64_t tokens = 0;
  double tokens_per_s = 0;  // over the whole run's training steps
  int64_t params = 0;
  double elapsed_s = 0;
  std::string checkpoint;                    // the final checkpoint's directory
  std::optional<int64_t> world_size;         // data parallel: the number of ranks
  std::optional<int64_t> peak_memory_bytes;  // when measured

  nlohmann::ordered_json to_json() const;
  static FinalSummary from_json(const nlohmann::json& j, const std::string& where);
};

// One router of routing.json's "routing": a layer's CoE iteration over the evaluated tokens.
struct IterationRouting {
  int64_t layer = 0, iteration = 0;
  std::vector<int64_t> expert_load;  // routed (token, slot) pairs per expert
  double load_imbalance = 0;         // max load / mean load (1 = perfectly balanced)
  double load_cv = 0;                // coefficient of variation of the loads
  // Mean over tokens of the entropy (nats) of the router's scores as a distribution over experts
  // (softmax scores as they are; sigmoid scores normalised to sum to 1).
  double router_entropy = 0;
};

// One layer of routing.json's "chains": how a CoE layer's iterations combine experts.
struct LayerChain {
  int64_t layer = 0;
  int64_t iterations = 0;
  int64_t distinct_expert_sets = 0;  // distinct (set at iteration 1, ..., set at iteration C)
  double mean_unique_experts = 0;    // per token, experts used in any iteration (K..C*K)
  // coactivation[a][b]: tokens that chose expert a at iteration t and b at t+1, summed over t
  // (routing.json only; empty when not written).
  std::vector<std::vector<int64_t>> coactivation;
};

// routing.json's "combinatorial_bound": ordered expert-set sequences over C iterations vs
// unordered sets of C*K experts (train/memory_model.h: combinatorial_ratio).
struct CombinatorialBound {
  std::string formula;  // "C(N,K)^C / C(N,C*K)"
  double value = 0;
  std::string note;
};

// routing.json, and the "routing" and "chains" of coe-eval --json.
struct RoutingReport {
  std::vector<IterationRouting> routing;
  std::vector<LayerChain> chains;
  std::optional<CombinatorialBound> combinatorial_bound;

  // Sets j["routing"], j["chains"] (with each chain's coactivation when asked and C > 1) and, when
  // known, j["combinatorial_bound"].
  void write_to(nlohmann::json& j, bool with_coactivation) const;
  // Throws "<where>: routing[i]: <reason>" unless "routing" is an array of routers with integer
  // layer / iteration and a non-empty expert_load of counts, all with one expert count; "chains"
  // and "combinatorial_bound" are optional.
  static RoutingReport from_json(const nlohmann::json& j, const std::string& where);
};

// Parses one line; throws a one-line coe::Error "<where>: <reason>" (`where` is "file:line") when
// it is not a JSON object of the row's schema.
MetricsRow parse_metrics_line(const std::string& line, const std::string& where);
ValRow parse_val_line(const std::string& line, const std::string& where);

// The complete lines of a metrics.jsonl / val.jsonl (a torn last line is left out). Throws a
// one-line error naming file:line for a line that does not parse, and naming the file when it
// cannot be read; a missing val.jsonl is an empty one (a run without validation).
std::vector<MetricsRow> read_metrics_file(const std::filesystem::path& path);
std::vector<ValRow> read_val_file(const std::filesystem::path& path);
// final.json; throws a one-line error naming the file.
FinalSummary read_final_summary(const std::filesystem::path& path);
// routing.json (or coe-eval --json's file); throws a one-line error naming the file.
RoutingReport read_routing_report(const std::filesystem::path& path);

// The TensorBoard scalars of one metrics.jsonl row: every top-level number but the counters
// (step, tokens, loss_tokens, time) as train/<key> (train/loss, train/aux_loss, train/lr, ...), and
// the expert load of log lines, router.<layerL_iterT>.{max_over_mean, cv} ->
// router/<layerL_iterT>/{max_over_mean, cv}. Lenient: what is not a number, or a router name with
// other characters than [a-z0-9_], is left out.
Scalars metrics_scalars(const nlohmann::json& metrics_row);
// The scalars of one val.jsonl row: val_loss -> val/loss.
Scalars val_scalars(const nlohmann::json& val_row);

}  // namespace coe
