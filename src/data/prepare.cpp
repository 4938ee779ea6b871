#include "coe/data/prepare.h"

#include "coe/data/content_hash.h"
#include "coe/data/jsonl.h"
#include "coe/data/prepared.h"
#include "coe/data/split.h"
#include "coe/data/text_template.h"
#include "coe/data/tokenize_records.h"
#include "coe/tokenizer/tokenizer.h"
#include "coe/util/clock.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/json_limits.h"
#include "coe/util/scratch_dir.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace coe {
namespace fs = std::filesystem;

namespace {

constexpr const char* kManifest = "manifest.json";

nlohmann::json describe_sources(const std::vector<std::string>& files) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& f : files) out.push_back({{"path", f}, {"bytes", fs::file_size(f)}, {"hash", hash_file(f)}});
  return out;
}

// What decides the prepared content: paths are left out, so moving an input does not force a
// rebuild, but its bytes do.
nlohmann::json content_of(const nlohmann::json& sources) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& s : sources) out.push_back({{"bytes", s["bytes"]}, {"hash", s["hash"]}});
  return out;
}

nlohmann::json describe_tokenizer(const Tokenizer& tok, const std::string& spec) {
  auto id = [](std::optional<int32_t> v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
  return {{"spec", spec},
          {"name", tok.name()},
          {"fingerprint", tok.fingerprint()},
          {"vocab_size", tok.vocab_size()},
          {"pad_id", id(tok.pad_id())},
          {"eos_id", id(tok.eos_id())},
          {"bos_id", id(tok.bos_id())}};
}

nlohmann::json describe_split(const DataConfig& cfg) {
  if (!cfg.val_files.empty()) return {{"method", "files"}};
  if (!cfg.split.enabled()) return {{"method", "none"}};
  const SplitConfig& s = cfg.split;
  return {{"method", !s.group_by.empty()         ? "grouped"
                     : s.rng == SplitRng::kNumpy ? "numpy"
                                                 : "random"},
          {"val_count", s.val_count ? nlohmann::json(*s.val_count) : nlohmann::json(nullptr)},
          {"val_fraction", s.val_fraction ? nlohmann::json(*s.val_fraction) : nlohmann::json(nullptr)},
          {"seed", s.seed},
          {"rng", s.group_by.empty() ? to_string(s.rng) : "splitmix64"},
          {"group_by", s.group_by.empty() ? nlohmann::json(nullptr) : nlohmann::json(s.group_by)}};
}

void write_json(const fs::path& path, const nlohmann::json& value) {
  // A fresh file in the build directory: the directory's rename into place makes it atomic.
  AppendFile out(path);
  out.append(value.dump(1) + "\n");
  out.close();
}

// What coe-prepare writes into a dataset directory (prepared.h), and nothing else: a rebuild
// deletes these names only, in a directory whose manifest says it is a coe dataset.
constexpr const char* kSplitNames[] = {"train", "val"};
constexpr const char* kSplitFiles[] = {"tokens.bin", "offsets.bin", "source_index.bin", "meta.json"};
constexpr const char* kScratchTool = "coe-prepare";

bool is_split_file(const std::string& name) {
  for (const char* f : kSplitFiles)
    if (name == f) return true;
  return false;
}

// The first entry of the dataset directory `dir` that coe-prepare does not write (a path relative
// to `dir`), or "".
std::string foreign_entry(const fs::path& dir) {
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const fs::file_status st = entry.symlink_status();
    if (name == kManifest && fs::is_regular_file(st)) continue;
    if ((name == kSplitNames[0] || name == kSplitNames[1]) && fs::is_directory(st)) {
      for (const auto& file : fs::directory_iterator(entry.path()))
        if (!is_split_file(file.path().filename().string()) || !fs::is_regular_file(file.symlink_status()))
          return name + "/" + file.path().filename().string();
      continue;
    }
    return name;
  }
  return "";
}

