#include "coe/tokenizer/hf_export.h"

#include "coe/tokenizer/tokenizer.h"
#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "hf_tokenizer_internal.h"

#include <nlohmann/json.hpp>

#include <optional>

namespace coe {
namespace {

const char* const kByteSpecials[] = {"<|pad|>", "<|bos|>", "<|eos|>"};  // ids ByteTokenizer::kPad, kBos, kEos

// The byte tokenizer as HF's tokenizers library spells it: ByteLevel maps each byte to its
// stand-in character (without the GPT-2 split regex), BPE without merges maps each to its id.
std::string byte_tokenizer_json() {
  using json = nlohmann::ordered_json;
  const json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
  json vocab = json::object();
  const auto& chars = hf::byte_level_chars();
  for (int b = 0; b < 256; ++b) vocab[chars[b]] = b;
  json added = json::array();
  for (int i = 0; i < 3; ++i)
    added.push_back({{"id", ByteTokenizer::kPad + i},
                     {"content", kByteSpecials[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  const json j = {{"version", "1.0"},
                  {"truncation", nullptr},
                  {"padding", nullptr},
                  {"added_tokens", added},
                  {"normalizer", nullptr},
                  {"pre_tokenizer", byte_level},
                  {"post_processor", nullptr},
                  {"decoder", byte_level},
                  {"model",
                   {{"type", "BPE"},
                    {"dropout", nullptr},
                    {"unk_token", nullptr},
                    {"continuing_subword_prefix", nullptr},
                    {"end_of_word_suffix", nullptr},
                    {"fuse_unk", false},
                    {"byte_fallback", false},
                    {"ignore_merges", false},
                    {"vocab", vocab},
                    {"merges", json::array()}}}};
  return j.dump(2) + "\n";
}

}  // namespace

std::vector<NamedText> hf_tokenizer_files(const std::string& spec, int64_t model_max_length) {
  const std::vector<TokenizerFile> files = tokenizer_files(spec);
  const bool byte = files.empty();
  if (!byte && files.front().stored_name != "tokenizer.json")
    fail("tokenizer {}: transformers loads a vocab.json + merges.txt tokenizer only with its pre-tokenizer; export a "
         "tokenizer.json",
         spec);
  const std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(spec);
  std::vector<NamedText> out;
  out.push_back({"tokenizer.json", byte ? byte_tokenizer_json() : read_text(files.front().path)});

  nlohmann::ordered_json config = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                                   {"model_max_length", model_max_length},
                                   {"add_bos_token", false},
                                   {"add_eos_token", false},
                                   {"clean_up_tokenization_spaces", false},
                                   // The byte tokenizer's special tokens are never made from text.
                                   {"split_special_tokens", byte}};
  for (auto [key, id] : {std::pair{"bos_token", tokenizer->bos_id()},
                         {"eos_token", tokenizer->eos_id()},
                         {"pad_token", tokenizer->pad_id()}}) {
    if (!id) continue;
    config[key] = byte ? kByteSpecials[*id - ByteTokenizer::kPad] : tokenizer->decode({*id}, false);
  }
  out.push_back({"tokenizer_config.json", config.dump(2) + "\n"});
  return out;
}

}  // namespace coe
