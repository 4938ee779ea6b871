// The HF byte-level BPE tokenizer: exact ids against HF's golden files, round trips on real
// text, every pipeline rule on small synthetic tokenizer.json files, one-line errors, and the
// coe-tokenize command-line tool.
#include "coe/tokenizer/hf_tokenizer.h"
#include "coe/tokenizer/tokenizer.h"
#include "coe/util/error.h"
#include "support/expect_error.h"
#include "support/test_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#ifdef COE_WITH_HF_TOKENIZER

namespace fs = std::filesystem;
using coe::HfTokenizer;
using nlohmann::json;
using Strings = std::vector<std::string>;
using Ids = std::vector<int32_t>;
using coe::test::expect_error;
using coe::test::read_jsonl;

namespace {

fs::path tokenizer_dir() { return coe::test::shared_root() / "data" / "tokenizers"; }
fs::path gsm8k_test() { return coe::test::shared_root() / "data" / "gsm8k" / "test.jsonl"; }

// The real tokenizers are large; load each once per test binary.
const HfTokenizer& shared_tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<HfTokenizer>> cache;
  auto& slot = cache[name];
  if (!slot) slot = HfTokenizer::from_tokenizer_json((tokenizer_dir() / (name + "-tokenizer.json")).string());
  return *slot;
}

std::string write_file(const std::string& name, const std::string& text) {
  static const fs::path dir = coe::test::scratch_dir("tokenizer");
  return coe::test::write_file(dir / name, text);
}

// GPT-2's byte-level alphabet, written independently of the library.
std::string byte_char(int b) {
  bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  int cp = b;
  if (!printable) {
    int n = 0;
    for (int x = 0; x < b; ++x)
      if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) ++n;
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// A tokenizer.json whose vocabulary is the 256 byte-level characters (ids 0..255).
json base_tokenizer() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  return json{{"version", "1.0"},
              {"added_tokens", json::array()},
              {"normalizer", nullptr},
              {"pre_tokenizer", nullptr},
              {"decoder", {{"type", "ByteLevel"}}},
              {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}}};
}

