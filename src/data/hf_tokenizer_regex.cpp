// PCRE2 with the matching conventions of HF tokenizers, whose patterns are written for
// Oniguruma (Ruby syntax) and iterated with the `onig` crate.
// Built only when PCRE2 and utf8proc were found (cmake/CoeDependencies.cmake).
#ifdef COE_WITH_HF_TOKENIZER
#include "hf_tokenizer_internal.h"

#include "coe/util/error.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace coe::hf {

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  int n = pcre2_get_error_message(code, buffer, sizeof(buffer));
  return n < 0 ? "error " + std::to_string(code) : std::string(reinterpret_cast<const char*>(buffer));
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* md) const { pcre2_match_data_free(md); }
};

// One ovector pair is all we read (the whole match); per thread so that matching is lock-free.
pcre2_match_data* thread_match_data() {
  thread_local std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(pcre2_match_data_create(1, nullptr));
  if (!md) fail("regex: out of memory creating PCRE2 match data");
  return md.get();
}

}  // namespace

std::string onig_to_pcre2(std::string_view p) {
  // Oniguruma's \s is Unicode White_Space, which includes U+0085 (NEL); PCRE2's UCP \s does
  // not. Ruby-syntax \h is a hex digit, not PCRE2's horizontal space. Everything the HF
  // patterns use (\p{..}, look-ahead, (?i:..), classes) is otherwise the same in both engines.
  std::string out;
  out.reserve(p.size() + 16);
  bool in_class = false, class_start = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      if (e == 'Q') {  // \Q...\E is literal text: copy it untouched
        size_t end = p.find("\\E", i + 2);
        size_t stop = end == std::string_view::npos ? p.size() : end + 2;
        out.append(p.substr(i, stop - i));
        i = stop - 1;
      } else if (e == 's') {
        out += in_class ? "\\s\\x{85}" : "[\\s\\x{85}]";
        ++i;
      } else if (e == 'S' && !in_class) {
        out += "[^\\s\\x{85}]";
        ++i;
      } else if (e == 'h') {
        out += in_class ? "0-9a-fA-F" : "[0-9a-fA-F]";
        ++i;
      } else if (e == 'H' && !in_class) {
        out += "[^0-9a-fA-F]";
        ++i;
      } else {
        out += c;
        out += e;
        ++i;
      }
      class_start = false;
      continue;
    }
    if (in_class) {
      if (c == '[' && i + 1 < p.size() && p[i + 1] == ':') {  // POSIX class [:name:]
        size_t end = p.find(":]", i + 2);
        size_t stop = end == std::string_view::npos ? i + 1 : end + 2;
        out.append(p.substr(i, stop - i));
        i = stop - 1;
      } else {
        if (c == ']' && !class_start) in_class = false;
        out += c;
      }
      class_start = false;
      continue;
    }
    out += c;
    if (c == '[') {
      in_class = true;
      class_start = true;
      if (i + 1 < p.size() && p[i + 1] == '^') {
        out += '^';
        ++i;
      }
    }
  }
  return out;
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
  const std::string translated = onig_to_pcre2(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  // MULTILINE: in Ruby syntax ^ and $ are line anchors.
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                        PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &error, &offset, nullptr);
  if (!code_) at.fail(fmt::format("invalid regex /{}/: {} (at offset {})", pattern, pcre2_message(error), offset));
  // JIT is an optimisation only; without it pcre2_match interprets the pattern.
  pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
}

Regex::~Regex() { pcre2_code_free(code_); }

void Regex::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
  out.clear();
  pcre2_match_data* md = thread_match_data();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.empty() ? "" : s.data());
  // The onig crate's find_iter: search from the end of the previous match; an empty match
  // right where the previous match ended is skipped by stepping one character.
  size_t pos = 0;
  size_t last_end = static_cast<size_t>(-1);
  while (pos <= s.size()) {
    int rc = pcre2_match(code_, subject, s.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // deep backtracking: the interpreter uses the heap
      rc = pcre2_match(code_, subject, s.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) fail("regex /{}/: matching failed: {}", pattern_, pcre2_message(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(md);
    const size_t begin = ovector[0], end = ovector[1];
    if (begin == end && end == last_end) {
      pos += pos < s.size() ? utf8_length(static_cast<unsigned char>(s[pos])) : 1;
      continue;
    }
    if (begin > end) fail("regex /{}/: \\K produced a match that ends before it starts", pattern_);
    out.emplace_back(begin, end);
    pos = last_end = end;
  }
}

}  // namespace coe::hf

#endif  // COE_WITH_HF_TOKENIZER
