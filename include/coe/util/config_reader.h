#pragma once
// Typed, strict access to one mapping of a YAML/JSON configuration file.
//
// Every read records the key; `finish()` rejects keys nobody read, suggesting the nearest valid
// one. Every error names the file, the line and the dotted key path. JSON files are read with the
// same parser (JSON is YAML), so a model config can come from YAML or an HF config.json alike.
#include <yaml-cpp/yaml.h>

#include <optional>
#include <set>
#include <string>
#include <vector>

namespace coe {

class ConfigReader {
 public:
  // `file` is used in messages only; `path` is the dotted prefix of this section ("" at top level).
  ConfigReader(YAML::Node node, std::string file, std::string path = "");

  static ConfigReader from_file(const std::string& file);

  bool has(const std::string& key) const;
  // True when the key is present and holds null (e.g. `q_lora_rank: null`).
  bool is_null(const std::string& key) const;

  template <typename T>
  T get(const std::string& key, const T& fallback);
  template <typename T>
  T require(const std::string& key);
  template <typename T>
  std::optional<T> optional(const std::string& key);  // absent or null -> nullopt

  // A nested mapping. Its unknown keys are checked by its own finish().
  ConfigReader section(const std::string& key);
  // Marks a key as known without reading it (accepted and ignored, e.g. HF bookkeeping fields).
  void ignore(const std::string& key);
  // Throws for any key that was never read, ignored or sectioned.
  void finish() const;

  // "file:line: key" for messages about a value that was read successfully but is invalid.
  std::string where(const std::string& key) const;
  [[noreturn]] void fail_key(const std::string& key, const std::string& reason) const;

  const std::string& file() const { return file_; }
  const YAML::Node& node() const { return node_; }

 private:
  YAML::Node lookup(const std::string& key);
  std::string dotted(const std::string& key) const;

  YAML::Node node_;
  std::string file_;
  std::string path_;
  std::set<std::string> used_;
};

// A YAML document from `file`: errors name the file ("file not found", "file:line: cannot parse",
// "the file is empty").
YAML::Node load_yaml_file(const std::string& file);

// Nearest string by edit distance (for "did you mean"), empty if nothing is close.
std::string nearest_key(const std::string& key, const std::vector<std::string>& candidates);

// Applies `section.key=value` overrides (value parsed as YAML) onto a document root.
void apply_override(YAML::Node root, const std::string& assignment);

}  // namespace coe
