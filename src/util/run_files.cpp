#include "coe/util/run_files.h"

#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/json_limits.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

namespace fs = std::filesystem;

namespace coe {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

nlohmann::json parse_json(const std::string& text, const std::string& where) {
  try {
    return nlohmann::json::parse(text, json_depth_limit(where));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not JSON: {}", where, first_line(e));
  }
}

nlohmann::json parse_object(const std::string& text, const std::string& where) {
  nlohmann::json j = parse_json(text, where);
  if (!j.is_object()) fail("{}: not a JSON object", where);
  return j;
}

// A whole file; one-line errors naming it.
// The typed reads of one object's keys, each failing with "<where>: <reason>".
struct Fields {
  const nlohmann::json& j;
  const std::string& where;

  const nlohmann::json* find(const char* key) const {
    const auto it = j.find(key);
    return it == j.end() ? nullptr : &*it;
  }
  int64_t integer(const char* key) const {
    const nlohmann::json* v = find(key);
    if (!v) fail("{}: no \"{}\"", where, key);
    if (!v->is_number_integer()) fail("{}: \"{}\" is not an integer", where, key);
    return v->get<int64_t>();
  }
  std::optional<int64_t> optional_integer(const char* key) const {
    return find(key) ? std::optional<int64_t>(integer(key)) : std::nullopt;
  }
  // Non-finite values reach the JSON as null (nlohmann writes NaN so); kept as NaN, never as 0.
  double number(const char* key) const {
    const nlohmann::json* v = find(key);
    if (!v) fail("{}: no \"{}\"", where, key);
    if (v->is_null()) return kNaN;
    if (!v->is_number()) fail("{}: \"{}\" is not a number", where, key);
    return v->get<double>();
  }
  std::optional<double> optional_number(const char* key) const {
    return find(key) ? std::optional<double>(number(key)) : std::nullopt;
  }
  // null stays "none" here: final.json writes a run without validation so.
  std::optional<double> nullable_number(const char* key) const {
    const nlohmann::json* v = find(key);
    return v && !v->is_null() ? std::optional<double>(number(key)) : std::nullopt;
  }
  std::string string(const char* key) const {
    const nlohmann::json* v = find(key);
    if (!v) fail("{}: no \"{}\"", where, key);
    if (!v->is_string()) fail("{}: \"{}\" is not a string", where, key);
    return v->get<std::string>();
  }
};

template <class T>
void put_optional(nlohmann::ordered_json& j, const char* key, const std::optional<T>& v) {
  if (v) j[key] = *v;
}

nlohmann::ordered_json nullable(const std::optional<double>& v) {
  return v ? nlohmann::ordered_json(*v) : nlohmann::ordered_json(nullptr);
}

// The complete lines of a file (a last line without its newline is still being written).
std::vector<std::string> complete_lines(const fs::path& path) {
  const std::string text = read_text(path);
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t nl = text.find('\n'); nl != std::string::npos; start = nl + 1, nl = text.find('\n', start))
    lines.push_back(text.substr(start, nl - start));
  return lines;
}

bool is_router_loss_key(const std::string& key) {
  static const std::string suffix = "_loss";
  return key.size() > suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_router_name(const std::string& name) {
  return !name.empty() && name.size() <= 64 &&
         name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") == std::string::npos;
}

}  // namespace

LoadStats load_balance(const std::vector<int64_t>& load) {
  LoadStats b;
  if (load.empty()) return b;
  double total = 0, max_load = 0;
  for (int64_t v : load) total += double(v), max_load = std::max(max_load, double(v));
  const double mean = total / double(load.size());
  if (!(mean > 0)) return b;
  double var = 0;
  for (int64_t v : load) var += (double(v) - mean) * (double(v) - mean);
  b.max_over_mean = max_load / mean;
  b.cv = std::sqrt(var / double(load.size())) / mean;
  return b;
}

// ---- metrics.jsonl --------------------------------------------------------------------------

