#include "coe/io/hf_checkpoint.h"

#include "coe/io/hf_remote_code.h"
#include "coe/io/safetensors.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <set>

namespace fs = std::filesystem;

namespace coe {
namespace {

const char* const kExpertProjections[] = {"gate_proj", "up_proj", "down_proj"};

// "…mlp.experts.gate_proj" -> ("…mlp.experts.", "gate_proj"); empty prefix if not a stacked expert.
std::pair<std::string, std::string> split_stacked(const std::string& name) {
  for (const char* proj : kExpertProjections) {
    std::string suffix = std::string("experts.") + proj;
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      return {name.substr(0, name.size() - std::string(proj).size()), proj};
  }
  return {"", ""};
}

// The index of each stacked-experts module's first expert in the whole model, by its parameters'
// prefix ("…mlp.experts."): not 0 on a rank of expert parallelism.
std::map<std::string, int64_t> first_experts(const CausalLMImpl& model) {
  std::map<std::string, int64_t> out;
  for (const auto& item : model.named_modules())
    if (const auto* experts = dynamic_cast<const RoutedExpertsImpl*>(item.value().get()))
      out[item.key() + "."] = experts->first_expert;
  return out;
}

}  // namespace

std::map<std::string, at::Tensor> hf_state_dict(const CausalLMImpl& model, bool grads) {
  std::map<std::string, at::Tensor> out;
  const auto first = first_experts(model);
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    at::Tensor t = grads ? item.value().grad() : item.value();
    if (!t.defined()) t = at::zeros_like(item.value());
    auto [prefix, proj] = split_stacked(item.key());
    if (prefix.empty()) {
      out[item.key()] = t.detach();
      continue;
    }
    const int64_t offset = first.count(prefix) ? first.at(prefix) : 0;
    for (int64_t e = 0; e < t.size(0); ++e)
      out[prefix + std::to_string(offset + e) + "." + proj + ".weight"] = t[e].detach();
  }
  // Buffers that are model state (the routers' e_score_correction_bias, under its HF name); they
  // have no gradient.
  if (!grads)
    for (const auto& item : model.named_buffers(/*recurse=*/true)) out[item.key()] = item.value().detach();
  return out;
}

void load_hf_state_dict(CausalLMImpl& model, const std::map<std::string, at::Tensor>& tensors,
                        const std::string& source) {
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  auto take = [&](const std::string& name, at::Tensor dst) {
    auto it = tensors.find(name);
    if (it == tensors.end()) fail("{}: missing tensor '{}'", source, name);
    if (it->second.sizes() != dst.sizes())
      fail("{}: tensor '{}' has shape {} but the model expects {}", source, name, fmt::join(it->second.sizes(), "x"),
           fmt::join(dst.sizes(), "x"));
    if (!it->second.is_floating_point()) fail("{}: tensor '{}' is not a floating-point tensor", source, name);
    dst.copy_(it->second);
    used.insert(name);
  };
  const auto first = first_experts(model);
  for (auto& item : model.named_parameters(true)) {
    auto [prefix, proj] = split_stacked(item.key());
    if (prefix.empty()) {
      take(item.key(), item.value());
      continue;
    }
    const int64_t offset = first.count(prefix) ? first.at(prefix) : 0, held = item.value().size(0);
    for (int64_t e = 0; e < held; ++e)
      take(prefix + std::to_string(offset + e) + "." + proj + ".weight", item.value()[e]);
    // A rank of expert parallelism holds some experts; the file's others are the other ranks'.
    for (int64_t e = 0; e < model.config().n_routed_experts; ++e)
      if (e < offset || e >= offset + held) used.insert(prefix + std::to_string(e) + "." + proj + ".weight");
  }
  for (auto& item : model.named_buffers(true)) take(item.key(), item.value());
  for (const auto& [name, t] : tensors) {
    if (used.count(name)) continue;
    // The reference keeps rotary caches as non-persistent buffers; tied checkpoints may still
    // carry lm_head.weight.
    if (name == "lm_head.weight" && model.config().tie_word_embeddings) continue;
    if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;
    fail("{}: unexpected tensor '{}' (not a parameter of this model configuration)", source, name);
  }
}

std::map<std::string, at::Tensor> read_hf_weights(const std::string& dir) {
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(single)) return load_safetensors(single.string()).tensors;
  if (!fs::exists(index)) fail("{}: no model.safetensors or model.safetensors.index.json", dir);
  const std::map<std::string, std::string> wanted = read_safetensors_index(index.string());  // tensor -> shard
  std::set<std::string> shards;
  for (const auto& [name, shard] : wanted) shards.insert(shard);
  std::map<std::string, at::Tensor> out;
  for (const auto& shard : shards) {
    const std::string path = (fs::path(dir) / shard).string();
    for (auto& [name, t] : load_safetensors(path).tensors) {
      auto it = wanted.find(name);
      if (it == wanted.end() || it->second != shard)
        fail("{}: tensor '{}' is not listed for this shard in {}", path, name, index.string());
      out[name] = std::move(t);
    }
  }
  for (const auto& [name, shard] : wanted)
    if (!out.count(name)) fail("{}: tensor '{}' listed in the index is missing", shard, name);
  return out;
}

