#pragma once
// Hugging Face byte-level BPE tokenizers (GPT-2, GPT-NeoX/Pythia, Qwen2, DeepSeek, Llama 3 ...),
// producing exactly the ids of HF `tokenizers` (encode(text, add_special_tokens=False)).
//
// Sources: a `tokenizer.json` (model BPE; normalizers NFC/NFKC/NFD/NFKD/Sequence; pre-tokenizers
// ByteLevel/Split/Digits/Sequence; added tokens; ByteLevel decoder), or the GPT-2 file pair
// `vocab.json` + `merges.txt`. The encode pipeline is HF's: added tokens are cut out of the raw
// text first (longest match first), the rest is normalized, normalized added tokens are cut out,
// then pre-tokenized into words that the BPE model merges. See docs/tokenizer.md.
//
// Special ids (eos/bos/pad) are looked up among the added tokens by their conventional names;
// pad falls back to eos. The exact lists are in docs/tokenizer.md.
#include "coe/tokenizer/tokenizer.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coe {

// `path`: a tokenizer.json; a vocab.json (merges.txt, or <prefix>merges.txt for
// <prefix>vocab.json, beside it); or a directory holding tokenizer.json or vocab.json+merges.txt.
// Throws coe::Error naming the file and the reason.
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& path);

class HfTokenizer final : public Tokenizer {
 public:
  static std::unique_ptr<HfTokenizer> from_tokenizer_json(const std::string& path);
  static std::unique_ptr<HfTokenizer> from_vocab_merges(const std::string& vocab_path, const std::string& merges_path);
  ~HfTokenizer() override;

  // Invalid UTF-8 in `text` is replaced by U+FFFD first (HF only ever sees valid strings).
  // Thread-safe. Throws (naming the file and the pattern) when a pre-tokenizer regex exceeds
  // PCRE2's backtracking limits.
  std::vector<int32_t> encode(std::string_view text) const override;
  // Special tokens are kept unless skip_special_tokens (then every token whose string is the
  // content of an added token marked special is dropped, as in HF); invalid UTF-8 produced by
  // partial byte sequences becomes U+FFFD. Throws on an id outside the vocabulary.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const override;
  int64_t vocab_size() const override;  // highest id + 1 (model vocabulary and added tokens)
  std::optional<int32_t> eos_id() const override;
  std::optional<int32_t> bos_id() const override;
  std::optional<int32_t> pad_id() const override;
  std::string fingerprint() const override;  // FNV-1a 64 of the file bytes, 16 hex digits
  std::string name() const override;         // the file name

  // The text decode(encode(text)) gives back: added tokens as their content (whitespace they
  // strip dropped), everything else normalized.
  std::string normalize(std::string_view text) const;
  // The words the model receives, in HF's display form (byte-level alphabet applied, e.g.
  // "Ġworld"); added tokens appear as their content. For tests and debugging.
  std::vector<std::string> pre_tokenize(std::string_view text) const;
  std::optional<int32_t> token_to_id(std::string_view token) const;

  struct Impl;  // the pipeline; defined in src/data/hf_tokenizer.cpp

 private:
  explicit HfTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace coe
