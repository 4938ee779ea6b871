// tokenizer.json loading (load_tokenizer) and encoding: f0 is the tokenizer.json, an optional
// second part (fuzz_files.h's split_files) the text to encode; without one, fixed texts.
#include "coe/tokenizer/tokenizer.h"
#include "fuzz_files.h"

namespace {

const std::string_view kTexts[] = {
    "Hello world! It's 2024: 12345 + 678 = 13023.\n\tTabs  and   spaces ",
    "<|endoftext|><s></s> added tokens mid-text<|im_end|>",
    "caf\xC3\xA9 na\xC3\xAFve \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x98\x80 \xEF\xBC\xA1 \xE2\x84\xAB",  // NFC/NFKC work
    "invalid \xFF\xFE \xC3 utf-8 \xED\xA0\x80",
};

void encode(const coe::Tokenizer& tok, std::string_view text) {
  const std::vector<int32_t> ids = tok.encode(text);
  for (int32_t id : ids)
    if (id < 0 || id >= tok.vocab_size()) std::abort();
  try {
    tok.decode(ids);  // every id encode gives is one decode knows
    tok.decode(ids, /*skip_special_tokens=*/true);
  } catch (const coe::Error& e) {
    std::fprintf(stderr, "coe fuzz: decode(encode(text)) failed: %s\n", e.what());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto files = coe::fuzz::split_files(std::string_view(reinterpret_cast<const char*>(data), size));
  const std::string path = coe::fuzz::write_file("tokenizer.json", files[0]);
  coe::fuzz::expect_only_coe_errors([&] {
    const auto tok = coe::load_tokenizer(path);
    if (files.size() > 1) {
      encode(*tok, files[1]);
      return;
    }
    for (std::string_view text : kTexts) encode(*tok, text);
  });
  return 0;
}
