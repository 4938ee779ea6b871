#include "coe/train/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace coe {

LrSchedule LrSchedule::from_config(const OptimConfig& optim, int64_t total_steps) {
  LrSchedule s;
  s.kind = optim.schedule;
  s.lr = optim.lr;
  s.min_lr = optim.min_lr;
  s.total_steps = total_steps;
  s.warmup_steps = std::min(optim.resolved_warmup_steps(total_steps), total_steps);
  return s;
}

double LrSchedule::at(int64_t step) const {
  step = std::clamp<int64_t>(step, 1, std::max<int64_t>(total_steps, 1));
  if (step <= warmup_steps) return lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  if (kind == LrScheduleKind::kConstant) return lr;
  const int64_t decay_steps = total_steps - warmup_steps;  // >= 1 here since step > warmup_steps
  const double p = static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps);
  if (kind == LrScheduleKind::kCosine) return min_lr + (lr - min_lr) * 0.5 * (1.0 + std::cos(M_PI * p));
  return lr - (lr - min_lr) * p;
}

nlohmann::json LrSchedule::to_json() const {
  return {{"kind", to_string(kind)},
          {"lr", lr},
          {"min_lr", min_lr},
          {"warmup_steps", warmup_steps},
          {"total_steps", total_steps}};
}

}  // namespace coe
