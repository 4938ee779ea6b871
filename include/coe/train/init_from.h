#pragma once
// Warm start (trainer.init_from): a checkpoint's weights copied into a model of another
// configuration where the shapes allow, e.g. an MoE (C = 1) checkpoint into a CoE (C > 1) run.
// Tensors are matched by their HF names (hf_checkpoint.h), and:
//   - a tensor of the same name and shape is copied;
//   - a layer's router: when the source layer has exactly one gate (C = 1, or a shared gate) and
//     the target's gate names differ, that gate's weight (and e_score_correction_bias) is copied
//     into every gate of the target layer (independent gates start equal and diverge);
//   - a target e_score_correction_bias the source lacks keeps its initial zeros ("initialised");
//   - source tensors the target has no use for are "dropped" only when they are routing or
//     bookkeeping state: an e_score_correction_bias (the target does not use noaux_tc), the
//     reference's rotary inv_freq, lm_head.weight for a target with tied embeddings;
//   - anything else (a missing tensor, a different shape, two source gates for three target
//     gates, an unused source tensor) is an error naming the tensor.
// The optimizer is not touched: AdamW starts fresh.
#include <cstdint>
#include <string>
#include <vector>

namespace coe {

class CausalLMImpl;

struct InitFromRow {
  std::string action;  // copied | initialised | dropped
  std::string target;  // the model's tensor ("-" for dropped)
  std::string source;  // the checkpoint's tensor ("-" for initialised)
  std::string shape;   // e.g. "8x32"
  std::string note;    // why, when it is not a copy by name
};

struct InitFromReport {
  std::string checkpoint;  // the directory read
  std::vector<InitFromRow> rows;
  int64_t count(const std::string& action) const;
  // Every row as an aligned text table (init_from.txt).
  std::string table() const;
  // One summary line and the rows that are not a plain copy by name (the console).
  std::string summary() const;
};

// Copies the checkpoint at `path` (a checkpoint directory, or a run directory: its newest
// complete checkpoint; coe checkpoints are verified against their manifest) into `model`.
// Errors are one line starting with `what` (e.g. "run.yaml: trainer.init_from").
InitFromReport init_from_checkpoint(CausalLMImpl& model, const std::string& path, const std::string& what);

}  // namespace coe
