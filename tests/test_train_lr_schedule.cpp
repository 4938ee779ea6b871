// The learning-rate schedule against closed-form values.
#include "coe/train/lr_schedule.h"
#include "coe/train/train_config.h"

#include <gtest/gtest.h>

#include <cmath>

namespace {

TEST(LrSchedule, WarmupThenConstant) {
  coe::LrSchedule s;
  s.kind = coe::LrScheduleKind::kConstant;
  s.lr = 1e-3;
  s.warmup_steps = 10;
  s.total_steps = 100;
  EXPECT_DOUBLE_EQ(s.at(1), 1e-4);
  EXPECT_DOUBLE_EQ(s.at(5), 5e-4);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(11), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(100), 1e-3);
}

TEST(LrSchedule, Cosine) {
  coe::LrSchedule s;
  s.kind = coe::LrScheduleKind::kCosine;
  s.lr = 1e-3;
  s.min_lr = 1e-4;
  s.warmup_steps = 10;
  s.total_steps = 110;
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);
  // p = (s - 10) / 100
  for (int64_t step : {11, 35, 60, 85, 109}) {
    const double p = (step - 10) / 100.0;
    EXPECT_NEAR(s.at(step), 1e-4 + 0.9e-3 * 0.5 * (1 + std::cos(M_PI * p)), 1e-15) << step;
  }
  EXPECT_NEAR(s.at(60), 1e-4 + 0.45e-3, 1e-15);  // half way: the mean of peak and floor
  EXPECT_NEAR(s.at(110), 1e-4, 1e-15);           // the floor at the last step
}

TEST(LrSchedule, Linear) {
  coe::LrSchedule s;
  s.kind = coe::LrScheduleKind::kLinear;
  s.lr = 2e-3;
  s.min_lr = 0;
  s.warmup_steps = 4;
  s.total_steps = 24;
  EXPECT_DOUBLE_EQ(s.at(2), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(4), 2e-3);
  EXPECT_NEAR(s.at(9), 2e-3 * (1 - 5.0 / 20), 1e-15);
  EXPECT_NEAR(s.at(14), 1e-3, 1e-15);
  EXPECT_NEAR(s.at(24), 0.0, 1e-15);
}

TEST(LrSchedule, NoWarmupAndFromConfig) {
  coe::OptimConfig o;
  o.lr = 1e-3;
  o.schedule = coe::LrScheduleKind::kCosine;
  o.warmup_steps = 0;
  coe::LrSchedule s = coe::LrSchedule::from_config(o, 50);
  EXPECT_EQ(s.warmup_steps, 0);
  EXPECT_NEAR(s.at(1), 1e-3 * 0.5 * (1 + std::cos(M_PI / 50)), 1e-15);
  EXPECT_NEAR(s.at(50), 0.0, 1e-15);
  o.warmup_steps.reset();
  o.warmup_ratio = 0.25;
  EXPECT_EQ(coe::LrSchedule::from_config(o, 50).warmup_steps, 12);  // floor(0.25 * 50)
  o.warmup_ratio.reset();
  EXPECT_EQ(coe::LrSchedule::from_config(o, 50).warmup_steps, 5);  // default ratio 0.1
}

}  // namespace
