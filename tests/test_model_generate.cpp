// Incremental decoding with the compressed MLA cache equals recomputing the whole sequence at
// every step: on both reference fixtures (CoE C=2 with YaRN rope; MoE with q-LoRA), in both the
// absorbed and the expanded attention, for a batch of prompts of unequal lengths (left-padded),
// the logits agree to 1e-5 and greedy decoding picks the same tokens. Generation on top of it:
// greedy equals greedy by recomputation, sampling is fixed by its seed and independent of the
// batch, stop strings cut the text (streamed pieces add up to it), position limits hold.
#include "coe/eval/generate.h"
#include "coe/io/hf_checkpoint.h"
#include "coe/model/causal_lm.h"
#include "coe/model/kv_cache.h"
#include "coe/tokenizer/tokenizer.h"
#include "support/expect_error.h"
#include "support/test_env.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

const char* kFixtures[] = {"coe_c2_igate_inner_yarn", "moe_c1_qlora_grouplimited_norm"};

coe::CausalLM load_fixture(const std::string& name) {
  const fs::path dir = coe::test::shared_root() / "fixtures" / name;
  coe::CausalLM model = coe::load_hf_checkpoint(dir.string());
  model->eval();
  return model;
}

std::vector<std::vector<int32_t>> random_prompts(const std::vector<int64_t>& lengths, int64_t vocab, uint64_t seed) {
  at::manual_seed(seed);
  std::vector<std::vector<int32_t>> out;
  for (int64_t n : lengths) {
    const at::Tensor ids = at::randint(2, vocab, {n}, at::TensorOptions().dtype(at::kLong));
    std::vector<int32_t> p;
    for (int64_t i = 0; i < n; ++i) p.push_back(static_cast<int32_t>(ids[i].item<int64_t>()));
    out.push_back(p);
  }
  return out;
}

at::Tensor as_tensor(const std::vector<int32_t>& ids) {
  return at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::TensorOptions().dtype(at::kLong));
}

// Logits of every position of one unpadded sequence, by the training forward.
at::Tensor full_logits(coe::CausalLMImpl& model, const std::vector<int32_t>& ids) {
  at::NoGradGuard no_grad;
  return model.forward(as_tensor(ids).unsqueeze(0)).logits[0];
}

double max_abs(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

// Left-padded prefill of `prompts`, then `steps` greedy decode steps; every step's logits of every
// row are compared with the full recomputation of that row.
void check_against_recomputation(const std::string& fixture, coe::MlaDecode mode) {
  coe::CausalLM model = load_fixture(fixture);
  const int64_t vocab = model->config().vocab_size;
  auto rows = random_prompts({7, 3, 11}, vocab, 11);
  const int64_t B = static_cast<int64_t>(rows.size()), longest = 11, steps = 10;

  coe::KvCache cache(model->config(), B, longest + steps, at::TensorOptions().dtype(at::kFloat));
  cache.mode = mode;
  std::vector<int64_t> padding, flat;
  for (const auto& r : rows) {
    padding.push_back(longest - static_cast<int64_t>(r.size()));
    flat.insert(flat.end(), static_cast<size_t>(padding.back()), 0);  // any id: never attended to
    flat.insert(flat.end(), r.begin(), r.end());
  }
  const at::Tensor prompt = at::tensor(flat, at::TensorOptions().dtype(at::kLong)).view({B, longest});
  at::Tensor all = model->forward_cached(prompt, cache, padding, /*all_positions=*/true);
  double worst = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = static_cast<int64_t>(rows[b].size());
    const double err = max_abs(all[b].narrow(0, padding[b], n), full_logits(*model, rows[b]));
    EXPECT_LE(err, 1e-5) << fixture << " prefill row " << b;
    worst = std::max(worst, err);
  }
  at::Tensor last = all.select(1, longest - 1);
  for (int64_t step = 0; step <= steps; ++step) {
    std::vector<int64_t> next;
    for (int64_t b = 0; b < B; ++b) {
      const at::Tensor want = full_logits(*model, rows[b]).select(0, static_cast<int64_t>(rows[b].size()) - 1);
      const double err = max_abs(last[b], want);
      EXPECT_LE(err, 1e-5) << fixture << " " << coe::to_string(mode) << " step " << step << " row " << b;
      worst = std::max(worst, err);
      const int64_t token = last[b].argmax().item<int64_t>();
      EXPECT_EQ(token, want.argmax().item<int64_t>()) << fixture << " step " << step << " row " << b;
      rows[b].push_back(static_cast<int32_t>(token));
      next.push_back(token);
    }
    if (step == steps) break;
    last = model->forward_cached(at::tensor(next, at::TensorOptions().dtype(at::kLong)).view({B, 1}), cache);
  }
  // Each row's rope positions counted its real tokens only.
  for (int64_t b = 0; b < B; ++b) EXPECT_EQ(cache.next_position()[b], static_cast<int64_t>(rows[b].size()) - 1);
  std::printf("%s %s: max abs logit error cached vs recomputed %.2e over %lld steps\n", fixture.c_str(),
              coe::to_string(mode), worst, static_cast<long long>(steps + 1));
}

