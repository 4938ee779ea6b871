// coe-prepare and the preparation library on real GSM8K records (shared/data/gsm8k), plus the
// synthetic generator, splits, reuse/change detection, atomicity and every input error.
#include "coe/data/content_hash.h"
#include "coe/data/data_config.h"
#include "coe/data/jsonl.h"
#include "coe/data/prepare.h"
#include "coe/data/prepared.h"
#include "coe/data/split.h"
#include "coe/data/synth.h"
#include "coe/data/text_template.h"
#include "coe/tokenizer/tokenizer.h"
#include "coe/util/config_reader.h"
#include "coe/util/error.h"
#include "coe/util/random.h"
#include "support/expect_error.h"
#include "support/test_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using coe::test::read_file;
using coe::test::run_command;
using coe::test::scratch_dir;
using coe::test::shared_root;
using coe::test::tool_path;
using coe::test::write_file;

namespace {

fs::path gsm(const std::string& split) {
  fs::path p = shared_root() / "data" / "gsm8k" / (split + ".jsonl");
  if (!fs::exists(p)) throw std::runtime_error("shared test data missing: " + p.string() + " (set COE_SHARED)");
  return p;
}

template <typename T>
std::vector<T> read_array(const fs::path& p) {
  std::string bytes = read_file(p);
  std::vector<T> v(bytes.size() / sizeof(T));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(T));
  return v;
}

// The reference's text, written independently of the library: "question : <q> answer : <a>",
// stripped (GSM8K values have no leading/trailing blanks beyond what this trims).
std::vector<std::string> gsm_texts(const fs::path& file) {
  std::vector<std::string> texts;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    std::string t =
        "question : " + j["question"].get<std::string>() + " answer : " + j["answer"].get<std::string>() + " ";
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
    texts.push_back(t);
  }
  return texts;
}

coe::DataConfig gsm_config(const fs::path& out) {
  coe::DataConfig cfg;
  cfg.train_files = {gsm("train").string()};
  cfg.prepared_dir = out.string();
  cfg.tokenizer = "byte";
  cfg.text.text_keys = {"question", "answer"};
  return cfg;
}

std::vector<uint64_t> source_indices(const fs::path& split_dir) {
  return read_array<uint64_t>(split_dir / "source_index.bin");
}

using coe::test::error_of;

}  // namespace

TEST(DataPrepare, Gsm8kByteTokenizerRecordsTokensOffsets) {
  const fs::path dir = scratch_dir("prep-gsm");
  coe::PrepareResult r = coe::prepare_dataset(gsm_config(dir / "gsm"));
  EXPECT_FALSE(r.reused);
  const auto texts = gsm_texts(gsm("train"));
  ASSERT_EQ(texts.size(), 7473u);
  EXPECT_EQ(r.train_records, 7473);
  EXPECT_EQ(r.val_records, 0);
  EXPECT_FALSE(fs::exists(dir / "gsm" / "val"));

  // The files themselves, read without the library.
  const fs::path split = dir / "gsm" / "train";
  const auto tokens = read_array<uint32_t>(split / "tokens.bin");
  const auto offsets = read_array<uint64_t>(split / "offsets.bin");
  ASSERT_EQ(offsets.size(), texts.size() + 1);
  EXPECT_EQ(offsets.front(), 0u);
  EXPECT_EQ(offsets.back(), tokens.size());
  size_t total_bytes = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    ASSERT_EQ(offsets[i + 1] - offsets[i], texts[i].size()) << "record " << i;
    std::string decoded;
    for (uint64_t k = offsets[i]; k < offsets[i + 1]; ++k) decoded.push_back(static_cast<char>(tokens[k]));
    ASSERT_EQ(decoded, texts[i]) << "record " << i;
    total_bytes += texts[i].size();
  }
  EXPECT_EQ(static_cast<size_t>(r.train_tokens), total_bytes);

  auto meta = nlohmann::json::parse(read_file(split / "meta.json"));
  EXPECT_EQ(meta["records"], 7473);
  EXPECT_EQ(meta["tokens"].get<size_t>(), total_bytes);
  EXPECT_EQ(meta["tokenizer"]["name"], "byte");
  EXPECT_EQ(meta["tokenizer"]["fingerprint"], "byte-v1");
  EXPECT_EQ(meta["tokenizer"]["pad_id"], 256);
  EXPECT_EQ(meta["sources"][0]["bytes"], fs::file_size(gsm("train")));
  EXPECT_EQ(meta["sources"][0]["hash"], "xxh64:64af7d3742f2f139");  // xxhsum -H64 of the file
  EXPECT_EQ(meta["sources"][0]["records"], 7473);
  EXPECT_EQ(meta["text"]["text_keys"], nlohmann::json({"question", "answer"}));
  EXPECT_TRUE(meta["record_types"].is_null());  // GSM8K has no `type`
  EXPECT_EQ(meta["synthetic"], false);
  EXPECT_EQ(meta["split_params"]["method"], "none");

  auto opened = coe::PreparedSplit::open(split.string());
  EXPECT_EQ(opened->size(), 7473);
  EXPECT_EQ(opened->record_length(5), static_cast<int64_t>(texts[5].size()));
  EXPECT_EQ(opened->pad_id(), 256);
  EXPECT_EQ(opened->eos_id(), 258);
  EXPECT_EQ(opened->source_index(7472), 7472);
}

