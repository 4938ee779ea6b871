#pragma once
// The tiny model most tests use, and a run of it on real GSM8K text (byte tokenizer, packed rows
// of 64 tokens).
#include "coe/model/config.h"

#include "support/test_env.h"

#include <cstdint>
#include <filesystem>
#include <string>

namespace coe::test {

// The tiny model: 2 layers, hidden 32, MLA (kv rank 16, 8 + 8 query dims, 8 value dims), 8 routed
// + 1 shared experts of width 32, top-2, the byte tokenizer's vocabulary, 64 positions. Tests
// that need something else change the fields they care about, and say why.
inline ModelConfig tiny_model_config() {
  ModelConfig c;
  c.vocab_size = 259;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.moe_intermediate_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.kv_lora_rank = 16;
  c.qk_nope_head_dim = 8;
  c.qk_rope_head_dim = 8;
  c.v_head_dim = 8;
  c.n_routed_experts = 8;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 2;
  c.max_position_embeddings = 64;
  return c;
}

// The same model as the fields of a YAML `model:` mapping (indented; vocab_size left to the
// run's tokenizer).
inline std::string tiny_model_yaml() {
  const ModelConfig c = tiny_model_config();
  std::string y;
  auto field = [&](const char* key, int64_t v) { y += "  " + std::string(key) + ": " + std::to_string(v) + "\n"; };
  field("hidden_size", c.hidden_size);
  field("intermediate_size", c.intermediate_size);
  field("moe_intermediate_size", c.moe_intermediate_size);
  field("num_hidden_layers", c.num_hidden_layers);
  field("num_attention_heads", c.num_attention_heads);
  field("kv_lora_rank", c.kv_lora_rank);
  field("qk_nope_head_dim", c.qk_nope_head_dim);
  field("qk_rope_head_dim", c.qk_rope_head_dim);
  field("v_head_dim", c.v_head_dim);
  field("n_routed_experts", c.n_routed_experts);
  field("n_shared_experts", c.n_shared_experts);
  field("num_experts_per_tok", c.num_experts_per_tok);
  field("max_position_embeddings", c.max_position_embeddings);
  return y;
}

// A whole run config: GSM8K train/test from the shared data, prepared once into `prepared_dir`,
// `total_steps` steps of 8 rows (micro-batches of 4), output into `out_dir`.
inline std::string tiny_gsm8k_run_yaml(const std::filesystem::path& prepared_dir, const std::filesystem::path& out_dir,
                                       int total_steps = 8) {
  const std::filesystem::path gsm = shared_root() / "data" / "gsm8k";
  return "model:\n" + tiny_model_yaml() +
         "data:\n"
         "  train_files: [" +
         (gsm / "train.jsonl").string() +
         "]\n"
         "  val_files: [" +
         (gsm / "test.jsonl").string() +
         "]\n"
         "  prepared_dir: " +
         prepared_dir.string() +
         "\n"
         "  text_keys: [question, answer]\n  tokenizer: byte\n  max_length: 64\n  packing: true\n"
         "optim:\n  lr: 3.0e-3\n  warmup_steps: 2\n"
         "trainer:\n  total_steps: " +
         std::to_string(total_steps) +
         "\n  global_batch: 8\n  micro_batch: 4\n  val_batches: 2\n  seed: 3\n  log_interval: 10\n"
         "  out_dir: " +
         out_dir.string() + "\n";
}

}  // namespace coe::test