// Deletes the files coe-prepare writes in the dataset directory `dir` (complete or half built),
// then each directory that this left empty. A symlink in place of `dir` is removed, not followed.
void remove_dataset_files(const fs::path& dir) {
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(dir, ec);
  if (fs::is_symlink(st)) {
    fs::remove(dir, ec);
    return;
  }
  if (!fs::is_directory(st)) return;
  for (const char* split : kSplitNames) {
    const fs::path s = dir / split;
    if (!fs::is_directory(fs::symlink_status(s, ec))) continue;
    for (const char* f : kSplitFiles) fs::remove(s / f, ec);
    fs::remove(s, ec);  // fails, and keeps it, when something else is left in it
  }
  fs::remove(dir / kManifest, ec);
  fs::remove(dir, ec);
}

// Removes a build directory of coe-prepare: the datasets in it ("new": being built, "old": the one
// it replaced), and then, if nothing else is left, its marker and itself. Returns whether it is gone.
bool remove_build_dir(const fs::path& dir) {
  std::error_code ec;
  remove_dataset_files(dir / "new");
  remove_dataset_files(dir / "old");
  fs::directory_iterator it(dir, ec);
  if (ec) return !fs::exists(fs::symlink_status(dir, ec));
  for (; it != fs::directory_iterator(); it.increment(ec))
    if (it->path().filename() != kScratchMarker) return false;
  fs::remove(dir / kScratchMarker, ec);
  return fs::remove(dir, ec);
}

// `<target>.tmp-<pid>`, marked as coe-prepare's (scratch_dir.h): the dataset is built in its "new"
// and renamed into place; the replaced one passes through its "old". Removed on every way out.
class BuildDir {
 public:
  explicit BuildDir(const fs::path& target) : path_(scratch_path(target)) {
    create_scratch_dir(path_, kScratchTool);
    fs::create_directory(path_ / "new");
  }
  ~BuildDir() {
    if (!path_.empty()) remove_build_dir(path_);
  }
  BuildDir(const BuildDir&) = delete;
  BuildDir& operator=(const BuildDir&) = delete;
  fs::path dataset() const { return path_ / "new"; }

  // Replaces `target` by the built dataset with renames only, so readers see the old or the new
  // directory; then deletes the old one's files. Returns "" or a note that something was kept.
  std::string swap_into_place(const fs::path& target) {
    const fs::path old = path_ / "old";
    std::error_code ec;
    const bool had_old = fs::exists(fs::symlink_status(target, ec));
    if (had_old) fs::rename(target, old);
    try {
      fs::rename(dataset(), target);
    } catch (...) {
      if (had_old) fs::rename(old, target, ec);
      throw;
    }
    const fs::path dir = std::exchange(path_, fs::path());
    if (remove_build_dir(dir)) return "";
    return fmt::format("kept {}: the replaced dataset held files coe-prepare did not write", dir.string());
  }

 private:
  fs::path path_;
};

// Build directories of coe-prepare runs that were killed (their process is gone; scratch_dir.h).
void remove_stale_build_dirs(const fs::path& target, const std::function<void(const std::string&)>& log) {
  for (const auto& dir : stale_scratch_dirs(target, kScratchTool)) {
    const bool gone = remove_build_dir(dir);
    if (log)
      log(gone ? fmt::format("removed {}, left by a coe-prepare that did not finish", dir.string())
               : fmt::format("kept {}, left by a coe-prepare that did not finish: it holds files coe did not write",
                             dir.string()));
  }
}

bool all_synthetic(const TokenizedRecords& records) {
  for (const auto& t : records.types)
    if (!t || t->rfind("SYNTH_", 0) != 0) return false;
  return true;
}

struct SplitSummary {
  int64_t records = 0, tokens = 0;
};

SplitSummary write_split(const fs::path& dataset, const std::string& name, const TokenizedRecords& records,
                         const std::vector<int64_t>& indices, nlohmann::json meta) {
  const fs::path dir = dataset / name;
  fs::create_directories(dir);
  SplitWriter writer(dir.string(), name);
  for (int64_t i : indices) {
    int64_t length = 0;
    const uint32_t* ids = records.record(i, &length);
    const auto& type = records.types[static_cast<size_t>(i)];
    writer.add(ids, length, i, type ? &*type : nullptr);
  }
  meta["synthetic"] = all_synthetic(records);
  SplitSummary summary{writer.records(), writer.tokens()};
  writer.finish(std::move(meta));
  return summary;
}

std::vector<int64_t> iota_indices(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i;
  return v;
}