TEST(DataPrepare, SplitByCountAndFraction) {
  const fs::path dir = scratch_dir("prep-split");
  auto cfg = gsm_config(dir / "count");
  cfg.split.val_count = 1000;
  cfg.split.seed = 1;
  auto r = coe::prepare_dataset(cfg);
  EXPECT_EQ(r.train_records, 6473);
  EXPECT_EQ(r.val_records, 1000);
  auto train = source_indices(dir / "count" / "train");
  auto val = source_indices(dir / "count" / "val");
  EXPECT_TRUE(std::is_sorted(train.begin(), train.end()));
  EXPECT_TRUE(std::is_sorted(val.begin(), val.end()));
  std::set<uint64_t> all(train.begin(), train.end());
  for (uint64_t v : val) EXPECT_TRUE(all.insert(v).second) << "record " << v << " on both sides";
  EXPECT_EQ(all.size(), 7473u);
  // Tokens follow their records: val token count equals the bytes of the held-out texts.
  const auto texts = gsm_texts(gsm("train"));
  size_t val_bytes = 0;
  for (uint64_t v : val) val_bytes += texts[v].size();
  EXPECT_EQ(static_cast<size_t>(r.val_tokens), val_bytes);
  EXPECT_EQ(static_cast<size_t>(r.train_tokens + r.val_tokens), [&] {
    size_t t = 0;
    for (const auto& s : texts) t += s.size();
    return t;
  }());

  auto frac = gsm_config(dir / "fraction");
  frac.split.val_fraction = 0.1;
  auto rf = coe::prepare_dataset(frac);
  EXPECT_EQ(rf.val_records, 747);  // round(0.1 * 7473)
  EXPECT_EQ(rf.train_records, 7473 - 747);
}

TEST(DataPrepare, DeterministicAcrossRunsAndThreadCounts) {
  const fs::path dir = scratch_dir("prep-det");
  auto a = gsm_config(dir / "a");
  a.split.val_count = 500;
  a.split.seed = 7;
  a.threads = 1;
  auto b = a;
  b.prepared_dir = (dir / "b").string();
  b.threads = 2;
  coe::prepare_dataset(a);
  coe::prepare_dataset(b);
  for (const char* split : {"train", "val"})
    for (const char* file : {"tokens.bin", "offsets.bin", "source_index.bin"})
      EXPECT_EQ(read_file(dir / "a" / split / file), read_file(dir / "b" / split / file)) << split << "/" << file;
  EXPECT_EQ(read_file(dir / "a" / "val" / "meta.json"), read_file(dir / "b" / "val" / "meta.json"));

  auto c = a;
  c.prepared_dir = (dir / "c").string();
  c.split.seed = 8;
  coe::prepare_dataset(c);
  EXPECT_NE(source_indices(dir / "a" / "val"), source_indices(dir / "c" / "val"));
}

TEST(DataPrepare, NumpySplitReproducesTheReferenceDraw) {
  // Golden values from NumPy 1.24: np.random.seed(s); np.random.permutation(n) / choice(n, k, replace=False).
  EXPECT_EQ(coe::numpy_legacy_permutation(10, 42), (std::vector<int64_t>{8, 1, 5, 0, 7, 2, 9, 4, 3, 6}));
  auto p7 = coe::numpy_legacy_permutation(1319, 7);
  EXPECT_EQ(std::vector<int64_t>(p7.begin(), p7.begin() + 6), (std::vector<int64_t>{984, 447, 63, 1089, 450, 1249}));
  // The reference's MetaMathQA held-out set: np.random.seed(42); np.random.choice(395000, 1000, replace=False).
  auto mm = coe::numpy_legacy_permutation(395000, 42);
  EXPECT_EQ(std::vector<int64_t>(mm.begin(), mm.begin() + 8),
            (std::vector<int64_t>{241974, 370274, 170348, 578, 13102, 10302, 143928, 153300}));
  int64_t sum = 0;
  for (int i = 0; i < 1000; ++i) sum += mm[i];
  EXPECT_EQ(sum, 197738716);
  EXPECT_EQ(mm[997], 142434);
  EXPECT_EQ(mm[999], 243596);

  const fs::path dir = scratch_dir("prep-numpy");
  auto cfg = gsm_config(dir / "np");
  cfg.split.val_count = 1000;
  cfg.split.seed = 42;
  cfg.split.rng = coe::SplitRng::kNumpy;
  coe::prepare_dataset(cfg);
  auto val = source_indices(dir / "np" / "val");
  ASSERT_EQ(val.size(), 1000u);
  // Validation keeps NumPy's draw order, as the reference's test.parquet (df.iloc[choice]).
  EXPECT_EQ(std::vector<uint64_t>(val.begin(), val.begin() + 8),
            (std::vector<uint64_t>{1297, 576, 5462, 4336, 7105, 6808, 4404, 1649}));
  uint64_t vsum = 0;
  for (uint64_t v : val) vsum += v;
  EXPECT_EQ(vsum, 3639980u);
  auto train = source_indices(dir / "np" / "train");
  EXPECT_EQ(train.size(), 6473u);
  EXPECT_TRUE(std::is_sorted(train.begin(), train.end()));  // df.drop keeps source order
  EXPECT_EQ(nlohmann::json::parse(read_file(dir / "np" / "val" / "meta.json"))["split_params"]["method"], "numpy");
}

TEST(DataPrepare, GroupedSplitNeverSharesAGroup) {
  const fs::path dir = scratch_dir("prep-group");
  const fs::path synth = dir / "synth.json";
  coe::write_synth_file(synth.string(), 3000, 11);
  const auto records = coe::generate_synth_records(3000, 11);
  coe::DataConfig cfg;
  cfg.train_files = {synth.string()};
  cfg.prepared_dir = (dir / "g").string();
  cfg.split.val_fraction = 0.2;
  cfg.split.group_by = "original_question";
  cfg.split.seed = 3;
  auto r = coe::prepare_dataset(cfg);
  EXPECT_GE(r.val_records, 600);
  EXPECT_EQ(r.train_records + r.val_records, 3000);

  std::set<std::string> train_groups, val_groups;
  for (uint64_t i : source_indices(dir / "g" / "train")) train_groups.insert(records[i].original_question);
  for (uint64_t i : source_indices(dir / "g" / "val")) val_groups.insert(records[i].original_question);
  for (const auto& g : val_groups) EXPECT_EQ(train_groups.count(g), 0u) << "group on both sides: " << g;
  // Rephrasings exist, so grouping is doing something: fewer groups than records.
  auto meta = nlohmann::json::parse(read_file(dir / "g" / "val" / "meta.json"));
  EXPECT_LT(meta["split_params"]["groups"].get<int64_t>(), 3000);
  EXPECT_EQ(meta["split_params"]["group_by"], "original_question");
  EXPECT_EQ(meta["synthetic"], true);
  EXPECT_TRUE(meta["type_counts"].contains("SYNTH_ARITH_Rephrased"));

  // A record-level split of the same data does put rephrasings on both sides.
  cfg.prepared_dir = (dir / "r").string();
  cfg.split.group_by.clear();
  coe::prepare_dataset(cfg);
  std::set<std::string> t2, v2;
  for (uint64_t i : source_indices(dir / "r" / "train")) t2.insert(records[i].original_question);
  for (uint64_t i : source_indices(dir / "r" / "val")) v2.insert(records[i].original_question);
  size_t shared = 0;
  for (const auto& g : v2) shared += t2.count(g);
  EXPECT_GT(shared, 0u);
}

