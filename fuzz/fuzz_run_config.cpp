// YAML run configs (load_train_config: base: chains, model.from, overrides) and sweep files
// (load_sweep, then every variant's config as resolve_variants reads it). An input is up to four
// files (fuzz_files.h's split_files): f0.yaml is read; the seeds point base:, model.from: and a
// variant's config: at f1.yaml .. f3.yaml.
#include "coe/train/sweep.h"
#include "coe/train/train_config.h"
#include "coe/util/config_reader.h"
#include "fuzz_files.h"

#include <yaml-cpp/yaml.h>

namespace {

// coe-train writes the resolved config into the run directory and a resume reads it back.
void check_round_trip(const coe::TrainConfig& config) {
  const std::string yaml = coe::train_config_to_yaml(config);
  try {
    coe::parse_train_config(YAML::Load(yaml), "config.yaml");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coe fuzz: the written config.yaml does not read back: %s\n%s\n", e.what(), yaml.c_str());
    std::abort();
  }
  if (!coe::changed_config_keys(yaml, yaml).empty()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto files = coe::fuzz::split_files(std::string_view(reinterpret_cast<const char*>(data), size));
  for (size_t i = 0; i < 4; ++i) {
    const std::string name = "f" + std::to_string(i) + ".yaml";
    if (i < files.size()) coe::fuzz::write_file(name, files[i]);
    else coe::fuzz::remove_file(name);  // no file of an earlier input may answer
  }
  const std::string main = coe::fuzz::scratch_dir() + "/f0.yaml";
  coe::fuzz::expect_only_coe_errors([&] {
    if (files[0].find("variants") == std::string_view::npos) {
      check_round_trip(coe::load_train_config(main, {"trainer.seed=7"}));
      return;
    }
    const coe::SweepSpec spec = coe::load_sweep(main);
    for (const auto& v : spec.variants) {  // resolve_variants without the tokenizer's vocabulary
      if (!v.config.empty()) {
        check_round_trip(coe::load_train_config(v.config, v.overrides));
        continue;
      }
      YAML::Node root = YAML::Load(spec.inline_base);
      for (const auto& o : v.overrides) coe::apply_override(root, o);
      check_round_trip(coe::parse_train_config(root, spec.file + " (base)"));
    }
  });
  return 0;
}
