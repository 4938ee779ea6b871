#include "coe/tokenizer/tokenizer.h"

#include "coe/util/error.h"

#include <filesystem>

#ifdef COE_WITH_HF_TOKENIZER
#include "coe/tokenizer/hf_tokenizer.h"
#endif

namespace coe {

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (unsigned char c : text) ids.push_back(c);
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int32_t>& ids, bool /*skip_special_tokens*/) const {
  std::string out;
  out.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= kVocab) fail("byte tokenizer: id {} out of range [0, {})", id, kVocab);
    if (id < 256) out.push_back(static_cast<char>(id));
  }
  return out;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec) {
  if (spec == "byte") return std::make_unique<ByteTokenizer>();
  if (!std::filesystem::exists(spec)) fail("{}: tokenizer file not found", spec);
#ifdef COE_WITH_HF_TOKENIZER
  return load_hf_tokenizer(spec);
#else
  fail("{}: this build of coe has no HF tokenizer support (PCRE2 was not found at configure time)", spec);
#endif
}

std::vector<TokenizerFile> tokenizer_files(const std::string& spec) {
  namespace fs = std::filesystem;
  if (spec == "byte") return {};
  const fs::path path(spec);
  std::error_code ec;
  auto vocab_merges = [](const fs::path& dir) {
    return std::vector<TokenizerFile>{{(dir / "vocab.json").string(), "vocab.json"},
                                      {(dir / "merges.txt").string(), "merges.txt"}};
  };
  if (fs::is_directory(path, ec)) {
    if (fs::exists(path / "tokenizer.json", ec)) return {{(path / "tokenizer.json").string(), "tokenizer.json"}};
    return vocab_merges(path);
  }
  if (path.filename() == "vocab.json") return vocab_merges(path.parent_path());
  return {{spec, "tokenizer.json"}};
}

}  // namespace coe
