#include "coe/data/prepared.h"

#include "coe/util/error.h"
#include "coe/util/json_limits.h"

#include <algorithm>
#include <filesystem>
#include <unordered_map>

namespace coe {
namespace fs = std::filesystem;

namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "prepared files are little-endian; this host is not");

MappedFile map_sized(const fs::path& path, uint64_t count, uint64_t width, const char* what) {
  if (!fs::exists(path))
    fail("{}: missing (a prepared split needs tokens.bin, offsets.bin, source_index.bin, meta.json)", path.string());
  MappedFile file(path.string());
  if (file.size() != count * width)
    fail("{}: {} bytes, expected {} ({} {} of {} bytes); the prepared split is truncated or stale, re-run coe-prepare",
         path.string(), file.size(), count * width, count, what, width);
  return file;
}

int64_t meta_int(const nlohmann::json& meta, const char* key, const std::string& file) {
  auto it = meta.find(key);
  if (it == meta.end() || !it->is_number_integer()) fail("{}: '{}' is missing or not an integer", file, key);
  return it->get<int64_t>();
}

void write_all(const fs::path& path, const void* data, size_t bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (out) out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  if (out) out.close();
  if (!out) fail("{}: write failed (disk full or not writable?)", path.string());
}

}  // namespace

std::shared_ptr<const PreparedSplit> PreparedSplit::open(const std::string& split_dir) {
  const fs::path dir(split_dir);
  if (!fs::is_directory(dir)) fail("{}: prepared split directory not found", split_dir);
  const fs::path meta_path = dir / "meta.json";
  if (!fs::exists(meta_path)) fail("{}: not a prepared split (no meta.json); run coe-prepare", split_dir);

  std::shared_ptr<PreparedSplit> s(new PreparedSplit());
  s->dir_ = split_dir;
  try {
    s->meta_ = read_json_file(meta_path.string(), "a meta.json");
  } catch (const nlohmann::json::exception& e) {
    fail("{}: unreadable metadata: {}", meta_path.string(), e.what());
  }
  const nlohmann::json& meta = s->meta_;
  const std::string mfile = meta_path.string();
  if (!meta.is_object() || meta.value("format", "") != "coe-prepared-split")
    fail("{}: not coe prepared-split metadata", mfile);
  if (meta.value("format_version", 0) != kPreparedFormatVersion)
    fail("{}: format_version {} (this build reads {}); re-run coe-prepare", mfile, meta.value("format_version", 0),
         kPreparedFormatVersion);
  s->name_ = meta.value("split", "");
  s->records_ = meta_int(meta, "records", mfile);
  s->tokens_ = meta_int(meta, "tokens", mfile);
  s->max_record_tokens_ = meta_int(meta, "max_record_tokens", mfile);
  if (s->records_ <= 0) fail("{}: the split has no records", mfile);
  const nlohmann::json& tok = meta.at("tokenizer");
  s->vocab_size_ = tok.value("vocab_size", int64_t{0});
  s->eos_id_ = tok["eos_id"].is_number_integer() ? tok["eos_id"].get<int32_t>() : -1;
  s->pad_id_ = tok["pad_id"].is_number_integer() ? tok["pad_id"].get<int32_t>() : s->eos_id_;

  const auto n = static_cast<uint64_t>(s->records_);
  s->tokens_file_ = map_sized(dir / "tokens.bin", static_cast<uint64_t>(s->tokens_), 4, "tokens");
  s->offsets_file_ = map_sized(dir / "offsets.bin", n + 1, 8, "offsets");
  s->source_file_ = map_sized(dir / "source_index.bin", n, 8, "indices");
  s->tokens_ptr_ = reinterpret_cast<const uint32_t*>(s->tokens_file_.data());
  s->offsets_ = reinterpret_cast<const uint64_t*>(s->offsets_file_.data());
  s->source_index_ = reinterpret_cast<const uint64_t*>(s->source_file_.data());

  const std::string ofile = (dir / "offsets.bin").string();
  if (s->offsets_[0] != 0) fail("{}: first offset is {}, expected 0", ofile, s->offsets_[0]);
  if (s->offsets_[n] != static_cast<uint64_t>(s->tokens_))
    fail("{}: last offset is {}, expected the token count {}", ofile, s->offsets_[n], s->tokens_);
  for (uint64_t i = 0; i < n; ++i)
    if (s->offsets_[i + 1] < s->offsets_[i]) fail("{}: offsets decrease at record {}", ofile, i);

  const nlohmann::json& types = meta.value("record_types", nlohmann::json());
  if (types.is_object()) {
    s->type_names_ = types.at("names").get<std::vector<std::string>>();
    s->type_ids_ = types.at("ids").get<std::vector<int32_t>>();
    if (static_cast<int64_t>(s->type_ids_.size()) != s->records_)
      fail("{}: record_types has {} ids for {} records", mfile, s->type_ids_.size(), s->records_);
    for (int32_t id : s->type_ids_)
      if (id < -1 || id >= static_cast<int32_t>(s->type_names_.size()))
        fail("{}: record type id {} out of range", mfile, id);
  }
  return s;
}

