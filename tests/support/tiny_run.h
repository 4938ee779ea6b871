#pragma once
// The tiny model and run most training tests use: a 2-layer MoE (hidden 32, 8 routed + 1 shared
// experts, top-2) on real GSM8K text with the byte tokenizer, packed rows of 64 tokens.
#include "support/test_env.h"

#include <filesystem>
#include <string>

namespace coe::test {

// The model section's fields, indented for a `model:` mapping.
inline std::string tiny_model_yaml() {
  return "  hidden_size: 32\n  intermediate_size: 64\n  moe_intermediate_size: 32\n"
         "  num_hidden_layers: 2\n  num_attention_heads: 4\n  kv_lora_rank: 16\n"
         "  qk_nope_head_dim: 8\n  qk_rope_head_dim: 8\n  v_head_dim: 8\n"
         "  n_routed_experts: 8\n  n_shared_experts: 1\n  num_experts_per_tok: 2\n"
         "  max_position_embeddings: 64\n";
}

// A whole run config: GSM8K train/test from the shared data, prepared once into `prepared_dir`,
// `total_steps` steps of 8 rows (micro-batches of 4), output into `out_dir`.
inline std::string tiny_gsm8k_run_yaml(const std::filesystem::path& prepared_dir, const std::filesystem::path& out_dir,
                                       int total_steps = 8) {
  const std::filesystem::path gsm = shared_root() / "data" / "gsm8k";
  return "model:\n" + tiny_model_yaml() +
         "data:\n"
         "  train_files: [" + (gsm / "train.jsonl").string() + "]\n"
         "  val_files: [" + (gsm / "test.jsonl").string() + "]\n"
         "  prepared_dir: " + prepared_dir.string() + "\n"
         "  text_keys: [question, answer]\n  tokenizer: byte\n  max_length: 64\n  packing: true\n"
         "optim:\n  lr: 3.0e-3\n  warmup_steps: 2\n"
         "trainer:\n  total_steps: " + std::to_string(total_steps) +
         "\n  global_batch: 8\n  micro_batch: 4\n  val_batches: 2\n  seed: 3\n  log_interval: 10\n"
         "  out_dir: " + out_dir.string() + "\n";
}

}  // namespace coe::test
