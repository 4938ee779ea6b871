#pragma once
// Learning rate per optimizer step: linear warmup, then constant, cosine or linear decay.
//
// Steps are 1-based: step s is the s-th optimizer update. With W warmup steps, T total steps,
// peak lr and floor min_lr:
//   s <= W:   lr * s / W                                  (the first update already moves)
//   s >  W:   p = (s - W) / (T - W)
//             constant: lr
//             cosine:   min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2
//             linear:   lr - (lr - min_lr) * p
// so the peak is reached at step W and the floor at step T. (HF/verl schedulers evaluate the same
// curves one step earlier, which makes their first update use lr = 0.)
#include "coe/train/train_config.h"

#include <nlohmann/json.hpp>

#include <cstdint>

namespace coe {

struct LrSchedule {
  LrScheduleKind kind = LrScheduleKind::kConstant;
  double lr = 3e-4;
  double min_lr = 0.0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;

  static LrSchedule from_config(const OptimConfig& optim, int64_t total_steps);
  // The learning rate of update `step` (1-based; steps past total_steps keep the final value).
  double at(int64_t step) const;
  // {"kind", "lr", "min_lr", "warmup_steps", "total_steps"}: recorded in checkpoints' state.json.
  nlohmann::json to_json() const;
};

}  // namespace coe