json byte_level(bool add_prefix_space, bool use_regex = true) {
  return {
      {"type", "ByteLevel"}, {"add_prefix_space", add_prefix_space}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

json split(const std::string& kind, const std::string& pattern, const std::string& behavior, bool invert = false) {
  return {{"type", "Split"}, {"pattern", {{kind, pattern}}}, {"behavior", behavior}, {"invert", invert}};
}

json added_token(int id, const std::string& content, json options = json::object()) {
  json t = {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
            {"rstrip", false}, {"normalized", false}, {"special", true}};
  for (auto& [k, v] : options.items()) t[k] = v;
  return t;
}

std::unique_ptr<HfTokenizer> load(const json& j) {
  static int counter = 0;
  return HfTokenizer::from_tokenizer_json(write_file("t" + std::to_string(counter++) + ".json", j.dump()));
}

std::unique_ptr<HfTokenizer> with_pre_tokenizer(const json& pre) {
  json j = base_tokenizer();
  j["pre_tokenizer"] = pre;
  return load(j);
}

Ids byte_ids(const std::string& s) {
  Ids ids;
  for (unsigned char c : s) ids.push_back(c);
  return ids;
}

Ids concat(std::initializer_list<Ids> parts) {
  Ids out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

}  // namespace

// ---- exactness against HF ------------------------------------------------------------------

namespace {

// golden/ holds the goldens coe has matched from the start, golden-next/ newer sets (DeepSeek-V3);
// both are checked.
std::vector<fs::path> golden_files() {
  std::vector<fs::path> files;
  for (const char* dir : {"golden", "golden-next"}) {
    const fs::path golden_dir = tokenizer_dir() / dir;
    if (!fs::is_directory(golden_dir)) continue;
    for (const auto& entry : fs::directory_iterator(golden_dir)) {
      const std::string f = entry.path().filename().string();
      if (f.rfind("golden-", 0) == 0 && entry.path().extension() == ".jsonl") files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end(),
            [](const fs::path& a, const fs::path& b) { return a.filename() < b.filename(); });
  return files;
}

// golden-<name>-<split>.jsonl is checked with <name>-tokenizer.json.
std::string golden_tokenizer_name(const fs::path& file) {
  const std::string stem = file.stem().string().substr(std::string("golden-").size());
  return stem.substr(0, stem.rfind('-'));
}

}  // namespace

TEST(HfTokenizerGolden, EveryGoldenFileMatchesExactly) {
  const std::vector<fs::path> files = golden_files();
  ASSERT_FALSE(files.empty()) << "no golden-*.jsonl under " << tokenizer_dir();
  std::set<std::string> names;
  for (const auto& file : files) {
    const std::string name = golden_tokenizer_name(file);
    names.insert(name);
    const auto& tok = shared_tokenizer(name);
    std::ifstream in(file);
    std::string line;
    size_t line_no = 0, matched = 0;
    bool reported = false;
    while (std::getline(in, line)) {
      ++line_no;
      const json record = json::parse(line);
      const Ids expected = record.at("ids").get<Ids>();
      const Ids got = tok.encode(record.at("text").get<std::string>());
      if (got == expected) {
        ++matched;
      } else if (!reported) {
        reported = true;
        ADD_FAILURE() << file.filename().string() << " line " << line_no
                      << ": ids differ\n  text: " << record.at("text") << "\n  expected: " << json(expected)
                      << "\n  got:      " << json(got);
      }
    }
    std::cout << "[ golden   ] " << file.filename().string() << ": " << matched << "/" << line_no << " lines match ("
              << name << "-tokenizer.json)\n";
    EXPECT_GT(line_no, 0u) << file;
    EXPECT_EQ(matched, line_no) << file;
  }
  for (const char* name : {"gpt-neox", "qwen2", "qwen2-digits3", "deepseek-v3"})
    EXPECT_EQ(names.count(name), 1u) << "no golden file for " << name;
}

TEST(HfTokenizerGolden, DecodeInvertsEncodeOnGoldenAndGsm8kText) {
  std::vector<std::string> texts;
  for (const auto& file : golden_files())
    for (const auto& r : read_jsonl(file)) texts.push_back(r.at("text"));
  for (const auto& r : read_jsonl(gsm8k_test())) {
    texts.push_back(r.at("question"));
    texts.push_back(r.at("answer"));
    texts.push_back(r.at("question").get<std::string>() + " " + r.at("answer").get<std::string>());
  }
  ASSERT_GT(texts.size(), 5000u);
  for (const std::string name : {"gpt-neox", "qwen2", "qwen2-digits3", "deepseek-v3"}) {
    const auto& tok = shared_tokenizer(name);
    size_t ok = 0, unchanged = 0;
    bool reported = false;
    for (const auto& text : texts) {
      // normalize() is the identity for DeepSeek-V3 (no normaliser) and NFC for the others.
      const std::string normalized = tok.normalize(text);
      unchanged += normalized == text;
      const std::string back = tok.decode(tok.encode(text));
      if (back == normalized) {
        ++ok;
      } else if (!reported) {
        reported = true;
        ADD_FAILURE() << name << ": round trip differs for " << json(text) << " -> " << json(back);
      }
    }
    EXPECT_EQ(ok, texts.size()) << name;
    if (name == "deepseek-v3") EXPECT_EQ(unchanged, texts.size());
  }
}

TEST(HfTokenizerGolden, RealTokenizerFacts) {
  const auto& neox = shared_tokenizer("gpt-neox");
  EXPECT_EQ(neox.vocab_size(), 50277);
  EXPECT_EQ(neox.eos_id(), 0);
  EXPECT_EQ(neox.pad_id(), 1);
  EXPECT_EQ(neox.bos_id(), std::nullopt);
  EXPECT_EQ(neox.name(), "gpt-neox-tokenizer.json");
  const auto& qwen = shared_tokenizer("qwen2");
  EXPECT_EQ(qwen.vocab_size(), 151646);
  EXPECT_EQ(qwen.eos_id(), 151643);
  EXPECT_EQ(qwen.pad_id(), 151643);  // no pad token: falls back to eos
  EXPECT_EQ(qwen.bos_id(), std::nullopt);
  EXPECT_EQ(qwen.fingerprint().size(), 16u);
  EXPECT_NE(qwen.fingerprint(), shared_tokenizer("qwen2-digits3").fingerprint());
  const auto& deepseek = shared_tokenizer("deepseek-v3");  // HF: get_vocab_size(True), token_to_id
  EXPECT_EQ(deepseek.vocab_size(), 128815);
  EXPECT_EQ(deepseek.bos_id(), 0);
  EXPECT_EQ(deepseek.eos_id(), 1);
  EXPECT_EQ(deepseek.pad_id(), 2);
  // Special tokens are cut out of raw text; the rest is encoded as usual.
  const Ids inner = qwen.encode("user\nhi");
  EXPECT_EQ(qwen.encode("<|im_start|>user\nhi<|im_end|>"), concat({{151644}, inner, {151645}}));
  EXPECT_EQ(qwen.decode(concat({{151644}, inner, {151645}})), "<|im_start|>user\nhi<|im_end|>");
  // The factory dispatches to this loader.
  auto via_factory = coe::load_tokenizer((tokenizer_dir() / "gpt-neox-tokenizer.json").string());
  EXPECT_EQ(via_factory->encode("Hello, world!"), (Ids{12092, 13, 1533, 2}));
}

TEST(HfTokenizerGolden, SkipSpecialTokensDropsSpecialAddedTokens) {
  // Expected texts: HF tokenizers 0.23.2, decode(ids, skip_special_tokens).
  const auto& qwen = shared_tokenizer("qwen2");
  const Ids chat = qwen.encode("<|im_start|>user\nhi<|im_end|><|endoftext|>");
  EXPECT_EQ(qwen.decode(chat), "<|im_start|>user\nhi<|im_end|><|endoftext|>");
  EXPECT_EQ(qwen.decode(chat, /*skip_special_tokens=*/true), "user\nhi");
  const auto& deepseek = shared_tokenizer("deepseek-v3");
  const Ids ds = deepseek.encode("<｜begin▁of▁sentence｜>Hi<｜end▁of▁sentence｜>");
  EXPECT_EQ(ds.front(), deepseek.bos_id());
  EXPECT_EQ(deepseek.decode(ds, true), "Hi");
  // GPT-NeoX's added runs of spaces are not special: they stay.
  const auto& neox = shared_tokenizer("gpt-neox");
  const Ids spaces = neox.encode("a    b<|endoftext|>");
  EXPECT_EQ(neox.decode(spaces, true), "a    b");
  // The byte tokenizer has no text for its specials either way.
  coe::ByteTokenizer bytes;
  EXPECT_EQ(bytes.decode({'h', 'i', coe::ByteTokenizer::kEos}, true), "hi");
}

// Characters whose properties differ between Unicode versions, with HF's behaviour (tokenizers
// 0.23.2: Oniguruma's Unicode 16 regex classes, Rust's Unicode tables for Digits and added tokens,
// Unicode 9 normalization data). docs/tokenizer.md, "Unicode versions".
TEST(HfTokenizerUnicode, RegexClassesAreOnigurumas) {
  const auto& deepseek = shared_tokenizer("deepseek-v3");
  // U+11F04, U+1E4D0: letters since Unicode 15 (PCRE2 10.42 knows Unicode 14): a space joins them.
  EXPECT_EQ(deepseek.pre_tokenize(" \U00011F04\U00011F05"), (Strings{"Ġðĳ¼Ħðĳ¼ħ"}));
  EXPECT_EQ(deepseek.pre_tokenize("x \U0001E4D0"), (Strings{"x", "ĠðŀĵĲ"}));
  EXPECT_EQ(deepseek.pre_tokenize(" \u0301\u0302a"), (Strings{"ĠÌģÌĤa"}));
  // U+180E was whitespace before Unicode 6.3; PCRE2's \s still matches it, Oniguruma's does not.
  EXPECT_EQ(shared_tokenizer("qwen2").pre_tokenize("a\u180Eb c"), (Strings{"a", "áłİb", "Ġc"}));
  EXPECT_EQ(shared_tokenizer("gpt-neox").pre_tokenize("a\u180Eb c"), (Strings{"a", "áłİ", "b", "Ġc"}));
  // Case-insensitive contractions: the long s folds to s in both engines.
  EXPECT_EQ(shared_tokenizer("qwen2").pre_tokenize("IT'\u017F ok"), (Strings{"IT", "'Å¿", "Ġok"}));
  // \w, \d, \s and the word boundary use the same tables.
  auto word = with_pre_tokenizer(split("Regex", R"(\w+)", "Removed", /*invert=*/true));
  EXPECT_EQ(word->pre_tokenize("a\U00010D4Ab c"), (Strings{"a\U00010D4Ab", "c"}));
  auto boundary = with_pre_tokenizer(split("Regex", R"(\b)", "Isolated"));
  EXPECT_EQ(boundary->pre_tokenize("\U00010D4A\U00010D4B-x"), (Strings{"\U00010D4A\U00010D4B", "-", "x"}));
}

TEST(HfTokenizerUnicode, DigitsUseRustIsNumeric) {
  // Nag Mundari (Unicode 15) and Garay (Unicode 16) digits are numeric for HF's Digits.
  auto digits = with_pre_tokenizer({{"type", "Digits"}, {"individual_digits", false}});
  EXPECT_EQ(digits->pre_tokenize("x\U0001E4F1\U00010D40y"), (Strings{"x", "\U0001E4F1\U00010D40", "y"}));
}

TEST(HfTokenizerUnicode, NormalizationUsesUnicode9Data) {
  const auto& qwen = shared_tokenizer("qwen2");
  // U+08CA is new in Unicode 14: a starter to HF's tables, so it stays before U+032E (class 220).
  EXPECT_EQ(qwen.normalize(" \u08CA\u032E"), " \u08CA\u032E");
  // Marks HF knows are reordered and composed as usual.
  EXPECT_EQ(qwen.normalize("a\u0302\u0323"), "\u1EAD");
  EXPECT_EQ(qwen.normalize("\u1100\u1161\u11A8"), "\uAC01");
  EXPECT_EQ(qwen.normalize("\uAC00\u11A7"), "\uAC00\u11A7");  // U+11A7 is no trailing consonant
  json j = base_tokenizer();
  j["normalizer"] = {{"type", "NFKC"}};
  EXPECT_EQ(load(j)->normalize("\u2474\uFB03\u1E9B\u0323"), "(1)ffi\u1E69");
  j["normalizer"] = {{"type", "NFD"}};
  EXPECT_EQ(load(j)->normalize("\u1E69\uAC01"), "s\u0323\u0307\u1100\u1161\u11A8");
}

TEST(HfTokenizerGolden, ConcurrentEncodingMatchesSequential) {
  auto tok = HfTokenizer::from_tokenizer_json((tokenizer_dir() / "qwen2-digits3-tokenizer.json").string());
  std::vector<std::string> texts;
  for (const auto& r : read_jsonl(gsm8k_test(), 400))
    texts.push_back(r.at("question").get<std::string>() + " " + r.at("answer").get<std::string>());
  std::vector<Ids> a(texts.size()), b(texts.size());
  std::thread t1([&] {
    for (size_t i = 0; i < texts.size(); ++i) a[i] = tok->encode(texts[i]);
  });
  std::thread t2([&] {
    for (size_t i = texts.size(); i-- > 0;) b[i] = tok->encode(texts[i]);
  });
  t1.join();
  t2.join();
  const auto& reference = shared_tokenizer("qwen2-digits3");
  for (size_t i = 0; i < texts.size(); ++i) {
    const Ids expected = reference.encode(texts[i]);
    ASSERT_EQ(a[i], expected) << i;
    ASSERT_EQ(b[i], expected) << i;
  }
}

// ---- pre-tokenizers (expected splits are those of HF's own tests) -------------------------

TEST(HfTokenizerRules, SplitBehaviorsWithInvert) {
  const std::string text = "How are you doing?";
  const std::map<std::string, Strings> expected{
      {"Removed", {"How", "are", "you", "doing", "?"}},
      {"Isolated", {"How", " ", "are", " ", "you", " ", "doing", "?"}},
      {"MergedWithPrevious", {"How ", "are ", "you ", "doing", "?"}},
      {"MergedWithNext", {"How", " are", " you", " doing", "?"}},
      {"Contiguous", {"How", " ", "are", " ", "you", " ", "doing?"}},
  };
  for (const auto& [behavior, pieces] : expected) {
    auto tok = with_pre_tokenizer(split("Regex", R"(\w+|[^\w\s]+)", behavior, /*invert=*/true));
    EXPECT_EQ(tok->pre_tokenize(text), pieces) << behavior;
  }
}

TEST(HfTokenizerRules, SplitStringPatternsAreLiteral) {
  auto by_regex = with_pre_tokenizer(split("Regex", R"(\s+)", "Removed"));
  auto by_string = with_pre_tokenizer(split("String", " ", "Removed"));
  EXPECT_EQ(by_regex->pre_tokenize("Hey, man!"), (Strings{"Hey,", "man!"}));
  EXPECT_EQ(by_string->pre_tokenize("Hey, man!"), (Strings{"Hey,", "man!"}));
  auto inverted = with_pre_tokenizer(split("String", "Hello", "Removed", /*invert=*/true));
  EXPECT_EQ(inverted->pre_tokenize("Hello Hello Hello"), (Strings{"Hello", "Hello", "Hello"}));
  auto dot = with_pre_tokenizer(split("String", ".*", "Isolated"));
  EXPECT_EQ(dot->pre_tokenize("a.*b.c"), (Strings{"a", ".*", "b.c"}));
  auto merged = with_pre_tokenizer(split("String", "-", "MergedWithNext"));
  EXPECT_EQ(merged->pre_tokenize("the-final--countdown"), (Strings{"the", "-final", "-", "-countdown"}));
}

TEST(HfTokenizerRules, RegexWhitespaceFollowsOniguruma) {
  // Oniguruma's \s includes U+0085 (NEL); PCRE2's does not unless adapted.
  auto tok = with_pre_tokenizer(split("Regex", R"(\s+)", "Removed"));
  EXPECT_EQ(tok->pre_tokenize("a\u0085b c"), (Strings{"a", "b", "c"}));
  auto negated = with_pre_tokenizer(split("Regex", R"(\S+)", "Removed"));
  EXPECT_EQ(negated->pre_tokenize("a\u0085b"), (Strings{"\u0085"}));
  // Case-insensitive contractions and look-ahead, as in the Qwen2 pattern.
  auto qwen_like = with_pre_tokenizer(split("Regex", R"((?i:'s|'re)|\p{L}+|\s+(?!\S)|\s+)", "Isolated"));
  EXPECT_EQ(qwen_like->pre_tokenize("IT'S   ok"), (Strings{"IT", "'S", "  ", " ", "ok"}));
}

TEST(HfTokenizerRules, Digits) {
  auto grouped = with_pre_tokenizer({{"type", "Digits"}, {"individual_digits", false}});
  EXPECT_EQ(grouped->pre_tokenize("Hey 123 friend!"), (Strings{"Hey ", "123", " friend!"}));
  auto single = with_pre_tokenizer({{"type", "Digits"}, {"individual_digits", true}});
  EXPECT_EQ(single->pre_tokenize("Hey 123 friend!"), (Strings{"Hey ", "1", "2", "3", " friend!"}));
  // Any Unicode number counts (Rust's char::is_numeric): Arabic-Indic digits and superscripts.
  EXPECT_EQ(grouped->pre_tokenize("x\u0661\u0662\u00B2y"), (Strings{"x", "\u0661\u0662\u00B2", "y"}));
}

TEST(HfTokenizerRules, ByteLevel) {
  const std::string text = "Hello my friend, how is your day going?";
  EXPECT_EQ(with_pre_tokenizer(byte_level(false))->pre_tokenize(text),
            (Strings{"Hello", "Ġmy", "Ġfriend", ",", "Ġhow", "Ġis", "Ġyour", "Ġday", "Ġgoing", "?"}));
  auto prefixed = with_pre_tokenizer(byte_level(true));
  EXPECT_EQ(prefixed->pre_tokenize(text).front(), "ĠHello");
  EXPECT_EQ(prefixed->pre_tokenize(" " + text), prefixed->pre_tokenize(text));  // no second space
  EXPECT_EQ(with_pre_tokenizer(byte_level(true, false))->pre_tokenize(text),
            (Strings{"ĠHelloĠmyĠfriend,ĠhowĠisĠyourĠdayĠgoing?"}));
  EXPECT_EQ(with_pre_tokenizer(byte_level(false))->pre_tokenize("Hello there       dear\nHi"),
            (Strings{"Hello", "Ġthere", "ĠĠĠĠĠĠ", "Ġdear", "Ċ", "Hi"}));
  // Bytes of a multi-byte character map one by one.
  EXPECT_EQ(with_pre_tokenizer(byte_level(false))->pre_tokenize("i⭢j"), (Strings{"i", "âŃ¢", "j"}));
}

TEST(HfTokenizerRules, SequenceRunsStepsInOrder) {
  json digits_then_bytes = {
      {"type", "Sequence"},
      {"pretokenizers", json::array({json{{"type", "Digits"}, {"individual_digits", true}}, byte_level(false)})}};
  EXPECT_EQ(with_pre_tokenizer(digits_then_bytes)->pre_tokenize("ab12 cd"), (Strings{"ab", "1", "2", "Ġcd"}));
  // A Split after ByteLevel sees the byte-level alphabet ("Ġ" for a space).
  json bytes_then_split = {
      {"type", "Sequence"},
      {"pretokenizers", json::array({byte_level(false, false), split("String", "Ġ", "MergedWithNext")})}};
  EXPECT_EQ(with_pre_tokenizer(bytes_then_split)->pre_tokenize("a b c"), (Strings{"a", "Ġb", "Ġc"}));
}

// ---- normalizers and added tokens ----------------------------------------------------------

TEST(HfTokenizerRules, Normalizers) {
  json j = base_tokenizer();
  j["normalizer"] = {{"type", "NFKC"}};
  EXPECT_EQ(load(j)->normalize("\uFB01 \u2460 e\u0301"), "fi 1 \u00E9");
  j["normalizer"] = {{"type", "NFC"}};
  EXPECT_EQ(load(j)->normalize("\uFB01 e\u0301"), "\uFB01 \u00E9");
  j["normalizer"] = json::parse(R"({"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "NFC"}]})");
  EXPECT_EQ(load(j)->normalize("e\u0301"), "\u00E9");
  j["normalizer"] = nullptr;
  EXPECT_EQ(load(j)->normalize("e\u0301"), "e\u0301");
}