TEST(CachedDecoding, AbsorbedMatchesRecomputationOnFixtures) {
  for (const char* f : kFixtures) check_against_recomputation(f, coe::MlaDecode::kAbsorbed);
}

TEST(CachedDecoding, ExpandedMatchesRecomputationOnFixtures) {
  for (const char* f : kFixtures) check_against_recomputation(f, coe::MlaDecode::kExpanded);
}

TEST(CachedDecoding, ChunkedPrefillEqualsOneShot) {
  coe::CausalLM model = load_fixture(kFixtures[0]);
  const auto prompt = random_prompts({12}, model->config().vocab_size, 5)[0];
  const at::Tensor ids = as_tensor(prompt).unsqueeze(0);
  coe::KvCache one(model->config(), 1, 12, at::TensorOptions().dtype(at::kFloat));
  const at::Tensor whole = model->forward_cached(ids, one, {}, true)[0];
  coe::KvCache chunks(model->config(), 1, 12, at::TensorOptions().dtype(at::kFloat));
  const at::Tensor a = model->forward_cached(ids.narrow(1, 0, 5), chunks, {}, true)[0];
  const at::Tensor b = model->forward_cached(ids.narrow(1, 5, 7), chunks, {}, true)[0];
  EXPECT_LE(max_abs(at::cat({a, b}, 0), whole), 1e-5);
  EXPECT_EQ(chunks.length(), 12);
  EXPECT_EQ(chunks.next_position()[0], 12);
}

TEST(CachedDecoding, CacheHoldsTheLatentAndTheRopeKeyOnly) {
  coe::CausalLM model = load_fixture(kFixtures[0]);
  const auto& c = model->config();
  coe::KvCache cache(c, 2, 16, at::TensorOptions().dtype(at::kFloat));
  ASSERT_EQ(cache.layers.size(), static_cast<size_t>(c.num_hidden_layers));
  EXPECT_EQ(cache.layers[0].latent.sizes(), (std::vector<int64_t>{2, 16, c.kv_lora_rank}));
  EXPECT_EQ(cache.layers[0].rope_key.sizes(), (std::vector<int64_t>{2, 16, c.qk_rope_head_dim}));
  EXPECT_EQ(coe::KvCache::bytes_per_token(c, 4), c.num_hidden_layers * (c.kv_lora_rank + c.qk_rope_head_dim) * 4);
}

TEST(CachedDecoding, PositionLimitAndCapacityAreErrors) {
  coe::ModelConfig c = load_fixture(kFixtures[1])->config();
  c.max_position_embeddings = 8;
  coe::CausalLM model(c);
  model->eval();
  coe::KvCache cache(c, 1, 12, at::TensorOptions().dtype(at::kFloat));
  model->forward_cached(at::ones({1, 8}, at::TensorOptions().dtype(at::kLong)), cache);
  coe::test::expect_error(
      [&] {
        model->forward_cached(at::ones({1, 1}, at::TensorOptions().dtype(at::kLong)), cache);
      },
      {"9 tokens", "max_position_embeddings 8"});
  coe::KvCache small(c, 1, 4, at::TensorOptions().dtype(at::kFloat));
  coe::test::expect_error(
      [&] {
        model->forward_cached(at::ones({1, 5}, at::TensorOptions().dtype(at::kLong)), small);
      },
      {"overflow", "4 slots"});

  const coe::ByteTokenizer tok;
  coe::GenerateOptions opts;
  opts.max_new_tokens = 10;
  coe::test::expect_error(
      [&] {
        coe::generate(*model, tok, {{5, 6}, std::vector<int32_t>(8, 5)}, opts);
      },
      {"prompt 1 has 8 tokens", "max_position_embeddings 8"});
  const auto out = coe::generate(*model, tok, {std::vector<int32_t>(6, 5)}, opts);
  EXPECT_EQ(out[0].finish, coe::FinishReason::kPositionLimit);
  EXPECT_EQ(out[0].tokens.size(), 2u);  // 6 + 2 = 8 tokens
  opts.max_new_tokens = 0;
  coe::test::expect_error([&] { coe::generate(*model, tok, {{5}}, opts); }, {"max_new_tokens 0"});
}

