// An HF config.json as load_model_config reads it (coe-convert, an init_from checkpoint, model.from).
#include "coe/model/config.h"
#include "fuzz_files.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  coe::fuzz::expect_only_coe_errors([&] {
    const coe::ModelConfig config = coe::load_model_config(coe::fuzz::write_file("config.json", input));
    // A config that reads must write and read back to itself (coe writes config.json with each checkpoint).
    const std::string json = coe::model_config_to_json(config);
    const coe::ModelConfig back = coe::load_model_config(coe::fuzz::write_file("back.json", json));
    if (coe::model_config_to_json(back) != json) std::abort();
  });
  return 0;
}
