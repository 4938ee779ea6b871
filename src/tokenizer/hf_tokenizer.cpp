// Loading tokenizer.json / vocab.json + merges.txt, and the encode/decode pipeline.
// Built only when PCRE2 was found (cmake/CoeDependencies.cmake).
#ifdef COE_WITH_HF_TOKENIZER
#include "coe/tokenizer/hf_tokenizer.h"

#include "coe/util/error.h"
#include "hf_tokenizer_internal.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

namespace coe {

// ---- configuration helpers -----------------------------------------------------------------

namespace hf {

void ConfigPath::fail(const std::string& reason) const {
  if (key.empty()) coe::fail("{}: {}", file, reason);
  coe::fail("{}: {}: {}", file, key, reason);
}

const json* find_member(const json& obj, const char* name) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(name);
  return it == obj.end() ? nullptr : &*it;
}

bool get_bool(const json& obj, const char* name, bool fallback, const ConfigPath& at) {
  const json* v = find_member(obj, name);
  if (!v || v->is_null()) return fallback;
  if (!v->is_boolean()) at.child(name).fail("expected true or false");
  return v->get<bool>();
}

std::string get_string(const json& obj, const char* name, const ConfigPath& at) {
  const json* v = find_member(obj, name);
  if (!v || !v->is_string()) at.child(name).fail("missing or not a string");
  return v->get<std::string>();
}

std::string get_type(const json& obj, const ConfigPath& at) { return get_string(obj, "type", at); }

}  // namespace hf

namespace {

using hf::ConfigPath;
using hf::json;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot read tokenizer file: {}", path, std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) fail("{}: cannot read tokenizer file: {}", path, std::strerror(errno));
  return buffer.str();
}

// tokenizer.json nests 5 levels deep; a hostile file could nest millions (nlohmann's parser copes,
// but such a file is no tokenizer). Checked before parsing, in one pass over the bytes.
constexpr int kMaxJsonDepth = 64;

void check_json_depth(const std::string& text, const std::string& path) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth)
        fail("{}: JSON nested more than {} levels deep (at byte {}): not a tokenizer file", path, kMaxJsonDepth, i);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

json parse_json(const std::string& text, const std::string& path) {
  check_json_depth(text, path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {  // parse_error, or out_of_range 406: a number beyond a double (1e400)
    fail("{}: malformed JSON: {}", path, e.what());
  }
}

constexpr uint64_t kFnvOffset = 14695981039346656037ull, kFnvPrime = 1099511628211ull;

uint64_t fnv1a(std::string_view bytes, uint64_t hash = kFnvOffset) {
  for (char c : bytes) {
    hash ^= static_cast<unsigned char>(c);
    hash *= kFnvPrime;
  }
  return hash;
}

std::string hex64(uint64_t v) { return fmt::format("{:016x}", v); }

int32_t parse_id(const json& v, const ConfigPath& at) {
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > std::numeric_limits<int32_t>::max())
    at.fail("expected a token id (integer in [0, 2^31))");
  return static_cast<int32_t>(v.get<int64_t>());
}

// "left right" (merges.txt and the legacy tokenizer.json form): exactly one space.
bool split_merge(const std::string& line, std::pair<std::string, std::string>& out) {
  const size_t space = line.find(' ');
  if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) return false;
  out = {line.substr(0, space), line.substr(space + 1)};
  return true;
}

// The conventional names of special tokens, most specific first; see docs/tokenizer.md.
const std::vector<std::string>& eos_names() {
  static const std::vector<std::string> names{"<|endoftext|>", "</s>",       "<|end_of_text|>", "<｜end▁of▁sentence｜>",
                                              "<eos>",         "<|eot_id|>", "<|im_end|>"};
  return names;
}
const std::vector<std::string>& bos_names() {
  static const std::vector<std::string> names{"<s>", "<|begin_of_text|>", "<｜begin▁of▁sentence｜>", "<bos>",
                                              "<|startoftext|>"};
  return names;
}
const std::vector<std::string>& pad_names() {
  static const std::vector<std::string> names{"<|padding|>", "<pad>", "<|pad|>", "[PAD]", "<｜▁pad▁｜>"};
  return names;
}

}  // namespace

// ---- the pipeline --------------------------------------------------------------------------

