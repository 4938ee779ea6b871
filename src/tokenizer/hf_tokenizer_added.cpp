// Added (and special) tokens: cut out of the text before the model sees it, with HF's rules
// (tokenizers/src/tokenizer/added_vocabulary.rs `find_matches`).
// Built only when PCRE2 was found (cmake/CoeDependencies.cmake).
#ifdef COE_WITH_HF_TOKENIZER
#include "hf_tokenizer_internal.h"

#include <algorithm>
#include <unordered_set>

namespace coe::hf {

namespace {

// The code point that ends s (s non-empty, valid UTF-8).
char32_t last_code_point(std::string_view s) {
  size_t start = s.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return next_code_point(s, start);
}

// Regex \w$ on the text before a match / ^\w on the text after it.
bool ends_with_word(std::string_view s) { return !s.empty() && is_word_char(last_code_point(s)); }
bool starts_with_word(std::string_view s) {
  size_t pos = 0;
  return !s.empty() && is_word_char(next_code_point(s, pos));
}

// Start of the whitespace run that ends s (regex \s*$).
size_t trailing_space_start(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    size_t pos = start;
    if (!is_whitespace(next_code_point(s, pos))) break;
    end = start;
  }
  return end;
}

// Length of the whitespace run that starts s (regex ^\s*).
size_t leading_space_length(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    size_t next = pos;
    if (!is_whitespace(next_code_point(s, next))) break;
    pos = next;
  }
  return pos;
}

}  // namespace

void AddedVocabulary::Trie::insert(std::string_view key, int token) {
  int32_t node = 0;
  for (char c : key) {
    const auto byte = static_cast<unsigned char>(c);
    auto& next = nodes[static_cast<size_t>(node)].next;
    auto it = std::find_if(next.begin(), next.end(), [&](const auto& e) { return e.first == byte; });
    if (it != next.end()) {
      node = it->second;
    } else {
      const auto child = static_cast<int32_t>(nodes.size());
      next.emplace_back(byte, child);  // may reallocate `nodes`; `next` is not used after this
      nodes.emplace_back();
      node = child;
    }
  }
  if (nodes[static_cast<size_t>(node)].token < 0) nodes[static_cast<size_t>(node)].token = token;
  first[static_cast<unsigned char>(key[0])] = true;
}

std::pair<int, size_t> AddedVocabulary::Trie::longest_at(std::string_view text, size_t pos) const {
  std::pair<int, size_t> best{-1, pos};
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    const auto& next = nodes[static_cast<size_t>(node)].next;
    auto it = std::find_if(next.begin(), next.end(), [&](const auto& e) { return e.first == byte; });
    if (it == next.end()) break;
    node = it->second;
    if (nodes[static_cast<size_t>(node)].token >= 0) best = {nodes[static_cast<size_t>(node)].token, i + 1};
  }
  return best;
}

AddedVocabulary::AddedVocabulary(std::vector<AddedToken> tokens, const Normalizer& normalizer) {
  // HF ignores empty contents and keeps one entry per content.
  std::unordered_set<std::string> seen;
  for (auto& token : tokens) {
    if (token.content.empty() || !seen.insert(token.content).second) continue;
    tokens_.push_back(std::move(token));
  }
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const AddedToken& t = tokens_[i];
    if (t.normalized) {
      // Normalized tokens are matched against normalized text, so their content is normalized too.
      const std::string content = normalizer.apply(t.content);
      if (!content.empty()) normalized_.insert(content, static_cast<int>(i));
    } else {
      raw_.insert(t.content, static_cast<int>(i));
    }
  }
}

void AddedVocabulary::split(std::string_view text, bool normalized_pass, std::vector<Segment>& out) const {
  out.clear();
  if (text.empty()) return;
  const Trie& trie = normalized_pass ? normalized_ : raw_;
  size_t start_offset = 0;  // end of the last emitted segment
  size_t pos = 0;           // where the leftmost-longest search resumes
  while (pos < text.size()) {
    if (!trie.first[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    auto [token, match_end] = trie.longest_at(text, pos);
    if (token < 0) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = match_end;
    pos = match_end;  // matches never overlap, even when one is discarded below
    const AddedToken& t = tokens_[static_cast<size_t>(token)];
    if (t.single_word) {
      const bool space_before = start == 0 || !ends_with_word(text.substr(0, start));
      const bool space_after = stop == text.size() || !starts_with_word(text.substr(stop));
      if (!space_before || !space_after) continue;
    }
    // lstrip/rstrip absorb the surrounding whitespace into the token; HF does not re-check
    // overlaps with the previous segment beyond clamping lstrip, and neither do we.
    if (t.lstrip) start = std::max(trailing_space_start(text.substr(0, start)), start_offset);
    if (t.rstrip) stop += leading_space_length(text.substr(stop));
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, token});
    start_offset = stop;
  }
  if (start_offset != text.size()) out.push_back({start_offset, text.size(), -1});
}

}  // namespace coe::hf

#endif  // COE_WITH_HF_TOKENIZER
