#pragma once
// The tokenizer interface every data path uses: the built-in byte tokenizer (no file needed) and
// HF tokenizer.json / GPT-2 vocab.json+merges.txt byte-level BPE (hf_tokenizer.h).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coe {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Text -> ids, without adding BOS/EOS (HF's add_special_tokens=False).
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Ids -> text. skip_special_tokens drops the special tokens (HF's decode(ids, skip_special_tokens)).
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const = 0;
  virtual int64_t vocab_size() const = 0;
  // Special ids; nullopt when the tokenizer defines none.
  virtual std::optional<int32_t> eos_id() const = 0;
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> pad_id() const = 0;
  // A stable content hash (hex) identifying the vocabulary and rules, recorded by coe-prepare.
  virtual std::string fingerprint() const = 0;
  // Short human-readable name ("byte", or the tokenizer file name).
  virtual std::string name() const = 0;
};

// Bytes 0..255 are ids 0..255; then pad = 256, bos = 257, eos = 258 (vocab 259).
class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kPad = 256, kBos = 257, kEos = 258, kVocab = 259;
  std::vector<int32_t> encode(std::string_view text) const override;
  // Pad, bos and eos have no text: they are dropped whatever skip_special_tokens says.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const override;
  int64_t vocab_size() const override { return kVocab; }
  std::optional<int32_t> eos_id() const override { return kEos; }
  std::optional<int32_t> bos_id() const override { return kBos; }
  std::optional<int32_t> pad_id() const override { return kPad; }
  std::string fingerprint() const override { return "byte-v1"; }
  std::string name() const override { return "byte"; }
};

// "byte" -> ByteTokenizer; a path to tokenizer.json; or a directory / "vocab.json" path with
// vocab.json + merges.txt beside it. Errors name the file and the reason.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec);

// The files `spec` is read from, each with the name a checkpoint stores it under (HF's:
// tokenizer.json, or vocab.json and merges.txt); none for "byte". A directory holding the stored
// names loads as the same tokenizer (load_tokenizer(dir)).
struct TokenizerFile {
  std::string path, stored_name;
};
std::vector<TokenizerFile> tokenizer_files(const std::string& spec);

}  // namespace coe
