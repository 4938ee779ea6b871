// The statistics of sweeps over seeds (train/sweep_stats.h) against examples computed by hand.
#include "coe/train/sweep_stats.h"

#include <gtest/gtest.h>

#include <cmath>

namespace {

// Three seeds' final losses 1.20, 1.25, 1.17: mean 3.62 / 3 = 1.206667; squared deviations
// 0.0000444 + 0.0018778 + 0.0013444 = 0.0032667, / 2 = 0.0016333, sd 0.040415; t(0.975, 2) = 4.303,
// half width 4.303 * 0.040415 / sqrt(3) = 0.100404: [1.106263, 1.307071].
TEST(SweepStats, MeanSdAndTheTInterval) {
  const auto m = coe::mean_interval({1.20, 1.25, 1.17});
  ASSERT_TRUE(m && m->sd && m->low && m->high);
  EXPECT_EQ(m->n, 3);
  EXPECT_NEAR(m->mean, 1.206667, 1e-6);
  EXPECT_NEAR(*m->sd, 0.040415, 1e-6);
  EXPECT_NEAR(*m->low, 1.106263, 1e-5);
  EXPECT_NEAR(*m->high, 1.307071, 1e-5);
  EXPECT_FALSE(m->excludes(1.2));
  EXPECT_TRUE(m->excludes(1.0));

  const auto one = coe::mean_interval({1.5});
  ASSERT_TRUE(one);
  EXPECT_EQ(one->mean, 1.5);
  EXPECT_FALSE(one->sd || one->low || one->high) << "one seed has no spread";
  EXPECT_FALSE(one->excludes(0.0));
  EXPECT_FALSE(coe::mean_interval({}));
}

// CoE 1.12, 1.15, 1.10 against MoE 1.20, 1.25, 1.17 on seeds 1-3 (MoE's seed 4 has no pair):
// differences -0.08, -0.10, -0.07, mean -0.083333, sd 0.015275, half width 4.303 * 0.015275 /
// sqrt(3) = 0.037949: [-0.121282, -0.045384], which excludes 0. Unpaired, the two groups' intervals
// overlap ([1.061, 1.186] and [1.106, 1.307]): pairing is what resolves the difference.
TEST(SweepStats, PairedDifferenceOverTheSharedSeeds) {
  const std::map<int64_t, double> coe_loss{{1, 1.12}, {2, 1.15}, {3, 1.10}};
  const std::map<int64_t, double> moe_loss{{1, 1.20}, {2, 1.25}, {3, 1.17}, {4, 1.30}};
  const auto d = coe::paired_difference(coe_loss, moe_loss);
  ASSERT_TRUE(d && d->sd && d->low && d->high);
  EXPECT_EQ(d->n, 3);
  EXPECT_NEAR(d->mean, -0.083333, 1e-6);
  EXPECT_NEAR(*d->sd, 0.015275, 1e-6);
  EXPECT_NEAR(*d->low, -0.121282, 1e-5);
  EXPECT_NEAR(*d->high, -0.045384, 1e-5);
  EXPECT_TRUE(d->excludes(0.0));
  const auto coe_alone = coe::mean_interval({1.12, 1.15, 1.10});
  const auto moe_alone = coe::mean_interval({1.20, 1.25, 1.17});
  EXPECT_GT(*coe_alone->high, *moe_alone->low) << "the unpaired intervals overlap";
  EXPECT_FALSE(coe::paired_difference({{7, 1.0}}, moe_loss));
}

// The table's values, and the expansion beyond it (t(0.975, 40) = 2.021, 120: 1.980).
TEST(SweepStats, StudentQuantiles) {
  EXPECT_DOUBLE_EQ(coe::t_quantile_975(1), 12.706);
  EXPECT_DOUBLE_EQ(coe::t_quantile_975(2), 4.303);
  EXPECT_DOUBLE_EQ(coe::t_quantile_975(30), 2.042);
  EXPECT_NEAR(coe::t_quantile_975(31), 2.040, 1e-3);
  EXPECT_NEAR(coe::t_quantile_975(40), 2.021, 1e-3);
  EXPECT_NEAR(coe::t_quantile_975(120), 1.980, 1e-3);
  EXPECT_NEAR(coe::t_quantile_975(1000000), 1.960, 1e-3);
}

}  // namespace
