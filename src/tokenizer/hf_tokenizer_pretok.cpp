// Normalizers and pre-tokenizers of tokenizer.json, with HF's splitting semantics
// (tokenizers/src/tokenizer/normalizer.rs `split` and pattern.rs `find_matches`).
// Built only when PCRE2 was found (cmake/CoeDependencies.cmake).
#ifdef COE_WITH_HF_TOKENIZER
#include "hf_tokenizer_internal.h"

#include <fmt/format.h>

#include <algorithm>

namespace coe::hf {

// ---- normalizers ---------------------------------------------------------------------------

namespace {

void add_normalizer(const json& j, const ConfigPath& at, std::vector<NormalForm>& forms) {
  if (j.is_null()) return;
  if (!j.is_object()) at.fail("expected an object or null");
  const std::string type = get_type(j, at);
  if (type == "NFC") {
    forms.push_back(NormalForm::NFC);
  } else if (type == "NFKC") {
    forms.push_back(NormalForm::NFKC);
  } else if (type == "NFD") {
    forms.push_back(NormalForm::NFD);
  } else if (type == "NFKD") {
    forms.push_back(NormalForm::NFKD);
  } else if (type == "Sequence") {
    const json* list = find_member(j, "normalizers");
    if (!list || !list->is_array()) at.child("normalizers").fail("expected an array");
    for (size_t i = 0; i < list->size(); ++i) add_normalizer((*list)[i], at.child("normalizers").index(i), forms);
  } else {
    at.child("type").fail(
        fmt::format("unsupported normalizer type '{}' (supported: NFC, NFKC, NFD, NFKD, Sequence)", type));
  }
}

}  // namespace

Normalizer Normalizer::from_json(const json& j, const ConfigPath& at) {
  Normalizer n;
  add_normalizer(j, at, n.forms_);
  return n;
}

std::string Normalizer::apply(std::string_view s) const {
  std::string out(s);
  for (NormalForm form : forms_) out = unicode_normalize(out, form);
  return out;
}

// ---- pre-tokenizers ------------------------------------------------------------------------

// ByteLevel is two steps: its split (optional prefix space + GPT-2 regex) and the byte-to-alphabet
// mapping. Keeping them apart lets the final mapping move into the BPE model.
struct PreTokenizer::Step {
  enum class Kind { ByteLevelSplit, ByteMap, Split, Digits };
  explicit Step(Kind k) : kind(k) {}
  Kind kind;
  bool add_prefix_space = false;
  std::shared_ptr<const Regex> regex;  // Split's pattern, or ByteLevel's GPT-2 pattern (null: no regex)
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  bool individual_digits = false;
};

namespace {

using Step = PreTokenizer::Step;

// HF's ByteLevel pattern (GPT-2's), compiled once.
std::shared_ptr<const Regex> gpt2_regex() {
  static const auto re =
      std::make_shared<const Regex>(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)",
                                    ConfigPath{"<built-in>", "ByteLevel"});
  return re;
}

SplitBehavior parse_behavior(const std::string& name, const ConfigPath& at) {
  if (name == "Removed") return SplitBehavior::Removed;
  if (name == "Isolated") return SplitBehavior::Isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (name == "Contiguous") return SplitBehavior::Contiguous;
  at.fail(fmt::format(
      "unknown split behavior '{}' (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)",
      name));
}

struct Piece {
  size_t begin, end;
  bool flag;  // find_matches: is a match; after the behaviour: remove
};

// pattern.rs find_matches for a regex: matches and the gaps between them, covering `s`.
void regex_pieces(const Regex& re, std::string_view s, std::vector<Piece>& pieces) {
  thread_local std::vector<std::pair<size_t, size_t>> matches;
  pieces.clear();
  if (s.empty()) {
    pieces.push_back({0, 0, false});
    return;
  }
  re.find_all(s, matches);
  size_t prev = 0;
  for (auto [b, e] : matches) {
    if (prev != b) pieces.push_back({prev, b, false});
    pieces.push_back({b, e, true});
    prev = e;
  }
  if (prev != s.size()) pieces.push_back({prev, s.size(), false});
}

// pattern.rs find_matches for a char predicate (Digits): every numeric char is its own match.
void numeric_pieces(std::string_view s, std::vector<Piece>& pieces) {
  pieces.clear();
  if (s.empty()) {
    pieces.push_back({0, 0, false});
    return;
  }
  size_t last = 0, pos = 0;
  while (pos < s.size()) {
    const size_t b = pos;
    const char32_t cp = next_code_point(s, pos);
    if (is_numeric(cp)) {
      if (last < b) pieces.push_back({last, b, false});
      pieces.push_back({b, pos, true});
      last = pos;
    }
  }
  if (s.size() > last) pieces.push_back({last, s.size(), false});
}

// normalizer.rs split: turns (range, is_match) into (range, remove) by the delimiter behaviour.
void apply_behavior(SplitBehavior behavior, std::vector<Piece>& pieces) {
  std::vector<Piece> out;
  out.reserve(pieces.size());
  switch (behavior) {
    case SplitBehavior::Removed: return;  // matches are removed: the flag already says so
    case SplitBehavior::Isolated:
      for (auto& p : pieces) p.flag = false;
      return;
    case SplitBehavior::Contiguous: {
      bool previous_match = false;
      for (const auto& p : pieces) {
        if (p.flag == previous_match && !out.empty()) out.back().end = p.end;
        else out.push_back({p.begin, p.end, false});
        previous_match = p.flag;
      }
      break;
    }
    case SplitBehavior::MergedWithPrevious: {
      bool previous_match = false;
      for (const auto& p : pieces) {
        if (p.flag && !previous_match && !out.empty()) out.back().end = p.end;
        else out.push_back({p.begin, p.end, false});
        previous_match = p.flag;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool previous_match = false;
      for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
        if (it->flag && !previous_match && !out.empty()) out.back().begin = it->begin;
        else out.push_back({it->begin, it->end, false});
        previous_match = it->flag;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
  }
  pieces.swap(out);
}

// HF drops empty splits after every pre-tokenization step.
void emit_pieces(std::string_view s, const std::vector<Piece>& pieces, std::vector<std::string>& out) {
  for (const auto& p : pieces)
    if (!p.flag && p.end > p.begin) out.emplace_back(s.substr(p.begin, p.end - p.begin));
}

void apply_step(const Step& step, const std::string& word, std::vector<std::string>& out) {
  thread_local std::vector<Piece> pieces;
  switch (step.kind) {
    case Step::Kind::ByteLevelSplit: {
      std::string text;
      std::string_view s = word;
      if (step.add_prefix_space && !word.empty() && word[0] != ' ') {
        text.reserve(word.size() + 1);
        text += ' ';
        text += word;
        s = text;
      }
      if (!step.regex) {
        if (!s.empty()) out.emplace_back(s);
        return;
      }
      regex_pieces(*step.regex, s, pieces);
      apply_behavior(SplitBehavior::Isolated, pieces);
      emit_pieces(s, pieces, out);
      return;
    }
    case Step::Kind::ByteMap: {
      const auto& chars = byte_level_chars();
      std::string mapped;
      mapped.reserve(word.size() * 2);
      for (char c : word) mapped += chars[static_cast<unsigned char>(c)];
      out.push_back(std::move(mapped));
      return;
    }
    case Step::Kind::Split: regex_pieces(*step.regex, word, pieces); break;
    case Step::Kind::Digits: numeric_pieces(word, pieces); break;
  }
  if (step.invert)
    for (auto& p : pieces) p.flag = !p.flag;
  apply_behavior(step.behavior, pieces);
  emit_pieces(word, pieces, out);
}

}  // namespace

void PreTokenizer::add_json(const json& j, const ConfigPath& at) {
  if (j.is_null()) return;
  if (!j.is_object()) at.fail("expected an object or null");
  const std::string type = get_type(j, at);
  if (type == "ByteLevel") {
    Step split(Step::Kind::ByteLevelSplit);
    split.add_prefix_space = get_bool(j, "add_prefix_space", true, at);  // HF's defaults
    if (get_bool(j, "use_regex", true, at)) split.regex = gpt2_regex();
    steps_.push_back(std::make_shared<const Step>(split));
    steps_.push_back(std::make_shared<const Step>(Step::Kind::ByteMap));
  } else if (type == "Split") {
    Step split(Step::Kind::Split);
    const ConfigPath pattern_at = at.child("pattern");
    const json* pattern = find_member(j, "pattern");
    if (!pattern || !pattern->is_object() || pattern->size() != 1)
      pattern_at.fail(R"(expected {"Regex": "..."} or {"String": "..."})");
    if (const json* re = find_member(*pattern, "Regex"); re && re->is_string()) {
      split.regex = std::make_shared<const Regex>(re->get<std::string>(), pattern_at.child("Regex"));
    } else if (const json* lit = find_member(*pattern, "String"); lit && lit->is_string()) {
      split.regex = std::make_shared<const Regex>(regex_escape(lit->get<std::string>()), pattern_at.child("String"));
    } else {
      pattern_at.fail(R"(expected {"Regex": "..."} or {"String": "..."})");
    }
    split.behavior = parse_behavior(get_string(j, "behavior", at), at.child("behavior"));
    split.invert = get_bool(j, "invert", false, at);
    steps_.push_back(std::make_shared<const Step>(split));
  } else if (type == "Digits") {
    Step digits(Step::Kind::Digits);
    digits.individual_digits = get_bool(j, "individual_digits", false, at);
    digits.behavior = digits.individual_digits ? SplitBehavior::Isolated : SplitBehavior::Contiguous;
    steps_.push_back(std::make_shared<const Step>(digits));
  } else if (type == "Sequence") {
    const json* list = find_member(j, "pretokenizers");
    if (!list || !list->is_array()) at.child("pretokenizers").fail("expected an array");
    for (size_t i = 0; i < list->size(); ++i) add_json((*list)[i], at.child("pretokenizers").index(i));
  } else {
    at.child("type").fail(
        fmt::format("unsupported pre-tokenizer type '{}' (supported: ByteLevel, Split, Digits, Sequence)", type));
  }
}

void PreTokenizer::finish() {
  // A ByteLevel split without regex and prefix space leaves words unchanged.
  steps_.erase(std::remove_if(steps_.begin(), steps_.end(),
                              [](const auto& s) {
                                return s->kind == Step::Kind::ByteLevelSplit && !s->regex && !s->add_prefix_space;
                              }),
               steps_.end());
  if (!steps_.empty() && steps_.back()->kind == Step::Kind::ByteMap) {
    steps_.pop_back();
    defer_byte_map_ = true;
  }
}

PreTokenizer PreTokenizer::from_json(const json& j, const ConfigPath& at) {
  PreTokenizer p;
  p.add_json(j, at);
  p.finish();
  return p;
}

PreTokenizer PreTokenizer::gpt2_byte_level() {
  PreTokenizer p;
  p.add_json(json{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}},
             ConfigPath{"<built-in>", ""});
  p.finish();
  return p;
}

void PreTokenizer::run(std::string_view text, std::vector<std::string>& words) const {
  words.clear();
  if (text.empty()) return;
  words.emplace_back(text);
  std::vector<std::string> next;
  for (const auto& step : steps_) {
    next.clear();
    next.reserve(words.size() * 2);
    for (const auto& word : words) apply_step(*step, word, next);
    words.swap(next);
  }
}

}  // namespace coe::hf

#endif  // COE_WITH_HF_TOKENIZER
