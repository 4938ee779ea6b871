#pragma once
// The `data:` section of a run configuration: where records come from, how they become text and
// tokens, how train/validation are split, and how rows are built from prepared records.
//
//   data:
//     train_files: [$COE_DATA/metamathqa/MetaMathQA-395K.json]  # raw JSON-array/JSONL files or dirs
//     val_files: []                   # separate raw validation inputs; empty: carve from train
//     prepared_dir: ../data/prepared/metamathqa  # coe-prepare's output; reused while inputs match
//     tokenizer: byte                 # "byte" or a tokenizer.json path
//     text_keys: [query, response]    # default text: "<key> : <value> " per key, stripped
//     template: null                  # or "Q: {query}\nA: {response}" (overrides text_keys)
//     val_count: 1000                 # or val_fraction: 0.01 (at most one of them)
//     split_seed: 42
//     split_rng: splitmix64           # or numpy: NumPy's legacy np.random.choice, as the reference
//     group_by: null                  # e.g. original_question: rephrasings stay on one side
//     max_length: 512
//     truncation: error               # error | left | right
//     packing: false                  # true: join records with EOS, cut into max_length rows
//     add_eos: false                  # append EOS to each record (padding mode)
//     shuffle: true
//     threads: 0                      # tokenizer threads for preparation; 0 = all cores
//
// The four paths are read relative to the directory of the file that wrote them, `$COE_DATA/` is
// the data root (coe/util/data_root.h); once read they are absolute (docs/training.md#paths-in-config-files).
#include "coe/util/config_reader.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace coe {

enum class Truncation { kError, kLeft, kRight };
enum class SplitRng { kSplitMix64, kNumpy };

const char* to_string(Truncation t);
const char* to_string(SplitRng r);
Truncation parse_truncation(const std::string& s);  // throws naming the valid values
SplitRng parse_split_rng(const std::string& s);

// How records become text (see text_template.h).
struct TextConfig {
  std::vector<std::string> text_keys{"query", "response"};
  std::optional<std::string> template_text;
};

// How the validation split is carved out of the training inputs.
struct SplitConfig {
  std::optional<int64_t> val_count;    // records held out
  std::optional<double> val_fraction;  // or a fraction of the records, in (0, 1)
  uint64_t seed = 42;
  SplitRng rng = SplitRng::kSplitMix64;
  std::string group_by;  // record key; "" = split single records

  bool enabled() const { return val_count.has_value() || val_fraction.has_value(); }
};

// The keys of the `data:` section are listed once, in visit_fields (data_config.cpp): a new field
// there is read, written to config.yaml, and diffed.
struct DataConfig {
  std::vector<std::string> train_files;
  std::vector<std::string> val_files;
  std::string prepared_dir;
  std::string tokenizer = "byte";
  TextConfig text;
  SplitConfig split;
  int64_t max_length = 512;
  Truncation truncation = Truncation::kError;
  bool packing = false;
  bool add_eos = false;
  bool shuffle = true;
  int threads = 0;

  // Cross-field checks (also run by parse_data_config); throws a one-line Error.
  void validate() const;
};

// Reads every key of the `data:` section and calls data.finish(), so an unknown key is an error
// naming file:line and the nearest valid key. Invalid values name file:line: data.<key>.
DataConfig parse_data_config(ConfigReader& data);
// Every field under the key parse_data_config reads it from (for resolved run configs).
void data_config_to_yaml(const DataConfig& config, YAML::Node& out);
// The keys of the section that hold paths (train_files, val_files, prepared_dir, tokenizer).
PathKeys data_path_keys();
// Before the inputs are read: throws "<source>: data.<key>: <path> not found" for a missing
// training or validation input or tokenizer file, naming $COE_DATA and tools/download-data.sh
// when it lies under the data root. (A config may name data that is not there: coe-memory and
// coe-bench never read it.)
void check_data_inputs(const DataConfig& data, const std::string& source);

}  // namespace coe