struct HfTokenizer::Impl {
  std::string path, name, fingerprint;
  hf::Normalizer normalizer;
  hf::PreTokenizer pre_tokenizer;
  hf::AddedVocabulary added;
  std::unique_ptr<hf::BpeModel> model;
  bool byte_level_decoder = false;
  std::vector<std::string> id_to_token;  // added tokens override the model's entry
  std::vector<bool> id_known;
  std::vector<bool> id_special;          // dropped by decode(ids, skip_special_tokens = true)
  std::vector<std::string> id_to_bytes;  // what the decoder makes of each token
  std::optional<int32_t> eos, bos, pad;

  // Runs added-token extraction and normalization: on_text(normalized text) for the parts the
  // pre-tokenizer sees, on_token(index into added.tokens()) for added tokens, in order.
  template <typename OnText, typename OnToken>
  void for_each_segment(std::string_view text, OnText&& on_text, OnToken&& on_token) const {
    std::string valid;
    if (!hf::is_valid_utf8(text)) {
      valid = hf::to_valid_utf8(text);
      text = valid;
    }
    std::vector<hf::Segment> raw, normalized_parts;
    added.split(text, /*normalized_pass=*/false, raw);
    for (const auto& seg : raw) {
      if (seg.token >= 0) {
        on_token(seg.token);
        continue;
      }
      std::string_view part = text.substr(seg.begin, seg.end - seg.begin);
      std::string normalized;
      if (!normalizer.is_identity()) {
        normalized = normalizer.apply(part);
        part = normalized;
      }
      added.split(part, /*normalized_pass=*/true, normalized_parts);
      for (const auto& sub : normalized_parts) {
        if (sub.token >= 0) on_token(sub.token);
        else if (sub.end > sub.begin) on_text(part.substr(sub.begin, sub.end - sub.begin));
      }
    }
  }

  // Id tables, decoder bytes and special ids, once the model and added tokens are set.
  void finish_setup() {
    const auto& vocab = model->vocab();
    int64_t max_id = -1;
    for (const auto& [token, id] : vocab) max_id = std::max<int64_t>(max_id, id);
    for (const auto& t : added.tokens()) max_id = std::max<int64_t>(max_id, t.id);
    // The id tables below have max_id + 1 entries: one id of 2^31 - 1 in a small file would make
    // them 64 GB. Real vocabularies are dense (a few reserved holes at most).
    const int64_t tokens = static_cast<int64_t>(vocab.size() + added.tokens().size());
    if (max_id >= 2 * tokens + 1024)
      fail("{}: token id {} for {} tokens: ids must be at most twice the token count (+ 1024)", path, max_id, tokens);
    const auto size = static_cast<size_t>(max_id + 1);
    id_to_token.assign(size, std::string());
    id_known.assign(size, false);
    for (const auto& [token, id] : vocab) {
      id_to_token[static_cast<size_t>(id)] = token;
      id_known[static_cast<size_t>(id)] = true;
    }
    for (const auto& t : added.tokens()) {
      id_to_token[static_cast<size_t>(t.id)] = t.content;
      id_known[static_cast<size_t>(t.id)] = true;
    }
    if (byte_level_decoder) {
      // ByteLevel decoder: a token made only of byte-level characters becomes those bytes;
      // any other token (e.g. an added "  ") is copied as is.
      id_to_bytes.assign(size, std::string());
      for (size_t id = 0; id < size; ++id) {
        const std::string& token = id_to_token[id];
        std::string bytes;
        bool all_mapped = true;
        for (size_t pos = 0; pos < token.size();) {
          int b = hf::byte_of_level_char(hf::next_code_point(token, pos));
          if (b < 0) {
            all_mapped = false;
            break;
          }
          bytes.push_back(static_cast<char>(b));
        }
        id_to_bytes[id] = all_mapped ? std::move(bytes) : token;
      }
    }
    auto find_added = [&](const std::vector<std::string>& names) -> std::optional<int32_t> {
      for (const auto& wanted : names)
        for (const auto& t : added.tokens())
          if (t.content == wanted) return t.id;
      return std::nullopt;
    };
    // HF's is_special_token compares token strings: any id whose token equals the content of a
    // special added token is skipped.
    std::unordered_set<std::string> special;
    for (const auto& t : added.tokens())
      if (t.special) special.insert(t.content);
    id_special.assign(size, false);
    for (size_t id = 0; id < size; ++id) id_special[id] = id_known[id] && special.count(id_to_token[id]) > 0;
    eos = find_added(eos_names());
    bos = find_added(bos_names());
    pad = find_added(pad_names());
    if (!pad) pad = eos;
  }
};

HfTokenizer::HfTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HfTokenizer::~HfTokenizer() = default;

