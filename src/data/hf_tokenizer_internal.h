#pragma once
// Building blocks of the HF byte-level BPE tokenizer (hf_tokenizer.h), one file each:
//   hf_tokenizer_unicode.cpp  UTF-8, character classes, the byte-level alphabet, NFC/NFKC
//   hf_tokenizer_regex.cpp    PCRE2 wrapper with Oniguruma (HF's regex engine) conventions
//   hf_tokenizer_pretok.cpp   normalizers and pre-tokenizers (ByteLevel, Split, Digits, Sequence)
//   hf_tokenizer_added.cpp    added/special tokens, matched leftmost-longest like HF
//   hf_tokenizer_bpe.cpp      the BPE model: merge ranks, priority-queue merge loop, word cache
//   hf_tokenizer.cpp          tokenizer.json / vocab.json+merges.txt loading and the pipeline
// Every rule mirrors huggingface/tokenizers so ids match it exactly; comments say where HF's
// behaviour is the reason for an odd-looking choice.
#include <nlohmann/json.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

struct pcre2_real_code_8;

namespace coe::hf {

using json = nlohmann::json;

// ---- configuration errors ------------------------------------------------------------------

// Where a configuration value comes from, for one-line errors: "<file>: <key>: <reason>".
struct ConfigPath {
  std::string file;
  std::string key;  // e.g. "pre_tokenizer.pretokenizers[1]"
  ConfigPath child(const std::string& name) const { return {file, key.empty() ? name : key + "." + name}; }
  ConfigPath index(size_t i) const { return {file, key + "[" + std::to_string(i) + "]"}; }
  [[noreturn]] void fail(const std::string& reason) const;
};

// Typed accessors that name the key on error. `obj` must be a JSON object.
const json* find_member(const json& obj, const char* name);
bool get_bool(const json& obj, const char* name, bool fallback, const ConfigPath& at);
std::string get_string(const json& obj, const char* name, const ConfigPath& at);
// obj["type"] as a string; fails when missing.
std::string get_type(const json& obj, const ConfigPath& at);

// ---- Unicode (hf_tokenizer_unicode.cpp) ----------------------------------------------------

// Decodes the code point at s[pos] and advances pos; s must be valid UTF-8.
inline char32_t next_code_point(std::string_view s, size_t& pos) {
  const auto b0 = static_cast<unsigned char>(s[pos]);
  if (b0 < 0x80) {
    pos += 1;
    return b0;
  }
  auto cont = [&](size_t k) { return static_cast<char32_t>(static_cast<unsigned char>(s[pos + k]) & 0x3F); };
  char32_t cp;
  if (b0 < 0xE0) {
    cp = (static_cast<char32_t>(b0 & 0x1F) << 6) | cont(1);
    pos += 2;
  } else if (b0 < 0xF0) {
    cp = (static_cast<char32_t>(b0 & 0x0F) << 12) | (cont(1) << 6) | cont(2);
    pos += 3;
  } else {
    cp = (static_cast<char32_t>(b0 & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3);
    pos += 4;
  }
  return cp;
}
// Length in bytes of the UTF-8 sequence that starts with lead byte b (valid UTF-8 assumed).
inline size_t utf8_length(unsigned char b) { return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4; }

void append_utf8(std::string& out, char32_t cp);
bool is_valid_utf8(std::string_view s);
// Replaces each maximal invalid subsequence by U+FFFD, as Rust's String::from_utf8_lossy and
// Python's decode(errors="replace") do.
std::string to_valid_utf8(std::string_view s);
bool is_ascii(std::string_view s);

// Rust's char::is_numeric (general category N*): what HF's Digits pre-tokenizer splits on.
bool is_numeric(char32_t cp);
// Unicode White_Space, i.e. Rust's char::is_whitespace and regex \s.
bool is_whitespace(char32_t cp);
// Rust regex \w (alphabetic, marks, decimal digits, connector punctuation, joiners).
bool is_word_char(char32_t cp);

// GPT-2's bytes_to_unicode: every byte gets a printable stand-in character.
const std::array<std::string, 256>& byte_level_chars();  // byte -> UTF-8 of its stand-in
int byte_of_level_char(char32_t cp);                       // stand-in -> byte, or -1

enum class NormalForm { NFC, NFKC, NFD, NFKD };
std::string unicode_normalize(std::string_view s, NormalForm form);

// ---- Regex (hf_tokenizer_regex.cpp) --------------------------------------------------------

// A compiled pattern with HF's matching conventions (UTF-8, Unicode properties, Oniguruma's
// \s, Oniguruma's empty-match stepping). Thread-safe: match state is per thread.
class Regex {
 public:
  Regex(const std::string& pattern, const ConfigPath& at);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // All non-overlapping matches as [begin, end) byte ranges, in order. `s` must be valid UTF-8.
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;

 private:
  pcre2_real_code_8* code_ = nullptr;
  std::string pattern_;
};

// Escapes a literal for use inside a pattern (Split's {"String": ...}).
std::string regex_escape(std::string_view literal);
// Rewrites an Oniguruma pattern so that PCRE2 matches the same text (see the .cpp).
std::string onig_to_pcre2(std::string_view pattern);

// ---- Normalizer and pre-tokenizer (hf_tokenizer_pretok.cpp) -------------------------------

class Normalizer {
 public:
  static Normalizer from_json(const json& j, const ConfigPath& at);  // null -> identity
  bool is_identity() const { return forms_.empty(); }
  std::string apply(std::string_view s) const;

 private:
  std::vector<NormalForm> forms_;
};

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

class PreTokenizer {
 public:
  static PreTokenizer from_json(const json& j, const ConfigPath& at);  // null -> no splitting
  // The GPT-2 pipeline used for vocab.json + merges.txt: ByteLevel, no prefix space, with regex.
  static PreTokenizer gpt2_byte_level();
  // Splits one normalized segment into words. When byte_level_deferred() is true the words are
  // still raw bytes and the model applies the byte-level alphabet itself (saves a copy per word).
  void run(std::string_view text, std::vector<std::string>& words) const;
  bool byte_level_deferred() const { return defer_byte_map_; }

  struct Step;  // defined in the .cpp

 private:
  void add_json(const json& j, const ConfigPath& at);
  void finish();
  std::vector<std::shared_ptr<const Step>> steps_;
  bool defer_byte_map_ = false;
};

// ---- Added tokens (hf_tokenizer_added.cpp) -------------------------------------------------

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

// A segment of the input: plain text, or an added token (index into tokens()).
struct Segment {
  size_t begin = 0, end = 0;
  int token = -1;
};

class AddedVocabulary {
 public:
  AddedVocabulary() = default;
  // normalizer: how the contents of `normalized` tokens are normalized before matching.
  AddedVocabulary(std::vector<AddedToken> tokens, const Normalizer& normalizer);
  const std::vector<AddedToken>& tokens() const { return tokens_; }
  // Splits `text` around the tokens of one pass: raw (normalized == false, on the input text) or
  // normalized (on each normalized text segment). Segments cover the text in order, as HF's
  // find_matches; empty text gives no segments.
  void split(std::string_view text, bool normalized_pass, std::vector<Segment>& out) const;

 private:
  // Byte trie over token contents; leftmost-longest search like HF's Aho-Corasick.
  struct Trie {
    struct Node {
      std::vector<std::pair<unsigned char, int32_t>> next;
      int token = -1;
    };
    std::vector<Node> nodes{Node{}};
    std::array<bool, 256> first{};
    void insert(std::string_view key, int token);
    // Longest token starting at `pos`, as (token, end); token -1 if none.
    std::pair<int, size_t> longest_at(std::string_view text, size_t pos) const;
  };
  std::vector<AddedToken> tokens_;
  Trie raw_, normalized_;
};

// ---- BPE model (hf_tokenizer_bpe.cpp) ------------------------------------------------------

struct BpeOptions {
  std::optional<std::string> unk_token, continuing_subword_prefix, end_of_word_suffix;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
};

class BpeModel {
 public:
  // merges: (left, right) in rank order; merge_where(i) names merge i in error messages.
  BpeModel(std::unordered_map<std::string, int32_t> vocab,
           const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options,
           const std::function<ConfigPath(size_t)>& merge_where, const ConfigPath& unk_where);
  ~BpeModel();
  // Words arrive as raw bytes when byte_level is set (the model applies the byte-level alphabet).
  void set_byte_level_input(bool byte_level) { byte_level_input_ = byte_level; }
  // Appends the ids of one pre-tokenized word. Thread-safe; results are cached per word.
  void encode_word(std::string_view word, std::vector<int32_t>& ids) const;
  const std::unordered_map<std::string, int32_t>& vocab() const { return vocab_; }

 private:
  struct MergeRule {
    uint32_t rank;
    int32_t new_id;
  };
  void merge_word(std::string_view word, std::vector<int32_t>& ids) const;
  std::optional<int32_t> lookup(const std::string& token) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<uint64_t, MergeRule> merges_;  // (left id << 32 | right id) -> rule
  BpeOptions options_;
  std::optional<int32_t> unk_id_;
  bool byte_level_input_ = false;

  struct CacheShard;
  std::unique_ptr<CacheShard[]> cache_;
};

}  // namespace coe::hf
