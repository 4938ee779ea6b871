#pragma once
// The Unicode character properties of Hugging Face `tokenizers`, read off the library itself by
// tools/gen_hf_unicode_tables.py, which writes generated/hf_unicode_tables.cpp and the Category enum
// (generated/hf_unicode_categories.h); this header declares the tables. Each engine HF uses has
// its own Unicode version: Oniguruma for the regexes of Split/ByteLevel, the Rust regex crate and
// the Rust standard library for added tokens and Digits, unicode-normalization-alignments for
// NFC/NFKC/NFD/NFKD (docs/tokenizer.md, "Unicode versions").
#include "generated/hf_unicode_categories.h"

#include <cstddef>
#include <cstdint>

namespace coe::hf::tables {

struct CategoryRun {
  char32_t first;  // the run ends where the next one starts
  Category category;
};
struct Range {
  char32_t first, last;
};
struct CombiningRun {
  char32_t first, last;
  uint8_t order;  // ranks the canonical combining classes: 1 = lowest non-zero class
};
struct Decomposition {
  char32_t code_point;
  uint32_t offset;  // into kDecompositionData
  uint32_t length;
};
struct Composition {
  char32_t first, second, composite;
};

// The newest Unicode version whose characters each table knows (from sentinel characters).
extern const char* const kRegexUnicodeVersion;
extern const char* const kRustWordUnicodeVersion;
extern const char* const kRustNumericUnicodeVersion;
extern const char* const kNormalizerUnicodeVersion;

// Oniguruma (Split and ByteLevel patterns): general categories, \s, \w, \d.
extern const CategoryRun kRegexCategories[];
extern const size_t kRegexCategoriesSize;
extern const Range kRegexSpace[];
extern const size_t kRegexSpaceSize;
extern const Range kRegexWord[];
extern const size_t kRegexWordSize;
extern const Range kRegexDigit[];
extern const size_t kRegexDigitSize;

// The Rust regex crate's \w and \s (added tokens: single_word, lstrip/rstrip) and Rust's
// char::is_numeric (the Digits pre-tokenizer).
extern const Range kRustRegexWord[];
extern const size_t kRustRegexWordSize;
extern const Range kRustRegexSpace[];
extern const size_t kRustRegexSpaceSize;
extern const Range kRustNumeric[];
extern const size_t kRustNumericSize;

// unicode-normalization-alignments: combining classes (non-starters only), full canonical and
// compatibility decompositions (Hangul syllables are algorithmic), canonical compositions.
extern const CombiningRun kCombiningOrder[];
extern const size_t kCombiningOrderSize;
extern const Decomposition kCanonicalDecompositions[];
extern const size_t kCanonicalDecompositionsSize;
extern const Decomposition kCompatibilityDecompositions[];
extern const size_t kCompatibilityDecompositionsSize;
extern const char32_t kDecompositionData[];
extern const Composition kCompositions[];
extern const size_t kCompositionsSize;

}  // namespace coe::hf::tables
