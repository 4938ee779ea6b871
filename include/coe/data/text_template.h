#pragma once
// How one record becomes one training text.
//
// Default (the reference's BaseDataset.combine_text_fields): for each key in text_keys, append
// "<key> : <value> ", then strip leading/trailing whitespace as Python's str.strip() does. So a
// MetaMathQA record becomes "query : <query> response : <response>".
// Custom: a template string with {key} placeholders ("{{" and "}}" are literal braces), used
// verbatim (no stripping).
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace coe {

class TextTemplate {
 public:
  // `custom` absent or empty selects the default format over `text_keys`. A malformed custom
  // template (unbalanced brace, empty placeholder) throws.
  TextTemplate(std::vector<std::string> text_keys, std::optional<std::string> custom);

  // Renders a record; a missing key throws "record has no key 'K'" (the caller adds file:line).
  std::string render(const nlohmann::json& record) const;

  // The beginning of the record's text, up to where the value of `answer_key` starts: the prompt
  // a model trained on these texts continues. Default format: "<key> : <value> " for the keys
  // before answer_key, then "<answer_key> :", stripped as the whole text is
  // ("query : <query> response :"). Custom template: rendered up to the answer's placeholder,
  // trailing spaces removed (a BPE tokenizer puts the space in front of the answer's first
  // word, which the model should generate). Throws when the text has no answer_key.
  std::string render_prompt(const nlohmann::json& record, const std::string& answer_key) const;

  // The keys the text reads, in order of first use.
  const std::vector<std::string>& keys() const { return keys_; }
  // A description stored in prepared metadata, e.g. {"text_keys": [...], "template": null}.
  nlohmann::json describe() const;

 private:
  struct Piece {
    bool is_key;
    std::string text;  // literal text or key name
  };
  std::vector<std::string> text_keys_;
  std::optional<std::string> custom_;
  std::vector<Piece> pieces_;
  std::vector<std::string> keys_;
};

// A JSON value as Python's f"{value}" prints it for the value types datasets hold: strings
// verbatim, integers in decimal, true/false as True/False, null as None, a one-element list
// unwrapped (as the reference does); other values as compact JSON.
std::string value_to_text(const nlohmann::json& value);

// Python's str.strip() with no arguments: removes Unicode whitespace (ASCII blanks, \x1c-\x1f,
// U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000) at both ends.
std::string python_strip(const std::string& text);

}  // namespace coe
