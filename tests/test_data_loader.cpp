// The loader over prepared splits: padding and the reference's label rule, truncation, packing,
// deterministic shuffling, resume, sharding, single-pass evaluation; on tiny hand-made records
// (exact expectations) and on real GSM8K records.
#include "coe/data/batch.h"
#include "coe/data/loader.h"
#include "coe/data/prepare.h"
#include "coe/data/prepared.h"
#include "coe/util/error.h"
#include "support/expect_error.h"
#include "support/test_env.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using coe::kIgnoreLabel;
using coe::LoaderOptions;
using coe::TokenBatch;
using coe::test::scratch_dir;

namespace {

constexpr int32_t kPad = 256, kEos = 258;  // byte tokenizer

// Records whose byte tokens are their text, via the template "{t}".
std::shared_ptr<const coe::PreparedSplit> tiny_split(const std::vector<std::string>& texts) {
  static int n = 0;
  const fs::path dir = scratch_dir("loader-tiny-" + std::to_string(n++));
  {
    std::ofstream out(dir / "tiny.jsonl");
    for (const auto& t : texts) out << nlohmann::json{{"t", t}}.dump() << "\n";
  }
  coe::DataConfig cfg;
  cfg.train_files = {(dir / "tiny.jsonl").string()};
  cfg.prepared_dir = (dir / "p").string();
  cfg.text.template_text = "{t}";
  coe::prepare_dataset(cfg);
  return coe::open_split(cfg.prepared_dir, "train");
}

const std::shared_ptr<const coe::PreparedSplit>& gsm_split() {
  static std::shared_ptr<const coe::PreparedSplit> split = [] {
    const fs::path dir = scratch_dir("loader-gsm");
    coe::DataConfig cfg;
    cfg.train_files = {(coe::test::shared_root() / "data" / "gsm8k" / "test.jsonl").string()};
    cfg.prepared_dir = (dir / "p").string();
    cfg.text.text_keys = {"question", "answer"};
    coe::prepare_dataset(cfg);
    return coe::open_split(cfg.prepared_dir, "train");
  }();
  return split;
}

std::vector<int32_t> bytes(const std::string& s) { return std::vector<int32_t>(s.begin(), s.end()); }

std::vector<int32_t> row(const std::vector<int32_t>& v, const TokenBatch& b, int64_t r) {
  return std::vector<int32_t>(v.begin() + r * b.seq_len, v.begin() + (r + 1) * b.seq_len);
}

LoaderOptions opts(int64_t batch, int64_t max_length) {
  LoaderOptions o;
  o.batch_size = batch;
  o.max_length = max_length;
  return o;
}

using coe::test::error_of;

// A row's identity for set comparisons: its record index and its tokens.
std::vector<int32_t> row_key(const TokenBatch& b, int64_t r) {
  auto ids = row(b.input_ids, b, r);
  ids.insert(ids.begin(), static_cast<int32_t>(b.record_index[r]));
  return ids;
}

}  // namespace

