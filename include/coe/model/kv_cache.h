#pragma once
// The key/value cache of incremental decoding, in DeepSeek-V2's compressed form: per layer and
// token only the normalised latent c_kv (kv_lora_rank values) and the shared, already rotated
// rope key (qk_rope_head_dim values), not per-head keys and values. CoE layers need nothing more:
// their C iterations act on one token at a time.
//
// Rows of a batch share one slot axis. A row's prompt may be left-padded; padded slots are never
// attended to and do not advance the row's rope position, so every row sees exactly the positions
// it would have alone.
#include "coe/model/config.h"
#include "coe/model/layers.h"

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>

#include <cstdint>
#include <vector>

namespace coe {

// How the attention of a cached step uses kv_b_proj.
enum class MlaDecode {
  // Folds kv_b_proj into the query (W_UK) and the output (W_UV) side (DeepSeek-V2, section 2.1.3):
  // scores and the weighted sum run over the kv_lora_rank-wide latents directly.
  kAbsorbed,
  // Expands the cached latents of every attended position into per-head keys and values
  // through kv_b_proj at every step, as the training forward does.
  kExpanded,
};

const char* to_string(MlaDecode mode);
// "absorbed" | "expanded"; anything else throws naming `what`.
MlaDecode parse_mla_decode(const std::string& name, const std::string& what);

struct MlaLayerCache {
  at::Tensor latent;    // [B, capacity, kv_lora_rank]  kv_a_layernorm(c_kv), what kv_b_proj reads
  at::Tensor rope_key;  // [B, capacity, qk_rope_head_dim]  k_pe after rope
};

class KvCache {
 public:
  // Zeroed storage for `batch` rows of `capacity` slots in `options`' dtype and device.
  KvCache(const ModelConfig& config, int64_t batch, int64_t capacity, const c10::TensorOptions& options);

  int64_t batch() const { return static_cast<int64_t>(next_position_.size()); }
  int64_t capacity() const { return capacity_; }
  int64_t length() const { return length_; }  // slots filled (the same for every row)
  // Rope position the next real token of each row gets (= real tokens seen so far).
  const std::vector<int64_t>& next_position() const { return next_position_; }

  // Keeps only the given rows, in this order (finished rows leave the batch).
  void keep_rows(const std::vector<int64_t>& rows);

  // Bytes one token occupies over all layers: num_hidden_layers * (kv_lora_rank + qk_rope_head_dim)
  // * element size.
  static int64_t bytes_per_token(const ModelConfig& config, int64_t element_size);

  std::vector<MlaLayerCache> layers;
  at::Tensor valid;  // [B, capacity] bool: the slot holds a real token (false: padding, unused)
  MlaDecode mode = MlaDecode::kAbsorbed;

 private:
  friend class CausalLMImpl;
  int64_t capacity_, length_ = 0, max_positions_;
  std::vector<int64_t> next_position_;
  RotaryTables rope_;  // cos / sin [min(capacity, max_position_embeddings), rope_dim]
};

}  // namespace coe
