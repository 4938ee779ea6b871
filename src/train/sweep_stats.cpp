#include "coe/train/sweep_stats.h"

#include "coe/util/error.h"

#include <cmath>

namespace coe {

double t_quantile_975(int64_t df) {
  // t(0.975, df), df = 1..30 (the standard table).
  static constexpr double kTable[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                      2.201,  2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                                      2.080,  2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
  if (df < 1) fail("t quantile: {} degrees of freedom", df);
  if (df <= 30) return kTable[df - 1];
  // Cornish-Fisher: z + (z^3 + z) / 4v + (5z^5 + 16z^3 + 3z) / 96v^2 (within 0.001 from v = 30 on).
  const double z = 1.959963984540054, v = static_cast<double>(df);
  return z + (z * z * z + z) / (4 * v) + (5 * std::pow(z, 5) + 16 * z * z * z + 3 * z) / (96 * v * v);
}

std::optional<MeanInterval> mean_interval(const std::vector<double>& values) {
  if (values.empty()) return std::nullopt;
  MeanInterval m;
  m.n = static_cast<int64_t>(values.size());
  double sum = 0;
  for (double v : values) sum += v;
  m.mean = sum / static_cast<double>(m.n);
  if (m.n < 2) return m;
  double squares = 0;
  for (double v : values) squares += (v - m.mean) * (v - m.mean);
  m.sd = std::sqrt(squares / static_cast<double>(m.n - 1));
  const double half = t_quantile_975(m.n - 1) * *m.sd / std::sqrt(static_cast<double>(m.n));
  m.low = m.mean - half;
  m.high = m.mean + half;
  return m;
}

std::optional<MeanInterval> paired_difference(const std::map<int64_t, double>& variant,
                                              const std::map<int64_t, double>& baseline) {
  std::vector<double> differences;
  for (const auto& [seed, value] : variant)
    if (auto it = baseline.find(seed); it != baseline.end()) differences.push_back(value - it->second);
  return mean_interval(differences);
}

}  // namespace coe
