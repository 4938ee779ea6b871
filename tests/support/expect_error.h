#pragma once
// expect_error: the project's bad-input contract (a coe::Error whose message is one line and
// names what was wrong) as one assertion.
#include "coe/util/error.h"

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

namespace coe::test {

// The message of the coe::Error `fn` throws, or "" when it throws none.
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const coe::Error& e) {
    return e.what();
  }
  return "";
}

// Runs `fn`; expects it to throw a one-line coe::Error containing every fragment.
template <typename Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown";
  } catch (const coe::Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  }
}

}  // namespace coe::test
