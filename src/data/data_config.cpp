#include "coe/data/data_config.h"

#include "coe/data/text_template.h"
#include "coe/util/error.h"

namespace coe {

const char* to_string(Truncation t) {
  switch (t) {
    case Truncation::kError: return "error";
    case Truncation::kLeft: return "left";
    case Truncation::kRight: return "right";
  }
  return "?";
}

const char* to_string(SplitRng r) { return r == SplitRng::kNumpy ? "numpy" : "splitmix64"; }

Truncation parse_truncation(const std::string& s) {
  if (s == "error") return Truncation::kError;
  if (s == "left") return Truncation::kLeft;
  if (s == "right") return Truncation::kRight;
  fail("truncation '{}': expected error, left or right", s);
}

SplitRng parse_split_rng(const std::string& s) {
  if (s == "splitmix64") return SplitRng::kSplitMix64;
  if (s == "numpy") return SplitRng::kNumpy;
  fail("split_rng '{}': expected splitmix64 or numpy", s);
}

void DataConfig::validate() const {
  if (max_length <= 0) fail("data.max_length must be positive, got {}", max_length);
  if (threads < 0) fail("data.threads must be >= 0 (0 = all cores), got {}", threads);
  if (split.val_count && split.val_fraction) fail("data: set val_count or val_fraction, not both");
  if (split.val_count && *split.val_count <= 0) fail("data.val_count must be positive, got {}", *split.val_count);
  if (split.val_fraction && !(*split.val_fraction > 0.0 && *split.val_fraction < 1.0))
    fail("data.val_fraction must be in (0, 1), got {}", *split.val_fraction);
  if (split.enabled() && !val_files.empty())
    fail("data: val_files and val_count/val_fraction both set; use separate validation files or a split, not both");
  if (split.rng == SplitRng::kNumpy && !split.group_by.empty())
    fail("data: split_rng numpy reproduces the reference's record-level split and cannot group_by '{}'",
         split.group_by);
  if (split.rng == SplitRng::kNumpy && split.seed > 0xFFFFFFFFULL)
    fail("data.split_seed {} does not fit in 32 bits, which split_rng numpy requires", split.seed);
  TextTemplate(text.text_keys, text.template_text);  // throws on a malformed template
}

namespace {

std::vector<std::string> read_paths(ConfigReader& data, const std::string& key) {
  if (data.has(key) && data.node()[key].IsScalar()) return {data.require<std::string>(key)};
  return data.get<std::vector<std::string>>(key, {});
}

}  // namespace

DataConfig parse_data_config(ConfigReader& data) {
  DataConfig cfg;
  cfg.train_files = read_paths(data, "train_files");
  cfg.val_files = read_paths(data, "val_files");
  cfg.prepared_dir = data.get<std::string>("prepared_dir", "");
  cfg.tokenizer = data.get<std::string>("tokenizer", cfg.tokenizer);
  cfg.text.text_keys = data.get<std::vector<std::string>>("text_keys", cfg.text.text_keys);
  cfg.text.template_text = data.optional<std::string>("template");
  cfg.split.val_count = data.optional<int64_t>("val_count");
  cfg.split.val_fraction = data.optional<double>("val_fraction");
  int64_t seed = data.get<int64_t>("split_seed", static_cast<int64_t>(cfg.split.seed));
  if (seed < 0) data.fail_key("split_seed", "must be >= 0");
  cfg.split.seed = static_cast<uint64_t>(seed);
  cfg.split.group_by = data.optional<std::string>("group_by").value_or("");
  cfg.max_length = data.get<int64_t>("max_length", cfg.max_length);
  cfg.packing = data.get<bool>("packing", cfg.packing);
  cfg.add_eos = data.get<bool>("add_eos", cfg.add_eos);
  cfg.shuffle = data.get<bool>("shuffle", cfg.shuffle);
  cfg.threads = data.get<int>("threads", cfg.threads);

  // Enum values: report the offending line.
  try {
    cfg.truncation = parse_truncation(data.get<std::string>("truncation", "error"));
  } catch (const Error& e) {
    data.fail_key("truncation", e.what());
  }
  try {
    cfg.split.rng = parse_split_rng(data.get<std::string>("split_rng", "splitmix64"));
  } catch (const Error& e) {
    data.fail_key("split_rng", e.what());
  }
  data.finish();
  if (cfg.train_files.empty() && cfg.prepared_dir.empty())
    throw Error(data.where("train_files") + ": give train_files (raw inputs) or prepared_dir (a prepared dataset)");
  try {
    cfg.validate();
  } catch (const Error& e) {
    throw Error(data.file() + ": " + e.what());
  }
  return cfg;
}

}  // namespace coe
