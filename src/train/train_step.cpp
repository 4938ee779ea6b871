#include "coe/train/train_step.h"

#include "coe/model/autocast.h"
#include "coe/model/causal_lm.h"
#include "coe/model/moe.h"
#include "coe/util/error.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

namespace coe {

TokenBatch slice_rows(const TokenBatch& batch, int64_t first, int64_t count) {
  if (first < 0 || count < 0 || first + count > batch.batch_size)
    fail("slice_rows: rows [{}, {}) outside a batch of {}", first, first + count, batch.batch_size);
  TokenBatch out;
  out.batch_size = count;
  out.seq_len = batch.seq_len;
  const auto begin = static_cast<size_t>(first * batch.seq_len),
             end = static_cast<size_t>((first + count) * batch.seq_len);
  out.input_ids.assign(batch.input_ids.begin() + begin, batch.input_ids.begin() + end);
  out.labels.assign(batch.labels.begin() + begin, batch.labels.begin() + end);
  if (!batch.record_index.empty())
    out.record_index.assign(batch.record_index.begin() + first, batch.record_index.begin() + first + count);
  if (!batch.lengths.empty()) out.lengths.assign(batch.lengths.begin() + first, batch.lengths.begin() + first + count);
  return out;
}

std::vector<TokenBatch> split_micro_batches(const TokenBatch& batch, int64_t micro_batch) {
  if (micro_batch <= 0) fail("split_micro_batches: micro_batch must be positive, got {}", micro_batch);
  std::vector<TokenBatch> out;
  for (int64_t first = 0; first < batch.batch_size; first += micro_batch)
    out.push_back(slice_rows(batch, first, std::min(micro_batch, batch.batch_size - first)));
  return out;
}

AccumulationResult accumulate_gradients(CausalLMImpl& model, const std::vector<TokenBatch>& micro_batches,
                                        const c10::Device& device, bool bf16_autocast) {
  AccumulationOptions options;
  options.bf16_autocast = bf16_autocast;
  return accumulate_gradients(model, micro_batches, device, options);
}

AccumulationResult accumulate_gradients(CausalLMImpl& model, const std::vector<TokenBatch>& micro_batches,
                                        const c10::Device& device, const AccumulationOptions& options) {
  model.train();
  AccumulationResult r;
  const BatchCounts counts = count_batches(micro_batches);
  r.loss_tokens = counts.loss_tokens;
  r.rows = counts.rows;
  r.tokens = counts.tokens;
  // The normalisers: this call's counts, or the global batch's over all ranks.
  const int64_t total_tokens = options.global_loss_tokens > 0 ? options.global_loss_tokens : r.loss_tokens;
  const int64_t total_rows = options.global_rows > 0 ? options.global_rows : r.rows;
  if (total_tokens < r.loss_tokens || total_rows < r.rows)
    fail("accumulate_gradients: global counts ({} loss tokens, {} rows) below this call's ({}, {})", total_tokens,
         total_rows, r.loss_tokens, r.rows);
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  r.loss = at::zeros({}, f32);
  r.router_losses = RouterLosses{}.or_zeros(r.loss);
  if (r.rows == 0) return r;
  for (size_t i = 0; i < micro_batches.size(); ++i) {
    const TokenBatch& mb = micro_batches[i];
    if (mb.batch_size == 0) continue;
    const DeviceBatch db = to_device(mb, device);
    const int64_t n = count_loss_tokens(mb);
    LmOutput out;
    {
      AutocastGuard autocast(device.type(), options.bf16_autocast, at::kBFloat16);
      ForwardOptions forward;
      forward.return_logits = false;
      out = model.forward(db.input_ids, db.labels, forward);
    }
    if (out.loss_tokens > 0 && out.loss_tokens != n)
      fail("internal: the model counted {} loss tokens where the trainer counted {}", out.loss_tokens, n);
    // Weights are host numbers: no synchronisation.
    const double row_share = static_cast<double>(mb.batch_size) / static_cast<double>(total_rows);
    RouterLosses router;
    for (const auto& term : RouterLosses::kTerms)
      router.*term.value = (out.router_losses.*term.value).to(at::kFloat) * row_share;
    at::Tensor total = router.total();
    if (n > 0) {
      at::Tensor lm = out.loss.to(at::kFloat) * (static_cast<double>(n) / static_cast<double>(total_tokens));
      total = lm + total;
      r.loss.add_(lm.detach());
    }
    for (const auto& term : RouterLosses::kTerms) (r.router_losses.*term.value).add_((router.*term.value).detach());
    if (total.requires_grad()) {
      if (options.before_backward) options.before_backward(i, i + 1 == micro_batches.size());
      total.backward();
    }
  }
  return r;
}

BatchCounts count_batches(const std::vector<TokenBatch>& micro_batches) {
  BatchCounts c;
  for (const auto& mb : micro_batches) {
    c.loss_tokens += count_loss_tokens(mb);
    c.rows += mb.batch_size;
    c.tokens += mb.batch_size * mb.seq_len;
  }
  return c;
}

at::Tensor clip_grad_norm(const std::vector<NamedParameter>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> norms;
  std::vector<at::Tensor> grads;
  for (const auto& p : params) {
    const at::Tensor& g = p.param.grad();
    if (!g.defined()) continue;
    grads.push_back(g);
    norms.push_back(at::norm(g, 2).to(at::kFloat));
  }
  if (norms.empty())
    return at::zeros(
        {}, at::TensorOptions().dtype(at::kFloat).device(params.empty() ? at::kCPU : params[0].param.device()));
  at::Tensor total = at::norm(at::stack(norms), 2);
  scale_to_max_norm(grads, total, max_norm);
  return total;
}

void scale_to_max_norm(const std::vector<at::Tensor>& grads, const at::Tensor& total, double max_norm) {
  if (max_norm <= 0) return;
  torch::NoGradGuard no_grad;
  const at::Tensor coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
  for (const auto& g : grads) g.mul_(coef.to(g.scalar_type()));
}

std::string diagnose_non_finite(CausalLMImpl& model, const std::vector<NamedParameter>& params,
                                const std::vector<TokenBatch>& micro_batches, const c10::Device& device,
                                bool bf16_autocast) {
  torch::NoGradGuard no_grad;
  ExpertLoadPause not_a_training_step;
  auto finite = [](const at::Tensor& t) { return !t.defined() || at::isfinite(t).all().item<bool>(); };
  for (const auto& p : params)
    if (!finite(p.param)) return fmt::format("parameter '{}' holds non-finite values", p.name);
  for (size_t i = 0; i < micro_batches.size(); ++i) {
    const TokenBatch& mb = micro_batches[i];
    if (mb.batch_size == 0) continue;
    const DeviceBatch db = to_device(mb, device);
    AutocastGuard autocast(device.type(), bf16_autocast, at::kBFloat16);
    // The model's own forward, watched stage by stage: the first non-finite stage is named.
    std::string first;
    ForwardOptions forward;
    forward.on_layer = [&](int64_t l, const LayerOutput& out) {
      if (!first.empty()) return;
      if (l < 0 && !finite(out.hidden)) first = "embedding output is non-finite";
      else if (!finite(out.hidden))
        first = fmt::format("decoder layer {} (model.layers.{}) produced non-finite activations", l, l);
      else
        for (const auto& term : RouterLosses::kTerms)
          if (first.empty() && !finite(out.router_losses.*term.value))
            first = fmt::format("decoder layer {} (model.layers.{}) produced a non-finite {}", l, l, term.name);
    };
    const LmOutput out = model.forward(db.input_ids, {}, forward);
    if (!first.empty()) return fmt::format("{} (micro-batch {})", first, i);
    if (!finite(out.logits)) return fmt::format("final norm / lm_head produced non-finite logits (micro-batch {})", i);
  }
  // Forward finite: the overflow happened in backward. Gradients flow from the last layer to the
  // first, so the deepest parameter with a non-finite gradient is nearest to where it began.
  for (auto it = params.rbegin(); it != params.rend(); ++it)
    if (!finite(it->param.grad()))
      return fmt::format("the forward pass is finite; the deepest non-finite gradient is in '{}'", it->name);
  return "the forward pass is finite and no gradient is non-finite (the loss reduction overflowed)";
}

}  // namespace coe
