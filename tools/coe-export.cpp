// coe-export: a checkpoint as a Hugging Face folder that transformers loads (docs/interop.md).
//
//   coe-export --checkpoint RUN_OR_STEP --out DIR [--dtype bfloat16] [--max-shard-size 5GB] [--tokenizer SPEC]
//
// Models transformers' own DeepSeek classes compute as coe does load as model_type deepseek_v2 or
// deepseek_v3 (no remote code); every other model (Chain-of-Experts, coe's residual variants, ...)
// as model_type coe with coe's configuration_coe.py and modeling_coe.py in the folder
// (trust_remote_code=True). The folder also holds tokenizer.json, tokenizer_config.json and
// generation_config.json, so that AutoTokenizer gives coe's ids and generate() stops where coe does.
#include "cli.h"
#include "coe/train/hf_export.h"
#include "coe/util/error.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <CLI/CLI.hpp>

#include <cctype>
#include <cstdint>
#include <string>

namespace {

// "5GB", "500MB", "64KiB", "1000": bytes (KB/MB/GB decimal as transformers' max_shard_size; KiB/MiB/GiB binary).
int64_t parse_size(const std::string& text) {
  size_t digits = 0;
  while (digits < text.size() && (std::isdigit(static_cast<unsigned char>(text[digits])) || text[digits] == '.'))
    ++digits;
  const std::string unit = text.substr(digits);
  double value = 0;
  try {
    size_t used = 0;
    value = std::stod(text.substr(0, digits), &used);
    if (used != digits) throw std::invalid_argument("number");
  } catch (const std::exception&) {
    coe::fail("--max-shard-size '{}': not a size (e.g. 5GB, 500MB, 64KiB)", text);
  }
  const std::pair<const char*, double> units[] = {{"", 1},     {"B", 1},        {"KB", 1e3},      {"MB", 1e6},
                                                  {"GB", 1e9}, {"KiB", 1024.0}, {"MiB", 1 << 20}, {"GiB", 1 << 30}};
  for (const auto& [name, scale] : units)
    if (unit == name) {
      if (!(value * scale >= 1)) coe::fail("--max-shard-size '{}': must be at least 1 byte", text);
      return static_cast<int64_t>(value * scale);
    }
  coe::fail("--max-shard-size '{}': unknown unit '{}' (B, KB, MB, GB, KiB, MiB, GiB)", text, unit);
}

}  // namespace

static int tool_main(int argc, char** argv) {
  CLI::App app{"coe-export: a checkpoint as a Hugging Face transformers folder (see docs/interop.md)"};
  std::string checkpoint, out, max_shard_size = "5GB";
  coe::HfExportSettings settings;
  app.add_option("--checkpoint", checkpoint, "checkpoint dir (config.json + weights) or run dir (its newest step)")
      ->required()
      ->check(coe::cli::non_empty());
  app.add_option("--out", out, "the folder to write (must not exist or be empty)")
      ->required()
      ->check(coe::cli::non_empty());
  app.add_option("--dtype", settings.dtype, "weights: float32 | bfloat16")->capture_default_str();
  app.add_option("--max-shard-size", max_shard_size, "above it, sharded safetensors with an index (B, KB, MB, GB)")
      ->capture_default_str();
  app.add_option("--tokenizer", settings.tokenizer,
                 "'byte' or a tokenizer.json (default: the checkpoint's, its run config's, or byte for vocab 259)");
  if (const int status = coe::cli::parse(app, argc, argv); status >= 0) return status;
  try {
    settings.max_shard_bytes = parse_size(max_shard_size);
    const coe::HfExportResult r = coe::export_hf_folder(checkpoint, out, settings);
    fmt::print("exported {} -> {}\n", r.checkpoint, out);
    if (r.type == coe::HfModelType::kCoe)
      fmt::print("model_type coe: load with trust_remote_code=True (not transformers' DeepSeek model: {})\n",
                 r.why_not_native);
    else fmt::print("model_type {}: transformers' own model, no remote code\n", coe::to_string(r.type));
    if (r.tokenizer.empty())
      fmt::print("tokenizer: none (the checkpoint names none and its vocabulary is not the byte tokenizer's; pass "
                 "--tokenizer to add one)\n");
    else fmt::print("tokenizer: {}\n", r.tokenizer);
    fmt::print("files: {}\n", fmt::join(r.files, " "));
    return 0;
  } catch (const std::exception& e) {
    return coe::cli::report(e);
  }
}

int main(int argc, char** argv) { return coe::cli::exit_status(tool_main(argc, argv)); }
