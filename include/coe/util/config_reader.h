#pragma once
// Typed, strict access to one mapping of a YAML/JSON configuration file.
//
// Every read records the key; `finish()` rejects keys nobody read, suggesting the nearest valid
// one. Every error names the file, the line and the dotted key path. JSON files are read with the
// same parser (JSON is YAML), so a model config can come from YAML or an HF config.json alike.
#include <yaml-cpp/yaml.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace coe {

// Where keys of a document that was assembled from several sources came from: dotted key path
// ("trainer.micro_batch", or a whole section "model") -> the location to name in messages instead
// of a line of the file ("run.yaml: --set trainer.micro_batch=3", "configs/paper/base.yaml:41").
using KeyOrigins = std::map<std::string, std::string>;

class ConfigReader {
 public:
  // `file` is used in messages only; `path` is the dotted prefix of this section ("" at top level).
  ConfigReader(YAML::Node node, std::string file, std::string path = "");

  static ConfigReader from_file(const std::string& file);

  // Keys that came from `--set` overrides or a `base:` file: messages about them name that origin,
  // not a line of this file. Sections inherit it.
  void set_key_origins(std::shared_ptr<const KeyOrigins> origins) { origins_ = std::move(origins); }
  // The keys read, ignored or sectioned so far (what finish() accepts).
  const std::set<std::string>& known_keys() const { return used_; }

  bool has(const std::string& key) const;
  // True when the key is present and holds null (e.g. `q_lora_rank: null`).
  bool is_null(const std::string& key) const;

  // The value, or `fallback` when the key is absent; an explicit null is an error.
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
  std::optional<std::string> origin_of(const std::string& key) const;
  std::string dotted(const std::string& key) const;

  YAML::Node node_;
  std::string file_;
  std::string path_;
  std::set<std::string> used_;
  std::shared_ptr<const KeyOrigins> origins_;
};

// A YAML document from `file`: errors name the file ("file not found", "file:line: cannot parse",
// "the file is empty").
YAML::Node load_yaml_file(const std::string& file);

// Nearest string by edit distance (for "did you mean"), empty if nothing is close.
std::string nearest_key(const std::string& key, const std::vector<std::string>& candidates);

// Applies a `section.key=value` override (value parsed as YAML) onto a document root; returns the
// dotted key path it set.
std::string apply_override(YAML::Node root, const std::string& assignment);

}  // namespace coe