std::optional<double> MetricsRow::router_loss(std::string_view name) const {
  for (const auto& [key, value] : router_losses)
    if (key == name) return value;
  return std::nullopt;
}

nlohmann::ordered_json MetricsRow::to_json() const {
  nlohmann::ordered_json j;
  j["step"] = step;
  j["loss"] = loss;
  for (const auto& [name, value] : router_losses) j[name] = value;
  put_optional(j, "lr", lr);
  put_optional(j, "grad_norm", grad_norm);
  put_optional(j, "tokens", tokens);
  put_optional(j, "loss_tokens", loss_tokens);
  put_optional(j, "tokens_per_s", tokens_per_s);
  put_optional(j, "time", time);
  put_optional(j, "comm_wait_s", comm_wait_s);
  put_optional(j, "memory_bytes", memory_bytes);
  put_optional(j, "peak_memory_bytes", peak_memory_bytes);
  put_optional(j, "mfu", mfu);
  if (!router.empty()) {
    nlohmann::ordered_json r = nlohmann::ordered_json::object();
    for (const auto& [name, stats] : router) r[name] = {{"max_over_mean", stats.max_over_mean}, {"cv", stats.cv}};
    j["router"] = r;
  }
  return j;
}

MetricsRow MetricsRow::from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) fail("{}: not a JSON object", where);
  const Fields f{j, where};
  MetricsRow r;
  r.step = f.integer("step");
  r.loss = f.number("loss");  // a non-finite loss is logged (as null) on the step that stops the run
  for (const auto& [key, value] : j.items())
    if (key != "loss" && is_router_loss_key(key)) r.router_losses.emplace_back(key, f.number(key.c_str()));
  r.lr = f.optional_number("lr");
  r.grad_norm = f.optional_number("grad_norm");
  r.tokens = f.optional_integer("tokens");
  r.loss_tokens = f.optional_integer("loss_tokens");
  r.tokens_per_s = f.optional_number("tokens_per_s");
  r.time = f.optional_number("time");
  r.comm_wait_s = f.optional_number("comm_wait_s");
  r.memory_bytes = f.optional_integer("memory_bytes");
  r.peak_memory_bytes = f.optional_integer("peak_memory_bytes");
  r.mfu = f.optional_number("mfu");
  if (const nlohmann::json* router = f.find("router")) {
    if (!router->is_object()) fail("{}: \"router\" is not an object", where);
    for (const auto& [name, stats] : router->items()) {
      const std::string at = fmt::format("{}: router.{}", where, name);
      if (!stats.is_object()) fail("{}: not an object", at);
      const Fields s{stats, at};
      r.router.emplace_back(name, LoadStats{s.number("max_over_mean"), s.number("cv")});
    }
  }
  return r;
}

// ---- val.jsonl ------------------------------------------------------------------------------

nlohmann::ordered_json ValRow::to_json() const {
  nlohmann::ordered_json j;
  j["step"] = step;
  j["val_loss"] = val_loss;
  put_optional(j, "tokens", tokens);
  put_optional(j, "rows", rows);
  put_optional(j, "batches", batches);
  put_optional(j, "seconds", seconds);
  return j;
}

ValRow ValRow::from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) fail("{}: not a JSON object", where);
  const Fields f{j, where};
  ValRow r;
  r.step = f.integer("step");
  r.val_loss = f.number("val_loss");
  r.tokens = f.optional_integer("tokens");
  r.rows = f.optional_integer("rows");
  r.batches = f.optional_integer("batches");
  r.seconds = f.optional_number("seconds");
  return r;
}

// ---- final.json -----------------------------------------------------------------------------

