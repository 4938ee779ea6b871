#pragma once
// Which records go to training and which to validation.
//
// Target size k = val_count, or round(val_fraction * n); 1 <= k < n.
//  - splitmix64: a Fisher-Yates permutation of 0..n-1 from SplitMix64(seed); its first k entries
//    are held out. Both sides keep source order.
//  - numpy: the reference's `np.random.seed(seed); np.random.choice(n, k, replace=False)` exactly;
//    validation keeps NumPy's draw order (as the reference's test.parquet), training source order.
//  - group_by: records are grouped by the value of one key (MetaMathQA's original_question) in
//    order of first appearance; the groups are permuted with SplitMix64(seed) and whole groups
//    are held out until validation holds at least k records. No group is on both sides.
#include "coe/data/data_config.h"

#include <cstdint>
#include <vector>

namespace coe {

struct SplitAssignment {
  std::vector<int64_t> train;  // record indices in output order
  std::vector<int64_t> val;
  int64_t groups = 0;  // number of distinct group keys (grouped splits only)
};

// Number of records to hold out of n under `split`; throws when that leaves either side empty.
int64_t val_target(int64_t n, const SplitConfig& split);

// `group_keys` holds one hash per record of its split.group_by value (equal values, equal hashes)
// when grouping, and is ignored otherwise. A hash collision can only merge two groups, which never
// puts one group on both sides, so 64-bit hashes stand in for the (long) key texts.
SplitAssignment assign_split(int64_t n, const SplitConfig& split, const std::vector<uint64_t>& group_keys);

}  // namespace coe
