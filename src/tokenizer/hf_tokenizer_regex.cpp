// PCRE2 with the matching conventions and Unicode tables of HF tokenizers, whose patterns are
// written for Oniguruma (Ruby syntax) and iterated with the `onig` crate.
// Built only when PCRE2 was found (cmake/CoeDependencies.cmake).
#ifdef COE_WITH_HF_TOKENIZER
#include "hf_tokenizer_internal.h"

#include "coe/util/error.h"

#include "hf_unicode_tables.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace coe::hf {

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  int n = pcre2_get_error_message(code, buffer, sizeof(buffer));
  return n < 0 ? "error " + std::to_string(code) : std::string(reinterpret_cast<const char*>(buffer));
}

// The pattern for one-line messages: control characters (DeepSeek's pattern holds a raw CR and
// LF) written as escapes.
std::string printable(std::string_view pattern) {
  std::string out;
  for (char c : pattern) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (u < 0x20 || u == 0x7F) out += fmt::format("\\x{:02x}", u);
    else out += c;
  }
  return out;
}

}  // namespace

// ---- character classes with HF's (Oniguruma's) Unicode tables -----------------------------
//
// PCRE2's built-in \p{..}, \s and \w use the Unicode version PCRE2 was built with (14.0 for
// Debian 12's 10.42); HF's Oniguruma uses its own (16.0). So every class is rewritten into an
// explicit PCRE2 class body built from hf_unicode_tables.h. PCRE2 scans explicit ranges one by
// one, which is slow for hundreds of ranges; its built-in \p{..} is a table lookup. So a class
// body uses built-in categories wherever PCRE2's own set for them, probed once per process from
// the linked library, lies inside the wanted set, and lists only the remaining code points.
// Even so PCRE2 walks the whole list for a character outside the class; for ASCII text a second
// form of each pattern, whose classes list only their ASCII members, is exact and faster.