nlohmann::ordered_json FinalSummary::to_json() const {
  nlohmann::ordered_json j;
  j["steps"] = steps;
  j["final_val_loss"] = nullable(final_val_loss);
  j["best_val_loss"] = nullable(best_val_loss);
  j["final_train_loss"] = final_train_loss;
  j["tokens"] = tokens;
  j["tokens_per_s"] = tokens_per_s;
  j["params"] = params;
  j["elapsed_s"] = elapsed_s;
  j["checkpoint"] = checkpoint;
  put_optional(j, "world_size", world_size);
  put_optional(j, "peak_memory_bytes", peak_memory_bytes);
  return j;
}

FinalSummary FinalSummary::from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) fail("{}: not a JSON object", where);
  const Fields f{j, where};
  FinalSummary s;
  s.steps = f.integer("steps");
  s.final_val_loss = f.nullable_number("final_val_loss");
  s.best_val_loss = f.nullable_number("best_val_loss");
  s.final_train_loss = f.number("final_train_loss");
  s.tokens = f.integer("tokens");
  s.tokens_per_s = f.number("tokens_per_s");
  s.params = f.integer("params");
  s.elapsed_s = f.number("elapsed_s");
  s.checkpoint = f.string("checkpoint");
  s.world_size = f.optional_integer("world_size");
  s.peak_memory_bytes = f.optional_integer("peak_memory_bytes");
  return s;
}

// ---- routing.json ---------------------------------------------------------------------------

void RoutingReport::write_to(nlohmann::json& j, bool with_coactivation) const {
  nlohmann::json r = nlohmann::json::array();
  for (const auto& it : routing)
    r.push_back({{"layer", it.layer},
                 {"iteration", it.iteration},
                 {"expert_load", it.expert_load},
                 {"load_imbalance", it.load_imbalance},
                 {"load_cv", it.load_cv},
                 {"router_entropy", it.router_entropy}});
  j["routing"] = r;
  nlohmann::json c = nlohmann::json::array();
  for (const auto& ch : chains) {
    nlohmann::json item = {{"layer", ch.layer},
                           {"iterations", ch.iterations},
                           {"distinct_expert_sets", ch.distinct_expert_sets},
                           {"mean_unique_experts", ch.mean_unique_experts}};
    if (with_coactivation && ch.iterations > 1) item["coactivation"] = ch.coactivation;
    c.push_back(item);
  }
  j["chains"] = c;
  if (combinatorial_bound)
    j["combinatorial_bound"] = {{"formula", combinatorial_bound->formula},
                                {"value", combinatorial_bound->value},
                                {"note", combinatorial_bound->note}};
}

RoutingReport RoutingReport::from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object() || !j.contains("routing") || !j["routing"].is_array())
    fail("{}: no \"routing\" array (not a coe-eval --routing or --json file)", where);
  RoutingReport report;
  const nlohmann::json& routers = j["routing"];
  for (size_t i = 0; i < routers.size(); ++i) {
    const std::string at = fmt::format("{}: routing[{}]", where, i);
    if (!routers[i].is_object()) fail("{}: not an object", at);
    const Fields f{routers[i], at};
    IterationRouting it;
    it.layer = f.integer("layer");
    it.iteration = f.integer("iteration");
    const nlohmann::json* load = f.find("expert_load");
    if (!load || !load->is_array() || load->empty()) fail("{}: \"expert_load\" is not a non-empty array", at);
    for (const auto& v : *load) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0)
        fail("{}: \"expert_load\" holds {}, not a count", at, v.dump());
      it.expert_load.push_back(v.get<int64_t>());
    }
    if (!report.routing.empty() && it.expert_load.size() != report.routing.front().expert_load.size())
      fail("{}: {} experts, routing[0] has {}", at, it.expert_load.size(), report.routing.front().expert_load.size());
    it.load_imbalance = f.optional_number("load_imbalance").value_or(0);
    it.load_cv = f.optional_number("load_cv").value_or(0);
    it.router_entropy = f.optional_number("router_entropy").value_or(0);
    report.routing.push_back(std::move(it));
  }
  if (const auto chains = j.find("chains"); chains != j.end()) {
    if (!chains->is_array()) fail("{}: \"chains\" is not an array", where);
    for (size_t i = 0; i < chains->size(); ++i) {
      const std::string at = fmt::format("{}: chains[{}]", where, i);
      if (!(*chains)[i].is_object()) fail("{}: not an object", at);
      const Fields f{(*chains)[i], at};
      LayerChain c;
      c.layer = f.integer("layer");
      c.iterations = f.integer("iterations");
      c.distinct_expert_sets = f.integer("distinct_expert_sets");
      c.mean_unique_experts = f.number("mean_unique_experts");
      if (const nlohmann::json* co = f.find("coactivation")) {
        try {
          c.coactivation = co->get<std::vector<std::vector<int64_t>>>();
        } catch (const nlohmann::json::exception&) {
          fail("{}: \"coactivation\" is not a matrix of counts", at);
        }
      }
      report.chains.push_back(std::move(c));
    }
  }
  if (const auto bound = j.find("combinatorial_bound"); bound != j.end()) {
    const std::string at = where + ": combinatorial_bound";
    if (!bound->is_object()) fail("{}: not an object", at);
    const Fields f{*bound, at};
    report.combinatorial_bound = CombinatorialBound{f.string("formula"), f.number("value"), f.string("note")};
  }
  return report;
}

