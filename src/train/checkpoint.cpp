#include "coe/train/checkpoint.h"

#include "coe/io/hf_checkpoint.h"
#include "coe/io/safetensors.h"
#include "coe/model/causal_lm.h"
#include "coe/util/error.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/version.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <regex>

namespace fs = std::filesystem;

namespace coe {
namespace {

const char* const kState = "state.json";
const char* const kOptimizer = "optimizer.safetensors";
const char* const kRng = "rng.safetensors";
const char* const kConfig = "config.yaml";

std::optional<int64_t> parse_step_dir(const std::string& name, bool tmp) {
  static const std::regex complete(R"(step-(\d+))"), partial(R"(step-(\d+)\.tmp)");
  std::smatch m;
  if (!std::regex_match(name, m, tmp ? partial : complete)) return std::nullopt;
  try {
    return std::stoll(m[1].str());
  } catch (...) {
    return std::nullopt;
  }
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) fail("{}: write failed", path.string());
}

// Flushes a file or directory to disk (best effort: errors are ignored).
void sync_path(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

at::Generator cuda_generator(int device) {
  return at::globalContext().defaultGenerator(c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device)));
}

std::optional<double> optional_double(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  return it->get<double>();
}

}  // namespace

nlohmann::ordered_json TrainState::to_json() const {
  nlohmann::ordered_json j;
  j["format"] = "coe-train-checkpoint";
  j["version"] = kCheckpointFormatVersion;
  j["step"] = step;
  j["tokens_seen"] = tokens_seen;
  j["loss_tokens_seen"] = loss_tokens_seen;
  j["elapsed_s"] = elapsed_s;
  j["last_val_loss"] = last_val_loss ? nlohmann::ordered_json(*last_val_loss) : nlohmann::ordered_json(nullptr);
  j["best_val_loss"] = best_val_loss ? nlohmann::ordered_json(*best_val_loss) : nlohmann::ordered_json(nullptr);
  j["scheduler"] = scheduler;
  j["loader"] = loader;
  j["files"] = {{"model", "model.safetensors"}, {"model_config", "config.json"}, {"optimizer", kOptimizer},
                {"rng", kRng}, {"config", kConfig}};
  j["torch_version"] = TORCH_VERSION;
  return j;
}

TrainState TrainState::from_json(const nlohmann::json& j, const std::string& source) {
  try {
    if (!j.is_object() || j.value("format", "") != "coe-train-checkpoint")
      fail("{}: not a coe-train checkpoint state", source);
    const int version = j.at("version").get<int>();
    if (version != kCheckpointFormatVersion)
      fail("{}: checkpoint format version {} (this coe reads version {})", source, version, kCheckpointFormatVersion);
    TrainState s;
    s.step = j.at("step").get<int64_t>();
    s.tokens_seen = j.at("tokens_seen").get<int64_t>();
    s.loss_tokens_seen = j.at("loss_tokens_seen").get<int64_t>();
    s.elapsed_s = j.at("elapsed_s").get<double>();
    s.last_val_loss = optional_double(j, "last_val_loss");
    s.best_val_loss = optional_double(j, "best_val_loss");
    s.scheduler = j.value("scheduler", nlohmann::json::object());
    s.loader = j.at("loader");
    return s;
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed checkpoint state: {}", source, e.what());
  }
}