TEST(HfTokenizerRules, AddedTokensLongestMatchFirst) {
  json j = base_tokenizer();
  j["pre_tokenizer"] = byte_level(false);
  j["added_tokens"] = json::array({added_token(256, "<a>"), added_token(257, "<a><b>")});
  auto tok = load(j);
  EXPECT_EQ(tok->encode("x<a><b>y"), (Ids{'x', 257, 'y'}));
  EXPECT_EQ(tok->encode("x<a><c>"), concat({{'x', 256}, byte_ids("<c>")}));
  EXPECT_EQ(tok->decode({'x', 257, 'y'}), "x<a><b>y");
  EXPECT_EQ(tok->token_to_id("<a><b>"), 257);
}

TEST(HfTokenizerRules, AddedTokensStripAndSingleWord) {
  json j = base_tokenizer();
  j["pre_tokenizer"] = byte_level(false);
  j["added_tokens"] = json::array({added_token(256, "<m>", {{"lstrip", true}})});
  EXPECT_EQ(load(j)->pre_tokenize("Hi <m> there"), (Strings{"Hi", "<m>", "Ġthere"}));
  EXPECT_EQ(load(j)->normalize("Hi <m> there"), "Hi<m> there");
  j["added_tokens"] = json::array({added_token(256, "<m>", {{"rstrip", true}})});
  EXPECT_EQ(load(j)->pre_tokenize("Hi <m> there"), (Strings{"Hi", "Ġ", "<m>", "there"}));
  j["added_tokens"] = json::array({added_token(256, "ing", {{"single_word", true}})});
  auto single = load(j);
  EXPECT_EQ(single->pre_tokenize("I like dancing"), (Strings{"I", "Ġlike", "Ġdancing"}));
  EXPECT_EQ(single->pre_tokenize("I like ing."), (Strings{"I", "Ġlike", "Ġ", "ing", "."}));
}