TEST(DataLoader, PaddingAndTheReferenceLabelRule) {
  auto split = tiny_split({"abc", "hello", "12345678"});
  auto o = opts(3, 8);
  o.shuffle = false;
  coe::Loader loader(split, o);
  TokenBatch b = loader.next();
  ASSERT_EQ(b.batch_size, 3);
  ASSERT_EQ(b.seq_len, 8);
  ASSERT_EQ(b.input_ids.size(), 24u);
  EXPECT_EQ(row(b.input_ids, b, 0), (std::vector<int32_t>{'a', 'b', 'c', kPad, kPad, kPad, kPad, kPad}));
  // Labels: the tokens, then the first pad (the reference trains the last token to predict it),
  // then ignored.
  EXPECT_EQ(row(b.labels, b, 0),
            (std::vector<int32_t>{'a', 'b', 'c', kPad, kIgnoreLabel, kIgnoreLabel, kIgnoreLabel, kIgnoreLabel}));
  EXPECT_EQ(row(b.input_ids, b, 1), (std::vector<int32_t>{'h', 'e', 'l', 'l', 'o', kPad, kPad, kPad}));
  EXPECT_EQ(row(b.labels, b, 1), (std::vector<int32_t>{'h', 'e', 'l', 'l', 'o', kPad, kIgnoreLabel, kIgnoreLabel}));
  // A record that fills the row exactly has no padding and nothing ignored.
  EXPECT_EQ(row(b.input_ids, b, 2), bytes("12345678"));
  EXPECT_EQ(row(b.labels, b, 2), bytes("12345678"));
  EXPECT_EQ(b.record_index, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(b.lengths, (std::vector<int64_t>{3, 5, 8}));

  // add_eos appends EOS before the padding; it counts toward max_length.
  o.add_eos = true;
  o.max_length = 9;
  TokenBatch e = coe::Loader(split, o).next();
  EXPECT_EQ(row(e.input_ids, e, 0), (std::vector<int32_t>{'a', 'b', 'c', kEos, kPad, kPad, kPad, kPad, kPad}));
  EXPECT_EQ(row(e.labels, e, 0),
            (std::vector<int32_t>{'a', 'b', 'c', kEos, kPad, kIgnoreLabel, kIgnoreLabel, kIgnoreLabel, kIgnoreLabel}));
  EXPECT_EQ(e.lengths[0], 4);

  // An explicit pad id overrides the tokenizer's.
  o.add_eos = false;
  o.pad_id = 0;
  TokenBatch z = coe::Loader(split, o).next();
  EXPECT_EQ(z.input_ids[3], 0);
  EXPECT_EQ(z.labels[3], 0);
  EXPECT_EQ(z.labels[4], kIgnoreLabel);
}

TEST(DataLoader, Truncation) {
  auto split = tiny_split({"abc", "0123456789", "xy"});
  auto o = opts(3, 6);
  o.shuffle = false;
  std::string e = error_of([&] { coe::Loader loader(split, o); });
  // Named by the user's input file and its 1-based record, not the prepared directory.
  EXPECT_NE(e.find("tiny.jsonl: record 2 has 10 tokens, more than max_length 6 (truncation: error"), std::string::npos)
      << e;
  EXPECT_EQ(e.find('\n'), std::string::npos);
  o.add_eos = true;
  o.max_length = 10;
  e = error_of([&] { coe::Loader loader(split, o); });
  EXPECT_NE(e.find("tiny.jsonl: record 2 has 11 tokens with EOS, more than max_length 10"), std::string::npos) << e;

  o.add_eos = false;
  o.max_length = 6;
  o.truncation = coe::Truncation::kRight;
  TokenBatch r = coe::Loader(split, o).next();
  EXPECT_EQ(row(r.input_ids, r, 1), bytes("012345"));
  EXPECT_EQ(row(r.labels, r, 1), bytes("012345"));
  EXPECT_EQ(r.lengths[1], 6);
  o.truncation = coe::Truncation::kLeft;
  TokenBatch l = coe::Loader(split, o).next();
  EXPECT_EQ(row(l.input_ids, l, 1), bytes("456789"));
  // Untouched records are unaffected by the truncation mode.
  EXPECT_EQ(row(l.input_ids, l, 0), row(r.input_ids, r, 0));

  // The evaluation pass checks only the records it covers.
  o.truncation = coe::Truncation::kError;
  EXPECT_NO_THROW(coe::SequentialLoader(split, o, 1));
  EXPECT_THROW(coe::SequentialLoader(split, o, 2), coe::Error);
}

TEST(DataLoader, PackingJoinsWithEosAndCutsRows) {
  auto split = tiny_split({"abc", "hello", "xy", "0123456"});
  auto o = opts(1, 4);
  o.packing = true;
  o.shuffle = false;
  coe::Loader loader(split, o);
  // Stream: abc E hello E xy E 0123456 E = 21 tokens: 5 rows of 4, the last token dropped.
  ASSERT_EQ(loader.units_per_epoch(), 5);
  std::vector<int32_t> stream;
  for (const char* t : {"abc", "hello", "xy", "0123456"}) {
    for (const char* c = t; *c; ++c) stream.push_back(*c);
    stream.push_back(kEos);
  }
  std::vector<int64_t> records;
  for (int i = 0; i < 5; ++i) {
    TokenBatch b = loader.next();
    EXPECT_EQ(b.input_ids, std::vector<int32_t>(stream.begin() + 4 * i, stream.begin() + 4 * i + 4)) << "row " << i;
    EXPECT_EQ(b.labels, b.input_ids) << "packed rows have no padding and no ignored labels";
    EXPECT_EQ(b.lengths[0], 4);
    records.push_back(b.record_index[0]);
  }
  // abcE | hell | oExy | E012 | 3456: rows 0 and 1 lie in one record, the others mix records.
  EXPECT_EQ(records, (std::vector<int64_t>{0, 1, -1, -1, 3}));

  // Single pass: the tail shorter than a row is kept, padded, its padding ignored.
  o.max_length = 6;
  coe::SequentialLoader seq(split, o);
  EXPECT_EQ(seq.num_batches(), 4);  // ceil(21 / 6)
  TokenBatch b;
  std::vector<int32_t> all;
  while (seq.next(&b)) all.insert(all.end(), b.input_ids.begin(), b.input_ids.end());
  EXPECT_EQ(std::vector<int32_t>(all.begin(), all.begin() + 21), stream);
  EXPECT_EQ(std::vector<int32_t>(all.begin() + 21, all.end()), (std::vector<int32_t>{kPad, kPad, kPad}));
  EXPECT_EQ(b.labels, (std::vector<int32_t>{'5', '6', kEos, kIgnoreLabel, kIgnoreLabel, kIgnoreLabel}));
  EXPECT_EQ(b.lengths[0], 3);
}

TEST(DataLoader, ShuffleIsDeterministicAndCoversEachEpoch) {
  const auto& split = gsm_split();
  auto o = opts(16, 512);
  o.truncation = coe::Truncation::kRight;
  o.seed = 5;
  coe::Loader a(split, o), b(split, o);
  o.seed = 6;
  coe::Loader c(split, o);
  ASSERT_EQ(a.batches_per_epoch(), 1319 / 16);
  std::vector<int64_t> epoch0, epoch1, other;
  for (int64_t k = 0; k < a.batches_per_epoch(); ++k) {
    TokenBatch x = a.next(), y = b.next();
    ASSERT_EQ(x.input_ids, y.input_ids);
    ASSERT_EQ(x.labels, y.labels);
    epoch0.insert(epoch0.end(), x.record_index.begin(), x.record_index.end());
    TokenBatch z = c.next();
    other.insert(other.end(), z.record_index.begin(), z.record_index.end());
  }
  EXPECT_EQ(a.state().epoch, 0);
  for (int64_t k = 0; k < a.batches_per_epoch(); ++k) {
    TokenBatch x = a.next();
    epoch1.insert(epoch1.end(), x.record_index.begin(), x.record_index.end());
  }
  EXPECT_EQ(a.state().epoch, 1);
  // Each epoch visits distinct records (all but the 1319 % 16 dropped), in a new order.
  EXPECT_EQ(std::set<int64_t>(epoch0.begin(), epoch0.end()).size(), epoch0.size());
  EXPECT_EQ(std::set<int64_t>(epoch1.begin(), epoch1.end()).size(), epoch1.size());
  EXPECT_EQ(epoch0.size(), 1312u);
  EXPECT_NE(epoch0, epoch1);
  EXPECT_NE(epoch0, other);
  EXPECT_FALSE(std::is_sorted(epoch0.begin(), epoch0.end()));

  // The rows are the records' tokens.
  TokenBatch x = coe::Loader(split, o).next();
  const auto rec = split->record(x.record_index[0]);
  for (int64_t i = 0; i < std::min<int64_t>(rec.size, 512); ++i)
    ASSERT_EQ(x.input_ids[i], static_cast<int32_t>(rec[i]));
}

TEST(DataLoader, ResumesFromASavedState) {
  for (bool packing : {false, true}) {
    const auto& split = gsm_split();
    auto o = opts(8, 256);
    o.truncation = coe::Truncation::kLeft;
    o.packing = packing;
    o.seed = 77;
    coe::Loader a(split, o);
    const int64_t skip = a.batches_per_epoch() - 3;  // resume close to an epoch boundary
    for (int64_t k = 0; k < skip; ++k) a.next();
    const std::string saved = a.state().to_json().dump();

    coe::Loader b(split, o);
    b.restore(coe::LoaderState::from_json(nlohmann::json::parse(saved)));
    for (int k = 0; k < 10; ++k) {
      TokenBatch x = a.next(), y = b.next();
      ASSERT_EQ(x.input_ids, y.input_ids) << "packing " << packing << " batch " << k;
      ASSERT_EQ(x.labels, y.labels);
      ASSERT_EQ(x.record_index, y.record_index);
    }
    EXPECT_EQ(a.state().epoch, 1);
    EXPECT_EQ(a.state().to_json(), b.state().to_json());

    // The state refuses a loader it does not describe.
    auto s = coe::LoaderState::from_json(nlohmann::json::parse(saved));
    o.seed = 78;
    coe::Loader other_seed(split, o);
    EXPECT_NE(error_of([&] { other_seed.restore(s); }).find("saved with seed 77"), std::string::npos);
    o.seed = 77;
    o.max_length = 128;
    coe::Loader other_len(split, o);
    EXPECT_NE(error_of([&] { other_len.restore(s); }).find("data settings changed"), std::string::npos);
  }
  std::string e = error_of([] { coe::LoaderState::from_json(nlohmann::json{{"epoch", 1}}); });
  EXPECT_NE(e.find("'cursor' is missing"), std::string::npos) << e;
  e = error_of([] { coe::LoaderState::from_json(nlohmann::json{{"epoch", 1}, {"cursor", "x"}}); });
  EXPECT_NE(e.find("'cursor' is missing or not an integer"), std::string::npos) << e;
}

TEST(DataLoader, RanksSplitEachGlobalBatch) {
  for (bool packing : {false, true}) {
    const auto& split = gsm_split();
    auto single = opts(6, 300);
    single.truncation = coe::Truncation::kRight;
    single.packing = packing;
    single.seed = 3;
    coe::Loader one(split, single);
    auto r0 = single, r1 = single;
    r0.batch_size = r1.batch_size = 3;
    r0.world_size = r1.world_size = 2;
    r1.rank = 1;
    coe::Loader rank0(split, r0), rank1(split, r1);
    EXPECT_EQ(rank0.batches_per_epoch(), one.batches_per_epoch());
    for (int k = 0; k < 40; ++k) {
      TokenBatch g = one.next(), a = rank0.next(), b = rank1.next();
      ASSERT_EQ(a.batch_size, 3);
      ASSERT_EQ(b.batch_size, 3);
      std::multiset<std::vector<int32_t>> global, shards;
      for (int64_t r = 0; r < g.batch_size; ++r) global.insert(row_key(g, r));
      for (int64_t r = 0; r < 3; ++r) shards.insert(row_key(a, r)), shards.insert(row_key(b, r));
      ASSERT_EQ(global, shards) << "packing " << packing << " batch " << k;
      // The documented rule: rank r's row j is global row j * world_size + r.
      for (int64_t j = 0; j < 3; ++j) {
        ASSERT_EQ(row(a.input_ids, a, j), row(g.input_ids, g, 2 * j));
        ASSERT_EQ(row(b.input_ids, b, j), row(g.input_ids, g, 2 * j + 1));
      }
      if (!packing) {
        std::set<int64_t> ra(a.record_index.begin(), a.record_index.end());
        for (int64_t x : b.record_index) ASSERT_EQ(ra.count(x), 0u) << "ranks share record " << x;
      }
    }
  }
}

TEST(DataLoader, SequentialPassInOrderWithLimitAndShards) {
  const auto& split = gsm_split();
  auto o = opts(8, 1024);
  o.truncation = coe::Truncation::kRight;
  coe::SequentialLoader first100(split, o, 100);
  EXPECT_EQ(first100.records(), 100);
  EXPECT_EQ(first100.num_batches(), 13);
  std::vector<int64_t> seen;
  TokenBatch b;
  while (first100.next(&b)) seen.insert(seen.end(), b.record_index.begin(), b.record_index.end());
  EXPECT_EQ(b.batch_size, 4);  // 100 = 12 * 8 + 4
  std::vector<int64_t> expect(100);
  for (int i = 0; i < 100; ++i) expect[i] = i;
  EXPECT_EQ(seen, expect);
  first100.reset();
  ASSERT_TRUE(first100.next(&b));
  EXPECT_EQ(b.record_index[0], 0);

  // Three ranks: the same number of batches each, disjoint records, all records once.
  std::vector<int64_t> all;
  int64_t batches = -1;
  for (int64_t rank = 0; rank < 3; ++rank) {
    auto r = o;
    r.rank = rank;
    r.world_size = 3;
    coe::SequentialLoader seq(split, r, 100);
    if (batches >= 0) EXPECT_EQ(seq.num_batches(), batches);
    batches = seq.num_batches();
    int64_t n = 0;
    while (seq.next(&b)) {
      all.insert(all.end(), b.record_index.begin(), b.record_index.end());
      ++n;
    }
    EXPECT_EQ(n, batches);
  }
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, expect);
  // Without a limit every record is covered.
  EXPECT_EQ(coe::SequentialLoader(split, o).records(), 1319);
}

