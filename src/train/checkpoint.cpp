#include "coe/train/checkpoint.h"

#include "coe/data/content_hash.h"
#include "coe/io/hf_checkpoint.h"
#include "coe/io/safetensors.h"
#include "coe/model/causal_lm.h"
#include "coe/tokenizer/tokenizer.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/json_limits.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/ranges.h>
#include <torch/version.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
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
const char* const kMarker = ".coe-checkpoint";
// The names tokenizer_files stores a tokenizer under.
const char* const kStoredTokenizerFiles[] = {"tokenizer.json", "vocab.json", "merges.txt"};

// "step-N" (kind ""), "step-N.tmp", "step-N.deleting": the step, else nullopt.
std::optional<int64_t> parse_step_dir(const std::string& name, const std::string& kind = "") {
  static const std::regex pattern(R"(step-(\d{1,18})(\.tmp|\.deleting)?)");
  std::smatch m;
  if (!std::regex_match(name, m, pattern) || m[2].str() != kind) return std::nullopt;
  return std::stoll(m[1].str());
}

// coe's marker, or (checkpoints of coe before the marker) a coe-train state.json manifest.
bool written_by_coe(const fs::path& dir) {
  std::error_code ec;
  if (fs::is_regular_file(dir / kMarker, ec)) return true;
  if (!fs::is_regular_file(dir / kState, ec)) return false;
  try {
    const nlohmann::json j = read_json_file((dir / kState).string(), "a state.json");
    return j.is_object() && j.value("format", "") == "coe-train-checkpoint";
  } catch (const std::exception&) {
    return false;
  }
}

// Whether `name` is a file coe writes into a checkpoint directory, or a temporary of one
// ("<file>.tmp" of save_safetensors, "<file>.tmp-<pid>" of write_file_atomic).
bool is_checkpoint_file(const std::string& name) {
  static const std::regex temporary(R"((.+)\.tmp(-\d+)?)");
  std::smatch m;
  const std::string base = std::regex_match(name, m, temporary) ? m[1].str() : name;
  if (base == kState || base == kMarker) return true;
  for (const char* f : kStoredTokenizerFiles)
    if (base == f) return true;
  for (const char* f : kCheckpointFiles)
    if (base == f) return true;
  return false;
}

// Whether `dir` holds nothing but (at most) a half-written marker: what a save killed between
// creating its directory and renaming the marker into it leaves. Nobody else's data can be in it.
bool only_marker_leftovers(const fs::path& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || name.rfind(std::string(kMarker) + ".tmp", 0) != 0) return false;
  }
  return !ec;
}

// Deletes the files coe wrote into a checkpoint directory, then the directory if nothing else is
// in it. A directory without coe's marker or manifest is not touched (unless it holds nothing but
// a half-written marker); a file coe did not write survives (and with it the directory). Returns
// whether the directory is gone.
bool remove_checkpoint_dir(const fs::path& dir) {
  if (!written_by_coe(dir) && !only_marker_leftovers(dir)) return false;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name != kMarker && entry.is_regular_file() && is_checkpoint_file(name)) fs::remove(entry.path(), ec);
  }
  fs::remove(dir / kMarker, ec);
  return fs::remove(dir, ec);  // fails, leaving it, when a foreign file is still inside
}

// Flushes a file or directory to disk (best effort: errors are ignored).
void sync_path(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

at::Generator cuda_generator(int device) {
  return at::globalContext().defaultGenerator(
      c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device)));
}

}  // namespace

