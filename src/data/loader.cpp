#include "coe/data/loader.h"

#include "coe/util/error.h"
#include "coe/util/random.h"

#include <algorithm>
#include <numeric>

namespace coe {
namespace {

void check_options(const LoaderOptions& o) {
  if (o.batch_size <= 0) fail("loader: batch_size must be positive, got {}", o.batch_size);
  if (o.world_size <= 0) fail("loader: world_size must be positive, got {}", o.world_size);
  if (o.rank < 0 || o.rank >= o.world_size) fail("loader: rank {} is outside [0, world_size {})", o.rank, o.world_size);
}

RowBuilder make_rows(const std::shared_ptr<const PreparedSplit>& split, const LoaderOptions& o) {
  if (!split) fail("loader: no split");
  check_options(o);
  return RowBuilder(split, o.max_length, o.packing, o.truncation, o.add_eos, o.pad_id ? *o.pad_id : split->pad_id(),
                    split->eos_id());
}

std::vector<int64_t> in_order(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), int64_t{0});
  return v;
}

// Rows of global batch `first_unit` .. for this rank: unit first_unit + j*W + rank, j < B, < end.
TokenBatch build_batch(const RowBuilder& rows, const LoaderOptions& o, int64_t first_unit, int64_t end_unit) {
  std::vector<int64_t> units;
  for (int64_t j = 0; j < o.batch_size; ++j) {
    const int64_t u = first_unit + j * o.world_size + o.rank;
    if (u >= end_unit) break;
    units.push_back(u);
  }
  TokenBatch b;
  b.batch_size = static_cast<int64_t>(units.size());
  b.seq_len = o.max_length;
  b.input_ids.resize(static_cast<size_t>(b.batch_size * b.seq_len));
  b.labels.resize(b.input_ids.size());
  b.record_index.resize(units.size());
  b.lengths.resize(units.size());
  for (size_t j = 0; j < units.size(); ++j) {
    const size_t at = j * static_cast<size_t>(b.seq_len);
    b.record_index[j] = rows.write_row(units[j], b.input_ids.data() + at, b.labels.data() + at, &b.lengths[j]);
  }
  return b;
}

int64_t json_int(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) fail("loader state: '{}' is missing or not an integer", key);
  return it->get<int64_t>();
}

}  // namespace

LoaderOptions loader_options(const DataConfig& data, int64_t batch_size, uint64_t seed, int64_t rank,
                             int64_t world_size) {
  LoaderOptions o;
  o.batch_size = batch_size;
  o.max_length = data.max_length;
  o.packing = data.packing;
  o.truncation = data.truncation;
  o.add_eos = data.add_eos;
  o.shuffle = data.shuffle;
  o.seed = seed;
  o.rank = rank;
  o.world_size = world_size;
  return o;
}

nlohmann::json LoaderState::to_json() const {
  return {{"epoch", epoch}, {"cursor", cursor},   {"seed", seed},
          {"units", units}, {"packing", packing}, {"max_length", max_length}};
}

LoaderState LoaderState::from_json(const nlohmann::json& j) {
  if (!j.is_object()) fail("loader state: expected a JSON object");
  LoaderState s;
  s.epoch = json_int(j, "epoch");
  s.cursor = json_int(j, "cursor");
  auto seed = j.find("seed");
  if (seed == j.end() || !seed->is_number_unsigned())
    fail("loader state: 'seed' is missing or not a non-negative integer");
  s.seed = seed->get<uint64_t>();
  s.units = json_int(j, "units");
  s.max_length = json_int(j, "max_length");
  auto packing = j.find("packing");
  if (packing == j.end() || !packing->is_boolean()) fail("loader state: 'packing' is missing or not true/false");
  s.packing = packing->get<bool>();
  if (s.epoch < 0 || s.cursor < 0) fail("loader state: epoch {} / cursor {} must be >= 0", s.epoch, s.cursor);
  return s;
}