TEST(HfTokenizerRules, AddedTokensNormalizedOrRaw) {
  json j = base_tokenizer();
  j["normalizer"] = {{"type", "NFKC"}};
  j["pre_tokenizer"] = byte_level(false);
  // A raw special token is matched before normalization would change it; a normalized one is
  // matched in normalized text, so a compatibility form of it matches too.
  j["added_tokens"] = json::array(
      {added_token(256, "<|\uFB01|>"), added_token(257, "\u00E9t\u00E9", {{"normalized", true}, {"special", false}})});
  auto tok = load(j);
  EXPECT_EQ(tok->encode("<|\uFB01|>"), (Ids{256}));
  EXPECT_EQ(tok->encode("e\u0301te\u0301"), (Ids{257}));
  EXPECT_EQ(tok->normalize("<|\uFB01|>\uFB01"), "<|\uFB01|>fi");
  j["added_tokens"][1]["normalized"] = false;
  EXPECT_NE(load(j)->encode("e\u0301te\u0301"), (Ids{257}));
}

// ---- the BPE model ----------------------------------------------------------------------------

TEST(HfTokenizerRules, MergeRanksDecide) {
  json j = base_tokenizer();
  j["pre_tokenizer"] = byte_level(false);
  j["model"]["vocab"]["ab"] = 256;
  j["model"]["vocab"]["bc"] = 257;
  j["model"]["merges"] = json::array({"b c", "a b"});
  EXPECT_EQ(load(j)->encode("abc"), (Ids{'a', 257}));
  j["model"]["merges"] = json::array({json::array({"a", "b"}), json::array({"b", "c"})});  // pair form, other order
  EXPECT_EQ(load(j)->encode("abc"), (Ids{256, 'c'}));
  j["model"]["merges"] = json::array({"#version: 0.2", "a b", "b c"});
  EXPECT_EQ(load(j)->encode("abcab"), (Ids{256, 'c', 256}));
}

