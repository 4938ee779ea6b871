#include "coe/data/data_config.h"

#include "coe/data/text_template.h"
#include "coe/util/data_root.h"
#include "coe/util/error.h"

namespace coe {

namespace {

const EnumName<Truncation> kTruncationNames[] = {
    {Truncation::kError, "error"},
    {Truncation::kLeft, "left"},
    {Truncation::kRight, "right"},
};
const EnumName<SplitRng> kSplitRngNames[] = {
    {SplitRng::kSplitMix64, "splitmix64"},
    {SplitRng::kNumpy, "numpy"},
};

std::string unknown_truncation(const std::string& s) {
  return fmt::format("truncation '{}': expected {}", s, join_names(kTruncationNames, ", ", " or "));
}

std::string unknown_split_rng(const std::string& s) {
  return fmt::format("split_rng '{}': expected {}", s, join_names(kSplitRngNames, ", ", " or "));
}

}  // namespace

const char* to_string(Truncation t) { return enum_name(kTruncationNames, t); }

const char* to_string(SplitRng r) { return enum_name(kSplitRngNames, r); }

Truncation parse_truncation(const std::string& s) {
  if (auto t = enum_value(kTruncationNames, s)) return *t;
  throw Error(unknown_truncation(s));
}

SplitRng parse_split_rng(const std::string& s) {
  if (auto r = enum_value(kSplitRngNames, s)) return *r;
  throw Error(unknown_split_rng(s));
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

// Every key of the `data:` section, in the order config.yaml lists them. Cross-field checks are
// DataConfig::validate's, once every key is read.
template <class V>
void visit_fields(DataConfig& d, V& v) {
  v.field("train_files", d.train_files, kScalarAsList, kPath);
  v.field("val_files", d.val_files, kScalarAsList, kPath);
  v.field("prepared_dir", d.prepared_dir, kPath);
  v.field("tokenizer", d.tokenizer, path_or({"byte"}));
  v.field("text_keys", d.text.text_keys);
  v.field("template", d.text.template_text);
  v.field("val_count", d.split.val_count);
  v.field("val_fraction", d.split.val_fraction);
  v.field("split_seed", d.split.seed, [](int64_t seed) { return seed < 0 ? "must be >= 0" : std::string(); });
  v.choice("split_rng", d.split.rng, kSplitRngNames, unknown_split_rng);
  v.field("group_by", d.split.group_by, kEmptyIsNull);
  v.field("max_length", d.max_length);
  v.choice("truncation", d.truncation, kTruncationNames, unknown_truncation);
  v.field("packing", d.packing);
  v.field("add_eos", d.add_eos);
  v.field("shuffle", d.shuffle);
  v.field("threads", d.threads);
}

}  // namespace

DataConfig parse_data_config(ConfigReader& data) {
  DataConfig cfg;
  FieldReader reader(data);
  visit_fields(cfg, reader);
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

PathKeys data_path_keys() {
  DataConfig d;
  PathKeyLister lister;
  visit_fields(d, lister);
  return lister.keys();
}

void check_data_inputs(const DataConfig& d, const std::string& source) {
  for (const auto& f : d.train_files) check_path_exists(source + ": data.train_files", f);
  for (const auto& f : d.val_files) check_path_exists(source + ": data.val_files", f);
  if (d.tokenizer != "byte") check_path_exists(source + ": data.tokenizer", d.tokenizer);
}

void data_config_to_yaml(const DataConfig& config, YAML::Node& out) {
  DataConfig d = config;  // visit_fields takes a mutable config (it also reads)
  YamlWriter writer(out);
  visit_fields(d, writer);
}

}  // namespace coe
