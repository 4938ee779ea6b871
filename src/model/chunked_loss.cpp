#include "coe/model/chunked_loss.h"

#include "coe/util/ignore_label.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <algorithm>

namespace coe {
namespace {

struct ChunkedCrossEntropy : torch::autograd::Function<ChunkedCrossEntropy> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                            const at::Tensor& labels, int64_t chunk) {
    const bool need_grad = hidden.requires_grad() || weight.requires_grad();
    const int64_t N = hidden.size(0);
    const auto acc = hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    at::Tensor count = labels.ne(kIgnoreLabel).sum().to(acc).clamp_min(1);
    at::Tensor loss_sum = at::zeros({}, hidden.options().dtype(acc));
    at::Tensor grad_hidden, grad_weight;
    if (need_grad) {
      grad_hidden = at::empty_like(hidden);
      grad_weight = at::zeros(weight.sizes(), weight.options().dtype(acc));
    }
    for (int64_t start = 0; start < N; start += chunk) {
      const int64_t n = std::min(chunk, N - start);
      at::Tensor h = hidden.narrow(0, start, n);
      at::Tensor y = labels.narrow(0, start, n);
      at::Tensor valid = y.ne(kIgnoreLabel);
      at::Tensor target = y.clamp_min(0).unsqueeze(1);
      at::Tensor logits = at::linear(h, weight).to(acc);  // [n, V]
      at::Tensor lse = logits.logsumexp(-1);
      loss_sum += ((lse - logits.gather(1, target).squeeze(1)) * valid).sum();
      if (!need_grad) continue;
      // d(sum CE)/d logits = softmax - onehot, zero on ignored rows. Reuse the logits buffer; the
      // ignored rows are zeroed on the [n, H] side of each product, not on the [n, V] one.
      at::Tensor g = logits.sub_(lse.unsqueeze(1)).exp_();
      g.scatter_add_(1, target, at::full({n, 1}, -1.0, g.options()));
      at::Tensor row_mask = valid.unsqueeze(1);
      grad_hidden.narrow(0, start, n).copy_(at::matmul(g.to(weight.scalar_type()), weight).mul_(row_mask));
      grad_weight.add_(at::matmul(g.t(), h.to(acc) * row_mask));
    }
    ctx->save_for_backward({grad_hidden, grad_weight, count});
    ctx->saved_data["weight_dtype"] = weight.scalar_type();
    return loss_sum / count;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    at::Tensor scale = grads[0] / saved[2];
    at::Tensor gh = saved[0].defined() ? saved[0] * scale.to(saved[0].scalar_type()) : at::Tensor();
    at::Tensor gw =
        saved[1].defined() ? (saved[1] * scale).to(ctx->saved_data["weight_dtype"].toScalarType()) : at::Tensor();
    return {gh, gw, at::Tensor(), at::Tensor()};
  }
};

// Both reductions share the shift; each is one at::cross_entropy_loss call, so the mean is the
// kernel's own (bit-identical to what training has always used), not a sum divided afterwards.
at::Tensor shifted_ce(const at::Tensor& logits, const at::Tensor& labels, at::Reduction::Reduction reduction) {
  const int64_t S = logits.size(1);
  return at::cross_entropy_loss(logits.narrow(1, 0, S - 1).reshape({-1, logits.size(-1)}),
                                labels.narrow(1, 1, S - 1).reshape(-1), /*weight=*/{}, reduction, kIgnoreLabel);
}

}  // namespace

at::Tensor shifted_cross_entropy_per_token(const at::Tensor& logits, const at::Tensor& labels) {
  return shifted_ce(logits, labels, at::Reduction::None).view({logits.size(0), logits.size(1) - 1});
}

at::Tensor shifted_cross_entropy(const at::Tensor& logits, const at::Tensor& labels) {
  return shifted_ce(logits, labels, at::Reduction::Mean);
}

at::Tensor chunked_linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                        int64_t chunk_tokens) {
  if (chunk_tokens <= 0) chunk_tokens = default_loss_chunk_tokens(weight.size(0), hidden.device());
  return ChunkedCrossEntropy::apply(hidden, weight, labels, chunk_tokens);
}

int64_t default_loss_chunk_tokens(int64_t vocab_size, const c10::Device& device) {
  constexpr int64_t kMaxTokens = 2048;
  if (device.is_cuda()) return kMaxTokens;
  constexpr int64_t kCpuChunkBytes = int64_t{24} << 20;
  return std::clamp<int64_t>(kCpuChunkBytes / (4 * std::max<int64_t>(vocab_size, 1)), 16, kMaxTokens);
}

}  // namespace coe