CausalLM load_hf_checkpoint(const std::string& dir) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  ModelConfig config = load_model_config(config_path);
  CausalLM model(config);
  load_hf_state_dict(*model, read_hf_weights(dir), dir);
  return model;
}

void save_hf_checkpoint(const CausalLMImpl& model, const std::string& dir, at::ScalarType dtype) {
  save_hf_checkpoint(model.config(), hf_state_dict(model), dir, dtype);
}

void save_hf_checkpoint(const ModelConfig& config, const std::map<std::string, at::Tensor>& tensors,
                        const std::string& dir, at::ScalarType dtype) {
  fs::create_directories(dir);
  std::map<std::string, at::Tensor> converted;
  for (const auto& [name, t] : tensors) converted[name] = t.to(at::kCPU, dtype);
  save_safetensors((fs::path(dir) / "model.safetensors").string(), converted, {{"format", "pt"}});
  write_file_atomic(fs::path(dir) / "config.json", model_config_to_json(config));
}

std::string hf_expert_name(const std::string& param, int64_t expert) {
  auto [prefix, proj] = split_stacked(param);
  return prefix.empty() ? std::string() : prefix + std::to_string(expert) + "." + proj + ".weight";
}

std::vector<std::string> save_hf_weights(const std::string& dir, const std::map<std::string, at::Tensor>& tensors,
                                         int64_t max_shard_bytes) {
  if (max_shard_bytes <= 0) fail("max shard size {}: must be > 0", max_shard_bytes);
  fs::create_directories(dir);
  std::vector<std::map<std::string, at::Tensor>> shards(1);
  int64_t shard_bytes = 0, total_bytes = 0;
  for (const auto& [name, t] : tensors) {
    const int64_t bytes = static_cast<int64_t>(t.nbytes());
    if (shard_bytes > 0 && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back()[name] = t;
    shard_bytes += bytes;
    total_bytes += bytes;
  }
  const std::map<std::string, std::string> metadata{{"format", "pt"}};
  if (shards.size() == 1) {
    save_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, metadata);
    return {"model.safetensors"};
  }
  std::vector<std::string> files;
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
    save_safetensors((fs::path(dir) / name).string(), shards[i], metadata);
    for (const auto& item : shards[i]) weight_map[item.first] = name;
    files.push_back(name);
  }
  const nlohmann::ordered_json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
  write_file_atomic(fs::path(dir) / "model.safetensors.index.json", index.dump(2) + "\n");
  files.push_back("model.safetensors.index.json");
  return files;
}

std::vector<std::string> save_hf_export(const CausalLMImpl& model, const std::string& dir,
                                        const HfExportOptions& options) {
  if (options.dtype != at::kFloat && options.dtype != at::kBFloat16)
    fail("export dtype {}: float32 or bfloat16", c10::toString(options.dtype));
  ModelConfig config = model.config();
  config.bos_token_id = options.bos_token_id;
  config.eos_token_id = options.eos_token_id;
  config.pad_token_id = options.pad_token_id;
  const std::string config_json =
      model_config_to_hf_json(config, options.type, options.dtype == at::kFloat ? "float32" : "bfloat16");
  // transformers' DeepSeek layers have one router, "mlp.gate"; coe names a C = 1 model's only
  // router of its iterations "mlp.gate.0" (use_igate).
  const bool rename_gate = options.type != HfModelType::kCoe && config.use_igate;
  std::map<std::string, at::Tensor> tensors;
  for (auto& [name, t] : hf_state_dict(model)) {
    std::string out = name;
    if (rename_gate)
      if (const size_t at = out.find(".mlp.gate.0."); at != std::string::npos) out.replace(at, 12, ".mlp.gate.");
    tensors[out] = t.to(at::kCPU, options.dtype);
  }
  std::vector<std::string> files = save_hf_weights(dir, tensors, options.max_shard_bytes);
  write_file_atomic(fs::path(dir) / "config.json", config_json);
  files.push_back("config.json");
  nlohmann::ordered_json generation = nlohmann::ordered_json::object();
  for (auto [key, id] : {std::pair{"bos_token_id", options.bos_token_id},
                         {"eos_token_id", options.eos_token_id},
                         {"pad_token_id", options.pad_token_id}})
    if (id) generation[key] = *id;
  write_file_atomic(fs::path(dir) / "generation_config.json", generation.dump(2) + "\n");
  files.push_back("generation_config.json");
  if (options.type == HfModelType::kCoe)
    for (const EmbeddedFile& code : kHfRemoteCode) {
      write_file_atomic(fs::path(dir) / std::string(code.name), std::string(code.text));
      files.emplace_back(code.name);
    }
  return files;
}

}  // namespace coe
