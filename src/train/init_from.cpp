#include "coe/train/init_from.h"

#include "coe/io/hf_checkpoint.h"
#include "coe/model/causal_lm.h"
#include "coe/train/checkpoint.h"
#include "coe/util/error.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <torch/autograd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <set>

namespace coe {
namespace {

// "model.layers.3.mlp.gate.1.weight" -> {"model.layers.3.mlp.gate", "1", "weight"}; a shared gate
// has the id "".
struct GateName {
  std::string layer_gate, id, field;
};

std::optional<GateName> gate_name(const std::string& name) {
  static const std::regex pattern(R"((model\.layers\.\d+\.mlp\.gate)(?:\.(\d+))?\.(weight|e_score_correction_bias))");
  std::smatch m;
  if (!std::regex_match(name, m, pattern)) return std::nullopt;
  return GateName{m[1].str(), m[2].str(), m[3].str()};
}

std::string gate_tensor(const std::string& layer_gate, const std::string& id, const std::string& field) {
  return layer_gate + (id.empty() ? "" : "." + id) + "." + field;
}

// The gate ids of every layer that holds gate weights.
std::map<std::string, std::set<std::string>> gates_by_layer(const std::map<std::string, at::Tensor>& tensors) {
  std::map<std::string, std::set<std::string>> out;
  for (const auto& [name, t] : tensors)
    if (auto g = gate_name(name); g && g->field == "weight") out[g->layer_gate].insert(g->id);
  return out;
}

std::string ids_text(const std::set<std::string>& ids) {
  std::vector<std::string> names;
  for (const auto& id : ids) names.push_back(id.empty() ? "gate" : "gate." + id);
  return fmt::format("{}", fmt::join(names, ", "));
}

std::string shape_text(const at::Tensor& t) { return fmt::format("{}", fmt::join(t.sizes(), "x")); }

}  // namespace

int64_t InitFromReport::count(const std::string& action) const {
  return std::count_if(rows.begin(), rows.end(), [&](const InitFromRow& r) { return r.action == action; });
}

std::string InitFromReport::table() const {
  size_t w_action = 6, w_target = 6, w_source = 6, w_shape = 5;
  for (const auto& r : rows) {
    w_action = std::max(w_action, r.action.size());
    w_target = std::max(w_target, r.target.size());
    w_source = std::max(w_source, r.source.size());
    w_shape = std::max(w_shape, r.shape.size());
  }
  std::string out = fmt::format("# trainer.init_from: {}\n# {} copied, {} initialised, {} dropped\n", checkpoint,
                                count("copied"), count("initialised"), count("dropped"));
  auto line = [&](const std::string& a, const std::string& t, const std::string& s, const std::string& sh,
                  const std::string& n) {
    std::string l =
        fmt::format("{:<{}}  {:<{}}  {:<{}}  {:<{}}  {}", a, w_action, t, w_target, s, w_source, sh, w_shape, n);
    while (!l.empty() && l.back() == ' ') l.pop_back();
    return l + "\n";
  };
  out += line("action", "target", "source", "shape", "note");
  for (const auto& r : rows) out += line(r.action, r.target, r.source, r.shape, r.note);
  return out;
}

std::string InitFromReport::summary() const {
  std::string out = fmt::format("init_from {}: {} tensors copied, {} initialised, {} dropped", checkpoint,
                                count("copied"), count("initialised"), count("dropped"));
  int64_t by_name = 0;
  for (const auto& r : rows) {
    if (r.action == "copied" && r.note.empty()) {
      ++by_name;
      continue;
    }
    out +=
        fmt::format("\n  {:<11} {} <- {}{}", r.action, r.target, r.source, r.note.empty() ? "" : " (" + r.note + ")");
  }
  out += fmt::format("\n  ({} tensors copied by name with equal shapes)", by_name);
  return out;
}

InitFromReport init_from_checkpoint(CausalLMImpl& model, const std::string& path, const std::string& what) {
  InitFromReport report;
  std::map<std::string, at::Tensor> source;
  try {
    report.checkpoint = find_checkpoint(path);
    // Read for its checks: a field coe does not support (an HF folder's) is an error here, not a
    // model other than the one its weights were trained as.
    load_model_config((std::filesystem::path(report.checkpoint) / "config.json").string());
    source = read_hf_weights(report.checkpoint);
  } catch (const Error& e) {
    fail("{}: {}", what, e.what());
  }
  const std::map<std::string, at::Tensor> target = hf_state_dict(model);  // views of the model's tensors
  const auto source_gates = gates_by_layer(source), target_gates = gates_by_layer(target);
  std::set<std::string> used;
  torch::NoGradGuard no_grad;

  auto copy = [&](const std::string& target_name, const std::string& source_name, const std::string& note) {
    const at::Tensor& src = source.at(source_name);
    at::Tensor dst = target.at(target_name);
    if (src.sizes() != dst.sizes())
      fail("{}: tensor '{}' has shape {} in {} but this model's '{}' is {}", what, source_name, shape_text(src),
           report.checkpoint, target_name, shape_text(dst));
    if (!src.is_floating_point())
      fail("{}: tensor '{}' of {} is not floating-point", what, source_name, report.checkpoint);
    dst.copy_(src);
    used.insert(source_name);
    report.rows.push_back({"copied", target_name, source_name, shape_text(dst), note});
  };

  for (const auto& [name, dst] : target) {
    const auto gate = gate_name(name);
    const auto src_ids = gate ? source_gates.find(gate->layer_gate) : source_gates.end();
    const bool remap = gate && src_ids != source_gates.end() && src_ids->second != target_gates.at(gate->layer_gate);
    if (!remap) {
      if (source.count(name)) {
        copy(name, name, "");
      } else if (gate && gate->field == "e_score_correction_bias") {
        report.rows.push_back({"initialised", name, "-", shape_text(dst), "zeros: the source has no correction bias"});
      } else {
        fail("{}: {} has no tensor '{}' (and no rule maps another one to it)", what, report.checkpoint, name);
      }
      continue;
    }
    // The source layer's gates are named otherwise than the target's: one source gate goes to
    // every target gate; more than one cannot be assigned.
    const std::set<std::string>& ids = src_ids->second;
    if (ids.size() != 1)
      fail("{}: cannot map the {} gates of {} ({}) to this model's gates ({}) for '{}': only a single source gate "
           "(C = 1) is copied to every iteration",
           what, ids.size(), gate->layer_gate, ids_text(ids), ids_text(target_gates.at(gate->layer_gate)), name);
    const std::string from = gate_tensor(gate->layer_gate, *ids.begin(), gate->field);
    if (source.count(from)) copy(name, from, "the source layer's only gate, to every gate of this layer");
    else if (gate->field == "e_score_correction_bias")
      report.rows.push_back({"initialised", name, "-", shape_text(dst), "zeros: the source has no correction bias"});
    else fail("{}: {} has no tensor '{}' for '{}'", what, report.checkpoint, from, name);
  }

  // Expert parallelism: this rank holds some of each layer's routed experts (checkpoint names
  // with their index in the whole layer), the other ranks the rest. Without it every such
  // expert was copied above.
  auto other_ranks_expert = [&](const std::string& name) {
    const std::string marker = ".mlp.experts.";
    const size_t at = name.find(marker);
    if (at == std::string::npos) return false;
    const size_t begin = at + marker.size(), end = name.find('.', begin);
    const std::string index = name.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    if (index.empty() || index.size() > 9 || index.find_first_not_of("0123456789") != std::string::npos) return false;
    const std::string layer = name.substr(0, begin);
    return std::stoll(index) < model.config().n_routed_experts &&
           std::any_of(target.begin(), target.end(), [&](const auto& kv) { return kv.first.rfind(layer, 0) == 0; });
  };
  for (const auto& [name, t] : source) {
    if (used.count(name)) continue;
    const auto gate = gate_name(name);
    std::string why;
    if (other_ranks_expert(name)) continue;  // copied by the rank that holds it
    if (gate && gate->field == "e_score_correction_bias") why = "this model does not use topk_method noaux_tc";
    else if (name.find("rotary_emb.inv_freq") != std::string::npos) why = "rotary tables are recomputed";
    else if (name == "lm_head.weight" && model.config().tie_word_embeddings)
      why = "this model ties lm_head to the embeddings";
    else
      fail("{}: tensor '{}' of {} has no place in this model ({} layers, {} routed experts, inner_iter {})", what, name,
           report.checkpoint, model.config().num_hidden_layers, model.config().n_routed_experts,
           model.config().inner_iter);
    report.rows.push_back({"dropped", "-", name, shape_text(t), why});
  }
  return report;
}

}  // namespace coe
