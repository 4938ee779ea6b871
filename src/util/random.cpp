#include "coe/util/random.h"

#include "coe/util/error.h"

#include <array>
#include <numeric>

namespace coe {

uint64_t SplitMix64::next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

uint64_t SplitMix64::below(uint64_t bound) {
  if (bound == 0) fail("SplitMix64::below: bound must be positive");
  unsigned __int128 m = static_cast<unsigned __int128>(next()) * bound;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < bound) {
    const uint64_t threshold = (0 - bound) % bound;
    while (low < threshold) {
      m = static_cast<unsigned __int128>(next()) * bound;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

int64_t SplitMix64::between(int64_t lo, int64_t hi) {
  if (hi < lo) fail("SplitMix64::between: empty range [{}, {}]", lo, hi);
  return lo + static_cast<int64_t>(below(static_cast<uint64_t>(hi - lo) + 1));
}

uint64_t mix_seed(uint64_t seed, uint64_t stream) {
  SplitMix64 a(seed);
  SplitMix64 b(a.next() ^ (stream * 0xD1B54A32D192ED03ULL));
  return b.next();
}

std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  SplitMix64 rng(seed);
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[rng.below(static_cast<uint64_t>(i) + 1)]);
  return order;
}

namespace {

// The 32-bit Mersenne Twister (Matsumoto & Nishimura 1998) as NumPy's legacy seeding uses it.
class Mt19937 {
 public:
  explicit Mt19937(uint32_t seed) {
    mt_[0] = seed;
    for (uint32_t i = 1; i < kN; ++i) mt_[i] = 1812433253U * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + i;
    index_ = kN;
  }

  uint32_t next() {
    if (index_ >= kN) regenerate();
    uint32_t y = mt_[index_++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9D2C5680U;
    y ^= (y << 15) & 0xEFC60000U;
    y ^= y >> 18;
    return y;
  }

 private:
  static constexpr uint32_t kN = 624, kM = 397;

  void regenerate() {
    for (uint32_t i = 0; i < kN; ++i) {
      uint32_t y = (mt_[i] & 0x80000000U) | (mt_[(i + 1) % kN] & 0x7FFFFFFFU);
      mt_[i] = mt_[(i + kM) % kN] ^ (y >> 1) ^ ((y & 1U) ? 0x9908B0DFU : 0U);
    }
    index_ = 0;
  }

  std::array<uint32_t, kN> mt_{};
  uint32_t index_ = kN;
};

// NumPy's random_interval(max) for max < 2^32: the smallest all-ones mask covering max, redrawn
// until the masked value is <= max.
uint64_t numpy_interval(Mt19937& rng, uint64_t max) {
  if (max == 0) return 0;
  uint64_t mask = max;
  for (int shift = 1; shift <= 32; shift <<= 1) mask |= mask >> shift;
  uint64_t value;
  do value = rng.next() & mask;
  while (value > max);
  return value;
}

}  // namespace

std::vector<int64_t> numpy_legacy_permutation(int64_t n, uint64_t seed) {
  if (seed > 0xFFFFFFFFULL) fail("numpy split: seed {} does not fit in 32 bits (NumPy requires 0..2^32-1)", seed);
  if (n > 0xFFFFFFFFLL) fail("numpy split: {} records is more than this reproduction supports", n);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  Mt19937 rng(static_cast<uint32_t>(seed));
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[numpy_interval(rng, static_cast<uint64_t>(i))]);
  return order;
}

}  // namespace coe