// ---- files ----------------------------------------------------------------------------------

MetricsRow parse_metrics_line(const std::string& line, const std::string& where) {
  return MetricsRow::from_json(parse_object(line, where), where);
}

ValRow parse_val_line(const std::string& line, const std::string& where) {
  return ValRow::from_json(parse_object(line, where), where);
}

std::vector<MetricsRow> read_metrics_file(const fs::path& path) {
  std::vector<MetricsRow> rows;
  const auto lines = complete_lines(path);
  for (size_t i = 0; i < lines.size(); ++i)
    if (!lines[i].empty()) rows.push_back(parse_metrics_line(lines[i], fmt::format("{}:{}", path.string(), i + 1)));
  return rows;
}

std::vector<ValRow> read_val_file(const fs::path& path) {
  std::vector<ValRow> rows;
  std::error_code ec;
  if (!fs::exists(path, ec)) return rows;
  const auto lines = complete_lines(path);
  for (size_t i = 0; i < lines.size(); ++i)
    if (!lines[i].empty()) rows.push_back(parse_val_line(lines[i], fmt::format("{}:{}", path.string(), i + 1)));
  return rows;
}

FinalSummary read_final_summary(const fs::path& path) {
  return FinalSummary::from_json(
      parse_object(read_bounded_file(path.string(), kMaxJsonFileBytes, "a final.json"), path.string()), path.string());
}

RoutingReport read_routing_report(const fs::path& path) {
  // Not parse_object: from_json names what a non-object lacks (the "routing" array).
  return RoutingReport::from_json(
      parse_json(read_bounded_file(path.string(), kMaxJsonFileBytes, "a routing report"), path.string()),
      path.string());
}

// ---- TensorBoard ----------------------------------------------------------------------------

Scalars metrics_scalars(const nlohmann::json& row) {
  Scalars out;
  for (const auto& [key, value] : row.items()) {
    if (key == "step" || key == "tokens" || key == "loss_tokens" || key == "time" || !value.is_number()) continue;
    out.emplace_back("train/" + key, value.get<double>());
  }
  if (const auto router = row.find("router"); router != row.end() && router->is_object())
    for (const auto& [name, stats] : router->items()) {
      if (!is_router_name(name) || !stats.is_object()) continue;
      for (const char* stat : {"max_over_mean", "cv"})
        if (const auto it = stats.find(stat); it != stats.end() && it->is_number())
          out.emplace_back("router/" + name + "/" + stat, it->get<double>());
    }
  return out;
}

Scalars val_scalars(const nlohmann::json& row) {
  Scalars out;
  if (const auto it = row.find("val_loss"); it != row.end() && it->is_number())
    out.emplace_back("val/loss", it->get<double>());
  return out;
}

}  // namespace coe