TEST(DataPrepare, PerRecordTypesInMetadata) {
  const fs::path dir = scratch_dir("prep-types");
  const fs::path synth = dir / "s.json";
  coe::write_synth_file(synth.string(), 50, 5);
  const auto records = coe::generate_synth_records(50, 5);
  coe::DataConfig cfg;
  cfg.train_files = {synth.string()};
  cfg.prepared_dir = (dir / "p").string();
  coe::prepare_dataset(cfg);
  auto split = coe::open_split(cfg.prepared_dir, "train");
  ASSERT_EQ(split->size(), 50);
  for (int64_t i = 0; i < 50; ++i) EXPECT_EQ(split->record_type(i), records[i].type);
}

TEST(DataPrepare, ReusesUnchangedAndRebuildsOnChange) {
  const fs::path dir = scratch_dir("prep-reuse");
  const fs::path input = dir / "in.jsonl";
  fs::copy_file(gsm("test"), input);
  coe::DataConfig cfg = gsm_config(dir / "p");
  cfg.train_files = {input.string()};
  std::vector<std::string> lines;
  coe::PrepareOptions opts;
  opts.log = [&](const std::string& l) { lines.push_back(l); };

  auto first = coe::prepare_dataset(cfg, opts);
  EXPECT_FALSE(first.reused);
  auto before = fs::last_write_time(dir / "p" / "train" / "tokens.bin");
  auto second = coe::prepare_dataset(cfg, opts);
  EXPECT_TRUE(second.reused);
  EXPECT_EQ(second.train_records, 1319);
  EXPECT_EQ(fs::last_write_time(dir / "p" / "train" / "tokens.bin"), before);
  EXPECT_NE(lines.back().find("reusing prepared dataset"), std::string::npos) << lines.back();

  // Same size, different content: detected by the content hash, not the size.
  std::string text = read_file(input);
  auto pos = text.find("Janet");
  ASSERT_NE(pos, std::string::npos);
  text.replace(pos, 5, "Jenet");
  write_file(input, text);
  auto third = coe::prepare_dataset(cfg, opts);
  EXPECT_FALSE(third.reused);
  EXPECT_NE(third.reason.find("train_sources"), std::string::npos) << third.reason;
  auto split = coe::open_split(cfg.prepared_dir, "train");
  std::string first_record;
  for (int64_t k = 0; k < split->record_length(0); ++k) first_record.push_back(static_cast<char>(split->record(0)[k]));
  EXPECT_NE(first_record.find("Jenet"), std::string::npos);

  // A different text format and a forced rebuild.
  cfg.text.template_text = "Q: {question}\nA: {answer}";
  auto fourth = coe::prepare_dataset(cfg, opts);
  EXPECT_FALSE(fourth.reused);
  EXPECT_NE(fourth.reason.find("text"), std::string::npos) << fourth.reason;
  opts.force = true;
  EXPECT_FALSE(coe::prepare_dataset(cfg, opts).reused);
  opts.force = false;

  // A different tokenizer.
  const fs::path neox = shared_root() / "data" / "tokenizers" / "gpt-neox-tokenizer.json";
  try {
    coe::load_tokenizer(neox.string());
  } catch (const coe::Error& e) {
    if (std::string(e.what()).find("no HF tokenizer support") != std::string::npos) GTEST_SKIP() << e.what();
    throw;
  }
  cfg.tokenizer = neox.string();
  auto fifth = coe::prepare_dataset(cfg, opts);
  EXPECT_FALSE(fifth.reused);
  EXPECT_NE(fifth.reason.find("tokenizer"), std::string::npos) << fifth.reason;
  EXPECT_TRUE(coe::prepare_dataset(cfg, opts).reused);
}

TEST(DataPrepare, ErrorLeavesNoOutputAndKeepsTheOldOne) {
  const fs::path dir = scratch_dir("prep-atomic");
  const fs::path input = dir / "in.jsonl";
  std::string good = read_file(gsm("test"));
  // Break a record late in the file, after thousands of good ones were tokenized.
  std::string bad = good;
  auto pos = bad.rfind("{\"question\"");
  bad.insert(pos + 1, "oops ");
  write_file(input, bad);
  auto cfg = gsm_config(dir / "out");
  cfg.train_files = {input.string()};
  std::string err = error_of([&] { coe::prepare_dataset(cfg); });
  EXPECT_NE(err.find("in.jsonl:1319: malformed JSON"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir / "out"));
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find("out."), std::string::npos) << e.path();

  // With a good dataset in place, a failing rebuild leaves it untouched and usable.
  write_file(input, good);
  coe::prepare_dataset(cfg);
  const std::string manifest = read_file(dir / "out" / "manifest.json");
  write_file(input, bad);
  EXPECT_THROW(coe::prepare_dataset(cfg), coe::Error);
  EXPECT_EQ(read_file(dir / "out" / "manifest.json"), manifest);
  EXPECT_EQ(coe::open_split((dir / "out").string(), "train")->size(), 1319);
}

