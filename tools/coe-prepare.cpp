// coe-prepare: raw MetaMathQA / GSM8K records -> a prepared (tokenized, split) dataset, and the
// synthetic-data generator.
//
//   coe-prepare --config run.yaml                      # its data: section
//   coe-prepare --input FILE|DIR --tokenizer SPEC --out DIR [--text-keys query,response]
//               [--val-count 1000 | --val-fraction F] [--seed S] [--group-by KEY] ...
//   coe-prepare synth --records N --seed S --out FILE.json
// Flags given with --config override its values. Errors print "error: <message>" and exit 1.
#include "cli.h"
#include "coe/data/data_config.h"
#include "coe/data/prepare.h"
#include "coe/data/synth.h"
#include "coe/util/config_reader.h"
#include "coe/util/error.h"

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace {

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t comma = s.find(',', start);
    std::string item = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace

static int tool_main(int argc, char** argv) {
  CLI::App app{"coe-prepare: tokenize and split raw records into a prepared dataset"};

  std::string config_path, out, tokenizer, text_keys, template_text, group_by, split_rng;
  std::vector<std::string> inputs, val_inputs;
  std::optional<int64_t> val_count;
  std::optional<double> val_fraction;
  std::optional<uint64_t> seed;
  std::optional<int> threads;
  bool force = false;
  app.add_option("--config", config_path, "run configuration (YAML); its data: section is used");
  app.add_option("--input", inputs, "training input: a .json array / .jsonl file or a directory of them (repeatable)");
  app.add_option("--val-input", val_inputs, "separate validation input (repeatable); instead of a split");
  app.add_option("--tokenizer", tokenizer, "\"byte\" or a tokenizer.json path");
  app.add_option("--out", out, "prepared dataset directory (data.prepared_dir)");
  app.add_option("--text-keys", text_keys, "comma-separated record keys for the default text (query,response)");
  app.add_option("--template", template_text, "text template with {key} placeholders (overrides --text-keys)");
  app.add_option("--val-count", val_count, "hold out this many training records for validation");
  app.add_option("--val-fraction", val_fraction, "or this fraction of them");
  app.add_option("--seed", seed, "split seed (data.split_seed)");
  app.add_option("--group-by", group_by, "keep records sharing this key's value on one side (original_question)");
  app.add_option("--split-rng", split_rng, "splitmix64 (default) or numpy (the reference's np.random.choice)");
  app.add_option("--threads", threads, "tokenizer threads (0 = all cores)");
  app.add_flag("--force", force, "rebuild even if the prepared dataset is up to date");

  CLI::App* synth = app.add_subcommand("synth", "write synthetic MetaMathQA-style arithmetic records (JSON array)");
  int64_t synth_records = 0;
  uint64_t synth_seed = 0;
  std::string synth_out;
  synth->add_option("--records", synth_records, "number of records")->required();
  synth->add_option("--seed", synth_seed, "generator seed")->required();
  synth->add_option("--out", synth_out, "output .json file")->required();

  if (const int status = coe::cli::parse(app, argc, argv); status >= 0) return status;

  try {
    if (synth->parsed()) {
      coe::write_synth_file(synth_out, synth_records, synth_seed);
      std::printf("wrote %lld synthetic records (seed %llu) to %s\n", static_cast<long long>(synth_records),
                  static_cast<unsigned long long>(synth_seed), synth_out.c_str());
      return 0;
    }

    coe::DataConfig cfg;
    if (!config_path.empty()) {
      coe::ConfigReader root = coe::ConfigReader::from_file(config_path);
      coe::ConfigReader data = root.section("data");
      cfg = coe::parse_data_config(data);
    } else if (inputs.empty() && out.empty()) {
      throw coe::Error("give --config FILE, or --input and --out (see --help)");
    }
    if (!inputs.empty()) cfg.train_files = inputs;
    if (!val_inputs.empty()) cfg.val_files = val_inputs;
    if (!out.empty()) cfg.prepared_dir = out;
    if (!tokenizer.empty()) cfg.tokenizer = tokenizer;
    if (!text_keys.empty()) cfg.text.text_keys = split_commas(text_keys);
    if (!template_text.empty()) cfg.text.template_text = template_text;
    if (val_count) cfg.split.val_count = val_count, cfg.split.val_fraction.reset();
    if (val_fraction) cfg.split.val_fraction = val_fraction, cfg.split.val_count.reset();
    if (seed) cfg.split.seed = *seed;
    if (!group_by.empty()) cfg.split.group_by = group_by;
    if (!split_rng.empty()) cfg.split.rng = coe::parse_split_rng(split_rng);
    if (threads) cfg.threads = *threads;
    coe::check_data_inputs(cfg, config_path.empty() ? "coe-prepare" : config_path);

    coe::PrepareOptions options;
    options.force = force;
    options.log = [](const std::string& line) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);  // progress in order with a later "error:" line on stderr
    };
    coe::prepare_dataset(cfg, options);
    return 0;
  } catch (const std::exception& e) {
    return coe::cli::report(e);
  }
}

int main(int argc, char** argv) { return coe::cli::exit_status(tool_main(argc, argv)); }