TEST(HfTokenizerRules, UnknownCharactersAndPrefixes) {
  json j = {{"model",
             {{"type", "BPE"},
              {"vocab", {{"a", 0}, {"##b", 1}, {"ab", 2}, {"<unk>", 3}}},
              {"merges", json::array({"a ##b"})},
              {"unk_token", "<unk>"},
              {"continuing_subword_prefix", "##"}}}};
  EXPECT_EQ(load(j)->encode("ab"), (Ids{2}));
  EXPECT_EQ(load(j)->encode("xxa"), (Ids{3, 3, 3}));  // "##x", "##x", "##a" are unknown
  j["model"]["fuse_unk"] = true;
  EXPECT_EQ(load(j)->encode("xxab"), (Ids{3, 1}));
  j["model"]["unk_token"] = nullptr;
  EXPECT_EQ(load(j)->encode("xab"), (Ids{1}));  // HF drops unknown characters without an unk token
}

TEST(HfTokenizerRules, InvalidUtf8AndPartialDecode) {
  auto tok = with_pre_tokenizer(byte_level(false));
  EXPECT_EQ(tok->encode("a\xff"
                        "b"),
            tok->encode("a\uFFFD"
                        "b"));
  EXPECT_EQ(tok->encode("\xe2\x82"), tok->encode("\uFFFD"));  // truncated sequence: one U+FFFD
  const Ids e_acute = tok->encode("\u00E9");
  ASSERT_EQ(e_acute.size(), 2u);
  EXPECT_EQ(tok->decode({e_acute[0]}), "\uFFFD");
  EXPECT_EQ(tok->decode(e_acute), "\u00E9");
  expect_error([&] { tok->decode({100000}); }, {"id 100000", "not in the vocabulary"});
  EXPECT_TRUE(tok->encode("").empty());
}

TEST(HfTokenizerRules, Gpt2VocabAndMergesFiles) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  vocab["Ġt"] = 256;
  vocab["he"] = 257;
  vocab["Ġthe"] = 258;
  vocab["<|endoftext|>"] = 259;
  write_file("gpt2/vocab.json", vocab.dump());
  write_file("gpt2/merges.txt", "#version: 0.2\nĠ t\nh e\nĠt he\n");
  const fs::path dir = fs::path(write_file("gpt2/x", "")).parent_path();
  auto from_dir = coe::load_hf_tokenizer(dir.string());
  auto from_vocab = coe::load_hf_tokenizer((dir / "vocab.json").string());
  const Ids expected = concat({{'a', 258}, byte_ids(" cat"), {259}});  // "Ġcat" has no merges
  EXPECT_EQ(from_dir->encode("a the cat<|endoftext|>"), expected);
  EXPECT_EQ(from_vocab->encode("a the cat<|endoftext|>"), from_dir->encode("a the cat<|endoftext|>"));
  EXPECT_EQ(from_dir->eos_id(), 259);
  EXPECT_EQ(from_dir->decode(expected), "a the cat<|endoftext|>");
  EXPECT_EQ(from_dir->fingerprint(), from_vocab->fingerprint());

  write_file("gpt2/merges.txt", "#version: 0.2\nĠ t\nh e\nĠt he\nh\n");
  expect_error([&] { coe::load_hf_tokenizer(dir.string()); }, {"merges.txt", "line 5", "bad merge"});
}