TEST(DataLoader, OptionErrors) {
  auto split = tiny_split({"abc", "def", "ghi"});
  auto o = opts(2, 8);
  o.world_size = 2;
  std::string e = error_of([&] { coe::Loader loader(split, o); });
  EXPECT_NE(e.find("3 records per epoch, fewer than one global batch of 4 (world_size 2 x batch_size 2)"),
            std::string::npos)
      << e;
  o.rank = 2;
  e = error_of([&] { coe::Loader loader(split, o); });
  EXPECT_NE(e.find("rank 2 is outside [0, world_size 2)"), std::string::npos) << e;
  o = opts(0, 8);
  EXPECT_THROW(coe::Loader(split, o), coe::Error);
  o = opts(1, 0);
  EXPECT_THROW(coe::Loader(split, o), coe::Error);
  o = opts(1, 8);
  e = error_of([&] { coe::SequentialLoader(split, o, 0); });
  EXPECT_NE(e.find("no records to evaluate"), std::string::npos) << e;
}

TEST(DataLoader, OptionsFromDataConfig) {
  coe::DataConfig cfg;
  cfg.max_length = 64;
  cfg.packing = true;
  cfg.truncation = coe::Truncation::kLeft;
  cfg.add_eos = true;
  cfg.shuffle = false;
  LoaderOptions o = coe::loader_options(cfg, 4, 9, 1, 2);
  EXPECT_EQ(o.batch_size, 4);
  EXPECT_EQ(o.max_length, 64);
  EXPECT_TRUE(o.packing);
  EXPECT_EQ(o.truncation, coe::Truncation::kLeft);
  EXPECT_TRUE(o.add_eos);
  EXPECT_FALSE(o.shuffle);
  EXPECT_EQ(o.seed, 9u);
  EXPECT_EQ(o.rank, 1);
  EXPECT_EQ(o.world_size, 2);
}
