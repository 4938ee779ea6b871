#pragma once
// A tokenizer as the files of a Hugging Face model folder, so that transformers' AutoTokenizer
// encodes text to coe's ids (coe-export, docs/interop.md).
#include <cstdint>
#include <string>
#include <vector>

namespace coe {

struct NamedText {
  std::string name;     // the file name inside the folder
  std::string content;  // its text
};

// tokenizer.json and tokenizer_config.json for the tokenizer `spec` names (load_tokenizer's specs):
// an HF tokenizer.json is copied as it is; the byte tokenizer becomes a byte-level BPE without
// merges whose token for byte b has id b, with pad / bos / eos as the special tokens 256-258
// ("<|pad|>", "<|bos|>", "<|eos|>", which text never produces: split_special_tokens). The config
// names the special tokens, adds no BOS / EOS (coe's encode) and sets model_max_length. A
// vocab.json + merges.txt tokenizer is an error (transformers needs its pre-tokenizer).
std::vector<NamedText> hf_tokenizer_files(const std::string& spec, int64_t model_max_length);

}  // namespace coe