TEST(DataPrepare, InputErrorsAreOneLineAndNameTheSpot) {
  const fs::path dir = scratch_dir("prep-errors");
  std::vector<std::string> messages;
  auto prepare = [&](const std::string& name, const std::string& content, std::optional<std::string> tmpl = {}) {
    write_file(dir / name, content);
    coe::DataConfig cfg;
    cfg.train_files = {(dir / name).string()};
    cfg.prepared_dir = (dir / ("out-" + name)).string();
    cfg.text.text_keys = {"q", "a"};
    cfg.text.template_text = std::move(tmpl);
    messages.push_back(error_of([&] { coe::prepare_dataset(cfg); }));
    EXPECT_FALSE(fs::exists(cfg.prepared_dir)) << name;
    return messages.back();
  };
  std::string e;
  e = prepare("bad.jsonl", "{\"q\": \"1\", \"a\": \"2\"}\n{\"q\": \"1\", \"a\": \"2\"}\n{\"q\": 1 \"a\": 2}\n");
  EXPECT_NE(e.find("bad.jsonl:3: malformed JSON"), std::string::npos) << e;
  e = prepare("bad.json", "[\n {\"q\": \"x\", \"a\": \"y\"},\n {\"q\": \"x\",\n  \"a\": }\n]\n");
  EXPECT_NE(e.find("bad.json:4: malformed JSON"), std::string::npos) << e;
  e = prepare("open.json", "[\n {\"q\": \"x\", \"a\": \"y\"},\n {\"q\": \"x\", \"a\": \"y\"}\n");
  EXPECT_NE(e.find("open.json:3: malformed JSON: the top-level array is not closed"), std::string::npos) << e;
  // A Parquet file (header and footer magic) is named as one, with the conversion, not as bad JSON.
  e = prepare("train.parquet", std::string("PAR1\x15\x04\x15\x10", 8) + "column chunks" + "PAR1");
  EXPECT_NE(e.find("train.parquet: a Parquet file; coe reads JSON and JSONL records"), std::string::npos) << e;
  EXPECT_NE(e.find("pd.read_parquet"), std::string::npos) << e;
  EXPECT_EQ(e.find("malformed JSON"), std::string::npos) << e;
  e = prepare("trail.json", "[{\"q\": \"x\", \"a\": \"y\"}]\nmore\n");
  EXPECT_NE(e.find("trail.json:2: malformed JSON: unexpected text after the top-level array"), std::string::npos) << e;
  e = prepare("missing.jsonl", "{\"q\": \"1\", \"a\": \"2\"}\n{\"q\": \"1\", \"answer\": \"2\"}\n");
  EXPECT_NE(e.find("missing.jsonl:2: record has no key 'a'"), std::string::npos) << e;
  e = prepare("scalar.jsonl", "{\"q\": \"1\", \"a\": \"2\"}\n[1, 2]\n");
  EXPECT_NE(e.find("scalar.jsonl:2: record is not a JSON object"), std::string::npos) << e;
  e = prepare("empty.jsonl", "\n\n");
  EXPECT_NE(e.find("empty.jsonl: no records (empty dataset)"), std::string::npos) << e;
  e = prepare("emptyarr.json", " [ ] ");
  EXPECT_NE(e.find("no records (empty dataset)"), std::string::npos) << e;
  e = prepare("blank.jsonl", "{\"q\": \"x\"}\n{\"q\": \"\"}\n", std::string("{q}"));
  EXPECT_NE(e.find("blank.jsonl:2: the record's text is empty"), std::string::npos) << e;
  for (const auto& m : messages) EXPECT_EQ(m.find('\n'), std::string::npos) << m;

  // Group key missing, bad template, missing input, split leaving nothing.
  write_file(dir / "g.jsonl", "{\"q\": \"1\", \"a\": \"2\", \"k\": 1}\n{\"q\": \"1\", \"a\": \"2\"}\n");
  coe::DataConfig cfg;
  cfg.train_files = {(dir / "g.jsonl").string()};
  cfg.prepared_dir = (dir / "out-g").string();
  cfg.text.text_keys = {"q", "a"};
  cfg.split.val_count = 1;
  cfg.split.group_by = "k";
  e = error_of([&] { coe::prepare_dataset(cfg); });
  EXPECT_NE(e.find("g.jsonl:2: record has no key 'k' (group_by)"), std::string::npos) << e;
  cfg.split.group_by.clear();
  cfg.split.val_count = 2;
  e = error_of([&] { coe::prepare_dataset(cfg); });
  EXPECT_NE(e.find("leaves no training records"), std::string::npos) << e;
  cfg.split.val_count.reset();
  cfg.text.template_text = "Q: {q";
  e = error_of([&] { coe::prepare_dataset(cfg); });
  EXPECT_NE(e.find("template"), std::string::npos) << e;
  cfg.text.template_text.reset();
  cfg.train_files = {(dir / "nope.jsonl").string()};
  e = error_of([&] { coe::prepare_dataset(cfg); });
  EXPECT_NE(e.find("nope.jsonl: input file or directory not found"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir / "out-g"));

  // An output directory that is something else is never overwritten.
  fs::create_directories(dir / "precious");
  write_file(dir / "precious" / "notes.txt", "keep me");
  cfg.train_files = {(dir / "g.jsonl").string()};
  cfg.prepared_dir = (dir / "precious").string();
  e = error_of([&] { coe::prepare_dataset(cfg); });
  EXPECT_NE(e.find("exists and is not a prepared dataset"), std::string::npos) << e;
  EXPECT_EQ(read_file(dir / "precious" / "notes.txt"), "keep me");
}