namespace {

using Ranges = std::vector<tables::Range>;  // sorted, disjoint, not adjacent; no surrogates

constexpr char32_t kMaxCodePoint = 0x10FFFF;

// Sorts and merges; drops the surrogates U+D800..U+DFFF (never in UTF-8 text, and PCRE2 refuses
// them in UTF patterns).
Ranges canonical(Ranges r) {
  std::sort(r.begin(), r.end(), [](const tables::Range& a, const tables::Range& b) { return a.first < b.first; });
  Ranges out;
  for (const auto& x : r) {
    if (!out.empty() && x.first <= out.back().last + 1) out.back().last = std::max(out.back().last, x.last);
    else out.push_back(x);
  }
  Ranges split;
  for (const auto& x : out) {
    if (x.last < 0xD800 || x.first > 0xDFFF) {
      split.push_back(x);
      continue;
    }
    if (x.first < 0xD800) split.push_back({x.first, 0xD7FF});
    if (x.last > 0xDFFF) split.push_back({0xE000, x.last});
  }
  return split;
}

Ranges complement(const Ranges& r) {
  Ranges out;
  char32_t next = 0;
  for (const auto& x : r) {
    if (x.first > next) out.push_back({next, x.first - 1});
    next = x.last + 1;
  }
  if (next <= kMaxCodePoint) out.push_back({next, kMaxCodePoint});
  return canonical(std::move(out));
}

Ranges from_table(const tables::Range* table, size_t size) { return canonical(Ranges(table, table + size)); }

// a \ b
Ranges subtract(const Ranges& a, const Ranges& b) {
  Ranges out;
  size_t j = 0;
  for (auto x : a) {
    while (j < b.size() && b[j].last < x.first) ++j;
    size_t k = j;
    bool empty = false;
    while (k < b.size() && b[k].first <= x.last) {
      if (b[k].first > x.first) out.push_back({x.first, b[k].first - 1});
      if (b[k].last >= x.last) {
        empty = true;
        break;
      }
      x.first = b[k].last + 1;
      ++k;
    }
    if (!empty) out.push_back(x);
  }
  return out;
}

Ranges unite(const Ranges& a, const Ranges& b) {
  Ranges all(a);
  all.insert(all.end(), b.begin(), b.end());
  return canonical(std::move(all));
}

bool includes(const Ranges& outer, const Ranges& inner) { return subtract(inner, outer).empty(); }

const char* const kCategoryNames[] = {"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl",
                                      "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc",
                                      "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"};

// HF's code points of each general category.
const std::array<Ranges, tables::kCategoryCount>& category_sets() {
  static const auto sets = [] {
    std::array<Ranges, tables::kCategoryCount> out;
    for (size_t i = 0; i < tables::kRegexCategoriesSize; ++i) {
      const char32_t first = tables::kRegexCategories[i].first;
      const char32_t last =
          i + 1 < tables::kRegexCategoriesSize ? tables::kRegexCategories[i + 1].first - 1 : kMaxCodePoint;
      out[tables::kRegexCategories[i].category].push_back({first, last});
    }
    for (auto& r : out) r = canonical(std::move(r));
    return out;
  }();
  return sets;
}

Ranges categories_set(const std::vector<tables::Category>& categories) {
  Ranges out;
  for (auto c : categories) out = unite(out, category_sets()[c]);
  return out;
}

// The general categories a \p{..} name stands for (Oniguruma's loose matching: case, spaces,
// underscores and hyphens are ignored); empty when the name is not a general category.
std::vector<tables::Category> categories_named(std::string_view raw) {
  using namespace tables;
  std::string name;
  for (char c : raw)
    if (c != ' ' && c != '_' && c != '-') name += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const std::vector<std::pair<std::vector<std::string>, std::vector<Category>>> names{
      {{"l", "letter"}, {Lu, Ll, Lt, Lm, Lo}},
      {{"lc", "l&", "casedletter"}, {Lu, Ll, Lt}},
      {{"lu", "uppercaseletter"}, {Lu}},
      {{"ll", "lowercaseletter"}, {Ll}},
      {{"lt", "titlecaseletter"}, {Lt}},
      {{"lm", "modifierletter"}, {Lm}},
      {{"lo", "otherletter"}, {Lo}},
      {{"m", "mark", "combiningmark"}, {Mn, Mc, Me}},
      {{"mn", "nonspacingmark"}, {Mn}},
      {{"mc", "spacingmark"}, {Mc}},
      {{"me", "enclosingmark"}, {Me}},
      {{"n", "number"}, {Nd, Nl, No}},
      {{"nd", "decimalnumber"}, {Nd}},
      {{"nl", "letternumber"}, {Nl}},
      {{"no", "othernumber"}, {No}},
      {{"p", "punctuation"}, {Pc, Pd, Ps, Pe, Pi, Pf, Po}},
      {{"pc", "connectorpunctuation"}, {Pc}},
      {{"pd", "dashpunctuation"}, {Pd}},
      {{"ps", "openpunctuation"}, {Ps}},
      {{"pe", "closepunctuation"}, {Pe}},
      {{"pi", "initialpunctuation"}, {Pi}},
      {{"pf", "finalpunctuation"}, {Pf}},
      {{"po", "otherpunctuation"}, {Po}},
      {{"s", "symbol"}, {Sm, Sc, Sk, So}},
      {{"sm", "mathsymbol"}, {Sm}},
      {{"sc", "currencysymbol"}, {Sc}},
      {{"sk", "modifiersymbol"}, {Sk}},
      {{"so", "othersymbol"}, {So}},
      {{"z", "separator"}, {Zs, Zl, Zp}},
      {{"zs", "spaceseparator"}, {Zs}},
      {{"zl", "lineseparator"}, {Zl}},
      {{"zp", "paragraphseparator"}, {Zp}},
      {{"c", "other"}, {Cc, Cf, Cs, Co, Cn}},
      {{"cc", "control"}, {Cc}},
      {{"cf", "format"}, {Cf}},
      {{"cs", "surrogate"}, {Cs}},
      {{"co", "privateuse"}, {Co}},
      {{"cn", "unassigned"}, {Cn}},
      {{"any"}, {Lu, Ll, Lt, Lm, Lo, Mn, Mc, Me, Nd, Nl, No, Pc, Pd, Ps, Pe,
                 Pi, Pf, Po, Sm, Sc, Sk, So, Zs, Zl, Zp, Cc, Cf, Cs, Co, Cn}},
  };
  for (const auto& [aliases, categories] : names)
    if (std::find(aliases.begin(), aliases.end(), name) != aliases.end()) return categories;
  return {};
}

// Every code point but the surrogates, in order, as UTF-8: the subject for probing PCRE2.
const std::string& all_code_points() {
  static const std::string text = [] {
    std::string s;
    s.reserve(4u << 20);
    for (char32_t cp = 0; cp <= kMaxCodePoint; ++cp)
      if (cp < 0xD800 || cp > 0xDFFF) append_utf8(s, cp);
    return s;
  }();
  return text;
}

// The code points the linked PCRE2 matches with the built-in class `item` (e.g. "\p{L}").
const Ranges& pcre2_builtin_set(const std::string& item) {
  static std::mutex mutex;
  static std::map<std::string, Ranges> cache;
  std::lock_guard<std::mutex> lock(mutex);
  if (auto it = cache.find(item); it != cache.end()) return it->second;
  const std::string pattern = "[" + item + "]+";
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                                   &error, &offset, nullptr);
  if (!code) fail("regex: PCRE2 cannot compile its own class {}: {}", item, pcre2_message(error));
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
  const std::string& text = all_code_points();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  Ranges found;
  for (size_t pos = 0; pos < text.size();) {
    const int rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) fail("regex: probing PCRE2's class {} failed: {}", item, pcre2_message(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(md);
    size_t at = ovector[0];
    const char32_t first = next_code_point(text, at);
    size_t last_at = ovector[1] - 1;
    while ((static_cast<unsigned char>(text[last_at]) & 0xC0) == 0x80) --last_at;
    const char32_t last = next_code_point(text, last_at);
    found.push_back({first, last});
    pos = ovector[1];
  }
  pcre2_match_data_free(md);
  pcre2_code_free(code);
  return cache.emplace(item, canonical(std::move(found))).first->second;
}

void append_hex(std::string& out, char32_t cp) { out += fmt::format("\\x{{{:x}}}", static_cast<uint32_t>(cp)); }

void append_ranges(std::string& body, const Ranges& ranges) {
  for (const auto& r : ranges) {
    append_hex(body, r.first);
    if (r.last != r.first) {
      body += '-';
      append_hex(body, r.last);
    }
  }
}

// A PCRE2 class body (what goes between [ and ]) that matches exactly `wanted`; with
// `ascii_only`, one that is exact on ASCII text only.
std::string class_body(const Ranges& wanted, bool ascii_only) {
  using namespace tables;
  if (ascii_only) {
    std::string body;
    append_ranges(body, subtract(wanted, {{0x80, kMaxCodePoint}}));
    // A class may not be empty: U+0080 never occurs in ASCII text.
    return body.empty() ? "\\x{80}" : body;
  }
  static const std::vector<std::pair<char, std::vector<Category>>> majors{
      {'L', {Lu, Ll, Lt, Lm, Lo}}, {'M', {Mn, Mc, Me}}, {'N', {Nd, Nl, No}},    {'P', {Pc, Pd, Ps, Pe, Pi, Pf, Po}},
      {'S', {Sm, Sc, Sk, So}},     {'Z', {Zs, Zl, Zp}}, {'C', {Cc, Cf, Co, Cn}}};
  std::string body;
  Ranges covered;
  auto try_builtin = [&](const std::string& item, const Ranges& hf_set) {
    if (hf_set.empty() || !includes(wanted, hf_set)) return false;
    const Ranges& builtin = pcre2_builtin_set(item);
    if (!includes(wanted, builtin)) return false;
    body += item;
    covered = unite(covered, builtin);
    return true;
  };
  for (const auto& [major, leaves] : majors) {
    if (try_builtin(std::string("\\p{") + major + "}", categories_set(leaves))) continue;
    for (Category leaf : leaves) try_builtin(std::string("\\p{") + kCategoryNames[leaf] + "}", category_sets()[leaf]);
  }
  append_ranges(body, subtract(wanted, covered));
  return body;
}

// Class bodies are cached by what they stand for (e.g. "p:L", "S", "ascii p:L").
const std::string& cached_class_body(const std::string& key, bool ascii_only, const std::function<Ranges()>& wanted) {
  const std::string full_key = (ascii_only ? "ascii " : "") + key;
  static std::mutex mutex;
  static std::map<std::string, std::string> cache;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (auto it = cache.find(full_key); it != cache.end()) return it->second;
  }
  std::string body = class_body(wanted(), ascii_only);
  std::lock_guard<std::mutex> lock(mutex);
  return cache.emplace(full_key, std::move(body)).first->second;
}