TEST(HfTokenizerRules, FingerprintHashesContent) {
  json j = base_tokenizer();
  const std::string a = write_file("fp/a.json", j.dump());
  const std::string a_copy = write_file("fp/a_copy.json", j.dump());
  j["model"]["vocab"]["ab"] = 256;
  j["model"]["merges"] = json::array({"a b"});
  const std::string b = write_file("fp/b.json", j.dump());
  EXPECT_EQ(coe::load_hf_tokenizer(a)->fingerprint(), coe::load_hf_tokenizer(a_copy)->fingerprint());
  EXPECT_NE(coe::load_hf_tokenizer(a)->fingerprint(), coe::load_hf_tokenizer(b)->fingerprint());
}

// ---- errors ----------------------------------------------------------------------------------

TEST(HfTokenizerErrors, UnreadableOrMalformedFile) {
  expect_error([] { coe::load_hf_tokenizer("/nonexistent/dir/tokenizer.json"); },
               {"/nonexistent/dir/tokenizer.json", "cannot read"});
  expect_error([] { coe::load_tokenizer("/nonexistent/tokenizer.json"); },
               {"/nonexistent/tokenizer.json", "not found"});
  const std::string broken = write_file("broken.json", "{\"model\": {\"type\": \"BPE\",");
  expect_error([&] { coe::load_hf_tokenizer(broken); }, {broken, "malformed JSON"});
  const std::string array = write_file("array.json", "[1, 2]");
  expect_error([&] { coe::load_hf_tokenizer(array); }, {array, "expected a JSON object"});
  const std::string no_model = write_file("no_model.json", "{}");
  expect_error([&] { coe::load_hf_tokenizer(no_model); }, {no_model, "model", "missing"});
}

// Found by fuzz/fuzz_tokenizer: a number beyond a double (1e400) is nlohmann's out_of_range 406,
// which escaped as that exception instead of "malformed JSON".
TEST(HfTokenizerErrors, NumberOverflowIsMalformedJson) {
  const std::string big = write_file("big.json", "{\"version\": 39e880}");
  expect_error([&] { coe::load_hf_tokenizer(big); }, {big, "malformed JSON", "number overflow"});
}

TEST(HfTokenizerErrors, UnsupportedComponentsAreNamed) {
  json j = base_tokenizer();
  j["model"]["type"] = "WordPiece";
  expect_error([&] { load(j); }, {"model.type", "unsupported model type 'WordPiece'"});

  j = base_tokenizer();
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", json::array({byte_level(false), json{{"type", "Metaspace"}}})}};
  expect_error([&] { load(j); }, {"pre_tokenizer.pretokenizers[1].type", "unsupported pre-tokenizer type 'Metaspace'"});

  j = base_tokenizer();
  j["normalizer"] = {{"type", "Lowercase"}};
  expect_error([&] { load(j); }, {"normalizer.type", "unsupported normalizer type 'Lowercase'"});

  j = base_tokenizer();
  j["decoder"] = {{"type", "WordPiece"}};
  expect_error([&] { load(j); }, {"decoder.type", "unsupported decoder type 'WordPiece'"});

  j = base_tokenizer();
  j["pre_tokenizer"] = split("Regex", "(unclosed", "Isolated");
  expect_error([&] { load(j); }, {"pre_tokenizer.pattern.Regex", "invalid regex /(unclosed/"});

  j = base_tokenizer();
  j["pre_tokenizer"] = split("Regex", "x", "Sideways");
  expect_error([&] { load(j); }, {"pre_tokenizer.behavior", "unknown split behavior 'Sideways'"});

  j = base_tokenizer();
  j["model"]["dropout"] = 0.1;
  expect_error([&] { load(j); }, {"model.dropout", "not supported"});
}

TEST(HfTokenizerErrors, CatastrophicRegexFailsQuickly) {
  json j = base_tokenizer();
  j["pre_tokenizer"] = split("Regex", "(a+)+$", "Isolated");
  const std::string path = write_file("catastrophic.json", j.dump());
  auto tok = coe::load_hf_tokenizer(path);
  const auto start = std::chrono::steady_clock::now();
  try {
    tok->encode(std::string(5000, 'a') + "b");
    ADD_FAILURE() << "no error";
  } catch (const coe::Error& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    for (const std::string& part : std::vector<std::string>{path, "/(a+)+$/", "backtracking limit", "match limit"})
      EXPECT_NE(message.find(part), std::string::npos) << "missing '" << part << "' in: " << message;
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 10.0);
  // The same limits let real patterns through long runs (their backtracking is linear).
  const auto& deepseek = shared_tokenizer("deepseek-v3");
  EXPECT_FALSE(deepseek.encode(std::string(2'000'000, ' ') + "x").empty());
  // Patterns with raw line breaks are printed on one line.
  j["pre_tokenizer"] = split("Regex", "[\r\n]+(", "Isolated");
  expect_error([&] { load(j); }, {"invalid regex /[\\r\\n]+(/"});
}

