#include "coe/train/model_vocab.h"

#include "coe/tokenizer/tokenizer.h"
#include "coe/util/data_root.h"
#include "coe/util/error.h"

namespace coe {

void resolve_model_vocab(TrainConfig& config) {
  if (config.model_vocab_given) return;
  if (config.data.tokenizer != "byte") check_path_exists(config.source + ": data.tokenizer", config.data.tokenizer);
  try {
    config.model.vocab_size = load_tokenizer(config.data.tokenizer)->vocab_size();
  } catch (const std::exception& e) {
    fail("{}: model.vocab_size is not set and the tokenizer '{}' cannot be loaded to take it from: {}", config.source,
         config.data.tokenizer, e.what());
  }
  config.model_vocab_given = true;
}

}  // namespace coe
