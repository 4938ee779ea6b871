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
    s.tokenizer = checkpoint.run->data.tokenizer;
    s.text = checkpoint.run->data.text;
    s.max_length = checkpoint.run->data.max_length;
    s.origin = (fs::path(checkpoint.dir) / "config.yaml").string();
  } else if (overrides.tokenizer.empty() && checkpoint.model.vocab_size != ByteTokenizer::kVocab) {
    fail("--tokenizer: {} has no run config (config.yaml) naming its tokenizer, and its vocab_size {} is not the "
         "byte tokenizer's; pass the tokenizer it was trained with",
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
  if (checkpoint.run && settings.tokenizer != checkpoint.run->data.tokenizer) {
    const auto trained = load_tokenizer(checkpoint.run->data.tokenizer);
    if (trained->fingerprint() != tokenizer.fingerprint())
      fail("--tokenizer {}: not the tokenizer the model was trained with ({} in {})", settings.tokenizer,
           checkpoint.run->data.tokenizer, settings.origin);
  }
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