const Ranges& space_set() {
  static const Ranges r = from_table(tables::kRegexSpace, tables::kRegexSpaceSize);
  return r;
}
const Ranges& word_set() {
  static const Ranges r = from_table(tables::kRegexWord, tables::kRegexWordSize);
  return r;
}
const Ranges& digit_set() {
  static const Ranges r = from_table(tables::kRegexDigit, tables::kRegexDigitSize);
  return r;
}
const Ranges& hex_set() {
  static const Ranges r = canonical({{'0', '9'}, {'A', 'F'}, {'a', 'f'}});
  return r;
}

// The class escapes with HF tables: \s \w \d \h and negations. Returns the class body for
// escape letter `e` (inside a class, or wrapped in [..] outside), or nullptr.
const std::string* escape_class_body(char e, bool ascii_only) {
  const bool negated = std::isupper(static_cast<unsigned char>(e)) != 0;
  const Ranges* set = nullptr;
  switch (std::tolower(static_cast<unsigned char>(e))) {
    case 's': set = &space_set(); break;
    case 'w': set = &word_set(); break;
    case 'd': set = &digit_set(); break;
    case 'h': set = &hex_set(); break;  // Ruby syntax: a hexadecimal digit
    default: return nullptr;
  }
  return &cached_class_body(std::string(1, e), ascii_only, [&] { return negated ? complement(*set) : *set; });
}