// Greedy decoding by recomputing the whole sequence for every token.
std::vector<int32_t> recomputed_greedy(coe::CausalLMImpl& model, std::vector<int32_t> ids, int64_t n, int64_t vocab) {
  std::vector<int32_t> out;
  for (int64_t i = 0; i < n; ++i) {
    const at::Tensor logits = full_logits(model, ids).select(0, static_cast<int64_t>(ids.size()) - 1);
    const auto token = static_cast<int32_t>(logits.narrow(0, 0, vocab).argmax().item<int64_t>());
    out.push_back(token);
    ids.push_back(token);
  }
  return out;
}

TEST(Generate, GreedyEqualsRecomputedGreedyInABatch) {
  const coe::ByteTokenizer tok;  // ids < 128 are the fixtures' vocabulary; EOS (258) is out of reach
  for (const char* f : kFixtures) {
    coe::CausalLM model = load_fixture(f);
    const auto prompts = random_prompts({4, 9, 1, 6}, model->config().vocab_size, 3);
    coe::GenerateOptions opts;
    opts.max_new_tokens = 12;
    coe::GenerateStats stats;
    const auto batch = coe::generate(*model, tok, prompts, opts, {}, &stats);
    ASSERT_EQ(batch.size(), prompts.size());
    for (size_t r = 0; r < prompts.size(); ++r) {
      EXPECT_EQ(batch[r].tokens, recomputed_greedy(*model, prompts[r], 12, model->config().vocab_size))
          << f << " row " << r;
      EXPECT_EQ(batch[r].finish, coe::FinishReason::kMaxNewTokens);
      EXPECT_EQ(batch[r].text, tok.decode(batch[r].tokens));
    }
    EXPECT_EQ(stats.prompt_tokens, 20);
    EXPECT_EQ(stats.decode_tokens, 4 * 11);  // each row's first token comes from the prefill
    opts.prefill_mode = opts.decode_mode = coe::MlaDecode::kExpanded;
    const auto expanded = coe::generate(*model, tok, prompts, opts);
    for (size_t r = 0; r < prompts.size(); ++r) EXPECT_EQ(expanded[r].tokens, batch[r].tokens) << f << " row " << r;
  }
}

// Rows that finish leave the batch (KvCache::keep_rows); the others go on exactly as before.
TEST(Generate, RowsFinishingEarlyLeaveTheOthersUnchanged) {
  const coe::ByteTokenizer tok;
  coe::CausalLM model = load_fixture(kFixtures[0]);
  const auto prompts = random_prompts({4, 9, 1, 6}, model->config().vocab_size, 3);
  coe::GenerateOptions opts;
  opts.max_new_tokens = 12;
  const auto full = coe::generate(*model, tok, prompts, opts);
  // A stop string from row 1's text that no other row writes: row 1 alone stops early.
  std::string stop;
  for (size_t at = 2; at + 2 <= full[1].text.size() && stop.empty(); ++at) {
    const std::string candidate = full[1].text.substr(at, 2);
    bool elsewhere = full[1].text.find(candidate) < at;
    for (size_t r : {0, 2, 3}) elsewhere |= full[r].text.find(candidate) != std::string::npos;
    if (!elsewhere) stop = candidate;
  }
  ASSERT_FALSE(stop.empty()) << "no distinctive stop string in: " << full[1].text;
  opts.stop = {stop};
  const auto cut = coe::generate(*model, tok, prompts, opts);
  EXPECT_EQ(cut[1].finish, coe::FinishReason::kStop);
  EXPECT_LT(cut[1].tokens.size(), full[1].tokens.size());
  for (size_t r : {0, 2, 3}) {
    EXPECT_EQ(cut[r].tokens, full[r].tokens) << "row " << r;
    EXPECT_EQ(cut[r].finish, coe::FinishReason::kMaxNewTokens);
  }

  // Per-row position limits: the longer prompt stops first, the shorter one goes on.
  coe::ModelConfig c = model->config();
  c.max_position_embeddings = 10;
  coe::CausalLM limited(c);
  limited->eval();
  coe::load_hf_state_dict(*limited, coe::hf_state_dict(*model), "fixture");
  const auto out = coe::generate(*limited, tok, {prompts[1], prompts[0]}, opts);  // 9 and 4 prompt tokens
  EXPECT_EQ(out[0].finish, coe::FinishReason::kPositionLimit);
  EXPECT_EQ(out[0].tokens.size(), 1u);
  EXPECT_EQ(out[1].finish, coe::FinishReason::kPositionLimit);
  EXPECT_EQ(out[1].tokens.size(), 6u);
  EXPECT_EQ(out[1].tokens, std::vector<int32_t>(full[0].tokens.begin(), full[0].tokens.begin() + 6));
}