std::vector<CheckpointInfo> list_checkpoints(const std::string& out_dir) {
  std::vector<CheckpointInfo> out;
  std::error_code ec;
  if (!fs::is_directory(out_dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(out_dir)) {
    if (!entry.is_directory()) continue;
    auto step = parse_step_dir(entry.path().filename().string(), false);
    if (step && fs::exists(entry.path() / kState)) out.push_back({*step, entry.path().string()});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return out;
}

std::optional<CheckpointInfo> latest_checkpoint(const std::string& out_dir) {
  auto all = list_checkpoints(out_dir);
  if (all.empty()) return std::nullopt;
  return all.back();
}

std::string write_checkpoint(const std::string& out_dir, const TrainState& state, const CausalLMImpl& model,
                             const AdamW& optimizer, const std::string& config_yaml, int cuda_device) {
  const fs::path final_dir = fs::path(out_dir) / fmt::format("step-{}", state.step);
  const fs::path tmp = fs::path(out_dir) / fmt::format("step-{}.tmp", state.step);
  try {
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    io::save_hf_checkpoint(model, tmp.string(), at::kFloat);
    io::save_safetensors((tmp / kOptimizer).string(), optimizer.state(),
                         {{"format", "coe-adamw"}, {"beta1", fmt::format("{}", optimizer.options().beta1)},
                          {"beta2", fmt::format("{}", optimizer.options().beta2)},
                          {"eps", fmt::format("{}", optimizer.options().eps)},
                          {"weight_decay", fmt::format("{}", optimizer.options().weight_decay)}});
    std::map<std::string, at::Tensor> rng;
    {
      at::Generator cpu = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(cpu.mutex());
      rng["cpu"] = cpu.get_state();
    }
    if (cuda_device >= 0) {
      at::Generator gen = cuda_generator(cuda_device);
      std::lock_guard<std::mutex> lock(gen.mutex());
      rng[fmt::format("cuda:{}", cuda_device)] = gen.get_state();
    }
    io::save_safetensors((tmp / kRng).string(), rng);
    write_text(tmp / kConfig, config_yaml);
    // state.json last: its presence marks the directory complete.
    write_text(tmp / kState, state.to_json().dump(2) + "\n");
    for (const auto& entry : fs::directory_iterator(tmp)) sync_path(entry.path());
    sync_path(tmp);
    fs::remove_all(final_dir);
    fs::rename(tmp, final_dir);
    sync_path(out_dir);
  } catch (const fs::filesystem_error& e) {
    fail("checkpoint {}: {}", final_dir.string(), e.what());
  }
  return final_dir.string();
}

TrainState read_checkpoint(const std::string& dir, CausalLMImpl& model, AdamW& optimizer, int cuda_device) {
  const fs::path root(dir);
  if (!fs::exists(root / kState)) fail("{}: not a complete checkpoint (no {})", dir, kState);
  nlohmann::json j;
  {
    std::ifstream in(root / kState);
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: cannot parse: {}", (root / kState).string(), e.what());
    }
  }
  TrainState state = TrainState::from_json(j, (root / kState).string());
  io::load_hf_state_dict(model, io::read_hf_weights(dir), dir);
  optimizer.load_state(io::load_safetensors((root / kOptimizer).string()).tensors, (root / kOptimizer).string());
  const auto rng = io::load_safetensors((root / kRng).string()).tensors;
  auto cpu_state = rng.find("cpu");
  if (cpu_state == rng.end()) fail("{}: no 'cpu' generator state", (root / kRng).string());
  {
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(cpu.mutex());
    cpu.set_state(cpu_state->second);
  }
  if (cuda_device >= 0) {
    auto it = rng.find(fmt::format("cuda:{}", cuda_device));
    if (it != rng.end()) {
      at::Generator gen = cuda_generator(cuda_device);
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(it->second);
    }
  }
  return state;
}

void prune_checkpoints(const std::string& out_dir, int64_t keep_last) {
  std::error_code ec;
  if (!fs::is_directory(out_dir, ec)) return;
  for (const auto& entry : fs::directory_iterator(out_dir))
    if (entry.is_directory() && parse_step_dir(entry.path().filename().string(), true)) fs::remove_all(entry.path(), ec);
  if (keep_last <= 0) return;
  auto all = list_checkpoints(out_dir);
  for (size_t i = 0; i + static_cast<size_t>(keep_last) < all.size(); ++i) fs::remove_all(all[i].dir, ec);
}

}  // namespace coe
