#pragma once
// Typed, strict access to one mapping of a YAML/JSON configuration file.
//
// Every read records the key; `finish()` rejects keys nobody read, suggesting the nearest valid
// one. Every error names the file, the line and the dotted key path. JSON files are read with the
// same parser (JSON is YAML), so a model config can come from YAML or an HF config.json alike.
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace coe {

// Where keys of a document that was assembled from several sources came from: dotted key path
// ("trainer.micro_batch", or a whole section "model") -> the location to name in messages instead
// of a line of the file ("run.yaml: --set trainer.micro_batch=3", "configs/paper/base.yaml:41").
using KeyOrigins = std::map<std::string, std::string>;
// The directory a key's relative path is relative to, for keys that did not come from the file a
// ConfigReader reads: dotted key path (or a section) -> the directory of the file that wrote it
// (a base file), or "" for the working directory (a --set override). docs/training.md#paths-in-config-files.
using KeyDirs = std::map<std::string, std::string>;

class ConfigReader {
 public:
  // `file` is used in messages only; `path` is the dotted prefix of this section ("" at top level).
  ConfigReader(YAML::Node node, std::string file, std::string path = "");

  static ConfigReader from_file(const std::string& file);

  // Keys that came from `--set` overrides or a `base:` file: messages about them name that origin,
  // not a line of this file. Sections inherit it.
  void set_key_origins(std::shared_ptr<const KeyOrigins> origins) { origins_ = std::move(origins); }
  // Where keys from elsewhere resolve their relative paths. Sections inherit it.
  void set_key_dirs(std::shared_ptr<const KeyDirs> dirs) { dirs_ = std::move(dirs); }
  // The directory a relative path in `key` is relative to: its KeyDirs entry (or its section's),
  // else the directory of file().
  std::string path_base(const std::string& key) const;
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
  std::shared_ptr<const KeyDirs> dirs_;
};

// A YAML document from `file`: errors name the file ("file not found", "file:line: cannot parse",
// "the file is empty").
YAML::Node load_yaml_file(const std::string& file);

// A mapping's key as text, for the code that walks a document itself. A key that is a list or a
// mapping (YAML's `? [a, b]`) is an error naming file:line, not yaml-cpp's BadConversion.
std::string key_text(const YAML::Node& key, const std::string& file);

// Nearest string by edit distance (for "did you mean"), empty if nothing is close.
std::string nearest_key(const std::string& key, const std::vector<std::string>& candidates);

// Applies a `section.key=value` override (value parsed as YAML) onto a document root; returns the
// dotted key path it set.
std::string apply_override(YAML::Node root, const std::string& assignment);

// ---- enum names ----------------------------------------------------------------------------
// One table per enum: to_string, parsing, the YAML writer and the valid values that error
// messages list all read it, so each name is spelled once.
template <typename E>
struct EnumName {
  E value;
  const char* name;
};

template <typename E, size_t N>
const char* enum_name(const EnumName<E> (&names)[N], E value) {
  for (const auto& n : names)
    if (n.value == value) return n.name;
  return "?";
}

template <typename E, size_t N>
std::optional<E> enum_value(const EnumName<E> (&names)[N], const std::string& name) {
  for (const auto& n : names)
    if (name == n.name) return n.value;
  return std::nullopt;
}

// The names of a table (of EnumName or of plain strings) joined by `sep`, the last two by `last`
// when given: "a | b | c", "a, b or c".
template <typename T, size_t N>
std::string join_names(const T (&names)[N], const char* sep, const char* last = nullptr) {
  std::string out;
  for (size_t i = 0; i < N; ++i) {
    if (i > 0) out += (last && i + 1 == N) ? last : sep;
    if constexpr (std::is_convertible_v<T, const char*>) out += names[i];
    else out += names[i].name;
  }
  return out;
}

// ---- field tables --------------------------------------------------------------------------
// A config section lists each key once, in a function template over a visitor:
//
//   template <class V>
//   void visit_fields(TrainerConfig& t, V& v) {
//     v.field("total_steps", t.total_steps, at_least(1));
//     v.choice("schedule", o.schedule, kScheduleNames, unknown_schedule);
//   }
//
// FieldReader reads every key from a ConfigReader (absent: the member's value, its default) and
// checks it; YamlWriter writes the keys in the same order. A rule is a callable on the value (by
// reference, so it may normalise it: bf16 -> bfloat16) that returns why the value is invalid, ""
// when it is fine; rules run in order and the first reason fails the key. The options below change
// how a key reads or writes; a key that needs more branches on V::kReads.

// Null reads as `value` (without options, `key: null` is an error).
template <typename T>
struct NullIs {
  T value;
};
template <typename T>
NullIs<T> null_is(T value) {
  return {std::move(value)};
}
// Absent reads as `value` instead of the member's value.
template <typename T>
struct Fallback {
  T value;
};
template <typename T>
Fallback<T> fallback(T value) {
  return {std::move(value)};
}
// A string where null reads as "" and "" is written as null.
struct EmptyIsNull {};
inline constexpr EmptyIsNull kEmptyIsNull{};
// A list of strings that may be given as one string.
struct ScalarAsList {};
inline constexpr ScalarAsList kScalarAsList{};
// Absent (or null) is an error.
struct Required {};
inline constexpr Required kRequired{};
// A file system path, or a list of them, absolute once read: resolve_config_path
// (coe/util/data_root.h) resolves a value written in the file against ConfigReader::path_base, a
// default (written nowhere) against the working directory. `words` are values that name no path
// (tokenizer: byte).
struct PathField {
  std::vector<std::string> words;
};
inline const PathField kPath{};
inline PathField path_or(std::vector<std::string> words) { return {std::move(words)}; }
// The keys a field table marks as paths, by their name in the section, with the words that name
// no path (PathKeyLister collects them).
using PathKeys = std::map<std::string, std::vector<std::string>>;
// Where an unknown enum name is reported: at the key (file:line: dotted.key), or naming only the
// file and the bare key, as ModelConfig::validate reports its values.
enum class NameErrors { kAtKey, kAtFile };

namespace config_fields {

template <typename T>
struct is_null_is : std::false_type {};
template <typename T>
struct is_null_is<NullIs<T>> : std::true_type {};
template <typename T>
struct is_fallback : std::false_type {};
template <typename T>
struct is_fallback<Fallback<T>> : std::true_type {};

template <typename R>
inline constexpr bool is_option_v =
    is_null_is<std::decay_t<R>>::value || is_fallback<std::decay_t<R>>::value ||
    std::is_same_v<std::decay_t<R>, EmptyIsNull> || std::is_same_v<std::decay_t<R>, ScalarAsList> ||
    std::is_same_v<std::decay_t<R>, Required> || std::is_same_v<std::decay_t<R>, PathField>;

template <typename Option, typename... Rs>
inline constexpr bool has_v = (std::is_same_v<std::decay_t<Rs>, Option> || ...);

// uint64 members are read as int64, so a negative value reaches the rules instead of wrapping.
template <typename T>
using stored_as = std::conditional_t<std::is_same_v<T, uint64_t>, int64_t, T>;

}  // namespace config_fields

class FieldReader {
 public:
  static constexpr bool kReads = true;
  explicit FieldReader(ConfigReader& reader) : r_(reader) {}
  ConfigReader& reader() { return r_; }

  template <typename T, typename... Rules>
  void field(const char* key, T& value, Rules&&... rules) {
    using Raw = config_fields::stored_as<T>;
    std::optional<Raw> on_null, absent;
    (note_option(rules, on_null, absent), ...);
    if (on_null && r_.is_null(key)) {
      r_.ignore(key);
      value = static_cast<T>(*on_null);
      return;
    }
    Raw raw{};
    if constexpr (config_fields::has_v<Required, Rules...>) {
      raw = r_.require<Raw>(key);
    } else if constexpr (config_fields::has_v<ScalarAsList, Rules...>) {
      if (r_.has(key) && r_.node()[key].IsScalar()) raw = {r_.require<std::string>(key)};
      else raw = r_.get<Raw>(key, absent ? *absent : static_cast<Raw>(value));
    } else {
      raw = r_.get<Raw>(key, absent ? *absent : static_cast<Raw>(value));
    }
    (resolve_path(key, rules, raw), ...);
    (check(key, rules, raw), ...);
    value = static_cast<T>(raw);
  }

  // Absent or null: nullopt.
  template <typename T, typename... Rules>
  void field(const char* key, std::optional<T>& value, Rules&&... rules) {
    value = r_.optional<T>(key);
    if (value) (check(key, rules, *value), ...);
  }

  // `unknown(name)` says what is wrong with a name missing from the table.
  template <typename E, size_t N, typename Unknown>
  void choice(const char* key, E& value, const EnumName<E> (&names)[N], Unknown&& unknown,
              NameErrors errors = NameErrors::kAtKey) {
    const std::string name = r_.get<std::string>(key, enum_name(names, value));
    if (auto v = enum_value(names, name)) {
      value = *v;
      return;
    }
    if (errors == NameErrors::kAtFile) throw_at_file(key, unknown(name));
    r_.fail_key(key, unknown(name));
  }

 private:
  template <typename Raw, typename R>
  static void note_option(const R& rule, std::optional<Raw>& on_null, std::optional<Raw>& absent) {
    using D = std::decay_t<R>;
    if constexpr (config_fields::is_null_is<D>::value) on_null = static_cast<Raw>(rule.value);
    else if constexpr (config_fields::is_fallback<D>::value) absent = static_cast<Raw>(rule.value);
    else if constexpr (std::is_same_v<D, EmptyIsNull>) on_null = Raw();
  }

  // A path, written in the file or a default, resolved before the rules see it.
  template <typename R, typename Raw>
  void resolve_path(const char* key, const R& rule, Raw& value) {
    if constexpr (std::is_same_v<std::decay_t<R>, PathField>) {
      if (r_.is_null(key)) return;
      const std::string base = r_.has(key) ? r_.path_base(key) : std::string();
      if constexpr (std::is_same_v<Raw, std::string>) {
        value = resolved(key, rule, value, base);
      } else {
        for (auto& item : value) item = resolved(key, rule, item, base);
      }
    }
  }
  std::string resolved(const char* key, const PathField& rule, const std::string& written,
                       const std::string& base) const;

  template <typename R, typename Raw>
  void check(const char* key, R& rule, Raw& value) {
    if constexpr (!config_fields::is_option_v<R>) {
      const std::string reason = rule(value);
      if (!reason.empty()) r_.fail_key(key, reason);
    }
  }

  [[noreturn]] void throw_at_file(const char* key, const std::string& reason) const;

  ConfigReader& r_;
};

// Writes each visited field into a YAML mapping, in visiting order.
class YamlWriter {
 public:
  static constexpr bool kReads = false;
  // `shortest_doubles`: doubles as the shortest text that reads back the same; else yaml-cpp's own
  // form (17 digits), for a section that is tidied as a whole afterwards.
  explicit YamlWriter(YAML::Node& out, bool shortest_doubles = false) : out_(out), shortest_(shortest_doubles) {}

  template <typename T, typename... Options>
  void field(const char* key, const T& value, const Options&...) {
    if constexpr (config_fields::has_v<EmptyIsNull, Options...>) {
      if (value.empty()) {
        out_[key] = YAML::Node(YAML::NodeType::Null);
        return;
      }
    }
    out_[key] = encode(value);
  }

  template <typename T, typename... Options>
  void field(const char* key, const std::optional<T>& value, const Options&...) {
    out_[key] = value ? encode(*value) : YAML::Node(YAML::NodeType::Null);
  }

  template <typename E, size_t N, typename... Ignored>
  void choice(const char* key, const E& value, const EnumName<E> (&names)[N], const Ignored&...) {
    out_[key] = enum_name(names, value);
  }

  // A nested mapping written by `fill(writer)`, or null when absent.
  template <typename Fill>
  void object(const char* key, bool present, Fill&& fill) {
    if (!present) {
      out_[key] = YAML::Node(YAML::NodeType::Null);
      return;
    }
    YAML::Node sub;
    YamlWriter writer(sub, shortest_);
    fill(writer);
    out_[key] = sub;
  }

 private:
  template <typename T>
  YAML::Node encode(const T& value) const {
    if constexpr (std::is_same_v<T, uint64_t>) {
      return YAML::Node(static_cast<int64_t>(value));
    } else if constexpr (std::is_floating_point_v<T>) {
      return shortest_ ? YAML::Node(fmt::format("{}", value)) : YAML::Node(value);
    } else if constexpr (std::is_same_v<T, std::vector<double>>) {
      YAML::Node seq(YAML::NodeType::Sequence);  // numbers inline: [0.9, 0.95]
      for (double v : value) seq.push_back(v);
      seq.SetStyle(YAML::EmitterStyle::Flow);
      return seq;
    } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      YAML::Node seq(YAML::NodeType::Sequence);
      for (const auto& v : value) seq.push_back(v);
      return seq;
    } else {
      return YAML::Node(value);
    }
  }

  YAML::Node& out_;
  bool shortest_;
};

// Collects the keys a field table marks with kPath / path_or (PathKeys) without reading anything.
class PathKeyLister {
 public:
  static constexpr bool kReads = false;

  template <typename T, typename... Options>
  void field(const char* key, const T&, const Options&... options) {
    (note(key, options), ...);
  }
  template <typename E, size_t N, typename... Ignored>
  void choice(const char*, const E&, const EnumName<E> (&)[N], const Ignored&...) {}
  template <typename Fill>
  void object(const char*, bool, Fill&&) {}

  const PathKeys& keys() const { return keys_; }

 private:
  template <typename O>
  void note(const char* key, const O& option) {
    if constexpr (std::is_same_v<std::decay_t<O>, PathField>) keys_[key] = option.words;
  }

  PathKeys keys_;
};

}  // namespace coe
