#pragma once
// Batches from a prepared split (prepared.h), memory-mapped, as TokenBatch rows of max_length
// built by RowBuilder (rows.h: padding / truncation / packing and the label rule).
//
// Loader: training. Endless epochs; epoch e lays the records out in a Fisher-Yates order drawn
// from SplitMix64(mix_seed(seed, e)) (or source order with shuffle off). A "unit" is a record
// (padding mode) or a packed row. Units per epoch: U = records, or floor(stream / max_length).
// Sharding: global batch = world_size (W) * batch_size (B) units; global batch k of an epoch is
// units [k*W*B, (k+1)*W*B) of its order, and rank r's row j is unit k*W*B + j*W + r (the
// assignment torch's DistributedSampler makes), so ranks get disjoint rows and their union is
// the single-process batch of size W*B. An epoch has floor(U / (W*B)) batches; the remainder is
// dropped (the reference drops the last incomplete batch too).
//
// SequentialLoader: evaluation. One pass over the first `max_records` records (all when < 0) in
// source order (by length with LoaderOptions::length_buckets), with the same sharding rule; it
// yields ceil(U / (W*B)) batches on every rank, the last possibly shorter (even empty on high
// ranks), so all ranks step together.
#include "coe/data/batch.h"
#include "coe/data/data_config.h"
#include "coe/data/prepared.h"
#include "coe/data/rows.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace coe {

struct LoaderOptions {
  int64_t batch_size = 1;  // rows per rank per batch
  int64_t max_length = 512;
  bool packing = false;
  Truncation truncation = Truncation::kError;
  bool add_eos = false;
  bool shuffle = true;  // Loader only
  // SequentialLoader, padding mode only: records sorted by length (longest first) and every batch
  // cut to its longest row + 1 (the first padding position still carries its label), instead of
  // max_length. The same per-record losses with far less padding (coe-eval).
  bool length_buckets = false;
  uint64_t seed = 0;
  int64_t rank = 0;
  int64_t world_size = 1;
  std::optional<int32_t> pad_id;  // default: the split's (tokenizer pad, else EOS)
};

// max_length, packing, truncation, add_eos and shuffle from the data config.
LoaderOptions loader_options(const DataConfig& data, int64_t batch_size, uint64_t seed, int64_t rank = 0,
                             int64_t world_size = 1);

// Where a Loader is in its stream: enough to resume exactly, saved with checkpoints.
struct LoaderState {
  int64_t epoch = 0;
  int64_t cursor = 0;  // units of this epoch's order consumed by all ranks together
  uint64_t seed = 0;
  // Identity checks on restore: the same split and row layout must be in use.
  int64_t units = 0;
  bool packing = false;
  int64_t max_length = 0;

  nlohmann::json to_json() const;
  // Throws naming the missing or mistyped field.
  static LoaderState from_json(const nlohmann::json& json);
};

class Loader {
 public:
  Loader(std::shared_ptr<const PreparedSplit> split, LoaderOptions options);

  // The next batch of this rank (batch_size rows), moving to the next epoch when needed.
  TokenBatch next();

  // The position before the next call to next(). Restoring it into a Loader over the same split
  // with the same seed, max_length and packing continues the same stream; world_size and
  // batch_size may differ (the cursor counts units, not batches).
  LoaderState state() const;
  void restore(const LoaderState& state);

  int64_t units_per_epoch() const { return units_; }
  int64_t batches_per_epoch() const { return units_ / global_batch(); }
  int64_t global_batch() const { return options_.batch_size * options_.world_size; }
  const LoaderOptions& options() const { return options_; }

 private:
  void lay_out_epoch(int64_t epoch);

  LoaderOptions options_;
  RowBuilder rows_;
  int64_t units_ = 0;
  int64_t epoch_ = 0, cursor_ = 0;
  int64_t laid_out_epoch_ = -1;
};

class SequentialLoader {
 public:
  SequentialLoader(std::shared_ptr<const PreparedSplit> split, LoaderOptions options, int64_t max_records = -1);

  // Fills the next batch and returns true; false once the pass is over.
  bool next(TokenBatch* batch);
  void reset() { batch_ = 0; }

  int64_t records() const { return records_; }  // records covered by the pass
  int64_t num_batches() const;

 private:
  LoaderOptions options_;
  RowBuilder rows_;
  int64_t records_ = 0, units_ = 0, batch_ = 0;
};

}  // namespace coe