TokenSpan PreparedSplit::record(int64_t i) const {
  if (i < 0 || i >= records_) fail("{}: record {} out of range [0, {})", dir_, i, records_);
  return {tokens_ptr_ + offsets_[i], static_cast<int64_t>(offsets_[i + 1] - offsets_[i])};
}

const std::string& PreparedSplit::record_type(int64_t i) const {
  static const std::string kNone;
  if (type_ids_.empty() || type_ids_[static_cast<size_t>(i)] < 0) return kNone;
  return type_names_[static_cast<size_t>(type_ids_[static_cast<size_t>(i)])];
}

std::shared_ptr<const PreparedSplit> open_split(const std::string& dataset_dir, const std::string& split) {
  const fs::path dir = fs::path(dataset_dir) / split;
  if (fs::is_directory(dataset_dir) && !fs::exists(dir))
    fail("{}: prepared dataset has no '{}' split", dataset_dir, split);
  return PreparedSplit::open(dir.string());
}

SplitWriter::SplitWriter(const std::string& dir, std::string name) : dir_(dir), name_(std::move(name)) {
  const fs::path path = fs::path(dir_) / "tokens.bin";
  tokens_.open(path, std::ios::binary | std::ios::trunc);
  if (!tokens_) fail("{}: cannot create", path.string());
}

void SplitWriter::add(const uint32_t* ids, int64_t n, int64_t source_index, const std::string* type) {
  tokens_.write(reinterpret_cast<const char*>(ids), static_cast<std::streamsize>(n * 4));
  offsets_.push_back(offsets_.back() + static_cast<uint64_t>(n));
  source_index_.push_back(static_cast<uint64_t>(source_index));
  max_record_tokens_ = std::max(max_record_tokens_, n);
  int32_t id = -1;
  if (type) {
    any_type_ = true;
    auto it = std::find(type_names_.begin(), type_names_.end(), *type);
    id = static_cast<int32_t>(it - type_names_.begin());
    if (it == type_names_.end()) type_names_.push_back(*type);
  }
  type_ids_.push_back(id);
}

void SplitWriter::finish(nlohmann::json meta) {
  const fs::path dir(dir_);
  tokens_.close();
  if (!tokens_) fail("{}: write failed (disk full or not writable?)", (dir / "tokens.bin").string());
  write_all(dir / "offsets.bin", offsets_.data(), offsets_.size() * 8);
  write_all(dir / "source_index.bin", source_index_.data(), source_index_.size() * 8);

  meta["format"] = "coe-prepared-split";
  meta["format_version"] = kPreparedFormatVersion;
  meta["split"] = name_;
  meta["records"] = records();
  meta["tokens"] = tokens();
  meta["max_record_tokens"] = max_record_tokens_;
  meta["token_dtype"] = "uint32-le";
  meta["offsets_dtype"] = "uint64-le";
  if (any_type_) {
    nlohmann::json counts = nlohmann::json::object();
    for (size_t t = 0; t < type_names_.size(); ++t)
      counts[type_names_[t]] = std::count(type_ids_.begin(), type_ids_.end(), static_cast<int32_t>(t));
    meta["type_counts"] = counts;
    meta["record_types"] = {{"names", type_names_}, {"ids", type_ids_}};
  } else {
    meta["record_types"] = nullptr;
  }
  const std::string text = meta.dump(1) + "\n";
  write_all(dir / "meta.json", text.data(), text.size());
}

std::string PreparedSplit::describe_record(int64_t i) const {
  int64_t first = 0;
  const int64_t source = source_index(i);
  const auto sources = meta_.find("sources");
  if (sources != meta_.end() && sources->is_array())
    for (const auto& s : *sources) {
      const int64_t n = s.value("records", int64_t{0});
      if (source < first + n)
        return fmt::format("{}: record {}", s.value("path", std::string("?")), source - first + 1);
      first += n;
    }
  return fmt::format("{}: record {}", dir_, i);
}

}  // namespace coe
