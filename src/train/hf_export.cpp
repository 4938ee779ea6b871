#include "coe/train/hf_export.h"

#include "coe/io/hf_checkpoint.h"
#include "coe/model/causal_lm.h"
#include "coe/tokenizer/hf_export.h"
#include "coe/tokenizer/tokenizer.h"
#include "coe/train/checkpoint.h"
#include "coe/train/eval_setup.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"

#include <unistd.h>

#include <filesystem>
#include <memory>
#include <optional>

namespace fs = std::filesystem;

namespace coe {
namespace {

std::optional<std::string> tokenizer_spec(const HfExportSettings& settings, const CheckpointSetup& checkpoint) {
  if (!settings.tokenizer.empty()) return settings.tokenizer;
  if (auto stored = stored_tokenizer(checkpoint.dir)) return stored;
  if (checkpoint.run) return checkpoint.run->data.tokenizer;
  if (checkpoint.model.vocab_size == ByteTokenizer::kVocab) return std::string("byte");
  return std::nullopt;
}

}  // namespace

HfExportResult export_hf_folder(const std::string& path, const std::string& out_dir, const HfExportSettings& settings) {
  std::error_code ec;
  if (fs::exists(out_dir, ec) && !(fs::is_directory(out_dir, ec) && fs::is_empty(out_dir, ec)))
    fail("--out {}: exists and is not an empty directory", out_dir);
  if (settings.dtype != "float32" && settings.dtype != "bfloat16")
    fail("--dtype {}: float32 or bfloat16", settings.dtype);

  const CheckpointSetup checkpoint = resolve_checkpoint(path);
  HfExportResult result;
  result.checkpoint = checkpoint.dir;
  result.type = hf_export_model_type(checkpoint.model, &result.why_not_native);

  HfExportOptions options;
  options.type = result.type;
  options.dtype = settings.dtype == "float32" ? at::kFloat : at::kBFloat16;
  options.max_shard_bytes = settings.max_shard_bytes;
  options.bos_token_id = checkpoint.model.bos_token_id;  // the tokenizer's replace them
  options.eos_token_id = checkpoint.model.eos_token_id;
  options.pad_token_id = checkpoint.model.pad_token_id;
  std::vector<NamedText> tokenizer_files;
  if (const auto spec = tokenizer_spec(settings, checkpoint)) {
    const std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(*spec);
    if (tokenizer->vocab_size() > checkpoint.model.vocab_size)
      fail("--tokenizer {}: vocabulary {} exceeds the model's vocab_size {}", *spec, tokenizer->vocab_size(),
           checkpoint.model.vocab_size);
    result.tokenizer = *spec;
    options.bos_token_id = tokenizer->bos_id();
    options.eos_token_id = tokenizer->eos_id();
    options.pad_token_id = tokenizer->pad_id();
    tokenizer_files = hf_tokenizer_files(*spec, checkpoint.model.max_position_embeddings);
  }

  const CausalLM model = load_hf_checkpoint(checkpoint.dir);
  // Written beside the destination and renamed into place: an interrupted export leaves no folder
  // that looks complete (rename replaces an empty directory).
  const fs::path out = fs::absolute(out_dir);
  const fs::path tmp = out.parent_path() / (out.filename().string() + ".tmp-" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  try {
    result.files = save_hf_export(*model, tmp.string(), options);
    for (const NamedText& f : tokenizer_files) {
      write_file_atomic(tmp / f.name, f.content);
      result.files.push_back(f.name);
    }
    fs::rename(tmp, out);
  } catch (...) {
    fs::remove_all(tmp, ec);  // only what this export wrote
    throw;
  }
  return result;
}

}  // namespace coe
