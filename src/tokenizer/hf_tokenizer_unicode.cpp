// UTF-8 handling, the character classes HF's Rust code uses, the byte-level alphabet, and
// Unicode normalization, all with HF's own Unicode tables (hf_unicode_tables.h).
// Built only when PCRE2 was found (cmake/CoeDependencies.cmake).
#ifdef COE_WITH_HF_TOKENIZER
#include "hf_tokenizer_internal.h"

#include "hf_unicode_tables.h"

#include <algorithm>
#include <optional>
#include <string>

namespace coe::hf {

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

namespace {

// Length of the well-formed UTF-8 sequence at s[i] (Unicode Table 3-7), or the length of its
// maximal invalid prefix (>= 1) negated.
long utf8_sequence_at(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return -1;
  }
  for (size_t k = 1; k < len; ++k) {
    if (i + k >= s.size()) return -static_cast<long>(k);
    const auto b = static_cast<unsigned char>(s[i + k]);
    if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return -static_cast<long>(k);
  }
  return static_cast<long>(len);
}

}  // namespace

bool is_ascii(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    long n = utf8_sequence_at(s, i);
    if (n < 0) return false;
    i += static_cast<size_t>(n);
  }
  return true;
}

std::string to_valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  size_t i = 0;
  while (i < s.size()) {
    long n = utf8_sequence_at(s, i);
    if (n > 0) {
      out.append(s.substr(i, static_cast<size_t>(n)));
      i += static_cast<size_t>(n);
    } else {
      append_utf8(out, 0xFFFD);
      i += static_cast<size_t>(-n);
    }
  }
  return out;
}

namespace {

bool in_ranges(const tables::Range* ranges, size_t size, char32_t cp) {
  const tables::Range* end = ranges + size;
  const tables::Range* it =
      std::upper_bound(ranges, end, cp, [](char32_t c, const tables::Range& r) { return c < r.first; });
  return it != ranges && cp <= (it - 1)->last;
}

}  // namespace

bool is_numeric(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_ranges(tables::kRustNumeric, tables::kRustNumericSize, cp);
}

bool is_whitespace(char32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
  return in_ranges(tables::kRustRegexSpace, tables::kRustRegexSpaceSize, cp);
}

bool is_word_char(char32_t cp) {
  if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
  return in_ranges(tables::kRustRegexWord, tables::kRustRegexWordSize, cp);
}

namespace {

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves; the other 68 bytes
// (controls, space, DEL, NBSP, soft hyphen) get U+0100.. in byte order.
struct ByteLevelAlphabet {
  std::array<std::string, 256> chars;
  std::array<int, 256 + 68> bytes;
  ByteLevelAlphabet() {
    bytes.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++);
      append_utf8(chars[b], cp);
      bytes[cp] = b;
    }
  }
};

const ByteLevelAlphabet& alphabet() {
  static const ByteLevelAlphabet table;
  return table;
}

}  // namespace

const std::array<std::string, 256>& byte_level_chars() { return alphabet().chars; }

int byte_of_level_char(char32_t cp) {
  const auto& bytes = alphabet().bytes;
  return cp < bytes.size() ? bytes[cp] : -1;
}

// ---- normalization ----------------------------------------------------------------------
// The algorithm of the unicode-normalization-alignments crate HF uses: full decomposition,
// canonical ordering (a stable sort of each run of non-starters by combining class), then its
// recomposition loop. Tables and Hangul constants as in the crate (Unicode 9.0 data).

