#pragma once
// Test strings for the differential test of coe's HF tokenizer against Hugging Face `tokenizers`
// (tools/coe-tokfuzz.cpp, tests/test_data_tokenizer_diff.cpp): seeded, valid UTF-8, built to
// reach every Unicode property the tokenizer pipeline depends on.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "coe/util/random.h"

namespace coe {

class TokenizerFuzzText {
 public:
  // `added_tokens`: contents of the tokenizer's added tokens, glued into the text now and then.
  TokenizerFuzzText(uint64_t seed, std::vector<std::string> added_tokens);
  // The next string: a concatenation of a few pieces, each drawn from one of: every general
  // category and block (HF's regex tables), all planes, unassigned and private-use code points,
  // every whitespace character, digit runs in many scripts, CJK/kana/Hangul, combining
  // sequences and (de)composable characters, emoji with ZWJ/skin tones/flags/keycaps, English
  // words and contractions, added tokens and parts of them, UTF-8 length boundaries, long runs.
  std::string next();

 private:
  void piece(std::string& out);
  char32_t any_code_point();
  char32_t category_code_point();
  SplitMix64 rng_;
  std::vector<std::string> added_tokens_;
};

// One string with `cp` in the contexts that matter to pre-tokenizer regexes and normalizers:
// alone, after a space, a letter, a digit, a mark, doubled, before combining marks, CJK, newlines.
std::string code_point_contexts(char32_t cp);

// "U+0020 U+1E4D0 ...": the code points of valid UTF-8 `text`, for reports.
std::string describe_code_points(std::string_view text, size_t max_code_points = 64);

}  // namespace coe
