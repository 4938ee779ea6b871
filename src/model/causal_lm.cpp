#include "coe/model/causal_lm.h"

#include "coe/model/autocast.h"
#include "coe/model/chunked_loss.h"
#include "coe/util/error.h"
#include "coe/util/ignore_label.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/nn/init.h>

namespace coe {
namespace {

// Activation checkpointing for one decoder layer: forward without saving activations, and in
// backward recompute the layer with grad enabled and backpropagate through the recomputation
// (parameters' .grad accumulate there; the input's gradient is returned). Routing is a
// deterministic function of the input, so the recomputation takes the same experts.
//
// What backward needs besides the input travels as one typed capsule: the layer (owned, so it
// outlives the graph), the rope tables and the autocast state of the forward (backward runs
// outside the autocast region; the recomputation re-enters it to rebuild the same graph).
struct CheckpointedLayer : torch::autograd::Function<CheckpointedLayer> {
  struct Saved : torch::CustomClassHolder {
    std::shared_ptr<CoeLayerImpl> layer;
    RotaryTables rope;
    bool autocast = false;
    at::ScalarType autocast_dtype = at::kBFloat16;
  };

  // Returns {hidden, one scalar per RouterLosses term (zero where the layer has none)}.
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, torch::Tensor h,
                                                std::shared_ptr<CoeLayerImpl> layer, const RotaryTables& rope) {
    ctx->save_for_backward({h});
    auto saved = c10::make_intrusive<Saved>();
    const c10::DeviceType device = h.device().type();
    saved->autocast = autocast_enabled(device);
    saved->autocast_dtype = at::autocast::get_autocast_dtype(device);
    saved->rope = rope;
    saved->layer = std::move(layer);
    const LayerOutput out = saved->layer->forward(h, rope);
    ctx->saved_data["saved"] = c10::IValue::make_capsule(std::move(saved));
    const RouterLosses losses = out.router_losses.or_zeros(at::zeros({}, h.options().dtype(accumulate_dtype(h))));
    torch::autograd::variable_list outputs{out.hidden};
    for (const auto& term : RouterLosses::kTerms) outputs.push_back(losses.*term.value);
    return outputs;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = c10::static_intrusive_pointer_cast<Saved>(ctx->saved_data["saved"].toCapsule());
    at::Tensor h = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    {
      torch::AutoGradMode enable(true);
      AutocastGuard autocast(h.device().type(), saved->autocast, saved->autocast_dtype);
      ExpertLoadPause counted_in_forward;
      const LayerOutput out = saved->layer->forward(h, saved->rope);
      std::vector<at::Tensor> outputs{out.hidden}, out_grads{grads[0]};
      for (size_t i = 0; i < RouterLosses::kCount; ++i) {
        const at::Tensor& loss = out.router_losses.*RouterLosses::kTerms[i].value;
        if (loss.defined()) outputs.push_back(loss), out_grads.push_back(grads[1 + i]);
      }
      torch::autograd::backward(outputs, out_grads);
    }
    return {h.grad(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

CausalLMImpl::CausalLMImpl(const ModelConfig& config) : config_(config) {
  auto model = register_module("model", std::make_shared<torch::nn::Module>());
  embed_tokens = torch::nn::Embedding(torch::nn::EmbeddingOptions(config.vocab_size, config.hidden_size));
  if (config.pad_token_id) embed_tokens->options.padding_idx(*config.pad_token_id);
  model->register_module("embed_tokens", embed_tokens);
  layers = torch::nn::ModuleList();
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) layers->push_back(CoeLayer(config, l));
  model->register_module("layers", layers);
  norm = RMSNorm(config.hidden_size, config.rms_norm_eps);
  model->register_module("norm", norm);
  if (!config.tie_word_embeddings)
    lm_head = register_module(
        "lm_head", torch::nn::Linear(torch::nn::LinearOptions(config.hidden_size, config.vocab_size).bias(false)));
  reset_parameters();
}

void CausalLMImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  const double std = config_.initializer_range;
  for (const auto& module : modules(/*include_self=*/false)) {
    if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(module.get())) {
      linear->weight.normal_(0.0, std);
    } else if (auto* emb = dynamic_cast<torch::nn::EmbeddingImpl*>(module.get())) {
      emb->weight.normal_(0.0, std);
      if (config_.pad_token_id) emb->weight[*config_.pad_token_id].zero_();
    } else if (auto* experts = dynamic_cast<RoutedExpertsImpl*>(module.get())) {
      for (auto* w : {&experts->gate_proj, &experts->up_proj, &experts->down_proj}) w->normal_(0.0, std);
    } else if (auto* router = dynamic_cast<RouterImpl*>(module.get())) {
      router->reset_parameters();
    } else if (auto* rms = dynamic_cast<RMSNormImpl*>(module.get())) {
      rms->weight.fill_(1.0);
    }
  }
}

void CausalLMImpl::set_dispatch(const std::shared_ptr<ExpertDispatch>& dispatch) {
  for (const auto& layer : *layers) {
    auto* l = layer->as<CoeLayerImpl>();
    if (l->is_moe()) l->moe->set_dispatch(dispatch);
  }
}

void CausalLMImpl::keep_experts(int64_t first, int64_t count) {
  for (const auto& layer : *layers) {
    auto* l = layer->as<CoeLayerImpl>();
    if (l->is_moe()) l->moe->experts->keep_experts(first, count);
  }
}

void CausalLMImpl::set_expert_load_tracking(bool on) {
  for (const auto& layer : *layers) {
    auto* l = layer->as<CoeLayerImpl>();
    if (l->is_moe()) l->moe->set_load_tracking(on);
  }
}

std::vector<int64_t> CausalLMImpl::moe_layers() const {
  std::vector<int64_t> out;
  for (size_t l = 0; l < layers->size(); ++l)
    if (layers->at<CoeLayerImpl>(l).is_moe()) out.push_back(static_cast<int64_t>(l));
  return out;
}

torch::Tensor CausalLMImpl::take_expert_load() {
  std::vector<at::Tensor> counts;
  const auto device = embed_tokens->weight.device();
  for (int64_t l : moe_layers()) counts.push_back(layers->at<CoeLayerImpl>(l).moe->take_load(device));
  return counts.empty() ? at::Tensor() : at::stack(counts);
}

void CausalLMImpl::update_router_bias(const torch::Tensor& load, double rate) {
  const auto moe = moe_layers();
  if (!load.defined() || load.size(0) != static_cast<int64_t>(moe.size()))
    fail("update_router_bias: expected the load of {} MoE layers", moe.size());
  for (size_t i = 0; i < moe.size(); ++i)
    layers->at<CoeLayerImpl>(moe[i]).moe->update_router_bias(load[static_cast<int64_t>(i)], rate);
}

torch::Tensor CausalLMImpl::lm_head_weight() const { return lm_head ? lm_head->weight : embed_tokens->weight; }

LmOutput CausalLMImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& labels,
                               const ForwardOptions& options) {
  const int64_t S = input_ids.size(1);
  LmOutput out;
  at::Tensor h = embed_tokens(input_ids);
  if (options.on_layer) options.on_layer(-1, LayerOutput{h, {}});
  const RotaryTables rope = rotary_tables(config_, S, input_ids.device());
  RouterLosses router_losses = RouterLosses{}.or_zeros(at::zeros({}, h.options().dtype(accumulate_dtype(h))));
  for (int64_t l = 0; l < static_cast<int64_t>(layers->size()); ++l) {
    LayerOutput lo;
    if (checkpointing_ && is_training() && torch::GradMode::is_enabled()) {
      const auto outputs = CheckpointedLayer::apply(h, layers->ptr<CoeLayerImpl>(l), rope);
      lo.hidden = outputs[0];
      for (size_t i = 0; i < RouterLosses::kCount; ++i)
        lo.router_losses.*RouterLosses::kTerms[i].value = outputs[1 + i];
    } else {
      lo = layers->at<CoeLayerImpl>(l).forward(h, rope, options.record_routing ? &out.routing : nullptr);
    }
    if (options.on_layer) options.on_layer(l, lo);
    h = lo.hidden;
    router_losses += lo.router_losses;
  }
  h = norm(h);
  out.router_losses = std::move(router_losses);
  at::Tensor shift_labels = labels.defined() ? labels.narrow(1, 1, S - 1).reshape(-1) : at::Tensor();
  if (!options.return_logits) {
    if (labels.defined()) {
      at::Tensor shift_h = h.narrow(1, 0, S - 1).reshape({-1, h.size(-1)});
      out.loss = chunked_linear_cross_entropy(shift_h, lm_head_weight(), shift_labels, options.loss_chunk_tokens);
    }
  } else {
    out.logits = at::linear(h, lm_head_weight()).to(accumulate_dtype(h));
    if (labels.defined()) out.loss = shifted_cross_entropy(out.logits, labels);
  }
  if (labels.defined() && options.count_loss_tokens)
    out.loss_tokens = shift_labels.ne(kIgnoreLabel).sum().item<int64_t>();
  return out;
}

torch::Tensor CausalLMImpl::forward_cached(const torch::Tensor& input_ids, KvCache& cache,
                                           const std::vector<int64_t>& left_padding, bool all_positions) {
  torch::NoGradGuard no_grad;
  const int64_t B = input_ids.size(0), S = input_ids.size(1), start = cache.length_, T = start + S;
  if (B != cache.batch()) fail("forward_cached: {} rows for a cache of {} rows", B, cache.batch());
  if (S < 1 || T > cache.capacity_)
    fail("forward_cached: {} new tokens after {} overflow the cache's {} slots", S, start, cache.capacity_);
  if (!left_padding.empty() && static_cast<int64_t>(left_padding.size()) != B)
    fail("forward_cached: {} left-padding counts for {} rows", left_padding.size(), B);

  // Rope positions and validity of the new slots, on the host: a row's real tokens continue its
  // own count, whatever padding precedes them.
  std::vector<int64_t> positions(static_cast<size_t>(B * S), 0);
  std::vector<int64_t> valid(static_cast<size_t>(B * S), 0);
  std::vector<int64_t> next = cache.next_position_;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t pad = left_padding.empty() ? 0 : left_padding[static_cast<size_t>(b)];
    if (pad < 0 || pad > S) fail("forward_cached: row {}: {} padding tokens in a chunk of {}", b, pad, S);
    for (int64_t i = pad; i < S; ++i) {
      positions[static_cast<size_t>(b * S + i)] = next[static_cast<size_t>(b)] + i - pad;
      valid[static_cast<size_t>(b * S + i)] = 1;
    }
    next[static_cast<size_t>(b)] += S - pad;
    if (next[static_cast<size_t>(b)] > cache.max_positions_)
      fail("forward_cached: row {} would hold {} tokens, past max_position_embeddings {}", b,
           next[static_cast<size_t>(b)], cache.max_positions_);
  }
  const auto device = input_ids.device();
  const at::Tensor position = at::tensor(positions, at::TensorOptions().dtype(at::kLong)).to(device);
  cache.valid.narrow(1, start, S).copy_(at::tensor(valid, at::TensorOptions().dtype(at::kLong)).view({B, S}).ne(0));
  const int64_t d = cache.rope_.cos.size(-1);
  const RotaryTables rope{cache.rope_.cos.index_select(0, position).view({B, 1, S, d}),
                          cache.rope_.sin.index_select(0, position).view({B, 1, S, d})};
  // A query attends to real tokens at or before its slot; a padding query attends to itself
  // alone, which keeps its (unused) row finite.
  const at::Tensor key_slot = at::arange(T, at::TensorOptions().dtype(at::kLong).device(device)).unsqueeze(0);
  const at::Tensor query_slot = at::arange(start, T, at::TensorOptions().dtype(at::kLong).device(device)).unsqueeze(1);
  const at::Tensor allowed = key_slot.le(query_slot)
                                 .logical_and(cache.valid.narrow(1, 0, T).view({B, 1, 1, T}))
                                 .logical_or(key_slot.eq(query_slot));

  at::Tensor h = embed_tokens(input_ids);
  for (size_t l = 0; l < layers->size(); ++l)
    h = layers->at<CoeLayerImpl>(l).forward_cached(h, rope, cache.layers[l], start, allowed, cache.mode);
  cache.length_ = T;
  cache.next_position_ = std::move(next);
  h = norm(all_positions ? h : h.narrow(1, S - 1, 1));
  const at::Tensor logits = at::linear(h, lm_head_weight()).to(accumulate_dtype(h));
  return all_positions ? logits : logits.squeeze(1);
}

}  // namespace coe