// Translates an Oniguruma (Ruby syntax) pattern into PCRE2 syntax with HF's character tables.
class PatternTranslator {
 public:
  PatternTranslator(std::string_view p, bool ascii_only) : p_(p), ascii_only_(ascii_only) {}

  std::string run() {
    out_.reserve(p_.size() * 2);
    while (i_ < p_.size()) {
      if (class_depth_ > 0) in_class();
      else outside_class();
    }
    if (class_depth_ > 0) fail("premature end of character class");
    return out_;
  }

 private:
  [[noreturn]] void unsupported(const std::string& what) const {
    fail("{} (at offset {}) is not supported: coe has HF's Unicode tables for general categories, \\s, \\w, \\d, \\h, "
         "\\b and \\B only (docs/tokenizer.md)",
         what, i_);
  }
  [[noreturn]] void rejected(const std::string& what, const std::string& why) const {
    fail("{} (at offset {}) is not supported: {} (docs/tokenizer.md)", what, i_, why);
  }

  // \p{Name}, \p{^Name}, \P{Name} at p_[i_] == '\\': the set, negation applied.
  std::pair<std::string, bool> property() {
    const char kind = p_[i_ + 1];
    if (i_ + 2 >= p_.size() || p_[i_ + 2] != '{') unsupported(std::string("\\") + kind + " without {name}");
    const size_t close = p_.find('}', i_ + 3);
    if (close == std::string_view::npos) fail("\\{} without closing brace at offset {}", kind, i_);
    std::string_view name = p_.substr(i_ + 3, close - i_ - 3);
    bool negated = kind == 'P';
    if (!name.empty() && name[0] == '^') {
      negated = !negated;
      name.remove_prefix(1);
    }
    if (categories_named(name).empty()) unsupported(fmt::format("\\{}{{{}}}", kind, name));
    i_ = close + 1;
    return {std::string(name), negated};
  }

  const std::string& property_body(const std::string& name, bool negated) {
    return cached_class_body((negated ? "P:" : "p:") + name, ascii_only_, [&] {
      const Ranges set = categories_set(categories_named(name));
      return negated ? complement(set) : set;
    });
  }

  // \uHHHH (Ruby syntax) -> \x{HHHH}
  bool unicode_escape() {
    if (p_[i_ + 1] != 'u') return false;
    if (i_ + 6 > p_.size()) fail("\\u needs four hexadecimal digits at offset {}", i_);
    for (size_t k = 2; k < 6; ++k)
      if (!std::isxdigit(static_cast<unsigned char>(p_[i_ + k])))
        fail("\\u needs four hexadecimal digits at offset {}", i_);
    out_ += "\\x{";
    out_.append(p_.substr(i_ + 2, 4));
    out_ += '}';
    i_ += 6;
    return true;
  }

