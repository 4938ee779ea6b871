// A checkpoint's state.json as a resume reads it: the manifest (TrainState::from_json) and the
// loader's position inside it (LoaderState::from_json).
#include "coe/data/loader.h"
#include "coe/train/train_state.h"
#include "coe/util/json_limits.h"
#include "fuzz_files.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  coe::fuzz::expect_only_coe_errors([&] {
    nlohmann::json j;
    try {  // as src/train/checkpoint.cpp reads it
      j = nlohmann::json::parse(input.begin(), input.end(), coe::json_depth_limit("state.json"));
    } catch (const nlohmann::json::exception& e) {
      coe::fail("state.json: cannot parse: {}", e.what());
    }
    const coe::TrainState state = coe::TrainState::from_json(j, "state.json");
    coe::LoaderState::from_json(state.loader);
    // What a checkpoint writes (checksums filled in, at the current version) it must read back.
    coe::TrainState written = state;
    for (const char* f : coe::kCheckpointFiles) written.checksums.emplace(f, "xxh64:0000000000000000");
    try {
      const auto text = written.to_json().dump();
      if (coe::TrainState::from_json(nlohmann::json::parse(text), "back").to_json().dump() != text) std::abort();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "coe fuzz: a written state.json does not read back: %s\n", e.what());
      std::abort();
    }
  });
  return 0;
}