TEST(DataPrepare, BadPreparedDirectoryIsAClearError) {
  const fs::path dir = scratch_dir("prep-badsplit");
  auto cfg = gsm_config(dir / "p");
  cfg.train_files = {gsm("test").string()};
  coe::prepare_dataset(cfg);
  const fs::path split = dir / "p" / "train";
  std::string e;
  e = error_of([&] { coe::PreparedSplit::open((dir / "nowhere").string()); });
  EXPECT_NE(e.find("prepared split directory not found"), std::string::npos) << e;
  e = error_of([&] { coe::open_split((dir / "p").string(), "val"); });
  EXPECT_NE(e.find("has no 'val' split"), std::string::npos) << e;

  fs::copy(split, dir / "trunc");
  fs::resize_file(dir / "trunc" / "tokens.bin", fs::file_size(dir / "trunc" / "tokens.bin") - 4);
  e = error_of([&] { coe::PreparedSplit::open((dir / "trunc").string()); });
  EXPECT_NE(e.find("tokens.bin:"), std::string::npos) << e;
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;

  fs::copy(split, dir / "noofs");
  fs::remove(dir / "noofs" / "offsets.bin");
  e = error_of([&] { coe::PreparedSplit::open((dir / "noofs").string()); });
  EXPECT_NE(e.find("offsets.bin: missing"), std::string::npos) << e;

  fs::copy(split, dir / "nometa");
  fs::remove(dir / "nometa" / "meta.json");
  e = error_of([&] { coe::PreparedSplit::open((dir / "nometa").string()); });
  EXPECT_NE(e.find("not a prepared split (no meta.json)"), std::string::npos) << e;

  fs::copy(split, dir / "badofs");
  {
    std::fstream f(dir / "badofs" / "offsets.bin", std::ios::in | std::ios::out | std::ios::binary);
    uint64_t big = 1ULL << 40;
    f.seekp(8 * 10);
    f.write(reinterpret_cast<const char*>(&big), 8);
  }
  e = error_of([&] { coe::PreparedSplit::open((dir / "badofs").string()); });
  EXPECT_NE(e.find("offsets decrease at record 10"), std::string::npos) << e;

  // A damaged split is rebuilt by the next prepare rather than reused.
  fs::resize_file(split / "tokens.bin", 8);
  auto r = coe::prepare_dataset(cfg);
  EXPECT_FALSE(r.reused);
  EXPECT_NE(r.reason.find("damaged"), std::string::npos) << r.reason;
}

// --force and a changed recipe replace the dataset directory; coe deletes only what it wrote there.
TEST(DataPrepare, RebuildNeverDeletesFilesCoeDidNotWrite) {
  const fs::path dir = scratch_dir("prep-planted");
  auto cfg = gsm_config(dir / "p");
  cfg.train_files = {gsm("test").string()};
  coe::prepare_dataset(cfg);
  const std::string manifest = read_file(dir / "p" / "manifest.json");
  coe::PrepareOptions force;
  force.force = true;

  for (const std::string planted : {"notes.txt", "train/mine.bin"}) {
    write_file(dir / "p" / planted, "not coe's\n");
    std::string e = error_of([&] { coe::prepare_dataset(cfg, force); });
    EXPECT_NE(e.find("holds '" + planted + "', which coe-prepare did not write"), std::string::npos) << e;
    EXPECT_NE(e.find("forced rebuild"), std::string::npos) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
    // A changed recipe is refused the same way; an unchanged one is still reused.
    auto changed = cfg;
    changed.text.template_text = "Q: {question}\nA: {answer}";
    e = error_of([&] { coe::prepare_dataset(changed); });
    EXPECT_NE(e.find("holds '" + planted + "'"), std::string::npos) << e;
    EXPECT_TRUE(coe::prepare_dataset(cfg).reused);
    EXPECT_EQ(read_file(dir / "p" / planted), "not coe's\n");
    EXPECT_EQ(read_file(dir / "p" / "manifest.json"), manifest);
    EXPECT_EQ(coe::open_split((dir / "p").string(), "train")->size(), 1319);
    fs::remove(dir / "p" / planted);
  }
  // A symlink where a split file belongs is not coe's file either.
  fs::rename(dir / "p" / "train" / "meta.json", dir / "meta-elsewhere.json");
  fs::create_symlink(dir / "meta-elsewhere.json", dir / "p" / "train" / "meta.json");
  EXPECT_NE(error_of([&] { coe::prepare_dataset(cfg, force); }).find("holds 'train/meta.json'"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir / "meta-elsewhere.json"));
  fs::remove(dir / "p" / "train" / "meta.json");
  fs::rename(dir / "meta-elsewhere.json", dir / "p" / "train" / "meta.json");

  // With nothing foreign in it, --force rebuilds, and nothing is left beside the dataset.
  EXPECT_FALSE(coe::prepare_dataset(cfg, force).reused);
  std::vector<std::string> entries;
  for (const auto& e : fs::directory_iterator(dir)) entries.push_back(e.path().filename().string());
  EXPECT_EQ(entries, std::vector<std::string>{"p"});
}

namespace {

// Runs prepare_dataset in a child process that the kernel kills (SIGXFSZ) once it has written 64
// KiB: what a coe-prepare killed in the middle of writing its dataset leaves behind.
pid_t prepare_killed_midway(const coe::DataConfig& cfg) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::signal(SIGXFSZ, SIG_DFL);
    const rlimit limit{64 << 10, 64 << 10};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    try {
      coe::prepare_dataset(cfg);
    } catch (...) {
    }
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGXFSZ) << "status " << status;
  return pid;
}

}  // namespace

