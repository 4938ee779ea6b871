#include "coe/model/kv_cache.h"

#include "coe/util/error.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace coe {

const char* to_string(MlaDecode mode) { return mode == MlaDecode::kAbsorbed ? "absorbed" : "expanded"; }

MlaDecode parse_mla_decode(const std::string& name, const std::string& what) {
  if (name == "absorbed") return MlaDecode::kAbsorbed;
  if (name == "expanded") return MlaDecode::kExpanded;
  fail("{}: unknown MLA decoding '{}' (absorbed | expanded)", what, name);
}

KvCache::KvCache(const ModelConfig& config, int64_t batch, int64_t capacity, const c10::TensorOptions& options)
    : capacity_(capacity), max_positions_(config.max_position_embeddings) {
  if (batch < 1 || capacity < 1) fail("KvCache: batch {} and capacity {} must be positive", batch, capacity);
  next_position_.assign(static_cast<size_t>(batch), 0);
  for (int64_t l = 0; l < config.num_hidden_layers; ++l)
    layers.push_back({at::zeros({batch, capacity, config.kv_lora_rank}, options),
                      at::zeros({batch, capacity, config.qk_rope_head_dim}, options)});
  valid = at::zeros({batch, capacity}, options.dtype(at::kBool));
  // Positions never exceed slots, and a row never reaches max_position_embeddings: the tables of
  // the smaller length hold every position (and dynamic rope keeps its base within that length).
  rope_ = rotary_tables(config, std::min(capacity, max_positions_), options.device());
}

void KvCache::keep_rows(const std::vector<int64_t>& rows) {
  for (int64_t r : rows)
    if (r < 0 || r >= batch()) fail("KvCache::keep_rows: row {} of a batch of {}", r, batch());
  const at::Tensor index = at::tensor(rows, at::TensorOptions().dtype(at::kLong)).to(valid.device());
  for (auto& layer : layers) {
    layer.latent = layer.latent.index_select(0, index);
    layer.rope_key = layer.rope_key.index_select(0, index);
  }
  valid = valid.index_select(0, index);
  std::vector<int64_t> next;
  next.reserve(rows.size());
  for (int64_t r : rows) next.push_back(next_position_[static_cast<size_t>(r)]);
  next_position_ = std::move(next);
}

int64_t KvCache::bytes_per_token(const ModelConfig& config, int64_t element_size) {
  return config.num_hidden_layers * (config.kv_lora_rank + config.qk_rope_head_dim) * element_size;
}

}  // namespace coe
