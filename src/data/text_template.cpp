#include "coe/data/text_template.h"

#include "coe/util/error.h"

#include <fmt/ranges.h>

#include <algorithm>

namespace coe {
namespace {

// Byte length of the Python-whitespace code point starting at text[i], 0 if none.
size_t whitespace_at(const std::string& s, size_t i) {
  auto u = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = u(i);
  if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) return 1;
  if (c == 0xC2 && i + 1 < s.size() && (u(i + 1) == 0x85 || u(i + 1) == 0xA0)) return 2;
  if (i + 2 >= s.size()) return 0;
  unsigned char c1 = u(i + 1), c2 = u(i + 2);
  if (c == 0xE1 && c1 == 0x9A && c2 == 0x80) return 3;  // U+1680
  if (c == 0xE2 && c1 == 0x80 && ((c2 >= 0x80 && c2 <= 0x8A) || c2 == 0xA8 || c2 == 0xA9 || c2 == 0xAF))
    return 3;                                           // U+2000-200A, 2028, 2029, 202F
  if (c == 0xE2 && c1 == 0x81 && c2 == 0x9F) return 3;  // U+205F
  if (c == 0xE3 && c1 == 0x80 && c2 == 0x80) return 3;  // U+3000
  return 0;
}

// Start of the code point that ends just before byte `end`.
size_t code_point_start(const std::string& s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80 && end - i < 4) --i;
  return i;
}

// The keys and the template go into the prepared metadata (describe()) as JSON strings, which
// nlohmann only writes as UTF-8: anything else would throw its type_error at the end of a prepare.
void check_utf8(const std::string& text, const std::string& what) {
  try {
    (void)nlohmann::json(text).dump();
  } catch (const nlohmann::json::type_error&) {
    fail("{}: not valid UTF-8", what);
  }
}

const nlohmann::json& field(const nlohmann::json& record, const std::string& key) {
  auto it = record.find(key);
  if (it == record.end()) fail("record has no key '{}'", key);
  return *it;
}

}  // namespace

std::string python_strip(const std::string& text) {
  size_t begin = 0, end = text.size();
  while (begin < end) {
    size_t n = whitespace_at(text, begin);
    if (n == 0 || begin + n > end) break;
    begin += n;
  }
  while (end > begin) {
    size_t start = code_point_start(text, end);
    if (start < begin || whitespace_at(text, start) != end - start) break;
    end = start;
  }
  return text.substr(begin, end - begin);
}

std::string value_to_text(const nlohmann::json& value) {
  const nlohmann::json* v = &value;
  while (v->is_array() && v->size() == 1) v = &(*v)[0];
  if (v->is_string()) return v->get_ref<const std::string&>();
  if (v->is_boolean()) return v->get<bool>() ? "True" : "False";
  if (v->is_null()) return "None";
  return v->dump();
}

TextTemplate::TextTemplate(std::vector<std::string> text_keys, std::optional<std::string> custom)
    : text_keys_(std::move(text_keys)), custom_(std::move(custom)) {
  if (custom_ && custom_->empty()) custom_.reset();
  auto add_key = [&](const std::string& key) {
    if (std::find(keys_.begin(), keys_.end(), key) == keys_.end()) keys_.push_back(key);
  };
  if (!custom_) {
    if (text_keys_.empty()) fail("text_keys is empty: name at least one record key to train on");
    for (const auto& key : text_keys_) {
      if (key.empty()) fail("text_keys: empty key name");
      check_utf8(key, "text_keys");
      add_key(key);
    }
    return;
  }
  const std::string& t = *custom_;
  check_utf8(t, "template");
  std::string literal;
  for (size_t i = 0; i < t.size(); ++i) {
    char c = t[i];
    if ((c == '{' || c == '}') && i + 1 < t.size() && t[i + 1] == c) {
      literal += c;
      ++i;
    } else if (c == '{') {
      size_t close = t.find('}', i + 1);
      if (close == std::string::npos) fail("template: '{{' at offset {} has no closing '}}'", i);
      std::string key = t.substr(i + 1, close - i - 1);
      if (key.empty() || key.find('{') != std::string::npos)
        fail("template: bad placeholder '{}' at offset {}", t.substr(i, close - i + 1), i);
      if (!literal.empty()) pieces_.push_back({false, std::move(literal)});
      literal.clear();
      pieces_.push_back({true, key});
      add_key(key);
      i = close;
    } else if (c == '}') {
      fail("template: unmatched '}}' at offset {} (write '}}}}' for a literal brace)", i);
    } else {
      literal += c;
    }
  }
  if (!literal.empty()) pieces_.push_back({false, std::move(literal)});
  if (keys_.empty()) fail("template: no {{key}} placeholder; every record would give the same text");
}

std::string TextTemplate::render(const nlohmann::json& record) const {
  std::string out;
  if (!custom_) {
    for (const auto& key : text_keys_) {
      out += key;
      out += " : ";
      out += value_to_text(field(record, key));
      out += ' ';
    }
    return python_strip(out);
  }
  for (const auto& piece : pieces_) out += piece.is_key ? value_to_text(field(record, piece.text)) : piece.text;
  return out;
}

std::string TextTemplate::render_prompt(const nlohmann::json& record, const std::string& answer_key) const {
  if (std::find(keys_.begin(), keys_.end(), answer_key) == keys_.end())
    fail("the text has no key '{}' to prompt for (its keys: {})", answer_key, fmt::join(keys_, ", "));
  std::string out;
  if (!custom_) {
    for (const auto& key : text_keys_) {
      out += key;
      out += " :";
      if (key == answer_key) break;
      out += ' ';
      out += value_to_text(field(record, key));
      out += ' ';
    }
    return python_strip(out);
  }
  for (const auto& piece : pieces_) {
    if (piece.is_key && piece.text == answer_key) break;
    out += piece.is_key ? value_to_text(field(record, piece.text)) : piece.text;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

nlohmann::json TextTemplate::describe() const {
  return {{"text_keys", text_keys_},
          {"template", custom_ ? nlohmann::json(*custom_) : nlohmann::json(nullptr)},
          {"default_format", custom_ ? nlohmann::json(nullptr)
                                     : nlohmann::json("'<key> : <value> ' per text key, concatenated, str.strip()")}};
}

}  // namespace coe