TEST(Generate, SamplingIsFixedBySeedAndIndependentOfTheBatch) {
  const coe::ByteTokenizer tok;
  coe::CausalLM model = load_fixture(kFixtures[0]);
  const auto prompts = random_prompts({5, 2, 8}, model->config().vocab_size, 9);
  coe::GenerateOptions opts;
  opts.max_new_tokens = 16;
  opts.sampling = {/*temperature=*/0.9, /*top_k=*/40, /*top_p=*/0.95, /*seed=*/7};
  const auto first = coe::generate(*model, tok, prompts, opts);
  const auto again = coe::generate(*model, tok, prompts, opts);
  for (size_t r = 0; r < prompts.size(); ++r) {
    EXPECT_EQ(first[r].tokens, again[r].tokens);
    const auto alone = coe::generate(*model, tok, {prompts[r]}, opts, {static_cast<uint64_t>(r)});
    EXPECT_EQ(alone[0].tokens, first[r].tokens) << "row " << r;
  }
  opts.sampling.seed = 8;
  const auto other = coe::generate(*model, tok, prompts, opts);
  bool differs = false;
  for (size_t r = 0; r < prompts.size(); ++r) differs |= other[r].tokens != first[r].tokens;
  EXPECT_TRUE(differs);
}

TEST(Generate, StopStringsCutTheTextAndStreamingAddsUpToIt) {
  const coe::ByteTokenizer tok;
  coe::CausalLM model = load_fixture(kFixtures[1]);
  const auto prompts = random_prompts({6}, model->config().vocab_size, 2);
  coe::GenerateOptions opts;
  opts.max_new_tokens = 20;
  const std::string full = coe::generate(*model, tok, prompts, opts)[0].text;
  ASSERT_EQ(full.size(), 20u);
  const std::string stop = full.substr(9, 3);
  opts.stop = {stop};
  std::string streamed;
  const auto cut = coe::generate(*model, tok, prompts, opts, {}, nullptr, [&](int64_t row, const std::string& piece) {
    EXPECT_EQ(row, 0);
    streamed += piece;
  });
  EXPECT_EQ(cut[0].finish, coe::FinishReason::kStop);
  EXPECT_EQ(cut[0].text, full.substr(0, full.find(stop)));
  EXPECT_EQ(streamed, cut[0].text);
}

TEST(Generate, ChooseToken) {
  const std::vector<float> logits = {0.0f, std::log(3.0f), -1e9f};  // probabilities 1/4, 3/4, 0
  coe::SamplingOptions greedy;
  EXPECT_EQ(coe::choose_token(logits.data(), 3, greedy, 0.0), 1);
  coe::SamplingOptions s{1.0, 0, 1.0, 0};
  EXPECT_EQ(coe::choose_token(logits.data(), 3, s, 0.2), 0);
  EXPECT_EQ(coe::choose_token(logits.data(), 3, s, 0.3), 1);
  s.top_k = 1;
  EXPECT_EQ(coe::choose_token(logits.data(), 3, s, 0.0), 1);
  s.top_k = 0;
  s.top_p = 0.7;  // the most likely token alone reaches 0.75
  EXPECT_EQ(coe::choose_token(logits.data(), 3, s, 0.0), 1);
  EXPECT_EQ(coe::choose_token(logits.data(), 1, greedy, 0.0), 0);  // only the first `vocab` ids count
}

}  // namespace