  // A group opening at p_[i_] == '(': tracks the case-insensitive option through the groups;
  // Ruby's option m (dot matches newline) is PCRE2's s.
  void group_open() {
    caseless_stack_.push_back(caseless_);
    // (*VERB), (*OPTION): PCRE2 syntax that Oniguruma's Ruby syntax rejects.
    if (i_ + 1 < p_.size() && p_[i_ + 1] == '*') rejected("(*", "PCRE2's verbs and options are not Ruby syntax");
    if (i_ + 1 >= p_.size() || p_[i_ + 1] != '?') {
      out_ += '(';
      ++i_;
      return;
    }
    if (i_ + 2 < p_.size() && p_[i_ + 2] == '#') {  // comment: copied to its end
      const size_t end = p_.find(')', i_);
      const size_t stop = end == std::string_view::npos ? p_.size() : end + 1;
      out_.append(p_.substr(i_, stop - i_));
      i_ = stop;
      caseless_stack_.pop_back();
      return;
    }
    size_t j = i_ + 2;
    while (j < p_.size() && (std::isalpha(static_cast<unsigned char>(p_[j])) || p_[j] == '-')) ++j;
    if (j == i_ + 2 || j >= p_.size() || (p_[j] != ')' && p_[j] != ':')) {  // (?:, (?=, (?<name> ...
      out_ += "(?";
      i_ += 2;
      return;
    }
    std::string options;
    bool on = true, caseless = caseless_;
    for (size_t k = i_ + 2; k < j; ++k) {
      const char o = p_[k];
      if (o == '-') {
        on = false;
      } else if (o == 'i') {
        caseless = on;
      } else if (o != 'm' && o != 'x') {
        i_ = k;
        unsupported(fmt::format("group option '{}' (Ruby syntax has i, m, x)", o));
      }
      options += o == 'm' ? 's' : o;
    }
    out_ += "(?" + options + p_[j];
    if (p_[j] == ')') {  // (?i): to the end of the enclosing group
      caseless_stack_.pop_back();
      caseless_ = caseless;
    } else {  // (?i: ... )
      caseless_ = caseless;
    }
    i_ = j + 1;
  }

  void group_close() {
    if (!caseless_stack_.empty()) {
      caseless_ = caseless_stack_.back();
      caseless_stack_.pop_back();
    }
    out_ += ')';
    ++i_;
  }

  // A class escape outside brackets. Oniguruma never case-folds these, PCRE2 folds the explicit
  // ranges of a class: under (?i) the class is wrapped in (?-i:...).
  void emit_class(const std::string& cls) {
    if (caseless_) out_ += "(?-i:" + cls + ")";
    else out_ += cls;
  }

  void outside_class() {
    const char c = p_[i_];
    if (c == '(') return group_open();
    if (c == ')') return group_close();
    if (c == '[') {
      out_ += c;
      ++i_;
      class_depth_ = 1;
      if (i_ < p_.size() && p_[i_] == '^') {
        out_ += '^';
        ++i_;
      }
      class_start_ = true;
      return;
    }
    if (c != '\\' || i_ + 1 >= p_.size()) {
      out_ += c;
      ++i_;
      return;
    }
    const char e = p_[i_ + 1];
    if (e == 'Q') {  // \Q...\E is literal text: copy it untouched
      const size_t end = p_.find("\\E", i_ + 2);
      const size_t stop = end == std::string_view::npos ? p_.size() : end + 2;
      out_.append(p_.substr(i_, stop - i_));
      i_ = stop;
      return;
    }
    if (e == 'p' || e == 'P') {
      auto [name, negated] = property();
      // \P{..} outside a class: [^ body of the positive set ] keeps the body short.
      emit_class((negated ? "[^" : "[") + property_body(name, false) + "]");
      return;
    }
    if (const std::string* body =
            escape_class_body(static_cast<char>(std::tolower(static_cast<unsigned char>(e))), ascii_only_)) {
      emit_class((std::isupper(static_cast<unsigned char>(e)) ? "[^" : "[") + *body + "]");
      i_ += 2;
      return;
    }
    if (e == 'b' || e == 'B') {  // word boundaries with HF's \w
      const std::string w = "[" + *escape_class_body('w', ascii_only_) + "]";
      emit_class(e == 'b' ? "(?:(?<=" + w + ")(?!" + w + ")|(?<!" + w + ")(?=" + w + "))"
                          : "(?:(?<=" + w + ")(?=" + w + ")|(?<!" + w + ")(?!" + w + "))");
      i_ += 2;
      return;
    }
    if (unicode_escape()) return;
    if (e == 'X' || e == 'y' || e == 'Y') unsupported(std::string("\\") + e);
    // find_all searches a text from start positions of its own choosing (windows)
    if (e == 'G') rejected("\\G", "its match depends on where a search starts");
    out_ += c;
    out_ += e;
    i_ += 2;
  }

