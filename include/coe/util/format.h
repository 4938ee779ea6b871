#pragma once
// Human-readable numbers for console lines and reports (torch-free: coe_data).
#include <string>

namespace coe {

// Whole seconds, rounded: "42s", "3m05s", "1h02m". Negative is "0s"; NaN or infinite is "?".
std::string format_duration(double seconds);

// Counts and rates: "9500" (whole below 10,000), "12.3k", "4.56M", "1.20G".
std::string format_count(double value);

}  // namespace coe