std::unique_ptr<HfTokenizer> HfTokenizer::from_tokenizer_json(const std::string& path) {
  const std::string bytes = read_file(path);
  const json root_json = parse_json(bytes, path);
  const ConfigPath root{path, ""};
  if (!root_json.is_object()) root.fail("not a tokenizer.json (expected a JSON object at the top level)");

  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->name = std::filesystem::path(path).filename().string();
  impl->fingerprint = hex64(fnv1a(bytes));
  static const json null_json;
  auto member = [&](const char* name) -> const json& {
    const json* v = hf::find_member(root_json, name);
    return v ? *v : null_json;
  };
  impl->normalizer = hf::Normalizer::from_json(member("normalizer"), root.child("normalizer"));
  impl->pre_tokenizer = hf::PreTokenizer::from_json(member("pre_tokenizer"), root.child("pre_tokenizer"));

  // Decoder: ByteLevel, or none (HF then joins the tokens with spaces).
  const ConfigPath decoder_at = root.child("decoder");
  if (const json& decoder = member("decoder"); !decoder.is_null()) {
    const std::string type = hf::get_type(decoder, decoder_at);
    if (type != "ByteLevel")
      decoder_at.child("type").fail(fmt::format("unsupported decoder type '{}' (supported: ByteLevel)", type));
    impl->byte_level_decoder = true;
  }

  // Model.
  const ConfigPath model_at = root.child("model");
  const json& model = member("model");
  if (!model.is_object()) model_at.fail("missing or not an object");
  if (const json* type = hf::find_member(model, "type")) {
    if (!type->is_string()) model_at.child("type").fail("expected a string");
    if (type->get<std::string>() != "BPE")
      model_at.child("type").fail(
          fmt::format("unsupported model type '{}' (only BPE is supported)", type->get<std::string>()));
  } else if (!hf::find_member(model, "merges")) {
    model_at.fail("no 'type' and no 'merges': not a BPE model");
  }
  if (const json* dropout = hf::find_member(model, "dropout"); dropout && !dropout->is_null()) {
    if (!dropout->is_number() || dropout->get<double>() != 0.0)
      model_at.child("dropout").fail("BPE dropout is not supported (it makes encoding random)");
  }

  const json* vocab_json = hf::find_member(model, "vocab");
  if (!vocab_json || !vocab_json->is_object()) model_at.child("vocab").fail("missing or not an object");
  std::unordered_map<std::string, int32_t> vocab;
  vocab.reserve(vocab_json->size());
  for (const auto& [token, id] : vocab_json->items())
    vocab.emplace(token, parse_id(id, model_at.child("vocab").child(token)));

  const ConfigPath merges_at = model_at.child("merges");
  const json* merges_json = hf::find_member(model, "merges");
  if (!merges_json || !merges_json->is_array()) merges_at.fail("missing or not an array");
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<size_t> merge_index;  // position in the JSON array, for messages
  merges.reserve(merges_json->size());
  for (size_t i = 0; i < merges_json->size(); ++i) {
    const json& m = (*merges_json)[i];
    std::pair<std::string, std::string> merge;
    if (m.is_string()) {
      const auto& line = m.get_ref<const std::string&>();
      if (line.rfind("#version", 0) == 0) continue;  // HF skips version headers
      if (!split_merge(line, merge))
        merges_at.index(i).fail(fmt::format("bad merge \"{}\": expected \"left right\"", line));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merge = {m[0].get<std::string>(), m[1].get<std::string>()};
    } else {
      merges_at.index(i).fail("bad merge: expected \"left right\" or [\"left\", \"right\"]");
    }
    merges.push_back(std::move(merge));
    merge_index.push_back(i);
  }

  hf::BpeOptions options;
  auto optional_string = [&](const char* name) -> std::optional<std::string> {
    const json* v = hf::find_member(model, name);
    if (!v || v->is_null()) return std::nullopt;
    if (!v->is_string()) model_at.child(name).fail("expected a string or null");
    return v->get<std::string>();
  };
  options.unk_token = optional_string("unk_token");
  options.continuing_subword_prefix = optional_string("continuing_subword_prefix");
  options.end_of_word_suffix = optional_string("end_of_word_suffix");
  options.fuse_unk = hf::get_bool(model, "fuse_unk", false, model_at);
  options.byte_fallback = hf::get_bool(model, "byte_fallback", false, model_at);
  options.ignore_merges = hf::get_bool(model, "ignore_merges", false, model_at);
  impl->model = std::make_unique<hf::BpeModel>(
      std::move(vocab), merges, options, [&](size_t k) { return merges_at.index(merge_index[k]); },
      model_at.child("unk_token"));
  impl->model->set_byte_level_input(impl->pre_tokenizer.byte_level_deferred());

  // Added tokens. A content already in the model vocabulary keeps the model's id, as in HF.
  std::vector<hf::AddedToken> added;
  const ConfigPath added_at = root.child("added_tokens");
  if (const json& list = member("added_tokens"); !list.is_null()) {
    if (!list.is_array()) added_at.fail("expected an array");
    for (size_t i = 0; i < list.size(); ++i) {
      const ConfigPath at = added_at.index(i);
      const json& t = list[i];
      if (!t.is_object()) at.fail("expected an object");
      hf::AddedToken token;
      token.content = hf::get_string(t, "content", at);
      const json* id = hf::find_member(t, "id");
      if (!id) at.child("id").fail("missing");
      token.id = parse_id(*id, at.child("id"));
      if (auto model_id = impl->model->vocab().find(token.content); model_id != impl->model->vocab().end())
        token.id = model_id->second;
      token.special = hf::get_bool(t, "special", false, at);
      token.single_word = hf::get_bool(t, "single_word", false, at);
      token.lstrip = hf::get_bool(t, "lstrip", false, at);
      token.rstrip = hf::get_bool(t, "rstrip", false, at);
      token.normalized = hf::get_bool(t, "normalized", !token.special, at);
      added.push_back(std::move(token));
    }
  }
  impl->added = hf::AddedVocabulary(std::move(added), impl->normalizer);
  impl->finish_setup();
  return std::unique_ptr<HfTokenizer>(new HfTokenizer(std::move(impl)));
}

