#pragma once
// Deterministic pseudo-random numbers for data splits, shuffles and synthetic data.
//
// std::*_distribution results differ across standard libraries, so nothing here uses them: the
// same seed gives the same split, shuffle and synthetic file on every platform and compiler.
#include <cstdint>
#include <vector>

namespace coe {

// SplitMix64 (Steele, Lea, Flood 2014): a 64-bit state, one add and a finaliser per draw.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next();
  // Uniform integer in [0, bound), bound > 0, without modulo bias (Lemire's method).
  uint64_t below(uint64_t bound);
  // Uniform integer in [lo, hi].
  int64_t between(int64_t lo, int64_t hi);

 private:
  uint64_t state_;
};

// Mixes two values into one seed, e.g. (seed, epoch) for a per-epoch shuffle.
uint64_t mix_seed(uint64_t seed, uint64_t stream);

// A Fisher-Yates permutation of 0..n-1 drawn from SplitMix64(seed).
std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed);

// Exactly what `np.random.seed(seed); np.random.permutation(n)` returns (NumPy's legacy
// RandomState: MT19937 seeded by init_genrand, Fisher-Yates from the back with masked rejection
// sampling). The reference drew its MetaMathQA held-out set as
// `np.random.choice(n, 1000, replace=False)` after `np.random.seed(42)`, which is the first 1000
// entries of this permutation. seed must fit in 32 bits, as NumPy requires.
std::vector<int64_t> numpy_legacy_permutation(int64_t n, uint64_t seed);

}  // namespace coe