Loader::Loader(std::shared_ptr<const PreparedSplit> split, LoaderOptions options)
    : options_(options), rows_(make_rows(split, options)) {
  rows_.set_order(in_order(split->size()));
  rows_.check_fits();  // every record is in every epoch: fail now, not mid-run
  units_ = rows_.rows(false);
  if (units_ < global_batch())
    fail("{}: {} {} per epoch, fewer than one global batch of {} (world_size {} x batch_size {})", split->dir(), units_,
         options_.packing ? "packed rows" : "records", global_batch(), options_.world_size, options_.batch_size);
}

void Loader::lay_out_epoch(int64_t epoch) {
  if (laid_out_epoch_ == epoch) return;
  const int64_t n = rows_.split().size();
  rows_.set_order(options_.shuffle ? shuffled_indices(n, mix_seed(options_.seed, static_cast<uint64_t>(epoch)))
                                   : in_order(n));
  laid_out_epoch_ = epoch;
}

TokenBatch Loader::next() {
  if (cursor_ + global_batch() > units_) {
    ++epoch_;
    cursor_ = 0;
  }
  lay_out_epoch(epoch_);
  TokenBatch batch = build_batch(rows_, options_, cursor_, cursor_ + global_batch());
  cursor_ += global_batch();
  return batch;
}

LoaderState Loader::state() const {
  LoaderState s;
  s.epoch = epoch_;
  s.cursor = cursor_;
  s.seed = options_.seed;
  s.units = units_;
  s.packing = options_.packing;
  s.max_length = options_.max_length;
  return s;
}

void Loader::restore(const LoaderState& s) {
  if (s.units != units_ || s.packing != options_.packing || s.max_length != options_.max_length)
    fail("loader state: saved for {} {} of max_length {}, but this loader has {} {} of max_length {}; "
         "the prepared split or data settings changed",
         s.units, s.packing ? "packed rows" : "records", s.max_length, units_,
         options_.packing ? "packed rows" : "records", options_.max_length);
  if (s.seed != options_.seed)
    fail("loader state: saved with seed {}, this loader uses seed {}", s.seed, options_.seed);
  if (s.cursor > units_) fail("loader state: cursor {} is past the {} units of an epoch", s.cursor, units_);
  epoch_ = s.epoch;
  cursor_ = s.cursor;
}

SequentialLoader::SequentialLoader(std::shared_ptr<const PreparedSplit> split, LoaderOptions options,
                                   int64_t max_records)
    : options_(options), rows_(make_rows(split, options)) {
  records_ = max_records < 0 ? split->size() : std::min(max_records, split->size());
  if (records_ == 0) fail("{}: no records to evaluate (max_records {})", split->dir(), max_records);
  if (options_.length_buckets && options_.packing)
    fail("{}: length buckets need padding mode (one record per row)", split->dir());
  std::vector<int64_t> order = in_order(records_);
  if (options_.length_buckets)
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return split->record_length(a) > split->record_length(b); });
  rows_.set_order(std::move(order));
  rows_.check_fits();
  units_ = rows_.rows(true);
}

int64_t SequentialLoader::num_batches() const {
  const int64_t g = options_.batch_size * options_.world_size;
  return (units_ + g - 1) / g;
}

bool SequentialLoader::next(TokenBatch* batch) {
  if (batch_ >= num_batches()) return false;
  const int64_t first = batch_ * options_.batch_size * options_.world_size;
  *batch = build_batch(rows_, options_, first, units_);
  if (options_.length_buckets && batch->batch_size > 0) {
    // Positions past a row's first padding are ignored by the loss and, under causal attention,
    // change nothing before them: drop the columns no row needs.
    const int64_t longest = *std::max_element(batch->lengths.begin(), batch->lengths.end());
    const int64_t width = std::min(batch->seq_len, longest + 1);
    for (int64_t r = 0; r < batch->batch_size; ++r) {
      std::copy_n(batch->input_ids.begin() + r * batch->seq_len, width, batch->input_ids.begin() + r * width);
      std::copy_n(batch->labels.begin() + r * batch->seq_len, width, batch->labels.begin() + r * width);
    }
    batch->seq_len = width;
    batch->input_ids.resize(static_cast<size_t>(batch->batch_size * width));
    batch->labels.resize(batch->input_ids.size());
  }
  ++batch_;
  return true;
}

}  // namespace coe