// Names the recipe sections that differ, for the "re-preparing" line.
std::string changed_sections(const nlohmann::json& before, const nlohmann::json& now) {
  std::string out;
  for (const auto& [key, value] : now.items()) {
    if (before.contains(key) && before[key] == value) continue;
    if (!out.empty()) out += ", ";
    out += key == "train_sources" || key == "val_sources" ? key + " (input content)" : key;
  }
  return out.empty() ? "recipe" : out;
}

// cfg.prepared_dir as the directory to replace: "data/p/" is "data/p"; ".", ".." and "/" name
// no directory coe could build beside and rename.
fs::path dataset_target(const std::string& prepared_dir) {
  fs::path p = fs::path(prepared_dir).lexically_normal();
  if (!p.has_filename() && p.has_relative_path()) p = p.parent_path();
  const std::string name = p.filename().string();
  if (name.empty() || name == "." || name == "..")
    fail("data.prepared_dir '{}': name a directory of its own (not ., .. or /)", prepared_dir);
  return p;
}

PrepareResult summarize(const std::string& dir, const nlohmann::json& manifest) {
  PrepareResult r;
  r.dir = dir;
  const auto& splits = manifest.at("splits");
  r.train_records = splits.at("train").at("records");
  r.train_tokens = splits.at("train").at("tokens");
  if (splits.contains("val")) {
    r.val_records = splits.at("val").at("records");
    r.val_tokens = splits.at("val").at("tokens");
  }
  return r;
}

}  // namespace

nlohmann::json read_manifest(const std::string& dir) {
  const fs::path path = fs::path(dir) / kManifest;
  if (!fs::exists(path)) fail("{}: not a prepared dataset (no {}); run coe-prepare", dir, kManifest);
  nlohmann::json manifest;
  try {
    manifest = read_json_file(path.string(), "a manifest.json");
  } catch (const nlohmann::json::exception& e) {
    fail("{}: unreadable: {}", path.string(), e.what());
  }
  if (!manifest.is_object() || manifest.value("format", "") != "coe-prepared-dataset" || !manifest.contains("splits"))
    fail("{}: not a coe prepared-dataset manifest", path.string());
  return manifest;
}

