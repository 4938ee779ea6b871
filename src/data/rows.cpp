#include "coe/data/rows.h"

#include "coe/data/batch.h"
#include "coe/util/error.h"

#include <algorithm>

namespace coe {

RowBuilder::RowBuilder(std::shared_ptr<const PreparedSplit> split, int64_t max_length, bool packing,
                       Truncation truncation, bool add_eos, int32_t pad_id, int32_t eos_id)
    : split_(std::move(split)),
      max_length_(max_length),
      packing_(packing),
      truncation_(truncation),
      add_eos_(add_eos),
      pad_id_(pad_id),
      eos_id_(eos_id) {
  if (max_length_ <= 0) fail("max_length must be positive, got {}", max_length_);
  if ((packing_ || add_eos_) && eos_id_ < 0)
    fail("{}: the tokenizer has no EOS id, which {} needs", split_->dir(), packing_ ? "packing" : "add_eos");
  if (!packing_ && pad_id_ < 0) fail("{}: the tokenizer has neither a pad nor an EOS id to pad with", split_->dir());
}

void RowBuilder::set_order(std::vector<int64_t> order) {
  order_ = std::move(order);
  stream_start_.clear();
  if (!packing_) return;
  stream_start_.reserve(order_.size() + 1);
  int64_t pos = 0;
  for (int64_t r : order_) {
    stream_start_.push_back(pos);
    pos += split_->record_length(r) + 1;  // + EOS
  }
  stream_start_.push_back(pos);
}

int64_t RowBuilder::rows(bool keep_tail) const {
  if (!packing_) return static_cast<int64_t>(order_.size());
  const int64_t stream = stream_start_.empty() ? 0 : stream_start_.back();
  return keep_tail ? (stream + max_length_ - 1) / max_length_ : stream / max_length_;
}

void RowBuilder::check_fits() const {
  if (packing_ || truncation_ != Truncation::kError) return;
  const int64_t extra = add_eos_ ? 1 : 0;
  for (int64_t r : order_) {
    const int64_t n = split_->record_length(r) + extra;
    if (n > max_length_)
      fail("{} has {} tokens{}, more than max_length {} (truncation: error; use truncation: left or right, or raise "
           "max_length)",
           split_->describe_record(r), n, add_eos_ ? " with EOS" : "", max_length_);
  }
}

int64_t RowBuilder::write_row(int64_t row, int32_t* ids, int32_t* labels, int64_t* length) const {
  const int64_t L = max_length_;
  if (!packing_) {
    const int64_t r = order_[static_cast<size_t>(row)];
    const TokenSpan rec = split_->record(r);
    const int64_t n = rec.size + (add_eos_ ? 1 : 0);
    auto token = [&](int64_t i) { return i < rec.size ? static_cast<int32_t>(rec[i]) : eos_id_; };
    int64_t first = 0, kept = n;
    if (n > L) {
      if (truncation_ == Truncation::kError)
        fail("{} has {} tokens, more than max_length {} (truncation: error)", split_->describe_record(r), n, L);
      first = truncation_ == Truncation::kLeft ? n - L : 0;
      kept = L;
    }
    for (int64_t i = 0; i < kept; ++i) ids[i] = labels[i] = token(first + i);
    for (int64_t i = kept; i < L; ++i) {
      ids[i] = pad_id_;
      labels[i] = i == kept ? pad_id_ : kIgnoreLabel;
    }
    *length = kept;
    return r;
  }

  // Packing: copy stream[row * L, row * L + L) piece by piece.
  const int64_t stream_end = stream_start_.back();
  int64_t pos = row * L;
  auto p = static_cast<size_t>(std::upper_bound(stream_start_.begin(), stream_start_.end(), pos) -
                               stream_start_.begin() - 1);
  int64_t record = order_[p];
  bool mixed = false;
  int64_t filled = 0;
  while (filled < L && pos < stream_end) {
    if (pos >= stream_start_[p + 1]) {
      ++p;
      mixed = true;
    }
    const int64_t r = order_[p];
    const TokenSpan rec = split_->record(r);
    const int64_t offset = pos - stream_start_[p];
    const int64_t take = std::min(L - filled, rec.size + 1 - offset);
    for (int64_t i = 0; i < take; ++i) {
      const int64_t k = offset + i;
      ids[filled + i] = k < rec.size ? static_cast<int32_t>(rec[k]) : eos_id_;
    }
    filled += take;
    pos += take;
  }
  for (int64_t i = 0; i < filled; ++i) labels[i] = ids[i];
  for (int64_t i = filled; i < L; ++i) {
    ids[i] = pad_id_ >= 0 ? pad_id_ : eos_id_;
    labels[i] = kIgnoreLabel;
  }
  *length = filled;
  return mixed ? -1 : record;
}

}  // namespace coe