TEST(DataPrepare, LeftoversOfKilledRunsAreRemovedOnlyWhenMarkedAndDead) {
  const fs::path dir = scratch_dir("prep-stale");
  auto cfg = gsm_config(dir / "p");
  cfg.train_files = {gsm("test").string()};
  cfg.threads = 1;
  // A killed run whose directory someone then put a file of their own into.
  const pid_t killed2 = prepare_killed_midway(cfg);
  const fs::path leftover2 = dir / ("p.tmp-" + std::to_string(killed2));
  ASSERT_TRUE(fs::is_directory(leftover2));
  write_file(leftover2 / "notes.txt", "mine\n");
  // Another killed run, after the first (it already found and kept that one).
  const pid_t killed = prepare_killed_midway(cfg);
  const fs::path leftover = dir / ("p.tmp-" + std::to_string(killed));
  ASSERT_TRUE(fs::is_directory(leftover));
  EXPECT_FALSE(fs::exists(dir / "p"));
  // The same name pattern without coe's marker (pid of a process that has exited, too).
  const pid_t exited = ::fork();
  if (exited == 0) ::_exit(0);
  ::waitpid(exited, nullptr, 0);
  const fs::path unmarked = dir / ("p.tmp-" + std::to_string(exited));
  write_file(unmarked / "train" / "tokens.bin", "precious");

  std::vector<std::string> lines;
  coe::PrepareOptions opts;
  opts.log = [&](const std::string& l) { lines.push_back(l); };
  EXPECT_FALSE(coe::prepare_dataset(cfg, opts).reused);
  EXPECT_FALSE(fs::exists(leftover)) << "a killed run's directory is removed";
  EXPECT_EQ(read_file(unmarked / "train" / "tokens.bin"), "precious");
  EXPECT_EQ(read_file(leftover2 / "notes.txt"), "mine\n");
  std::set<std::string> left;
  for (const auto& e : fs::recursive_directory_iterator(leftover2)) left.insert(e.path().filename().string());
  EXPECT_EQ(left, (std::set<std::string>{"notes.txt", ".coe-scratch.json"})) << "coe's own files in it are gone";
  std::string log;
  for (const auto& l : lines) log += l + "\n";
  EXPECT_NE(log.find("removed " + leftover.string()), std::string::npos) << log;
  EXPECT_NE(log.find("kept " + leftover2.string()), std::string::npos) << log;
  EXPECT_EQ(log.find(unmarked.string()), std::string::npos) << log;
  EXPECT_EQ(coe::open_split((dir / "p").string(), "train")->size(), 1319);
}

TEST(DataPrepare, DeeplyNestedRecordIsAnError) {
  const fs::path dir = scratch_dir("prep-deep");
  auto cfg = gsm_config(dir / "p");
  cfg.train_files = {write_file(dir / "deep.jsonl",
                                "{\"question\": \"q\", \"answer\": \"a\"}\n{\"question\": " + std::string(100000, '[') +
                                    std::string(100000, ']') + ", \"answer\": \"a\"}\n")};
  const std::string e = error_of([&] { coe::prepare_dataset(cfg); });
  EXPECT_NE(e.find("deep.jsonl:2: JSON nested deeper than 64 levels"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir / "p"));
}

// Found by fuzz/fuzz_records: a number beyond a double (1e400) is nlohmann's out_of_range 406,
// not a parse_error, and escaped RecordFile::parse instead of the one-line file:line error.
TEST(DataPrepare, NumberOverflowInARecordIsAnError) {
  const fs::path dir = scratch_dir("prep-overflow");
  const std::string path =
      write_file(dir / "big.jsonl", "{\"question\": \"q\", \"answer\": 1}\n{\"question\": 1e400, \"answer\": 2}\n");
  const coe::RecordFile records(path);
  const std::string e = error_of([&] { records.parse(1); });
  EXPECT_NE(e.find("big.jsonl:2: malformed JSON"), std::string::npos) << e;
  EXPECT_NE(e.find("number overflow"), std::string::npos) << e;
}

TEST(DataPrepare, HfTokenizerRoundTrip) {
  const fs::path neox = shared_root() / "data" / "tokenizers" / "gpt-neox-tokenizer.json";
  std::unique_ptr<coe::Tokenizer> tok;
  try {
    tok = coe::load_tokenizer(neox.string());
  } catch (const coe::Error& e) {
    if (std::string(e.what()).find("no HF tokenizer support") != std::string::npos) GTEST_SKIP() << e.what();
    throw;
  }
  const fs::path dir = scratch_dir("prep-neox");
  auto cfg = gsm_config(dir / "p");
  cfg.train_files = {gsm("test").string()};
  cfg.tokenizer = neox.string();
  cfg.split.val_count = 100;
  coe::prepare_dataset(cfg);
  auto train = coe::open_split(cfg.prepared_dir, "train");
  auto val = coe::open_split(cfg.prepared_dir, "val");
  EXPECT_EQ(train->size() + val->size(), 1319);
  EXPECT_EQ(train->metadata()["tokenizer"]["fingerprint"], tok->fingerprint());
  EXPECT_EQ(train->vocab_size(), tok->vocab_size());
  const auto texts = gsm_texts(gsm("test"));
  for (int64_t i = 0; i < train->size(); i += 37) {
    auto span = train->record(i);
    std::vector<int32_t> ids(span.data, span.data + span.size);
    EXPECT_EQ(ids, tok->encode(texts[train->source_index(i)])) << "record " << i;
    EXPECT_EQ(tok->decode(ids), texts[train->source_index(i)]) << "record " << i;
  }
}

