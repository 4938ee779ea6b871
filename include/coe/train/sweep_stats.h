#pragma once
// The statistics of a sweep over seeds: per variant the mean, standard deviation and 95% interval
// of a loss over its seeds, and against the baseline the paired difference (same seed) with its
// 95% interval. Student's t throughout: a handful of seeds is the normal case, and the normal
// approximation's interval would be far too narrow for 3 of them.
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

namespace coe {

struct MeanInterval {
  int64_t n = 0;
  double mean = 0;
  // With n >= 2: the sample standard deviation (n - 1 in the denominator) and the 95% interval
  // mean -/+ t(0.975, n - 1) * sd / sqrt(n). With n == 1 there is no spread to estimate: nullopt.
  std::optional<double> sd, low, high;

  // The interval lies wholly above or below `value` (a difference whose interval excludes 0).
  bool excludes(double value) const { return low && high && (*low > value || *high < value); }
};

// The 0.975 quantile of Student's t with `df` >= 1 degrees of freedom (exact to 3 decimals from
// a table up to 30, the Cornish-Fisher expansion beyond).
double t_quantile_975(int64_t df);

// Over `values` (nullopt when empty).
std::optional<MeanInterval> mean_interval(const std::vector<double>& values);

// The paired difference variant - baseline over the seeds both have (seed -> value); nullopt when
// they share none.
std::optional<MeanInterval> paired_difference(const std::map<int64_t, double>& variant,
                                              const std::map<int64_t, double>& baseline);

}  // namespace coe
