#include "coe/train/train_state.h"

#include "coe/data/content_hash.h"
#include "coe/util/error.h"

#include <fmt/ranges.h>

#include <cmath>

namespace coe {
namespace {

template <typename T>
std::optional<T> optional_field(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  return it->get<T>();
}

}  // namespace

std::string state_checksum_of(nlohmann::json manifest) {
  if (manifest.is_object()) manifest.erase("state_checksum");
  return "xxh64:" + hex64(xxh64(manifest.dump()));
}

nlohmann::ordered_json TrainState::to_json() const {
  auto opt = [](const auto& v) { return v ? nlohmann::ordered_json(*v) : nlohmann::ordered_json(nullptr); };
  nlohmann::ordered_json j;
  j["format"] = "coe-train-checkpoint";
  j["version"] = kCheckpointFormatVersion;
  j["step"] = step;
  j["tokens_seen"] = tokens_seen;
  j["loss_tokens_seen"] = loss_tokens_seen;
  j["elapsed_s"] = elapsed_s;
  j["last_train_loss"] = opt(last_train_loss);
  j["last_val_loss"] = opt(last_val_loss);
  j["best_val_loss"] = opt(best_val_loss);
  j["val_step"] = opt(val_step);
  j["scheduler"] = scheduler;
  j["loader"] = loader;
  if (!expert_load_window.empty())
    j["expert_load_window"] = {{"shape", expert_load_shape}, {"counts", expert_load_window}};
  j["files"] = {{"model", "model.safetensors"},
                {"model_config", "config.json"},
                {"optimizer", "optimizer.safetensors"},
                {"rng", "rng.safetensors"},
                {"config", "config.yaml"}};
  j["checksums"] = checksums;
  j["torch_version"] = torch_version;
  j["state_checksum"] = state_checksum_of(nlohmann::json::parse(j.dump()));
  return j;
}

TrainState TrainState::from_json(const nlohmann::json& j, const std::string& source) {
  // find, not value("format", ""): value throws nlohmann's type_error when format is no string.
  if (!j.is_object() || j.find("format") == j.end() || *j.find("format") != "coe-train-checkpoint")
    fail("{}: not a coe-train checkpoint state", source);
  const char* field = "version";
  // get<int64_t>() converts a float too, which is undefined behaviour outside int64's range
  // ("step": 4e115): every count in state.json must be a JSON integer.
  auto integer = [&](const nlohmann::json& v) {
    if (!v.is_number_integer()) fail("{}: {}: missing or of the wrong type (not an integer)", source, field);
    return v.get<int64_t>();
  };
  auto integers = [&](const nlohmann::json& v) {
    if (!v.is_array()) fail("{}: {}: missing or of the wrong type (not a list of integers)", source, field);
    std::vector<int64_t> out;
    for (const auto& x : v) out.push_back(integer(x));
    return out;
  };
  try {
    const int64_t version = integer(j.at("version"));
    if (version < 1 || version > kCheckpointFormatVersion)
      fail("{}: checkpoint format version {} (this coe reads versions 1 to {})", source, version,
           kCheckpointFormatVersion);
    // A value outside its range means a damaged or hand-edited file: resuming from it would
    // silently train on a wrong schedule or data position.
    auto check = [&](bool ok, const char* name, const std::string& value) {
      if (!ok) fail("{}: {}: {} is out of range", source, name, value);
    };
    auto finite_loss = [&](const std::optional<double>& v, const char* name) {
      if (v) check(std::isfinite(*v), name, fmt::format("{}", *v));
    };
    constexpr int64_t kMaxCount = int64_t{1} << 53;  // beyond any real run, exact in a JSON double
    TrainState s;
    field = "step";
    s.step = integer(j.at("step"));
    check(s.step >= 0 && s.step <= int64_t{1} << 40, "step", std::to_string(s.step));
    field = "tokens_seen";
    s.tokens_seen = integer(j.at("tokens_seen"));
    check(s.tokens_seen >= 0 && s.tokens_seen <= kMaxCount, "tokens_seen", std::to_string(s.tokens_seen));
    field = "loss_tokens_seen";
    s.loss_tokens_seen = integer(j.at("loss_tokens_seen"));
    check(s.loss_tokens_seen >= 0 && s.loss_tokens_seen <= s.tokens_seen, "loss_tokens_seen",
          std::to_string(s.loss_tokens_seen));
    field = "elapsed_s";
    s.elapsed_s = j.at("elapsed_s").get<double>();
    check(std::isfinite(s.elapsed_s) && s.elapsed_s >= 0, "elapsed_s", fmt::format("{}", s.elapsed_s));
    field = "last_train_loss";
    s.last_train_loss = optional_field<double>(j, "last_train_loss");
    finite_loss(s.last_train_loss, "last_train_loss");
    field = "last_val_loss";
    s.last_val_loss = optional_field<double>(j, "last_val_loss");
    finite_loss(s.last_val_loss, "last_val_loss");
    field = "best_val_loss";
    s.best_val_loss = optional_field<double>(j, "best_val_loss");
    finite_loss(s.best_val_loss, "best_val_loss");
    field = "val_step";
    if (auto it = j.find("val_step"); it != j.end() && !it->is_null()) s.val_step = integer(*it);
    if (s.val_step) check(*s.val_step >= 0 && *s.val_step <= s.step, "val_step", std::to_string(*s.val_step));
    field = "scheduler";
    s.scheduler = j.value("scheduler", nlohmann::json::object());
    field = "loader";
    s.loader = j.at("loader");
    if (!s.loader.is_object()) fail("{}: loader: expected an object", source);
    field = "expert_load_window";
    if (j.contains("expert_load_window")) {
      const auto& w = j.at("expert_load_window");
      s.expert_load_shape = integers(w.at("shape"));
      s.expert_load_window = integers(w.at("counts"));
      int64_t n = s.expert_load_shape.size() == 3 ? 1 : -1;
      for (int64_t d : s.expert_load_shape) n = d > 0 && d <= (int64_t{1} << 20) ? n * d : -1;
      check(n > 0 && static_cast<int64_t>(s.expert_load_window.size()) == n, "expert_load_window.shape",
            fmt::format("[{}] for {} counts", fmt::join(s.expert_load_shape, ", "), s.expert_load_window.size()));
      for (int64_t c : s.expert_load_window)
        check(c >= 0 && c <= kMaxCount, "expert_load_window.counts", std::to_string(c));
    }
    field = "checksums";
    if (version >= 2) {
      s.checksums = j.at("checksums").get<std::map<std::string, std::string>>();
      for (const char* f : kCheckpointFiles)
        if (!s.checksums.count(f)) fail("{}: checksums: no entry for {}", source, f);
    }
    field = "torch_version";
    s.torch_version = j.value("torch_version", "");
    // Last, so that a value out of range is named as such; an edit within range is found here.
    field = "state_checksum";
    if (version >= 3) {
      const std::string stated = j.at("state_checksum").get<std::string>();
      const std::string actual = state_checksum_of(j);
      if (stated != actual)
        fail("{}: state_checksum mismatch ({} stated, {} computed): the manifest was edited or is damaged", source,
             stated, actual);
    }
    return s;
  } catch (const nlohmann::json::exception& e) {
    fail("{}: {}: missing or of the wrong type ({})", source, field, e.what());
  }
}

}  // namespace coe