  void in_class() {
    const char c = p_[i_];
    const bool at_start = class_start_;
    class_start_ = false;
    if (c == '\\' && i_ + 1 < p_.size()) {
      const char e = p_[i_ + 1];
      if (e == 'Q') unsupported("\\Q inside a character class");
      if (e == 'p' || e == 'P') {
        // Oniguruma case-folds a whole bracket class under (?i), properties included; PCRE2 never
        // folds properties. \s, \w, \d and their negations are closed under case folding anyway.
        if (caseless_) unsupported("\\p{..} inside a case-insensitive character class");
        auto [name, negated] = property();
        out_ += property_body(name, negated);
        return;
      }
      if (const std::string* body = escape_class_body(e, ascii_only_)) {
        out_ += *body;
        i_ += 2;
        return;
      }
      if (unicode_escape()) return;
      out_ += c;
      out_ += e;
      i_ += 2;
      return;
    }
    if (c == '[') {
      if (i_ + 1 < p_.size() && p_[i_ + 1] == ':') unsupported("a POSIX bracket class [:...:]");
      unsupported("a nested character class");
    }
    if (c == '&' && i_ + 1 < p_.size() && p_[i_ + 1] == '&') unsupported("character class intersection &&");
    if (c == ']' && !at_start) class_depth_ = 0;
    out_ += c;
    ++i_;
  }

  std::string_view p_;
  bool ascii_only_;
  size_t i_ = 0;
  std::string out_;
  int class_depth_ = 0;
  bool class_start_ = false;
  bool caseless_ = false;             // (?i) in effect
  std::vector<bool> caseless_stack_;  // the option outside each open group
};

}  // namespace

std::string onig_to_pcre2(std::string_view pattern, bool ascii_only) {
  return PatternTranslator(pattern, ascii_only).run();
}

std::string regex_escape(std::string_view literal) {
  std::string out;
  out.reserve(literal.size() * 2);
  for (char c : literal) {
    const auto u = static_cast<unsigned char>(c);
    bool alnum = (u >= '0' && u <= '9') || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z');
    if (u < 0x80 && !alnum) out += '\\';  // backslash + ASCII non-alphanumeric is always literal
    out += c;
  }
  return out;
}

Regex::Regex(const std::string& pattern, const ConfigPath& at) : pattern_(pattern) {
  // Ruby syntax: only \n ends a line (for ., ^ and $); ^ and $ are line anchors (MULTILINE).
  static pcre2_compile_context* context = [] {
    pcre2_compile_context* c = pcre2_compile_context_create(nullptr);
    if (!c || pcre2_set_newline(c, PCRE2_NEWLINE_LF) != 0) fail("regex: cannot set up a PCRE2 compile context");
    return c;
  }();
  for (const bool ascii_only : {false, true}) {
    std::string translated;
    try {
      translated = onig_to_pcre2(pattern, ascii_only);
    } catch (const Error& e) {
      at.fail(fmt::format("invalid regex /{}/: {}", printable(pattern), e.what()));
    }
    for (const bool counted : {false, true}) {
      int error = 0;
      PCRE2_SIZE offset = 0;
      pcre2_code* code = pcre2_compile(
          reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
          PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE | PCRE2_USE_OFFSET_LIMIT | (counted ? PCRE2_AUTO_CALLOUT : 0), &error,
          &offset, context);
      if (!code)
        at.fail(fmt::format("invalid regex /{}/: {} (at offset {} of its PCRE2 form)", printable(pattern),
                            pcre2_message(error), offset));
      // JIT is an optimisation only; without it pcre2_match interprets the pattern. find_all
      // matches in both modes (a window short of the text's end is matched with PARTIAL_HARD).
      pcre2_jit_compile(code, PCRE2_JIT_COMPLETE | PCRE2_JIT_PARTIAL_HARD);
      (counted ? (ascii_only ? counted_ascii_code_ : counted_code_) : (ascii_only ? ascii_code_ : code_)) = code;
    }
  }
}

Regex::~Regex() {
  pcre2_code_free(code_);
  pcre2_code_free(ascii_code_);
  pcre2_code_free(counted_code_);
  pcre2_code_free(counted_ascii_code_);
}

