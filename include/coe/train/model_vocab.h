#pragma once
// The vocabulary a run's model will have before any data is prepared: model.vocab_size when the
// config sets it, else the size of data.tokenizer (what coe-train takes). For tools that build
// the model without the data (coe-bench, coe-memory, coe-sweep's memory table).
#include "coe/train/train_config.h"

namespace coe {

// Sets config.model.vocab_size from the tokenizer when the config left it out; an error naming
// the config file and the tokenizer when the tokenizer cannot be loaded.
void resolve_model_vocab(TrainConfig& config);

}  // namespace coe