PrepareResult prepare_dataset(const DataConfig& cfg, const PrepareOptions& options) {
  auto log = [&](const std::string& line) {
    if (options.log) options.log(line);
  };
  cfg.validate();
  if (cfg.prepared_dir.empty())
    fail("data.prepared_dir (coe-prepare --out) is not set: where should the prepared dataset go?");
  const fs::path target = dataset_target(cfg.prepared_dir);

  if (cfg.train_files.empty()) {
    nlohmann::json manifest = read_manifest(cfg.prepared_dir);
    PreparedSplit::open((target / "train").string());
    PrepareResult r = summarize(cfg.prepared_dir, manifest);
    r.reused = true;
    r.reason = "no raw inputs configured; using the prepared dataset as it is";
    log(fmt::format("using prepared dataset {} (no raw inputs configured)", cfg.prepared_dir));
    return r;
  }

  remove_stale_build_dirs(target, options.log);
  const auto train_files = resolve_record_files(cfg.train_files);
  const auto val_files = cfg.val_files.empty() ? std::vector<std::string>{} : resolve_record_files(cfg.val_files);
  const TextTemplate text(cfg.text.text_keys, cfg.text.template_text);
  const auto tokenizer = load_tokenizer(cfg.tokenizer);

  const nlohmann::json train_sources = describe_sources(train_files);
  const nlohmann::json val_sources = describe_sources(val_files);
  const nlohmann::json tokenizer_info = describe_tokenizer(*tokenizer, cfg.tokenizer);
  const nlohmann::json split_info = describe_split(cfg);
  const nlohmann::json recipe = {
      {"format_version", kPreparedFormatVersion},
      {"tokenizer", {{"name", tokenizer_info["name"]}, {"fingerprint", tokenizer_info["fingerprint"]}}},
      {"train_sources", content_of(train_sources)},
      {"val_sources", content_of(val_sources)},
      {"text", text.describe()},
      {"split", split_info}};

  std::string reason = "no prepared dataset yet";
  if (fs::exists(target)) {
    if (!fs::exists(target / kManifest)) {
      if (!fs::is_directory(target) || !fs::is_empty(target))
        fail("{}: exists and is not a prepared dataset (no {}); remove it or choose another output directory",
             cfg.prepared_dir, kManifest);
    } else {
      nlohmann::json manifest = read_manifest(cfg.prepared_dir);
      if (manifest.value("recipe", nlohmann::json()) == recipe) {
        try {
          PreparedSplit::open((target / "train").string());
          if (manifest["splits"].contains("val")) PreparedSplit::open((target / "val").string());
          if (!options.force) {
            PrepareResult r = summarize(cfg.prepared_dir, manifest);
            r.reused = true;
            r.reason = "inputs, tokenizer, text format and split unchanged";
            log(fmt::format("reusing prepared dataset {} ({})", cfg.prepared_dir, r.reason));
            return r;
          }
          reason = "forced rebuild";
        } catch (const Error& e) {
          reason = fmt::format("existing files are damaged ({})", e.what());
        }
      } else {
        reason = "changed: " + changed_sections(manifest.value("recipe", nlohmann::json::object()), recipe);
      }
      // The rebuild replaces the directory: refuse before any work when it holds anything else.
      if (const std::string foreign = foreign_entry(target); !foreign.empty())
        fail("{}: holds '{}', which coe-prepare did not write; move it out before the dataset is rebuilt ({}): coe "
             "deletes only files it wrote",
             cfg.prepared_dir, foreign, reason);
    }
  }
  log(fmt::format("preparing {}: {}", cfg.prepared_dir, reason));

  const auto start = Clock::now();
  TokenizedRecords train = tokenize_records(train_files, text, *tokenizer, cfg.split.group_by, cfg.threads);
  std::optional<TokenizedRecords> val;
  if (!val_files.empty()) val = tokenize_records(val_files, text, *tokenizer, "", cfg.threads);
  const double seconds = seconds_since(start);
  log(fmt::format("tokenized {} records ({} tokens) in {:.1f} s", train.size() + (val ? val->size() : 0),
                  train.total_tokens() + (val ? val->total_tokens() : 0), seconds));

  SplitAssignment assignment;
  nlohmann::json split_meta = split_info;
  if (cfg.split.enabled()) {
    assignment = assign_split(train.size(), cfg.split, train.group_keys);
    if (!cfg.split.group_by.empty()) split_meta["groups"] = assignment.groups;
  } else {
    assignment.train = iota_indices(train.size());
  }

  auto base_meta = [&](const nlohmann::json& sources, const std::vector<int64_t>& per_file) {
    nlohmann::json s = sources;
    for (size_t f = 0; f < s.size(); ++f) s[f]["records"] = per_file[f];
    return nlohmann::json{
        {"tokenizer", tokenizer_info}, {"sources", s}, {"text", text.describe()}, {"split_params", split_meta}};
  };

  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  BuildDir build(target);
  nlohmann::json splits;
  SplitSummary t =
      write_split(build.dataset(), "train", train, assignment.train, base_meta(train_sources, train.records_per_file));
  splits["train"] = {{"records", t.records}, {"tokens", t.tokens}};
  if (!assignment.val.empty()) {
    SplitSummary v =
        write_split(build.dataset(), "val", train, assignment.val, base_meta(train_sources, train.records_per_file));
    splits["val"] = {{"records", v.records}, {"tokens", v.tokens}};
  } else if (val) {
    SplitSummary v = write_split(build.dataset(), "val", *val, iota_indices(val->size()),
                                 base_meta(val_sources, val->records_per_file));
    splits["val"] = {{"records", v.records}, {"tokens", v.tokens}};
  }
  const nlohmann::json manifest = {{"format", "coe-prepared-dataset"}, {"recipe", recipe},
                                   {"tokenizer", tokenizer_info},      {"train_sources", train_sources},
                                   {"val_sources", val_sources},       {"splits", splits}};
  write_json(build.dataset() / kManifest, manifest);
  if (const std::string kept = build.swap_into_place(target); !kept.empty()) log(kept);

  PrepareResult r = summarize(cfg.prepared_dir, manifest);
  r.reason = reason;
  log(fmt::format(
      "prepared {}: train {} records / {} tokens{}", cfg.prepared_dir, r.train_records, r.train_tokens,
      splits.contains("val") ? fmt::format(", val {} records / {} tokens", r.val_records, r.val_tokens) : ""));
  return r;
}

}  // namespace coe
