#pragma once
// The contract between the data pipeline and the trainer: token batches as plain vectors, so the
// data library stays torch-free. The trainer turns them into tensors.
#include "coe/util/ignore_label.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace coe {

struct TokenBatch {
  int64_t batch_size = 0;
  int64_t seq_len = 0;
  std::vector<int32_t> input_ids;  // [batch_size * seq_len], row-major, padded with the pad id
  // [batch_size * seq_len]: labels aligned with input_ids (the model shifts them), kIgnoreLabel at
  // padding (and wherever the loss mask excludes a position).
  std::vector<int32_t> labels;
  // Index of the source record of each row (-1 for packed rows that mix records); lets coe-eval
  // report loss per record `type`.
  std::vector<int64_t> record_index;
  // [batch_size]: tokens before the padding in each row (seq_len for packed rows); the trainer can
  // build attention masks / position ids from it.
  std::vector<int64_t> lengths;
};

// Uniform random ids in [0, vocab) for every position, labels = inputs (every position counts):
// the batches coe-bench and coe-memory time and measure with.
inline TokenBatch random_token_batch(int64_t rows, int64_t seq_len, int64_t vocab, std::mt19937_64& rng) {
  TokenBatch b;
  b.batch_size = rows;
  b.seq_len = seq_len;
  b.input_ids.resize(static_cast<size_t>(rows * seq_len));
  for (auto& id : b.input_ids) id = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  b.labels = b.input_ids;
  b.record_index.assign(static_cast<size_t>(rows), -1);
  b.lengths.assign(static_cast<size_t>(rows), seq_len);
  return b;
}

}  // namespace coe
