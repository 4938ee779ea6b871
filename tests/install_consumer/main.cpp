// coe-consumer FIXTURE_DIR: loads a reference fixture (config.json, model.safetensors and the
// reference implementation's expected.safetensors) with the installed coe, runs the model and
// prints the largest difference of its logits from the reference's.
#include <coe/io/hf_checkpoint.h>
#include <coe/io/safetensors.h>
#include <coe/util/error.h>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>

#include <exception>

int main(int argc, char** argv) {
  if (argc != 2) {
    fmt::print(stderr, "usage: coe-consumer FIXTURE_DIR\n");
    return 2;
  }
  try {
    const std::string dir = argv[1];
    coe::CausalLM model = coe::load_hf_checkpoint(dir);
    model->eval();
    const auto expected = coe::load_safetensors(dir + "/expected.safetensors").tensors;
    const at::Tensor ids = expected.at("input_ids").to(at::kLong);
    at::NoGradGuard no_grad;
    const at::Tensor logits = model->forward(ids).logits, want = expected.at("logits");
    if (logits.sizes() != want.sizes())
      coe::fail("logits are {}, the reference's {}", fmt::join(logits.sizes(), "x"), fmt::join(want.sizes(), "x"));
    fmt::print("layers={} logits={} max_abs_diff={:.3g}\n", model->config().num_hidden_layers,
               fmt::join(logits.sizes(), "x"), (logits - want).abs().max().item<double>());
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", coe::first_line(e));
    return 1;
  }
}
