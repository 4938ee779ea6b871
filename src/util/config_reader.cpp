#include "coe/util/config_reader.h"

#include "coe/util/data_root.h"
#include "coe/util/error.h"
#include "coe/util/json_limits.h"

// yaml-cpp >= 0.7 stops deep nesting with YAML::DeepRecursion.
#if __has_include(<yaml-cpp/depthguard.h>)
#include <yaml-cpp/depthguard.h>
#define COE_YAML_HAS_DEPTH_GUARD 1
#endif

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <type_traits>

namespace coe {
namespace {

int line_of(const YAML::Node& node) { return node.Mark().line >= 0 ? node.Mark().line + 1 : 0; }

// "file:line" or, for values that came from a command-line override (no line), "file".
std::string at(const std::string& file, int line) { return line > 0 ? fmt::format("{}:{}", file, line) : file; }

std::string describe(const YAML::Node& node) {
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a mapping";
  return "null";
}

template <typename T>
const char* type_name() {
  if constexpr (std::is_same_v<T, bool>) return "true or false";
  else if constexpr (std::is_integral_v<T>) return "an integer";
  else if constexpr (std::is_floating_point_v<T>) return "a number";
  else if constexpr (std::is_same_v<T, std::string>) return "a string";
  else return "a list";
}

template <typename T>
bool convert_scalar(const YAML::Node& node, T* out) {
  if (!node.IsScalar()) return false;
  const std::string& s = node.Scalar();
  if constexpr (std::is_same_v<T, bool>) {
    if (s == "true" || s == "True") {
      *out = true;
      return true;
    }
    if (s == "false" || s == "False") {
      *out = false;
      return true;
    }
    return false;
  } else if constexpr (std::is_integral_v<T>) {
    try {
      size_t pos = 0;
      long long v = std::stoll(s, &pos);
      if (pos != s.size()) {
        // Accept integral floats such as "40.0" or "1e3".
        double d = std::stod(s, &pos);
        if (pos != s.size() || d != static_cast<double>(static_cast<long long>(d))) return false;
        v = static_cast<long long>(d);
      }
      if (v < static_cast<long long>(std::numeric_limits<T>::min()) ||
          v > static_cast<long long>(std::numeric_limits<T>::max()))
        return false;
      *out = static_cast<T>(v);
      return true;
    } catch (...) {
      return false;
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    try {
      size_t pos = 0;
      double v = std::stod(s, &pos);
      if (pos != s.size()) return false;
      *out = static_cast<T>(v);
      return true;
    } catch (...) {
      return false;
    }
  } else {
    *out = s;
    return true;
  }
}

template <typename T>
struct is_vector : std::false_type {};
template <typename T>
struct is_vector<std::vector<T>> : std::true_type {};

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

ConfigReader::ConfigReader(YAML::Node node, std::string file, std::string path)
    : node_(std::move(node)), file_(std::move(file)), path_(std::move(path)) {
  if (node_ && !node_.IsNull() && !node_.IsMap())
    fail("{}: {}: expected a mapping, got {}", at(file_, line_of(node_)), path_.empty() ? "(top level)" : path_,
         describe(node_));
  // yaml-cpp keeps the first of two equal keys silently; a repeated key is almost always a mistake.
  if (node_ && node_.IsMap()) {
    std::set<std::string> seen;
    for (const auto& kv : node_) {
      const std::string key = key_text(kv.first, file_);
      if (!seen.insert(key).second) fail("{}: {}: duplicate key", at(file_, line_of(kv.first)), dotted(key));
    }
  }
}

YAML::Node load_yaml_file(const std::string& file) {
  if (!std::filesystem::exists(file)) fail("{}: file not found", file);
  // Bounded before yaml-cpp sees it (include/coe/util/json_limits.h); a JSON file (config.json)
  // gets the JSON depth limit too, which nlohmann checks in milliseconds.
  const std::string text = read_bounded_file(file, kMaxConfigFileBytes, "a config file");
  if (std::filesystem::path(file).extension() == ".json") {
    try {
      const nlohmann::json checked = nlohmann::json::parse(text, json_depth_limit(file));
      (void)checked;
    } catch (const nlohmann::json::exception&) {  // not strict JSON: yaml-cpp decides
    }
  }
  YAML::Node root;
  try {
    root = YAML::Load(text);
#if COE_YAML_HAS_DEPTH_GUARD
  } catch (const YAML::DeepRecursion& e) {
    // yaml-cpp bounds nesting (its message for that is "bad file").
    fail("{}:{}: cannot parse: nested deeper than yaml-cpp's limit ({} levels)", file, e.mark.line + 1, e.depth());
#endif
  } catch (const YAML::Exception& e) {
    fail("{}:{}: cannot parse: {}", file, e.mark.line + 1, e.msg);
  }
  if (!root || root.IsNull()) fail("{}: the file is empty", file);
  return root;
}

std::string key_text(const YAML::Node& key, const std::string& file) {
  if (key.IsSequence() || key.IsMap()) fail("{}: a key must be a name, not {}", at(file, line_of(key)), describe(key));
  return key.as<std::string>();
}

ConfigReader ConfigReader::from_file(const std::string& file) { return ConfigReader(load_yaml_file(file), file); }

std::string ConfigReader::dotted(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

std::optional<std::string> ConfigReader::origin_of(const std::string& key) const {
  if (!origins_) return std::nullopt;
  // The key itself, or a section above it, came from elsewhere.
  for (std::string path = dotted(key);; path.resize(path.rfind('.'))) {
    if (auto it = origins_->find(path); it != origins_->end()) return it->second;
    if (path.find('.') == std::string::npos) return std::nullopt;
  }
}

std::string ConfigReader::path_base(const std::string& key) const {
  if (dirs_) {
    for (std::string path = dotted(key);; path.resize(path.rfind('.'))) {
      if (auto it = dirs_->find(path); it != dirs_->end()) return it->second;
      if (path.find('.') == std::string::npos) break;
    }
  }
  return std::filesystem::path(file_).parent_path().string();
}

std::string ConfigReader::where(const std::string& key) const {
  if (auto origin = origin_of(key)) return fmt::format("{}: {}", *origin, dotted(key));
  YAML::Node n = node_ && node_.IsMap() ? node_[key] : YAML::Node();
  int line = n ? line_of(n) : line_of(node_);
  return fmt::format("{}: {}", at(file_, line), dotted(key));
}

void ConfigReader::fail_key(const std::string& key, const std::string& reason) const {
  throw Error(where(key) + ": " + reason);
}

bool ConfigReader::has(const std::string& key) const { return node_ && node_.IsMap() && node_[key]; }

bool ConfigReader::is_null(const std::string& key) const { return has(key) && node_[key].IsNull(); }

YAML::Node ConfigReader::lookup(const std::string& key) {
  used_.insert(key);
  if (!node_ || !node_.IsMap()) return YAML::Node();
  YAML::Node n = node_[key];
  return n;
}

template <typename T>
std::optional<T> ConfigReader::optional(const std::string& key) {
  YAML::Node n = lookup(key);
  if (!n || n.IsNull()) return std::nullopt;
  T value{};
  if constexpr (is_vector<T>::value) {
    if (!n.IsSequence()) fail_key(key, fmt::format("expected a list, got {}", describe(n)));
    for (size_t i = 0; i < n.size(); ++i) {
      typename T::value_type item{};
      if (!convert_scalar(n[i], &item))
        fail_key(key,
                 fmt::format("item {}: expected {}, got {}", i, type_name<typename T::value_type>(), describe(n[i])));
      value.push_back(item);
    }
  } else {
    if (!convert_scalar(n, &value)) fail_key(key, fmt::format("expected {}, got {}", type_name<T>(), describe(n)));
  }
  return value;
}

template <typename T>
T ConfigReader::get(const std::string& key, const T& fallback) {
  // An explicit null is not "the default": `hidden_size: null` is a mistake to report, not a
  // request for 2048. Keys where null means something are read with optional() / is_null().
  if (is_null(key)) fail_key(key, "is null; give a value, or remove the key to use the default");
  auto v = optional<T>(key);
  return v ? *v : fallback;
}

template <typename T>
T ConfigReader::require(const std::string& key) {
  auto v = optional<T>(key);
  if (!v) fail_key(key, "is required");
  return *v;
}

ConfigReader ConfigReader::section(const std::string& key) {
  YAML::Node n = lookup(key);
  if (n && !n.IsNull() && !n.IsMap()) fail_key(key, fmt::format("expected a mapping, got {}", describe(n)));
  ConfigReader child(n ? n : YAML::Node(YAML::NodeType::Map), file_, dotted(key));
  child.origins_ = origins_;
  child.dirs_ = dirs_;
  return child;
}

void ConfigReader::ignore(const std::string& key) { used_.insert(key); }

std::string FieldReader::resolved(const char* key, const PathField& rule, const std::string& written,
                                  const std::string& base) const {
  if (written.empty() || std::find(rule.words.begin(), rule.words.end(), written) != rule.words.end()) return written;
  try {
    return resolve_config_path(written, base);
  } catch (const Error& e) {
    r_.fail_key(key, e.what());
  }
}

void FieldReader::throw_at_file(const char* key, const std::string& reason) const {
  fail("{}: {}: {}", r_.file(), key, reason);
}

void ConfigReader::finish() const {
  if (!node_ || !node_.IsMap()) return;
  std::vector<std::string> known(used_.begin(), used_.end());
  for (const auto& kv : node_) {
    std::string key = kv.first.as<std::string>();
    if (used_.count(key)) continue;
    std::string hint = nearest_key(key, known);
    const auto origin = origin_of(key);
    std::string msg = fmt::format("{}: {}: unknown key", origin ? *origin : at(file_, line_of(kv.first)), dotted(key));
    if (!hint.empty()) msg += fmt::format(" (did you mean '{}'?)", hint);
    throw Error(msg);
  }
}

std::string nearest_key(const std::string& key, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const auto& c : candidates) {
    size_t d = edit_distance(key, c);
    if (d < best_d) best_d = d, best = c;
  }
  size_t limit = std::max<size_t>(2, key.size() / 3);
  return best_d <= limit ? best : std::string();
}

std::string apply_override(YAML::Node root, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) fail("--set {}: expected section.key=value", assignment);
  std::string path = assignment.substr(0, eq);
  std::string value = assignment.substr(eq + 1);
  YAML::Node parsed;
  try {
    parsed = YAML::Load(value.empty() ? "null" : value);
  } catch (const YAML::Exception& e) {
    fail("--set {}: cannot parse value: {}", assignment, e.msg);
  }
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t dot; (dot = path.find('.', start)) != std::string::npos; start = dot + 1)
    parts.push_back(path.substr(start, dot - start));
  parts.push_back(path.substr(start));
  // yaml-cpp nodes are handles: walk down by reassigning a handle to each child.
  std::vector<YAML::Node> chain{root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (parts[i].empty()) fail("--set {}: empty key in path", assignment);
    YAML::Node child = chain.back()[parts[i]];
    if (child && !child.IsNull() && !child.IsMap()) fail("--set {}: '{}' is not a section", assignment, parts[i]);
    if (!child || child.IsNull()) chain.back()[parts[i]] = YAML::Node(YAML::NodeType::Map);
    chain.push_back(chain.back()[parts[i]]);
  }
  chain.back()[parts.back()] = parsed;
  return path;
}

template bool ConfigReader::get<bool>(const std::string&, const bool&);
template int ConfigReader::get<int>(const std::string&, const int&);
template int64_t ConfigReader::get<int64_t>(const std::string&, const int64_t&);
template double ConfigReader::get<double>(const std::string&, const double&);
template std::string ConfigReader::get<std::string>(const std::string&, const std::string&);
template std::vector<double> ConfigReader::get<std::vector<double>>(const std::string&, const std::vector<double>&);
template std::vector<int64_t> ConfigReader::get<std::vector<int64_t>>(const std::string&, const std::vector<int64_t>&);
template std::vector<std::string> ConfigReader::get<std::vector<std::string>>(const std::string&,
                                                                              const std::vector<std::string>&);
template bool ConfigReader::require<bool>(const std::string&);
template int ConfigReader::require<int>(const std::string&);
template int64_t ConfigReader::require<int64_t>(const std::string&);
template double ConfigReader::require<double>(const std::string&);
template std::string ConfigReader::require<std::string>(const std::string&);
template std::optional<bool> ConfigReader::optional<bool>(const std::string&);
template std::optional<int> ConfigReader::optional<int>(const std::string&);
template std::optional<int64_t> ConfigReader::optional<int64_t>(const std::string&);
template std::optional<double> ConfigReader::optional<double>(const std::string&);
template std::optional<std::string> ConfigReader::optional<std::string>(const std::string&);
template std::optional<std::vector<double>> ConfigReader::optional<std::vector<double>>(const std::string&);
template std::optional<std::vector<int64_t>> ConfigReader::optional<std::vector<int64_t>>(const std::string&);
template std::optional<std::vector<std::string>> ConfigReader::optional<std::vector<std::string>>(const std::string&);

}  // namespace coe