namespace {

// The work of one find_all (one text) is bounded, deterministically: by what the engine may
// inspect, never by time. PCRE2 reports no work done on success, so find_all bounds it from
// outside. Each pcre2_match call sees the text only up to a window end, kWindow bytes past where
// it starts (PCRE2_PARTIAL_HARD: a call that needs a character past the window end stops there
// with PCRE2_ERROR_PARTIAL and is repeated with a window twice as long, so the matches are those
// of the whole text), and tries at most kStartsPerCall + 1 start positions (the offset limit). A
// call therefore inspects at most (start positions tried) x (window) bytes; find_all adds that
// up and fails past kWorkPerByte per byte of text plus kWorkBase. Real patterns inspect a piece
// and a character or two past it, so they are charged about a window per piece: at most 34
// bytes per byte on GSM8K, 1 MB of it as one text, and the fuzz strings with the four shared
// tokenizers. Patterns like `a*c|a` or `(?:a|b)*c|.` rescan the rest of the text at every
// position (quadratic work: hours for 1 MB, with no call backtracking catastrophically) and
// exhaust the budget within a second. Texts up to about 11 KB fit even quadratic work.
constexpr size_t kWindow = 32;             // a call's first window, in bytes past its start
constexpr size_t kStartsPerCall = 32;      // start positions a call may try after its first
constexpr uint64_t kWorkPerByte = 256;     // the budget: bytes inspected per byte of text ...
constexpr uint64_t kWorkBase = 64u << 20;  // ... plus this
// One call can still do quadratic work in few backtracking steps: PCRE2 counts a loop over single
// characters as one step however far it runs, so in `a*a*b|.` on a run of n `a`s the first a*
// gives back one character at a time and the second rescans the rest each time, within the one
// call that sees the whole run. A call over a window longer than kCountedWindow therefore runs
// the pattern compiled with an automatic callout before every item, which adds up how far the
// matcher's position moves between items (the characters it moved over) and ends the call once
// the text's budget is spent. Short windows, all that real patterns on real text need but for
// long runs of one class, keep the uncounted code and the starts x window charge.
constexpr size_t kCountedWindow = 4096;

struct CalloutCount {
  uint64_t work = 0, limit = 0;
  size_t last = 0;
  bool started = false;
};

int count_callout(pcre2_callout_block* block, void* data) {
  auto* c = static_cast<CalloutCount*>(data);
  const size_t now = block->current_position;
  c->work += 1 + (c->started ? (now > c->last ? now - c->last : c->last - now) : 0);
  c->started = true;
  c->last = now;
  return c->work > c->limit ? PCRE2_ERROR_CALLOUT : 0;  // negative: the call ends with it
}

// Backtracking limits per start position (PCRE2 counts per start position, with JIT or not). A
// pattern that backtracks catastrophically hits them within a fraction of a second and fails
// with an error instead of running for hours. HF's patterns backtrack linearly: a run of n
// spaces costs them about 1.5 n steps (docs/tokenizer.md), so the step limit grows with the
// window (and a call short of the text's end that hits it is repeated with a longer window),
// and with the pattern (an alternation steps through its branches).
constexpr uint64_t kMatchStepsPerByte = 16;         // backtracking steps per byte of the window ...
constexpr uint64_t kMatchStepsPerPatternByte = 16;  // ... plus this many per byte of the pattern ...
constexpr uint64_t kMatchStepsBase = 1000;          // ... plus this
constexpr uint32_t kDepthLimit = 10'000'000;        // nested backtracking points (interpreter only)
constexpr uint32_t kHeapLimitKiB = 1024 * 1024;     // interpreter backtracking memory (1 GiB)
constexpr size_t kJitStackMax = 64u << 20;          // JIT backtracking stack (reserved, used lazily)

struct MatchState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  MatchState() {
    data = pcre2_match_data_create(1, nullptr);  // one ovector pair: the whole match is all we read
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, kJitStackMax, nullptr);
    if (!data || !context || !jit_stack) fail("regex: out of memory creating PCRE2 match state");
    pcre2_set_depth_limit(context, kDepthLimit);
    pcre2_set_heap_limit(context, kHeapLimitKiB);
    pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~MatchState() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

// Per thread, so that matching is lock-free.
MatchState& thread_match_state() {
  thread_local MatchState state;
  return state;
}

// The first character boundary at or after `i` (at most s.size()).
size_t boundary_at_or_after(std::string_view s, size_t i) {
  while (i < s.size() && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) ++i;
  return std::min(i, s.size());
}

}  // namespace