TEST(DataPrepare, ToolFlagsConfigAndErrors) {
  const fs::path dir = scratch_dir("prep-tool");
  const std::string tool = tool_path("coe-prepare").string();
  std::string out;
  std::string cmd = tool + " --input " + gsm("test").string() + " --tokenizer byte --out " + (dir / "p").string() +
                    " --text-keys question,answer --val-count 100 --seed 5 --threads 2";
  ASSERT_EQ(run_command(cmd, &out), 0) << out;
  EXPECT_NE(out.find("prepared"), std::string::npos) << out;
  ASSERT_EQ(run_command(cmd, &out), 0) << out;
  EXPECT_NE(out.find("reusing prepared dataset"), std::string::npos) << out;
  EXPECT_EQ(coe::open_split((dir / "p").string(), "val")->size(), 100);

  // --config: the data section.
  write_file(dir / "run.yaml", "model: {hidden_size: 8}\n"
                               "data:\n"
                               "  train_files: " +
                                   gsm("test").string() +
                                   "\n"
                                   "  prepared_dir: " +
                                   (dir / "c").string() +
                                   "\n"
                                   "  text_keys: [question, answer]\n"
                                   "  val_fraction: 0.1\n"
                                   "  group_by: answer\n");
  ASSERT_EQ(run_command(tool + " --config " + (dir / "run.yaml").string(), &out), 0) << out;
  auto meta = nlohmann::json::parse(read_file(dir / "c" / "val" / "meta.json"));
  EXPECT_EQ(meta["split_params"]["method"], "grouped");
  EXPECT_GE(meta["records"].get<int>(), 132);

  // Errors: "error: <one line>", exit status 1.
  write_file(dir / "bad.jsonl", "{\"question\": \"a\", \"answer\": \"b\"}\nnot json\n");
  EXPECT_EQ(run_command(tool + " --input " + (dir / "bad.jsonl").string() + " --out " + (dir / "x").string() +
                            " --text-keys question,answer",
                        &out),
            1);
  // Progress lines may precede it; the error itself is the last line, and a single one.
  const auto at = out.find("error: ");
  ASSERT_NE(at, std::string::npos) << out;
  EXPECT_TRUE(at == 0 || out[at - 1] == '\n') << out;
  EXPECT_EQ(out.find('\n', at), out.size() - 1) << out;
  EXPECT_NE(out.find("error: " + (dir / "bad.jsonl").string() + ":2: malformed JSON"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir / "x"));

  write_file(dir / "typo.yaml", "data:\n  train_files: a.jsonl\n  prepared_dir: out\n  max_lenght: 5\n");
  EXPECT_EQ(run_command(tool + " --config " + (dir / "typo.yaml").string(), &out), 1);
  EXPECT_NE(out.find("typo.yaml:4: data.max_lenght: unknown key (did you mean 'max_length'?)"), std::string::npos)
      << out;
  EXPECT_EQ(run_command(tool + " --bogus", &out), 1);
  EXPECT_EQ(out.rfind("error: ", 0), 0u) << out;
  EXPECT_EQ(run_command(tool, &out), 1);
  EXPECT_NE(out.find("error: give --config"), std::string::npos) << out;

  // synth subcommand.
  ASSERT_EQ(run_command(tool + " synth --records 40 --seed 9 --out " + (dir / "s" / "synth.json").string(), &out), 0)
      << out;
  EXPECT_NE(out.find("wrote 40 synthetic records"), std::string::npos) << out;
  auto synth = nlohmann::json::parse(read_file(dir / "s" / "synth.json"));
  EXPECT_EQ(synth.size(), 40u);
  EXPECT_EQ(synth[0]["query"], coe::generate_synth_records(1, 9)[0].query);
}

TEST(DataConfig, ParsesTheDataSection) {
  const fs::path dir = scratch_dir("prep-config");
  write_file(dir / "run.yaml", "data:\n"
                               "  train_files: [a.json, b/]\n"
                               "  val_files: c.jsonl\n"
                               "  prepared_dir: out\n"
                               "  tokenizer: tok.json\n"
                               "  text_keys: [question, answer]\n"
                               "  template: \"Q: {question} A: {answer}\"\n"
                               "  max_length: 1024\n"
                               "  truncation: right\n"
                               "  packing: true\n"
                               "  add_eos: true\n"
                               "  shuffle: false\n"
                               "  threads: 2\n");
  auto root = coe::ConfigReader::from_file((dir / "run.yaml").string());
  auto data = root.section("data");
  coe::DataConfig cfg = coe::parse_data_config(data);
  // Paths are relative to the file that wrote them (docs/training.md#paths-in-config-files).
  EXPECT_EQ(cfg.train_files, (std::vector<std::string>{(dir / "a.json").string(), (dir / "b/").string()}));
  EXPECT_EQ(cfg.val_files, (std::vector<std::string>{(dir / "c.jsonl").string()}));
  EXPECT_EQ(cfg.prepared_dir, (dir / "out").string());
  EXPECT_EQ(cfg.tokenizer, (dir / "tok.json").string());
  EXPECT_EQ(*cfg.text.template_text, "Q: {question} A: {answer}");
  EXPECT_EQ(cfg.max_length, 1024);
  EXPECT_EQ(cfg.truncation, coe::Truncation::kRight);
  EXPECT_TRUE(cfg.packing);
  EXPECT_TRUE(cfg.add_eos);
  EXPECT_FALSE(cfg.shuffle);
  EXPECT_EQ(cfg.threads, 2);

  auto parse = [&](const std::string& yaml) {
    write_file(dir / "e.yaml", yaml);
    return error_of([&] {
      auto r = coe::ConfigReader::from_file((dir / "e.yaml").string());
      auto d = r.section("data");
      coe::parse_data_config(d);
    });
  };
  std::string e = parse("data:\n  train_files: a\n  prepared_dir: o\n  truncation: middle\n");
  EXPECT_NE(e.find("e.yaml:4: data.truncation: truncation 'middle': expected error, left or right"), std::string::npos)
      << e;
  e = parse("data:\n  train_files: a\n  prepared_dir: o\n  val_count: 10\n  val_fraction: 0.1\n");
  EXPECT_NE(e.find("set val_count or val_fraction, not both"), std::string::npos) << e;
  e = parse("data:\n  train_files: a\n  prepared_dir: o\n  split_rng: numpy\n  val_count: 3\n  group_by: k\n");
  EXPECT_NE(e.find("cannot group_by"), std::string::npos) << e;
  e = parse("data:\n  tokenizer: byte\n");
  EXPECT_NE(e.find("give train_files"), std::string::npos) << e;
  e = parse("data:\n  train_files: a\n  prepared_dir: o\n  val_fraction: 1.5\n");
  EXPECT_NE(e.find("val_fraction must be in (0, 1)"), std::string::npos) << e;
}