std::unique_ptr<HfTokenizer> HfTokenizer::from_vocab_merges(const std::string& vocab_path,
                                                            const std::string& merges_path) {
  const std::string vocab_bytes = read_file(vocab_path);
  const std::string merges_bytes = read_file(merges_path);
  const json vocab_json = parse_json(vocab_bytes, vocab_path);
  const ConfigPath vocab_at{vocab_path, ""};
  if (!vocab_json.is_object()) vocab_at.fail("expected a JSON object mapping tokens to ids");
  std::unordered_map<std::string, int32_t> vocab;
  vocab.reserve(vocab_json.size());
  for (const auto& [token, id] : vocab_json.items())
    if (id.is_number()) vocab.emplace(token, parse_id(id, vocab_at.child(token)));  // HF skips non-numbers

  // merges.txt: one "left right" per line; "#version" lines are skipped, a final newline is not a line.
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<size_t> merge_line;
  size_t line_no = 0;
  for (size_t pos = 0; pos < merges_bytes.size();) {
    size_t end = merges_bytes.find('\n', pos);
    if (end == std::string::npos) end = merges_bytes.size();
    std::string line = merges_bytes.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.rfind("#version", 0) == 0) continue;
    std::pair<std::string, std::string> merge;
    if (!split_merge(line, merge))
      fail("{}: line {}: bad merge \"{}\": expected two tokens separated by one space", merges_path, line_no, line);
    merges.push_back(std::move(merge));
    merge_line.push_back(line_no);
  }

  auto impl = std::make_unique<Impl>();
  impl->path = vocab_path;
  impl->name = std::filesystem::path(vocab_path).filename().string();
  impl->fingerprint = hex64(fnv1a(merges_bytes, fnv1a("\nmerges.txt\n", fnv1a(vocab_bytes))));
  impl->pre_tokenizer = hf::PreTokenizer::gpt2_byte_level();
  impl->byte_level_decoder = true;
  impl->model = std::make_unique<hf::BpeModel>(
      std::move(vocab), merges, hf::BpeOptions{},
      [&](size_t k) {
        return ConfigPath{merges_path, fmt::format("line {}", merge_line[k])};
      },
      vocab_at);
  impl->model->set_byte_level_input(impl->pre_tokenizer.byte_level_deferred());
  // GPT-2's only special token, when the vocabulary has it (as GPT2TokenizerFast sets it up).
  std::vector<hf::AddedToken> added;
  if (auto it = impl->model->vocab().find("<|endoftext|>"); it != impl->model->vocab().end()) {
    hf::AddedToken eot;
    eot.content = it->first;
    eot.id = it->second;
    eot.special = true;
    eot.normalized = false;
    added.push_back(eot);
  }
  impl->added = hf::AddedVocabulary(std::move(added), impl->normalizer);
  impl->finish_setup();
  return std::unique_ptr<HfTokenizer>(new HfTokenizer(std::move(impl)));
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<std::string> words;
  try {
    impl_->for_each_segment(
        text,
        [&](std::string_view part) {
          impl_->pre_tokenizer.run(part, words);
          for (const auto& word : words) impl_->model->encode_word(word, ids);
        },
        [&](int token) { ids.push_back(impl_->added.tokens()[static_cast<size_t>(token)].id); });
  } catch (const Error& e) {  // a regex hit its backtracking limits
    fail("{}: {}", impl_->path, e.what());
  }
  return ids;
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  const size_t size = impl_->id_to_token.size();
  auto check = [&](int32_t id) {
    if (id < 0 || static_cast<size_t>(id) >= size || !impl_->id_known[static_cast<size_t>(id)])
      fail("{}: cannot decode id {}: not in the vocabulary", impl_->name, id);
  };
  std::string out;
  if (impl_->byte_level_decoder) {
    for (int32_t id : ids) {
      check(id);
      if (skip_special_tokens && impl_->id_special[static_cast<size_t>(id)]) continue;
      out += impl_->id_to_bytes[static_cast<size_t>(id)];
    }
    // Split multi-byte characters (ids cut mid-character) decode like from_utf8_lossy.
    return hf::is_valid_utf8(out) ? out : hf::to_valid_utf8(out);
  }
  bool first = true;
  for (int32_t id : ids) {
    check(id);
    if (skip_special_tokens && impl_->id_special[static_cast<size_t>(id)]) continue;
    if (!first) out += ' ';
    first = false;
    out += impl_->id_to_token[static_cast<size_t>(id)];
  }
  return out;
}