std::vector<CheckpointInfo> list_checkpoints(const std::string& out_dir) {
  std::vector<CheckpointInfo> out;
  std::error_code ec;
  if (!fs::is_directory(out_dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(out_dir)) {
    if (!entry.is_directory()) continue;
    auto step = parse_step_dir(entry.path().filename().string());
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

std::string write_checkpoint(const std::string& out_dir, const TrainState& state, const ModelConfig& model_config,
                             const CheckpointTensors& tensors, const std::string& config_yaml,
                             const std::string& tokenizer_spec, int cuda_device) {
  const fs::path final_dir = fs::path(out_dir) / fmt::format("step-{}", state.step);
  const fs::path tmp = fs::path(out_dir) / fmt::format("step-{}.tmp", state.step);

  TrainState saved = state;
  try {
    // A leftover of the same name is coe's own (it carries the marker), else it is not ours to delete.
    if (fs::exists(tmp) && !remove_checkpoint_dir(tmp))
      fail("checkpoint {}: {} exists and holds files coe did not write; not touching it", final_dir.string(),
           tmp.string());
    fs::create_directories(tmp);
    write_file_atomic(tmp / kMarker, "coe-train checkpoint\n");
    save_hf_checkpoint(model_config, tensors.weights, tmp.string(), at::kFloat);
    const AdamWOptions& o = tensors.optimizer_options;
    save_safetensors((tmp / kOptimizer).string(), tensors.optimizer,
                     {{"format", "coe-adamw"},
                      {"beta1", fmt::format("{}", o.beta1)},
                      {"beta2", fmt::format("{}", o.beta2)},
                      {"eps", fmt::format("{}", o.eps)},
                      {"weight_decay", fmt::format("{}", o.weight_decay)}});
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
    save_safetensors((tmp / kRng).string(), rng);
    write_file_atomic(tmp / kConfig, config_yaml);
    saved.torch_version = TORCH_VERSION;
    // The tokenizer travels with the weights (as in an HF folder): a copied run or a checkpoint
    // evaluated from another directory does not depend on the path it was trained with.
    const auto tokenizer = tokenizer_files(tokenizer_spec);
    for (const auto& f : tokenizer) {
      std::error_code ec;
      fs::copy_file(f.path, tmp / f.stored_name, ec);
      if (ec) fail("checkpoint {}: cannot copy the tokenizer file {}: {}", final_dir.string(), f.path, ec.message());
      sync_path(tmp / f.stored_name);
    }
    saved.checksums.clear();
    for (const char* f : kCheckpointFiles) saved.checksums[f] = hash_file((tmp / f).string());
    for (const auto& f : tokenizer) saved.checksums[f.stored_name] = hash_file((tmp / f.stored_name).string());
    // state.json last: its presence marks the directory complete.
    write_file_atomic(tmp / kState, saved.to_json().dump(2) + "\n");
    for (const auto& entry : fs::directory_iterator(tmp)) sync_path(entry.path());
    sync_path(tmp);
    if (fs::exists(final_dir) && !remove_checkpoint_dir(final_dir))
      fail("checkpoint {}: the directory exists and holds files coe did not write; not replacing it",
           final_dir.string());
    fs::rename(tmp, final_dir);
    sync_path(out_dir);
  } catch (const fs::filesystem_error& e) {
    fail("checkpoint {}: {}", final_dir.string(), e.what());
  }
  return final_dir.string();
}

TrainState read_checkpoint_state(const std::string& dir) {
  const fs::path root(dir);
  const fs::path state_file = root / kState;
  if (!fs::exists(state_file)) fail("{}: not a complete checkpoint (no {})", dir, kState);
  nlohmann::json j;
  try {
    j = read_json_file(state_file.string(), "a state.json");
  } catch (const nlohmann::json::exception& e) {
    fail("{}: cannot parse: {}", state_file.string(), e.what());
  }
  TrainState state = TrainState::from_json(j, state_file.string());
  // A step-N directory holds step N: a manifest saying otherwise was edited (or moved between
  // directories), and would resume at the wrong step.
  fs::path normal = root.lexically_normal();
  if (normal.filename().empty()) normal = normal.parent_path();  // "run/step-5/"
  const auto named = parse_step_dir(normal.filename().string());
  if (named && *named != state.step)
    fail("{}: step {} does not match its directory's name ({}): the manifest was edited or moved", state_file.string(),
         state.step, normal.filename().string());
  for (const auto& [file, expected] : state.checksums) {
    const fs::path path = root / file;
    if (!fs::exists(path)) fail("{}: missing (listed in {})", path.string(), kState);
    const std::string actual = hash_file(path.string());
    if (actual != expected)
      fail("{}: checksum mismatch ({} in {}, {} on disk): the file is damaged", path.string(), expected, kState,
           actual);
  }
  return state;
}

std::optional<CheckpointInfo> newest_intact_checkpoint_before(const std::string& out_dir, int64_t step) {
  auto all = list_checkpoints(out_dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (it->step >= step) continue;
    try {
      read_checkpoint_state(it->dir);
      return *it;
    } catch (const Error&) {
    }
  }
  return std::nullopt;
}

TrainState read_checkpoint(const std::string& dir, CausalLMImpl& model, const OptimizerStateLoader& load_optimizer,
                           int cuda_device) {
  const fs::path root(dir);
  TrainState state = read_checkpoint_state(dir);
  load_hf_state_dict(model, read_hf_weights(dir), dir);
  load_optimizer(load_safetensors((root / kOptimizer).string()).tensors, (root / kOptimizer).string());
  const auto rng = load_safetensors((root / kRng).string()).tensors;
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

namespace {

// Renames a checkpoint out of the step-N namespace first, so a prune killed half-way leaves a
// step-N.deleting (cleaned up by the next run), never a step-N that looks resumable but is not.
void delete_checkpoint(const fs::path& dir) {
  if (!written_by_coe(dir)) return;
  const fs::path doomed = dir.string() + ".deleting";
  std::error_code ec;
  fs::rename(dir, doomed, ec);
  if (!ec) remove_checkpoint_dir(doomed);
}

}  // namespace

void prune_checkpoints(const std::string& out_dir, int64_t keep_last) {
  if (keep_last <= 0) return;
  auto all = list_checkpoints(out_dir);
  for (size_t i = 0; i + static_cast<size_t>(keep_last) < all.size(); ++i) delete_checkpoint(all[i].dir);
}

std::vector<std::string> remove_stale_checkpoints(const std::string& out_dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  if (!fs::is_directory(out_dir, ec)) return removed;
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(out_dir)) {
    if (!entry.is_directory()) continue;
    const std::string name = entry.path().filename().string();
    if (parse_step_dir(name, ".tmp") || parse_step_dir(name, ".deleting") ||
        (parse_step_dir(name) && !fs::exists(entry.path() / kState)))
      stale.push_back(entry.path());
  }
  for (const auto& dir : stale)
    if (remove_checkpoint_dir(dir)) removed.push_back(dir.string());
  return removed;
}

std::vector<std::string> remove_stale_run_files(const std::string& out_dir) {
  static const std::regex temporary(
      R"((config\.yaml|metrics\.jsonl|val\.jsonl|final\.json|init_from\.txt|tokenizer\.json|vocab\.json|merges\.txt)\.tmp-\d{1,10})");
  std::vector<std::string> removed;
  std::error_code ec;
  if (!fs::is_directory(out_dir, ec)) return removed;
  for (const auto& entry : fs::directory_iterator(out_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file(ec) && !entry.is_symlink(ec) && std::regex_match(name, temporary) &&
        fs::remove(entry.path(), ec))
      removed.push_back(entry.path().string());
  }
  return removed;
}

std::string find_checkpoint(const std::string& path) {
  std::string dir = path;
  if (!fs::exists(fs::path(path) / "config.json")) {
    if (!fs::is_directory(path)) fail("{}: no such checkpoint or run directory", path);
    const auto newest = latest_checkpoint(path);
    if (!newest)
      fail("{}: neither a checkpoint (config.json) nor a run directory with complete step-N checkpoints", path);
    dir = newest->dir;
  }
  if (fs::exists(fs::path(dir) / kState)) read_checkpoint_state(dir);  // checks every file's checksum
  return dir;
}

std::optional<std::string> stored_tokenizer(const std::string& checkpoint_dir) {
  std::error_code ec;
  for (const char* f : {"tokenizer.json", "vocab.json"})
    if (fs::is_regular_file(fs::path(checkpoint_dir) / f, ec)) return checkpoint_dir;
  return std::nullopt;
}

std::optional<TrainConfig> read_run_config(const std::string& checkpoint_dir) {
  const fs::path file = fs::path(checkpoint_dir) / kConfig;
  if (!fs::exists(file)) return std::nullopt;
  return load_train_config(file.string());
}

std::vector<std::string> move_checkpoints_after(const std::string& out_dir, int64_t step, const std::string& dest_dir) {
  std::vector<std::string> moved;
  for (const auto& c : list_checkpoints(out_dir)) {
    if (c.step <= step) continue;
    fs::create_directories(dest_dir);
    const fs::path dest = fs::path(dest_dir) / fs::path(c.dir).filename();
    fs::rename(c.dir, dest);
    moved.push_back(dest.string());
  }
  return moved;
}

}  // namespace coe