// Found by fuzz/fuzz_tokenizer's seeds with one id changed: the id tables have highest id + 1
// entries, so an id of 2^31 - 1 allocated 64 GB (ASan: out of memory; a plain build: killed).
// 5,000,000 here, which the old code allocated (320 MB) without an error.
TEST(HfTokenizerErrors, SparseIdsAreRefused) {
  json j = base_tokenizer();
  j["model"]["vocab"]["far"] = 5'000'000;
  expect_error([&] { load(j); }, {"token id 5000000 for 257 tokens", "at most twice the token count"});
  j["model"]["vocab"].erase("far");
  j["added_tokens"].push_back(added_token(2'147'483'647, "<big>"));
  expect_error([&] { load(j); }, {"token id 2147483647"});
  j["added_tokens"] = json::array({added_token(256 + 1000, "<reserved-gap>")});  // a few holes are fine
  EXPECT_EQ(load(j)->vocab_size(), 1257);
}

TEST(HfTokenizerErrors, DeeplyNestedJson) {
  const std::string deep =
      write_file("deep.json", "{\"model\": " + std::string(100, '[') + std::string(100, ']') + "}");
  expect_error([&] { coe::load_hf_tokenizer(deep); }, {deep, "nested more than 64 levels"});
}

TEST(HfTokenizerErrors, RegexConstructsWithoutHfTables) {
  // Properties coe has no HF table for fail at load time rather than match with PCRE2's tables.
  for (const std::string pattern :
       {R"(\p{Han}+)", R"([[:alpha:]]+)", R"([a-z&&[^aeiou]])", R"(\X)", R"(\pL)", R"((?i)[\p{Lu}x])", R"((?s:.))"}) {
    json j = base_tokenizer();
    j["pre_tokenizer"] = split("Regex", pattern, "Isolated");
    expect_error([&] { load(j); }, {"pre_tokenizer.pattern.Regex", "invalid regex", "not supported"});
  }
  // find_all chooses where each search starts (windows): \G, whose match depends on it, and
  // PCRE2's (*VERB)s, which Ruby syntax rejects, fail at load time too.
  for (const std::string pattern : {R"(\Ga)", R"((*COMMIT)a|b)", R"((*LIMIT_MATCH=1)a)"}) {
    json j = base_tokenizer();
    j["pre_tokenizer"] = split("Regex", pattern, "Isolated");
    expect_error([&] { load(j); }, {"pre_tokenizer.pattern.Regex", "invalid regex", "not supported"});
  }
  // Long and loose property names, \p{^..}, \P{..} and \uHHHH are Oniguruma syntax that works.
  auto tok = with_pre_tokenizer(split("Regex", R"(\p{Letter}+|\p{^ L}|\u0021)", "Isolated"));
  EXPECT_EQ(tok->pre_tokenize("ab1!"), (Strings{"ab", "1", "!"}));
  // Options as in Ruby (HF tokenizers 0.23.2's splits): (?i) does not fold a bare \p{Lu}, on ASCII
  // text too; (?m) lets . match a newline.
  auto caseless = with_pre_tokenizer(split("Regex", R"((?i)\p{Lu})", "Removed"));
  EXPECT_EQ(caseless->pre_tokenize("aAbB1"), (Strings{"a", "b", "1"}));
  EXPECT_EQ(caseless->pre_tokenize("a\u00C0b\u00E01"), (Strings{"a", "b\u00E01"}));
  auto dot_all = with_pre_tokenizer(split("Regex", R"((?m:a.b))", "Isolated"));
  EXPECT_EQ(dot_all->pre_tokenize("a\nbxaAbB"), (Strings{"a\nb", "x", "aAb", "B"}));
}

TEST(HfTokenizerErrors, BadMerges) {
  json j = base_tokenizer();
  j["model"]["vocab"]["ab"] = 256;
  j["model"]["merges"] = json::array({"a b", "a b c"});
  expect_error([&] { load(j); }, {"model.merges[1]", "bad merge \"a b c\""});
  j["model"]["merges"] = json::array({"a b", json::array({"a"})});
  expect_error([&] { load(j); }, {"model.merges[1]", "bad merge"});
  j["model"]["merges"] = json::array({"a b", "a zz"});
  expect_error([&] { load(j); }, {"model.merges[1]", "token 'zz' is not in the vocabulary"});
  j["model"]["merges"] = json::array({"b c"});
  expect_error([&] { load(j); }, {"model.merges[0]", "merged token 'bc' is not in the vocabulary"});
  j["model"]["merges"] = json::array({"a b"});
  j["model"]["vocab"]["neg"] = -4;
  expect_error([&] { load(j); }, {"model.vocab.neg", "expected a token id"});
}

// ---- coe-tokenize ----------------------------------------------------------------------------

namespace {

std::string tool() { return coe::test::tool_path("coe-tokenize").string(); }

// Runs coe-tokenize with stdin from `in` and stdout to `out`; `log` gets its stderr.
int run_tool(const std::string& args, const std::string& in, const std::string& out, std::string* log) {
  return coe::test::run_command("(" + tool() + " " + args + " < " + in + " > " + out + ")", log);
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

}  // namespace

TEST(CoeTokenizeTool, EncodesGsm8kLinesLikeTheLibrary) {
  ASSERT_TRUE(fs::exists(tool())) << "build the coe-tokenize target first: " << tool();
  const std::string tokenizer = (tokenizer_dir() / "gpt-neox-tokenizer.json").string();
  const auto records = read_jsonl(gsm8k_test(), 40);
  std::string input;
  for (const auto& r : records) input += r.dump() + "\n";
  const std::string in = write_file("tool/in.jsonl", input);
  const std::string out = write_file("tool/out.jsonl", "");
  std::string log;
  for (const std::string threads : {"1", "3"}) {
    const int rc =
        run_tool("--tokenizer " + tokenizer + " --field question --field answer --threads " + threads, in, out, &log);
    ASSERT_EQ(rc, 0) << log;
    const auto lines = read_lines(out);
    ASSERT_EQ(lines.size(), records.size());
    const auto& tok = shared_tokenizer("gpt-neox");
    for (size_t i = 0; i < records.size(); ++i) {
      const std::string text =
          records[i].at("question").get<std::string>() + " " + records[i].at("answer").get<std::string>();
      EXPECT_EQ(json::parse(lines[i]).at("ids").get<Ids>(), tok.encode(text)) << "line " << i + 1;
    }
  }
  // --decode turns the ids back into text.
  const std::string decoded = write_file("tool/decoded.jsonl", "");
  ASSERT_EQ(run_tool("--tokenizer " + tokenizer + " --decode --threads 2", out, decoded, &log), 0) << log;
  const auto texts = read_lines(decoded);
  ASSERT_EQ(texts.size(), records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    const std::string text =
        records[i].at("question").get<std::string>() + " " + records[i].at("answer").get<std::string>();
    EXPECT_EQ(json::parse(texts[i]).at("text").get<std::string>(), shared_tokenizer("gpt-neox").normalize(text));
  }
}

TEST(CoeTokenizeTool, DecodeCanSkipSpecialTokens) {
  ASSERT_TRUE(fs::exists(tool())) << tool();
  const std::string tokenizer = (tokenizer_dir() / "qwen2-tokenizer.json").string();
  const auto& qwen = shared_tokenizer("qwen2");
  const std::string in =
      write_file("tool/chat_ids.jsonl", json{{"ids", qwen.encode("<|im_start|>user\nhi<|im_end|>")}}.dump() + "\n");
  const std::string out = write_file("tool/chat_text.jsonl", "");
  std::string log;
  ASSERT_EQ(run_tool("--tokenizer " + tokenizer + " --decode --skip-special-tokens", in, out, &log), 0) << log;
  EXPECT_EQ(json::parse(read_lines(out).at(0)).at("text"), "user\nhi");  // HF: decode(ids, skip_special_tokens=True)
  ASSERT_EQ(run_tool("--tokenizer " + tokenizer + " --decode", in, out, &log), 0) << log;
  EXPECT_EQ(json::parse(read_lines(out).at(0)).at("text"), "<|im_start|>user\nhi<|im_end|>");
  EXPECT_NE(run_tool("--tokenizer " + tokenizer + " --skip-special-tokens", in, "/dev/null", &log), 0);
  EXPECT_NE(log.find("--skip-special-tokens needs --decode"), std::string::npos) << log;
}

TEST(CoeTokenizeTool, ByteTokenizerAndDefaultField) {
  ASSERT_TRUE(fs::exists(tool())) << tool();
  const std::string in = write_file("tool/text.jsonl", "{\"text\": \"hi\"}\n{\"text\": \"\"}\n");
  std::string log;
  ASSERT_EQ(coe::test::run_command(tool() + " --tokenizer byte < " + in, &log), 0) << log;
  EXPECT_EQ(log, "{\"ids\":[104,105]}\n{\"ids\":[]}\n");
}

TEST(CoeTokenizeTool, BadLinesFailWithTheLineNumber) {
  ASSERT_TRUE(fs::exists(tool())) << tool();
  std::string log;
  const std::string malformed = write_file("tool/malformed.jsonl", "{\"text\": \"ok\"}\n{\"text\": oops}\n");
  EXPECT_NE(run_tool("--tokenizer byte", malformed, "/dev/null", &log), 0);
  EXPECT_NE(log.find("line 2"), std::string::npos) << log;
  EXPECT_NE(log.find("malformed JSON"), std::string::npos) << log;
  EXPECT_EQ(log.rfind("error: stdin line 2: ", 0), 0u) << "every tool's one-line error: " << log;

  const std::string missing = write_file("tool/missing.jsonl", "{\"body\": \"x\"}\n");
  EXPECT_NE(run_tool("--tokenizer byte --threads 2", missing, "/dev/null", &log), 0);
  EXPECT_NE(log.find("line 1"), std::string::npos) << log;
  EXPECT_NE(log.find("'text'"), std::string::npos) << log;

  const std::string bad_ids = write_file("tool/bad_ids.jsonl", "{\"ids\": [1, 2]}\n{\"ids\": [1, \"x\"]}\n");
  EXPECT_NE(run_tool("--tokenizer byte --decode", bad_ids, "/dev/null", &log), 0);
  EXPECT_NE(log.find("line 2"), std::string::npos) << log;

  EXPECT_NE(run_tool("--tokenizer /nonexistent.json", "/dev/null", "/dev/null", &log), 0);
  EXPECT_NE(log.find("/nonexistent.json"), std::string::npos) << log;
  EXPECT_EQ(log.rfind("error: ", 0), 0u) << log;
}

// Patterns whose every match rescans the rest of the text: quadratic work (hours for 1 MB of `a`)
// with no call backtracking catastrophically. The work budget of a text stops them within
// seconds with one line naming the file and the pattern; `timeout` turns the old hang into a
// failure here. 1 MB of `x` matches `.` a byte at a time, linearly, and encodes.
TEST(CoeTokenizeTool, QuadraticRegexFailsWithinSeconds) {
  ASSERT_TRUE(fs::exists(tool())) << tool();
  const std::string as = write_file("tool/a.jsonl", json{{"text", std::string(1 << 20, 'a')}}.dump() + "\n");
  const std::string xs = write_file("tool/x.jsonl", json{{"text", std::string(1 << 20, 'x')}}.dump() + "\n");
  // a*a*b|.: one match attempt, over the whole run, rescans the rest at each character it gives
  // back (quadratic work in a linear number of PCRE2 steps): counted by the callouts.
  for (const std::string pattern : {"a*c|a", "(?:a|b)*c|.", "a*a*b|."}) {
    json j = base_tokenizer();
    j["pre_tokenizer"] = split("Regex", pattern, "Isolated");
    const std::string path = write_file("tool/quadratic" + std::to_string(pattern.size()) + ".json", j.dump());
    std::string log;
    const auto start = std::chrono::steady_clock::now();
    const int rc = coe::test::run_command("timeout 120 " + tool() + " --tokenizer " + path + " < " + as, &log);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(rc, 1) << pattern << " (124: killed after 120 s): " << log;
    EXPECT_LT(seconds, 10.0) << pattern;
    EXPECT_EQ(log.find('\n'), log.size() - 1) << "one line: " << log;
    for (const std::string& part :
         std::vector<std::string>{"error: stdin line 1: " + path, "regex /" + pattern + "/", "work limit hit"})
      EXPECT_NE(log.find(part), std::string::npos) << "missing '" << part << "' in: " << log;
    if (pattern != "a*c|a") EXPECT_EQ(run_tool("--tokenizer " + path, xs, "/dev/null", &log), 0) << log;
  }
}

#else  // !COE_WITH_HF_TOKENIZER

TEST(HfTokenizer, NotBuilt) { GTEST_SKIP() << "coe was configured without PCRE2"; }

#endif