TEST(DataText, ReferenceFormatTemplateAndStrip) {
  coe::TextTemplate def({"query", "response"}, std::nullopt);
  nlohmann::json rec = {{"query", "  What is 2+2?"}, {"response", "4\n\n"}, {"type", "X"}};
  EXPECT_EQ(def.render(rec), "query :   What is 2+2? response : 4");
  EXPECT_EQ(def.render({{"query", {"one"}}, {"response", 3}}), "query : one response : 3");  // unwrapped list, int
  EXPECT_EQ(def.render({{"query", true}, {"response", nullptr}}), "query : True response : None");
  EXPECT_EQ(coe::python_strip("\xE3\x80\x80 x \xC2\xA0\x1F\n"), "x");  // U+3000, U+00A0, \x1f are whitespace
  EXPECT_EQ(coe::python_strip("x\xE2\x80\x8B"), "x\xE2\x80\x8B");      // U+200B (zero width) is not
  coe::TextTemplate custom({"ignored"}, std::string("Q: {query}\n{{A}}: {response}"));
  EXPECT_EQ(custom.render(rec), "Q:   What is 2+2?\n{A}: 4\n\n");
  EXPECT_EQ(custom.keys(), (std::vector<std::string>{"query", "response"}));
  EXPECT_THROW(coe::TextTemplate({}, std::string("no placeholders")), coe::Error);
  EXPECT_THROW(coe::TextTemplate({}, std::string("bad } brace {x}")), coe::Error);
  std::string e = error_of([&] { def.render({{"query", "x"}}); });
  EXPECT_EQ(e, "record has no key 'response'");
}

// Found by fuzz/fuzz_records: a template or text key that is not UTF-8 was accepted, and writing
// the prepared metadata (describe()) then threw nlohmann's type_error, not a one-line error.
TEST(DataText, TemplateAndKeysMustBeUtf8) {
  EXPECT_EQ(error_of([] { coe::TextTemplate({}, std::string("Q\xA6: {question}")); }), "template: not valid UTF-8");
  EXPECT_EQ(error_of([] { coe::TextTemplate({"k\xFF"}, std::nullopt); }), "text_keys: not valid UTF-8");
}

TEST(DataHash, Xxh64KnownValues) {
  EXPECT_EQ(coe::xxh64(""), 0xEF46DB3751D8E999ULL);
  EXPECT_EQ(coe::xxh64("abc"), 0x44BC2CF5AD770999ULL);
  EXPECT_EQ(coe::hash_file(gsm("test").string()), "xxh64:66a3d2935b199921");  // xxhsum -H64
}

TEST(DataSynth, ReproducibleAndArithmeticallyRight) {
  const auto a = coe::generate_synth_records(2000, 123);
  const auto b = coe::generate_synth_records(2000, 123);
  const auto c = coe::generate_synth_records(2000, 124);
  ASSERT_EQ(a.size(), 2000u);
  EXPECT_EQ(coe::synth_records_json(a).dump(), coe::synth_records_json(b).dump());
  EXPECT_NE(coe::synth_records_json(a).dump(), coe::synth_records_json(c).dump());
  const auto prefix = coe::generate_synth_records(17, 123);
  EXPECT_EQ(coe::synth_records_json(prefix).dump(),
            coe::synth_records_json(std::vector<coe::SynthRecord>(a.begin(), a.begin() + 17)).dump());

  const std::regex step(R"((\d+) ([-+*/]) (\d+) = (\d+))");
  const std::regex number(R"(\d+)");
  const std::regex answer(R"(The answer is: (\d+)$)");
  std::set<std::string> types;
  size_t rephrased = 0;
  for (const auto& r : a) {
    types.insert(r.type);
    ASSERT_EQ(r.type.rfind("SYNTH_ARITH", 0), 0u);
    if (r.type == "SYNTH_ARITH") EXPECT_EQ(r.query, r.original_question);
    if (r.type == "SYNTH_ARITH_Rephrased") {
      ++rephrased;
      EXPECT_NE(r.query, r.original_question);
    }
    // Operands must come from the question or from earlier steps; each step must be right.
    std::set<long long> known;
    for (auto it = std::sregex_iterator(r.query.begin(), r.query.end(), number); it != std::sregex_iterator(); ++it)
      known.insert(std::stoll(it->str()));
    long long last = -1;
    int steps = 0;
    for (auto it = std::sregex_iterator(r.response.begin(), r.response.end(), step); it != std::sregex_iterator();
         ++it) {
      long long x = std::stoll((*it)[1]), y = std::stoll((*it)[3]), z = std::stoll((*it)[4]);
      char op = (*it)[2].str()[0];
      long long expect = op == '+'   ? x + y
                         : op == '-' ? x - y
                         : op == '*' ? x * y
                                     : (y != 0 && x % y == 0 ? x / y : -1);
      ASSERT_EQ(z, expect) << r.response;
      ASSERT_TRUE(known.count(x) && known.count(y))
          << "operand not from the question or earlier steps: " << r.query << "\n"
          << r.response;
      known.insert(z);
      last = z;
      ++steps;
    }
    EXPECT_GE(steps, 2) << r.response;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(r.response, m, answer)) << r.response;
    EXPECT_EQ(std::stoll(m[1]), last) << r.response;
    EXPECT_EQ(std::stoll(m[1]), r.answer);
    EXPECT_GE(r.answer, 0);
  }
  EXPECT_EQ(types, (std::set<std::string>{"SYNTH_ARITH", "SYNTH_ARITH_Rephrased"}));
  EXPECT_GT(rephrased, 500u);

  // The written file parses back as MetaMathQA records and reads with coe's record reader.
  const fs::path dir = scratch_dir("synth");
  coe::write_synth_file((dir / "s.json").string(), 25, 123);
  coe::RecordFile file((dir / "s.json").string());
  EXPECT_TRUE(file.is_json_array());
  ASSERT_EQ(file.size(), 25);
  EXPECT_EQ(file.line(0), 2);
  EXPECT_EQ(file.parse(3)["response"], a[3].response);
  EXPECT_THROW(coe::generate_synth_records(0, 1), coe::Error);
}
