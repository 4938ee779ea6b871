#include "coe/data/split.h"

#include "coe/util/error.h"
#include "coe/util/random.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

namespace coe {

int64_t val_target(int64_t n, const SplitConfig& split) {
  int64_t k = split.val_count ? *split.val_count : std::llround(*split.val_fraction * static_cast<double>(n));
  if (k < 1)
    fail("val_fraction {} of {} records holds out no record; raise it or use val_count", *split.val_fraction, n);
  if (k >= n) fail("holding out {} of {} records leaves no training records", k, n);
  return k;
}

SplitAssignment assign_split(int64_t n, const SplitConfig& split, const std::vector<uint64_t>& group_keys) {
  SplitAssignment out;
  const int64_t k = val_target(n, split);
  std::vector<char> held(static_cast<size_t>(n), 0);

  if (!split.group_by.empty()) {
    if (static_cast<int64_t>(group_keys.size()) != n)
      fail("assign_split: {} group keys for {} records", group_keys.size(), n);
    std::unordered_map<uint64_t, int64_t> group_of_key;
    std::vector<int64_t> group(static_cast<size_t>(n));
    std::vector<int64_t> group_size;
    for (int64_t i = 0; i < n; ++i) {
      auto [it, added] = group_of_key.emplace(group_keys[i], static_cast<int64_t>(group_size.size()));
      if (added) group_size.push_back(0);
      group[i] = it->second;
      ++group_size[it->second];
    }
    out.groups = static_cast<int64_t>(group_size.size());
    std::vector<char> group_held(group_size.size(), 0);
    int64_t taken = 0;
    for (int64_t g : shuffled_indices(out.groups, split.seed)) {
      if (taken >= k) break;
      group_held[g] = 1;
      taken += group_size[g];
    }
    if (taken >= n)
      fail("grouping by '{}' puts all {} records ({} groups) into validation; lower val_count/val_fraction",
           split.group_by, n, out.groups);
    for (int64_t i = 0; i < n; ++i) held[i] = group_held[group[i]];
    for (int64_t i = 0; i < n; ++i) (held[i] ? out.val : out.train).push_back(i);
    return out;
  }

  if (split.rng == SplitRng::kNumpy) {
    std::vector<int64_t> perm = numpy_legacy_permutation(n, split.seed);
    out.val.assign(perm.begin(), perm.begin() + k);
    for (int64_t i : out.val) held[i] = 1;
    for (int64_t i = 0; i < n; ++i)
      if (!held[i]) out.train.push_back(i);
    return out;
  }

  std::vector<int64_t> perm = shuffled_indices(n, split.seed);
  for (int64_t j = 0; j < k; ++j) held[perm[j]] = 1;
  for (int64_t i = 0; i < n; ++i) (held[i] ? out.val : out.train).push_back(i);
  return out;
}

}  // namespace coe