void Regex::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
  out.clear();
  MatchState& state = thread_match_state();
  const bool ascii = is_ascii(s);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.empty() ? "" : s.data());
  const size_t n = s.size();
  const uint64_t budget = kWorkBase + kWorkPerByte * static_cast<uint64_t>(n);
  uint64_t work = 0;
  // The onig crate's find_iter: search from the end of the previous match; an empty match
  // right where the previous match ended is skipped by stepping one character.
  size_t pos = 0;
  size_t last_end = static_cast<size_t>(-1);
  size_t window = kWindow;
  while (pos <= n) {
    // [pos, end) is what this call sees; a window end falls on a character boundary.
    const size_t end = window >= n - pos ? n : boundary_at_or_after(s, pos + window);
    const bool whole = end == n;
    const size_t span = end - pos;
    const size_t last_start = pos + kStartsPerCall;  // the offset limit: no start after it is tried
    const uint64_t steps = kMatchStepsPerByte * span + kMatchStepsPerPatternByte * pattern_.size() + kMatchStepsBase;
    pcre2_set_match_limit(state.context, static_cast<uint32_t>(std::min<uint64_t>(steps, UINT32_MAX)));
    pcre2_set_offset_limit(state.context, last_start);
    const bool counted = span > kCountedWindow;
    CalloutCount count;
    count.limit = budget - std::min(budget, work);
    pcre2_set_callout(state.context, counted ? count_callout : nullptr, &count);
    pcre2_code* code = counted ? (ascii ? counted_ascii_code_ : counted_code_) : (ascii ? ascii_code_ : code_);
    const int rc = pcre2_match(code, subject, end, pos, PCRE2_NO_UTF_CHECK | (whole ? 0 : PCRE2_PARTIAL_HARD),
                               state.data, state.context);
    if (rc == PCRE2_ERROR_CALLOUT)
      fail("regex /{}/: work limit hit at byte {} of a {}-byte text (more than {} bytes inspected: {} per byte of "
           "text + {} MiB): one match attempt rescans the text",
           printable(pattern_), pos, n, budget, kWorkPerByte, kWorkBase >> 20);
    const bool limit_hit = rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ||
                           rc == PCRE2_ERROR_HEAPLIMIT || rc == PCRE2_ERROR_JIT_STACKLIMIT;
    if (limit_hit && whole)
      fail("regex /{}/: backtracking limit hit at byte {} of a {}-byte text ({}): the pattern backtracks "
           "catastrophically",
           printable(pattern_), pos, n, pcre2_message(rc));
    if (rc < 0 && !limit_hit && rc != PCRE2_ERROR_NOMATCH && rc != PCRE2_ERROR_PARTIAL)
      fail("regex /{}/: matching failed: {}", printable(pattern_), pcre2_message(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.data);
    const bool matched = rc >= 0 && (whole || ovector[0] < end);
    // Each outcome says where the next call starts (no match starts before it) and how many
    // start positions this one tried (at most).
    size_t next = pos, starts = std::min(last_start, end) - pos + 1;
    if (rc == PCRE2_ERROR_PARTIAL) {
      // A match from ovector[0] (or later: a lookbehind inspects characters before the start)
      // needs text past the window: again from there, with a window twice as long.
      next = std::max<size_t>(pos, ovector[0]);
      starts = next - pos + 1;
      window = std::max(kWindow, 2 * (end - next));
    } else if (limit_hit || (rc >= 0 && !matched)) {
      // The limits grow with the window; and a match at a window end that is not the text's end
      // decides nothing (PCRE2 inspected no character there, or \K moved its start there).
      window = 2 * span;
    } else if (rc == PCRE2_ERROR_NOMATCH) {  // none starts at or before last_start, or before `end`
      next = last_start < end ? boundary_at_or_after(s, last_start + 1) : whole ? n + 1 : end;
      window = kWindow;
    } else {
      starts = ovector[0] - pos + 1;
    }
    // A counted call is charged what it moved over (plus the window, for the scans PCRE2 does
    // before its first item: the search for a first character); another, starts x window.
    work += counted ? count.work + span : static_cast<uint64_t>(starts) * std::max<size_t>(span, 1);
    if (work > budget)
      fail("regex /{}/: work limit hit at byte {} of a {}-byte text (more than {} bytes inspected: {} per byte of "
           "text + {} MiB): the pattern rescans the text",
           printable(pattern_), pos, n, budget, kWorkPerByte, kWorkBase >> 20);
    if (!matched) {
      pos = next;
      continue;
    }
    window = kWindow;
    const size_t begin = ovector[0], match_end = ovector[1];
    if (begin == match_end && match_end == last_end) {
      pos += pos < n ? utf8_length(static_cast<unsigned char>(s[pos])) : 1;
      continue;
    }
    if (begin > match_end) fail("regex /{}/: \\K produced a match that ends before it starts", printable(pattern_));
    out.emplace_back(begin, match_end);
    pos = last_end = match_end;
  }
}

}  // namespace coe::hf

#endif  // COE_WITH_HF_TOKENIZER