std::string HfTokenizer::normalize(std::string_view text) const {
  std::string out;
  impl_->for_each_segment(
      text, [&](std::string_view part) { out += part; },
      [&](int token) { out += impl_->added.tokens()[static_cast<size_t>(token)].content; });
  return out;
}

std::vector<std::string> HfTokenizer::pre_tokenize(std::string_view text) const {
  std::vector<std::string> out, words;
  const auto& chars = hf::byte_level_chars();
  impl_->for_each_segment(
      text,
      [&](std::string_view part) {
        impl_->pre_tokenizer.run(part, words);
        for (auto& word : words) {
          if (!impl_->pre_tokenizer.byte_level_deferred()) {
            out.push_back(std::move(word));
            continue;
          }
          std::string mapped;
          for (char c : word) mapped += chars[static_cast<unsigned char>(c)];
          out.push_back(std::move(mapped));
        }
      },
      [&](int token) { out.push_back(impl_->added.tokens()[static_cast<size_t>(token)].content); });
  return out;
}

std::optional<int32_t> HfTokenizer::token_to_id(std::string_view token) const {
  for (const auto& t : impl_->added.tokens())
    if (t.content == token) return t.id;
  const auto& vocab = impl_->model->vocab();
  if (auto it = vocab.find(std::string(token)); it != vocab.end()) return it->second;
  return std::nullopt;
}

int64_t HfTokenizer::vocab_size() const { return static_cast<int64_t>(impl_->id_to_token.size()); }
std::optional<int32_t> HfTokenizer::eos_id() const { return impl_->eos; }
std::optional<int32_t> HfTokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> HfTokenizer::pad_id() const { return impl_->pad; }
std::string HfTokenizer::fingerprint() const { return impl_->fingerprint; }
std::string HfTokenizer::name() const { return impl_->name; }

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    if (fs::exists(dir / "tokenizer.json", ec))
      return HfTokenizer::from_tokenizer_json((dir / "tokenizer.json").string());
    if (fs::exists(dir / "vocab.json", ec))
      return HfTokenizer::from_vocab_merges((dir / "vocab.json").string(), (dir / "merges.txt").string());
    fail("{}: directory holds neither tokenizer.json nor vocab.json + merges.txt", path);
  }
  const fs::path file(path);
  const std::string filename = file.filename().string();
  const std::string suffix = "vocab.json";
  if (filename.size() >= suffix.size() &&
      filename.compare(filename.size() - suffix.size(), suffix.size(), suffix) == 0) {
    const std::string merges = filename.substr(0, filename.size() - suffix.size()) + "merges.txt";
    return HfTokenizer::from_vocab_merges(path, (file.parent_path() / merges).string());
  }
  return HfTokenizer::from_tokenizer_json(path);
}

}  // namespace coe

#endif  // COE_WITH_HF_TOKENIZER
