#pragma once
// Text generation with the model's compressed KV cache (model/kv_cache.h): a batch of prompts is
// left-padded and prefilled in one forward, then decoded one token per step; rows leave the batch
// as they finish. Greedy or sampled (temperature, top-k, top-p), stopped by EOS, stop strings,
// max_new_tokens or the model's position limit.
#include "coe/model/kv_cache.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace coe {

class CausalLMImpl;
class Tokenizer;

struct SamplingOptions {
  double temperature = 0.0;  // 0: greedy (argmax, the lowest id on ties)
  int64_t top_k = 0;         // keep the k most likely tokens; 0: all
  double top_p = 1.0;        // keep the smallest most-likely set whose probability reaches p
  uint64_t seed = 0;         // row r draws from SplitMix64(mix_seed(seed, stream[r]))
};

struct GenerateOptions {
  int64_t max_new_tokens = 256;
  SamplingOptions sampling;
  std::vector<std::string> stop;  // the text ends before the first occurrence of any
  bool stop_at_eos = true;        // false: EOS is an ordinary token (fixed-length benchmarks)
  MlaDecode prefill_mode = MlaDecode::kExpanded;
  MlaDecode decode_mode = MlaDecode::kAbsorbed;
};

enum class FinishReason { kEos, kStop, kMaxNewTokens, kPositionLimit };
const char* to_string(FinishReason reason);

struct Generation {
  std::vector<int32_t> tokens;  // the generated ids (EOS not included; those past a stop string are)
  std::string text;             // decoded, cut before the stop string
  FinishReason finish = FinishReason::kMaxNewTokens;
};

struct GenerateStats {
  int64_t prompt_tokens = 0;  // real (unpadded) prompt tokens prefilled
  int64_t decode_tokens = 0;  // tokens produced by decode steps (each row's first token comes from prefill)
  int64_t decode_steps = 0;
  double prefill_s = 0, decode_s = 0;  // wall time, device synchronised
  GenerateStats& operator+=(const GenerateStats& o);
};

// Text of row r that has become final (for streaming): called with the new piece as it grows.
// Pieces are held back while they could still turn into a stop string or end inside a character.
using TextCallback = std::function<void(int64_t row, const std::string& piece)>;

// Generates a continuation of every prompt (token ids, none empty). The model must be in eval
// mode. `streams` (empty: 0, 1, ...) names each row's sampling stream, so a row's draws do not
// depend on the batch it runs in. Only ids below the tokenizer's vocabulary size are produced.
// A prompt that leaves no room below max_position_embeddings throws naming its row.
std::vector<Generation> generate(CausalLMImpl& model, const Tokenizer& tokenizer,
                                 const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& options,
                                 const std::vector<uint64_t>& streams = {}, GenerateStats* stats = nullptr,
                                 const TextCallback& on_text = {});

// The token chosen from one row's float32 logits [V] (only the first `vocab` entries count):
// argmax when temperature is 0, else a draw from the tempered, top-k / top-p filtered
// distribution using `uniform` in [0, 1).
int64_t choose_token(const float* logits, int64_t vocab, const SamplingOptions& sampling, double uniform);

}  // namespace coe
