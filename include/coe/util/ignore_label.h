#pragma once
// The label value a loss skips (HF's convention): the data pipeline writes it at padding, the
// model's losses and the trainer's token counts leave it out.
#include <cstdint>

namespace coe {

inline constexpr int32_t kIgnoreLabel = -100;

}  // namespace coe