namespace {

constexpr char32_t kHangulS = 0xAC00, kHangulL = 0x1100, kHangulV = 0x1161, kHangulT = 0x11A7;
constexpr char32_t kHangulLCount = 19, kHangulVCount = 21, kHangulTCount = 28;
constexpr char32_t kHangulNCount = kHangulVCount * kHangulTCount, kHangulSCount = kHangulLCount * kHangulNCount;

uint8_t combining_order(char32_t cp) {
  if (cp < 0x300) return 0;
  const auto* begin = tables::kCombiningOrder;
  const auto* end = begin + tables::kCombiningOrderSize;
  const auto* it =
      std::upper_bound(begin, end, cp, [](char32_t c, const tables::CombiningRun& r) { return c < r.first; });
  return it != begin && cp <= (it - 1)->last ? (it - 1)->order : 0;
}

const tables::Decomposition* find_decomposition(const tables::Decomposition* table, size_t size, char32_t cp) {
  const auto* end = table + size;
  const auto* it =
      std::lower_bound(table, end, cp, [](const tables::Decomposition& d, char32_t c) { return d.code_point < c; });
  return it != end && it->code_point == cp ? it : nullptr;
}

void decompose(char32_t cp, bool compat, std::u32string& out) {
  if (cp < 0xA0) {  // nothing below U+00A0 decomposes
    out.push_back(cp);
    return;
  }
  if (cp >= kHangulS && cp < kHangulS + kHangulSCount) {
    const char32_t s = cp - kHangulS;
    out.push_back(kHangulL + s / kHangulNCount);
    out.push_back(kHangulV + (s % kHangulNCount) / kHangulTCount);
    if (s % kHangulTCount != 0) out.push_back(kHangulT + s % kHangulTCount);
    return;
  }
  const tables::Decomposition* d = nullptr;
  if (compat)
    d = find_decomposition(tables::kCompatibilityDecompositions, tables::kCompatibilityDecompositionsSize, cp);
  if (!d) d = find_decomposition(tables::kCanonicalDecompositions, tables::kCanonicalDecompositionsSize, cp);
  if (!d) {
    out.push_back(cp);
    return;
  }
  out.append(tables::kDecompositionData + d->offset, d->length);
}

std::optional<char32_t> compose(char32_t first, char32_t second) {
  if (first >= kHangulL && first < kHangulL + kHangulLCount && second >= kHangulV && second < kHangulV + kHangulVCount)
    return kHangulS + ((first - kHangulL) * kHangulVCount + (second - kHangulV)) * kHangulTCount;
  if (first >= kHangulS && first < kHangulS + kHangulSCount && (first - kHangulS) % kHangulTCount == 0 &&
      second > kHangulT && second < kHangulT + kHangulTCount)
    return first + (second - kHangulT);
  const auto* begin = tables::kCompositions;
  const auto* end = begin + tables::kCompositionsSize;
  const auto* it =
      std::lower_bound(begin, end, std::make_pair(first, second), [](const tables::Composition& c, const auto& key) {
        return c.first != key.first ? c.first < key.first : c.second < key.second;
      });
  if (it != end && it->first == first && it->second == second) return it->composite;
  return std::nullopt;
}

// The crate's Recompositions iterator: the last starter is the composee; a character composes
// with it unless a starter or a character of the same or a higher class came in between.
std::u32string recompose(const std::u32string& in) {
  std::u32string out, pending;
  out.reserve(in.size());
  std::optional<char32_t> composee;
  uint8_t last_class = 0;  // 0: nothing pending since the composee
  for (const char32_t cp : in) {
    const uint8_t cls = combining_order(cp);
    if (!composee) {
      if (cls == 0) composee = cp;
      else out.push_back(cp);
      continue;
    }
    if (last_class != 0 && last_class >= cls) {  // blocked
      if (cls == 0) {
        out.push_back(*composee);
        out += pending;
        pending.clear();
        composee = cp;
        last_class = 0;
      } else {
        pending.push_back(cp);
        last_class = cls;
      }
      continue;
    }
    if (auto composite = compose(*composee, cp)) {
      composee = *composite;
    } else if (last_class == 0 && cls == 0) {
      out.push_back(*composee);
      composee = cp;
    } else {
      pending.push_back(cp);
      last_class = cls;
    }
  }
  if (composee) out.push_back(*composee);
  out += pending;
  return out;
}

}  // namespace

std::string unicode_normalize(std::string_view s, NormalForm form) {
  if (is_ascii(s)) return std::string(s);  // ASCII is invariant under all four forms
  const bool compat = form == NormalForm::NFKC || form == NormalForm::NFKD;
  std::u32string decomposed;
  decomposed.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) decompose(next_code_point(s, pos), compat, decomposed);
  // Canonical ordering: stable-sort every run of non-starters by combining class.
  for (size_t i = 0; i < decomposed.size();) {
    if (combining_order(decomposed[i]) == 0) {
      ++i;
      continue;
    }
    size_t end = i + 1;
    while (end < decomposed.size() && combining_order(decomposed[end]) != 0) ++end;
    if (end - i > 1)
      std::stable_sort(decomposed.begin() + static_cast<std::ptrdiff_t>(i),
                       decomposed.begin() + static_cast<std::ptrdiff_t>(end),
                       [](char32_t a, char32_t b) { return combining_order(a) < combining_order(b); });
    i = end;
  }
  if (form == NormalForm::NFC || form == NormalForm::NFKC) decomposed = recompose(decomposed);
  std::string out;
  out.reserve(s.size() + s.size() / 4);
  for (char32_t cp : decomposed) append_utf8(out, cp);
  return out;
}

}  // namespace coe::hf

#endif  // COE_WITH_HF_TOKENIZER
