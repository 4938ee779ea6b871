// Strings for the differential tokenizer test (include/coe/tokenizer/tokenizer_fuzz.h). The pools of
// interesting code points come from HF's own Unicode tables (hf_unicode_tables.h), so every
// category, block, mark and decomposable character that HF knows is reachable.
#ifdef COE_WITH_HF_TOKENIZER
#include "coe/tokenizer/tokenizer_fuzz.h"

#include "hf_tokenizer_internal.h"
#include "hf_unicode_tables.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>

namespace coe {

namespace {

using hf::append_utf8;
namespace tables = hf::tables;

bool is_surrogate(char32_t cp) { return cp >= 0xD800 && cp <= 0xDFFF; }

// Run `i` of HF's general-category table as [first, last].
std::pair<char32_t, char32_t> category_run(size_t i) {
  const char32_t first = tables::kRegexCategories[i].first;
  const char32_t last = i + 1 < tables::kRegexCategoriesSize ? tables::kRegexCategories[i + 1].first - 1 : 0x10FFFF;
  return {first, last};
}

// Code points of one category (runs listed once; drawing a run then a code point in it
// reaches every block of the category with similar weight).
const std::vector<std::pair<char32_t, char32_t>>& runs_of(tables::Category c) {
  static const auto by_category = [] {
    std::array<std::vector<std::pair<char32_t, char32_t>>, tables::kCategoryCount> out;
    for (size_t i = 0; i < tables::kRegexCategoriesSize; ++i) {
      auto run = category_run(i);
      if (tables::kRegexCategories[i].category == tables::Cs) continue;
      out[tables::kRegexCategories[i].category].push_back(run);
    }
    return out;
  }();
  return by_category[c];
}

const std::vector<char32_t>& non_starters() {
  static const auto list = [] {
    std::vector<char32_t> out;
    for (size_t i = 0; i < tables::kCombiningOrderSize; ++i)
      for (char32_t cp = tables::kCombiningOrder[i].first; cp <= tables::kCombiningOrder[i].last; ++cp)
        out.push_back(cp);
    return out;
  }();
  return list;
}

const std::vector<char32_t>& whitespace_like() {
  static const auto list = [] {
    std::vector<char32_t> out;
    for (const auto& [table, size] : {std::make_pair(tables::kRegexSpace, tables::kRegexSpaceSize),
                                      std::make_pair(tables::kRustRegexSpace, tables::kRustRegexSpaceSize)})
      for (size_t i = 0; i < size; ++i)
        for (char32_t cp = table[i].first; cp <= table[i].last; ++cp) out.push_back(cp);
    // Former or near whitespace: Mongolian vowel separator, zero-width space/joiners, word
    // joiner, BOM, information separators.
    for (char32_t cp : {0x180E, 0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x1C, 0x1D, 0x1E, 0x1F, 0x00})
      out.push_back(cp);
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }();
  return list;
}

// First code points of the runs of ten decimal digits (Nd), all scripts.
const std::vector<char32_t>& digit_zeros() {
  static const auto list = [] {
    std::vector<char32_t> out;
    for (const auto& [first, last] : runs_of(tables::Nd))
      for (char32_t cp = first; cp + 9 <= last; cp += 10) out.push_back(cp);
    return out;
  }();
  return list;
}

const std::vector<char32_t>& decomposable() {
  static const auto list = [] {
    std::vector<char32_t> out;
    for (size_t i = 0; i < tables::kCanonicalDecompositionsSize; ++i)
      out.push_back(tables::kCanonicalDecompositions[i].code_point);
    for (size_t i = 0; i < tables::kCompatibilityDecompositionsSize; ++i)
      out.push_back(tables::kCompatibilityDecompositions[i].code_point);
    return out;
  }();
  return list;
}

constexpr std::array<const char*, 40> kWords{
    "the", "The",  "THE",      "a",     "of",    "and",   "to",     "in",      "is",        "was",
    "it",  "that", "for",      "on",    "with",  "as",    "I",      "you",     "he",        "she",
    "we",  "they", "hello",    "world", "Hello", "naïve", "café",   "Ünïcödé", "résumé",    "don",
    "won", "can",  "Jean-Luc", "e.g",   "U.S.A", "x",     "abc123", "foo_bar", "CamelCase", "snake_case"};
constexpr std::array<const char*, 14> kContractions{"'s", "'t", "'re", "'ve", "'m",  "'ll", "'d",
                                                    "'S", "'T", "'RE", "'Ve", "'LL", "'D",  "'M"};
constexpr std::array<const char*, 28> kPunctuation{".", ",", "!", "?", ";", ":",  "-", "--", "...", "(",
                                                   ")", "[", "]", "{", "}", "\"", "'", "`",  "/",   "\\",
                                                   "@", "#", "$", "%", "^", "&",  "*", "~"};

}  // namespace

TokenizerFuzzText::TokenizerFuzzText(uint64_t seed, std::vector<std::string> added_tokens)
    : rng_(seed), added_tokens_(std::move(added_tokens)) {}

char32_t TokenizerFuzzText::any_code_point() {
  for (;;) {
    const auto cp = static_cast<char32_t>(rng_.below(0x110000));
    if (!is_surrogate(cp)) return cp;
  }
}

char32_t TokenizerFuzzText::category_code_point() {
  const auto& runs = runs_of(static_cast<tables::Category>(rng_.below(tables::kCategoryCount)));
  if (runs.empty()) return any_code_point();  // Cs
  const auto& [first, last] = runs[rng_.below(runs.size())];
  return first + static_cast<char32_t>(rng_.below(last - first + 1));
}

std::string TokenizerFuzzText::next() {
  std::string out;
  const uint64_t pieces = 1 + rng_.below(rng_.below(4) == 0 ? 24 : 8);
  for (uint64_t i = 0; i < pieces; ++i) piece(out);
  return out;
}

void TokenizerFuzzText::piece(std::string& out) {
  auto pick = [&](const auto& list) { return list[rng_.below(list.size())]; };
  auto times = [&](uint64_t max) { return 1 + rng_.below(max); };
  switch (rng_.below(22)) {
    case 0:  // a code point from any plane (mostly unassigned)
      append_utf8(out, any_code_point());
      break;
    case 1:
    case 2:  // a code point of a random general category, any block
      for (uint64_t n = times(4); n > 0; --n) append_utf8(out, category_code_point());
      break;
    case 3:  // a space (or other whitespace) before a character of a random category
      append_utf8(out, rng_.below(3) ? U' ' : pick(whitespace_like()));
      append_utf8(out, category_code_point());
      break;
    case 4:  // whitespace runs
      for (uint64_t n = times(6); n > 0; --n) append_utf8(out, pick(whitespace_like()));
      break;
    case 5: {  // newlines and carriage returns with spaces
      static constexpr std::array<const char*, 8> kBreaks{"\n", "\r\n", "\r", "\n\n", " \n", "\n ", "\t\n", " \r\n "};
      out += pick(kBreaks);
      break;
    }
    case 6: {  // a digit run in one script, or other numbers
      if (rng_.below(4) == 0) {
        for (uint64_t n = times(5); n > 0; --n) {
          const auto& runs = runs_of(rng_.below(2) ? tables::No : tables::Nl);
          const auto& [first, last] = runs[rng_.below(runs.size())];
          append_utf8(out, first + static_cast<char32_t>(rng_.below(last - first + 1)));
        }
        break;
      }
      const char32_t zero = rng_.below(3) == 0 ? U'0' : pick(digit_zeros());
      for (uint64_t n = times(rng_.below(5) == 0 ? 40 : 8); n > 0; --n)
        append_utf8(out, zero + static_cast<char32_t>(rng_.below(10)));
      break;
    }
    case 7: {  // CJK, kana, Hangul runs (BMP and astral ideographs)
      static constexpr std::array<std::pair<char32_t, char32_t>, 12> kBlocks{{{0x4E00, 0x9FA5},
                                                                              {0x9FA6, 0x9FFF},
                                                                              {0x3040, 0x309F},
                                                                              {0x30A0, 0x30FF},
                                                                              {0x31F0, 0x31FF},
                                                                              {0xFF66, 0xFF9F},
                                                                              {0xAC00, 0xD7A3},
                                                                              {0x1100, 0x11FF},
                                                                              {0x3400, 0x4DBF},
                                                                              {0x20000, 0x2A6DF},
                                                                              {0x2EBF0, 0x2EE5D},
                                                                              {0x31350, 0x323AF}}};
      const auto& [first, last] = pick(kBlocks);
      for (uint64_t n = times(6); n > 0; --n)
        append_utf8(out, first + static_cast<char32_t>(rng_.below(last - first + 1)));
      break;
    }
    case 8:
    case 9: {  // a base (letter, space, digit, mark, nothing) and a few combining marks
      switch (rng_.below(5)) {
        case 0: append_utf8(out, U' '); break;
        case 1: append_utf8(out, U'a' + static_cast<char32_t>(rng_.below(26))); break;
        case 2: append_utf8(out, category_code_point()); break;
        case 3: append_utf8(out, pick(decomposable())); break;
        default: break;
      }
      for (uint64_t n = times(4); n > 0; --n) {
        if (rng_.below(3) == 0) {  // a mark HF may not know as a non-starter (e.g. newer than its tables)
          const auto& runs = runs_of(rng_.below(2) ? tables::Mn : tables::Mc);
          const auto& [first, last] = runs[rng_.below(runs.size())];
          append_utf8(out, first + static_cast<char32_t>(rng_.below(last - first + 1)));
        } else {
          append_utf8(out, pick(non_starters()));
        }
      }
      break;
    }
    case 10:  // characters with canonical or compatibility decompositions
      for (uint64_t n = times(3); n > 0; --n) append_utf8(out, pick(decomposable()));
      break;
    case 11: {  // Hangul jamo sequences (L V T), syllables followed by jamo
      if (rng_.below(2)) append_utf8(out, 0xAC00 + static_cast<char32_t>(rng_.below(11172)));
      else append_utf8(out, 0x1100 + static_cast<char32_t>(rng_.below(21)));
      append_utf8(out, 0x1160 + static_cast<char32_t>(rng_.below(24)));
      if (rng_.below(2)) append_utf8(out, 0x11A6 + static_cast<char32_t>(rng_.below(30)));
      break;
    }
    case 12: {  // emoji: skin tones, ZWJ sequences, variation selectors, flags, keycaps, tags
      static constexpr std::array<char32_t, 12> kEmoji{0x1F600, 0x1F44D, 0x1F468, 0x1F469, 0x1F9D1, 0x2764,
                                                       0x1F3F3, 0x1F308, 0x1F525, 0x1FAE8, 0x1F1FA, 0x263A};
      switch (rng_.below(5)) {
        case 0:
          append_utf8(out, pick(kEmoji));
          append_utf8(out, 0x1F3FB + static_cast<char32_t>(rng_.below(5)));
          break;
        case 1:
          append_utf8(out, pick(kEmoji));
          if (rng_.below(2)) append_utf8(out, 0xFE0F);
          append_utf8(out, 0x200D);
          append_utf8(out, pick(kEmoji));
          break;
        case 2:
          append_utf8(out, 0x1F1E6 + static_cast<char32_t>(rng_.below(26)));
          append_utf8(out, 0x1F1E6 + static_cast<char32_t>(rng_.below(26)));
          break;
        case 3:
          append_utf8(out, U'0' + static_cast<char32_t>(rng_.below(10)));
          append_utf8(out, 0xFE0F);
          append_utf8(out, 0x20E3);
          break;
        default:
          append_utf8(out, 0x1F3F4);
          for (char32_t c : {U'g', U'b', U's', U'c', U't'}) append_utf8(out, 0xE0000 + c);
          append_utf8(out, 0xE007F);
          break;
      }
      break;
    }
    case 13:
    case 14: {  // English words with spaces, punctuation and contractions
      if (rng_.below(2)) out += ' ';
      out += pick(kWords);
      switch (rng_.below(4)) {
        case 0: out += pick(kContractions); break;
        case 1: out += pick(kPunctuation); break;
        case 2: {  // contractions with non-ASCII case partners (long s, Kelvin sign, dotted I)
          static constexpr std::array<const char*, 6> kOdd{"'\u017F", "'\u212A", "'\u0130",
                                                           "'\u0131", "'\u00DF", "'\uFB05"};
          out += pick(kOdd);
          break;
        }
        default: break;
      }
      break;
    }
    case 15:
      for (uint64_t n = times(4); n > 0; --n) out += pick(kPunctuation);
      break;
    case 16:
    case 17: {  // added tokens, glued to text, doubled, cut short, or with spaces around
      if (added_tokens_.empty()) {
        out += "<|endoftext|>";
        break;
      }
      const std::string& token = pick(added_tokens_);
      switch (rng_.below(5)) {
        case 0: out += token; break;
        case 1: out += " " + token + " "; break;
        case 2: out += token + token; break;
        case 3: {  // cut short, at a character boundary
          size_t cut = rng_.below(token.size() + 1);
          while (cut > 0 && cut < token.size() && (static_cast<unsigned char>(token[cut]) & 0xC0) == 0x80) --cut;
          out += token.substr(0, cut);
          break;
        }
        default: out += "x" + token + "y"; break;
      }
      break;
    }
    case 18: {  // private use, noncharacters, replacement character, UTF-8 length boundaries
      static constexpr std::array<char32_t, 22> kEdges{
          0x7F,   0x80,   0x7FF,   0x800,   0xD7FF,  0xE000,  0xF8FF,   0xFDD0,   0xFDEF,   0xFEFF,  0xFFFD,
          0xFFFE, 0xFFFF, 0x10000, 0x1FFFE, 0xF0000, 0xFFFFD, 0x100000, 0x10FFFD, 0x10FFFF, 0xE0001, 0xE01EF};
      if (rng_.below(2)) {
        append_utf8(out, pick(kEdges));
      } else {
        static constexpr std::array<std::pair<char32_t, char32_t>, 3> kPrivate{
            {{0xE000, 0xF8FF}, {0xF0000, 0xFFFFD}, {0x100000, 0x10FFFD}}};
        const auto& [first, last] = pick(kPrivate);
        append_utf8(out, first + static_cast<char32_t>(rng_.below(last - first + 1)));
      }
      break;
    }
    case 19: {  // long runs of one character or one short piece
      std::string unit;
      switch (rng_.below(4)) {
        case 0: append_utf8(unit, U' '); break;
        case 1: append_utf8(unit, category_code_point()); break;
        case 2: unit = pick(kWords); break;
        default: append_utf8(unit, pick(whitespace_like())); break;
      }
      for (uint64_t n = times(rng_.below(8) == 0 ? 3000 : 200); n > 0; --n) out += unit;
      break;
    }
    case 20:  // control characters and tabs
      for (uint64_t n = times(3); n > 0; --n) append_utf8(out, static_cast<char32_t>(rng_.below(0x20)));
      break;
    default: {  // mixed scripts with a space before each word
      for (uint64_t n = times(4); n > 0; --n) {
        out += ' ';
        const auto& runs = runs_of(static_cast<tables::Category>(rng_.below(5)));  // a letter category
        const auto& [first, last] = runs[rng_.below(runs.size())];
        for (uint64_t k = times(5); k > 0; --k)
          append_utf8(out, first + static_cast<char32_t>(rng_.below(last - first + 1)));
      }
      break;
    }
  }
}

std::string code_point_contexts(char32_t cp) {
  std::string c;
  append_utf8(c, cp);
  // Alone at the start; after a space, a letter, a digit, a mark, CJK; doubled; before marks
  // (U+0301 acute: class 230; U+0334: class 1; U+0345: class 240); after an apostrophe; at a
  // line end.
  return c + " " + c + c + "a" + c + "1" + c + "2 \u0301" + c + "\u3042" + c + "'" + c + "\u0334 " + c +
         "\u0301\u0345" + "\n" + c;
}

std::string describe_code_points(std::string_view text, size_t max_code_points) {
  std::string out;
  size_t count = 0;
  for (size_t pos = 0; pos < text.size(); ++count) {
    if (count == max_code_points) {
      out += " ...";
      break;
    }
    const char32_t cp = hf::next_code_point(text, pos);
    if (!out.empty()) out += ' ';
    out += fmt::format("U+{:04X}", static_cast<uint32_t>(cp));
  }
  return out;
}

}  // namespace coe

#endif  // COE_WITH_HF_TOKENIZER
