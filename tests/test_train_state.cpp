// state.json's reader (TrainState::from_json) on the inputs fuzz/fuzz_state_json found: each was
// refused with something other than the one-line error naming the file and the field.
#include "coe/train/train_state.h"

#include "support/expect_error.h"

#include <gtest/gtest.h>

using coe::test::expect_error;

namespace {

nlohmann::json version_one() {
  return nlohmann::json::parse(R"({"format": "coe-train-checkpoint", "version": 1, "step": 3, "tokens_seen": 96,
    "loss_tokens_seen": 90, "elapsed_s": 0.25, "loader": {"epoch": 0, "cursor": 3, "seed": 0, "units": 12,
    "packing": true, "max_length": 32}})");
}

}  // namespace

TEST(TrainState, ReadsAVersionOneManifest) { EXPECT_EQ(coe::TrainState::from_json(version_one(), "s.json").step, 3); }

// "format": 2 made value("format", "") throw nlohmann's type_error.
TEST(TrainState, AFormatThatIsNoStringIsNoCheckpoint) {
  nlohmann::json j = version_one();
  j["format"] = 2;
  expect_error([&] { coe::TrainState::from_json(j, "s.json"); }, {"s.json", "not a coe-train checkpoint state"});
  j = version_one();
  j["torch_version"] = 2;
  expect_error([&] { coe::TrainState::from_json(j, "s.json"); }, {"s.json", "torch_version", "wrong type"});
}

// A count written as a float beyond int64's range (4e115) went through get<int64_t>(): undefined
// behaviour (UBSan: "outside the range of representable values"), not an error.
TEST(TrainState, CountsMustBeIntegers) {
  for (const char* field : {"step", "tokens_seen", "loss_tokens_seen", "version", "val_step"}) {
    nlohmann::json j = version_one();
    j[field] = 4.4e115;
    expect_error([&] { coe::TrainState::from_json(j, "s.json"); }, {"s.json", field, "wrong type"});
  }
  nlohmann::json j = version_one();
  j["expert_load_window"] = {{"shape", {1, 1, 2}}, {"counts", {4.4e115, 1}}};
  expect_error([&] { coe::TrainState::from_json(j, "s.json"); }, {"s.json", "expert_load_window", "wrong type"});
  j["expert_load_window"] = {{"shape", 3}, {"counts", {1, 1}}};
  expect_error([&] { coe::TrainState::from_json(j, "s.json"); }, {"s.json", "expert_load_window", "wrong type"});
}
