#include "coe/train/eval_setup.h"

#include "coe/io/hf_checkpoint.h"
#include "coe/tokenizer/tokenizer.h"
#include "coe/train/checkpoint.h"
#include "coe/train/device.h"
#include "coe/train/memory_model.h"
#include "coe/util/error.h"

#include <filesystem>

namespace fs = std::filesystem;

namespace coe {

CheckpointSetup resolve_checkpoint(const std::string& path) {
  CheckpointSetup c;
  c.dir = find_checkpoint(path);
  c.run = read_run_config(c.dir);
  c.model = load_model_config((fs::path(c.dir) / "config.json").string());
  return c;
}

TextSettings resolve_text_settings(const TextOverrides& overrides, const CheckpointSetup& checkpoint,
                                   const std::string& tool) {
  TextSettings s;
  if (checkpoint.run) {
    // The checkpoint's own copy when it has one: the path in config.yaml is relative to the
    // directory the run was trained in, and may not exist where the checkpoint is now.
    s.tokenizer = stored_tokenizer(checkpoint.dir).value_or(checkpoint.run->data.tokenizer);
    s.text = checkpoint.run->data.text;
    s.max_length = checkpoint.run->data.max_length;
    s.origin = (fs::path(checkpoint.dir) / "config.yaml").string();
  } else if (const auto stored = stored_tokenizer(checkpoint.dir)) {
    // An HF folder (coe-export's, a download): its own tokenizer.json.
    s.tokenizer = *stored;
    s.origin = tool + "'s defaults, " + checkpoint.dir + "'s tokenizer";
  } else if (overrides.tokenizer.empty() && checkpoint.model.vocab_size != ByteTokenizer::kVocab) {
    fail("--tokenizer: {} has no run config (config.yaml) naming its tokenizer, no tokenizer.json, and its vocab_size "
         "{} is not the byte tokenizer's; pass the tokenizer it was trained with",
         checkpoint.dir, checkpoint.model.vocab_size);
  } else {
    s.tokenizer = "byte";
    s.origin = tool + "'s defaults";
  }
  if (!overrides.tokenizer.empty()) s.tokenizer = overrides.tokenizer;
  if (!overrides.text_keys.empty()) {
    s.text.text_keys = overrides.text_keys;
    s.text.template_text.reset();
  }
  if (!overrides.template_text.empty()) s.text.template_text = overrides.template_text;
  if (overrides.max_length > 0) s.max_length = overrides.max_length;
  return s;
}

void check_vocabulary(const Tokenizer& tokenizer, const TextSettings& settings, const CheckpointSetup& checkpoint) {
  if (tokenizer.vocab_size() > checkpoint.model.vocab_size)
    fail("--tokenizer {}: vocabulary {} exceeds the model's vocab_size {}", settings.tokenizer, tokenizer.vocab_size(),
         checkpoint.model.vocab_size);
  if (!checkpoint.run) return;
  // The tokenizer it was trained with: the checkpoint's copy, else the file its config names.
  const std::string trained_spec = stored_tokenizer(checkpoint.dir).value_or(checkpoint.run->data.tokenizer);
  if (settings.tokenizer == trained_spec) return;
  if (trained_spec != "byte" && !fs::exists(trained_spec))
    fail("--tokenizer {}: cannot check it against the tokenizer the model was trained with: {} holds no copy "
         "(a checkpoint of coe before tokenizer copies) and {} (from {}) does not exist here",
         settings.tokenizer, checkpoint.dir, trained_spec, settings.origin);
  if (load_tokenizer(trained_spec)->fingerprint() != tokenizer.fingerprint())
    fail("--tokenizer {}: not the tokenizer the model was trained with ({}, fingerprint {})", settings.tokenizer,
         trained_spec, load_tokenizer(trained_spec)->fingerprint());
}

std::shared_ptr<CausalLMImpl> load_model_for_inference(const CheckpointSetup& checkpoint, const c10::Device& device) {
  if (!device.is_cuda())  // float32 weights, plus as much again for the load and the forward
    check_host_memory(8 * count_parameters(checkpoint.model).total(), checkpoint.dir + ": loading the model",
                      "run on a machine with more memory");
  CausalLM model = load_hf_checkpoint(checkpoint.dir);
  model->to(device);
  model->eval();
  model->set_dispatch(make_dispatch("auto"));
  return model.ptr();
}

}  // namespace coe
