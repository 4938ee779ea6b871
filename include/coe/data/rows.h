#pragma once
// Turns records of a prepared split into fixed-length rows: the part of batching that does not
// care about shuffling or sharding.
//
// Padding mode (one record per row), the reference's semantics (BaseDataset + verl's SFT loss):
//   input_ids = record tokens (+ EOS if add_eos), truncated per `truncation`, right-padded with pad.
//   labels    = input_ids on the record's tokens AND on the first padding position, kIgnoreLabel
//               after it. The reference's loss_mask is the attention mask, applied to the
//               *predicting* position before the shift, so the last real token's prediction of the
//               first pad (= EOS for tokenizers without a pad) is trained; nothing else of the
//               padding, and no prompt masking.
// Packing mode: records in the given order, each followed by EOS, form one stream cut into
//   max_length rows; labels = input_ids everywhere, no padding. A tail shorter than a row is
//   dropped, or padded (labels kIgnoreLabel) when keep_tail is set (single pass evaluation).
#include "coe/data/data_config.h"
#include "coe/data/prepared.h"

#include <cstdint>
#include <memory>
#include <vector>

namespace coe {

class RowBuilder {
 public:
  RowBuilder(std::shared_ptr<const PreparedSplit> split, int64_t max_length, bool packing, Truncation truncation,
             bool add_eos, int32_t pad_id, int32_t eos_id);

  // The records to lay out, in order (a permutation of the split, or a prefix of it).
  void set_order(std::vector<int64_t> order);
  // Rows available for the current order: records (padding), or stream / max_length (packing;
  // rounded up when keep_tail).
  int64_t rows(bool keep_tail) const;
  // Fills row `row` (max_length ids and labels); returns its record index (-1 for a packed row
  // that mixes records) and stores the unpadded length.
  int64_t write_row(int64_t row, int32_t* ids, int32_t* labels, int64_t* length) const;
  // With truncation: error (padding mode), throws for the first record in the order that does
  // not fit, naming its index and length.
  void check_fits() const;

  const PreparedSplit& split() const { return *split_; }

 private:
  std::shared_ptr<const PreparedSplit> split_;
  int64_t max_length_;
  bool packing_;
  Truncation truncation_;
  bool add_eos_;
  int32_t pad_id_, eos_id_;
  std::vector<int64_t> order_;
  std::vector<int64_t> stream_start_;  // packing: start of order_[p] in the stream; back() = length
};

}  // namespace coe
