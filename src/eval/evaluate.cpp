#include "coe/eval/evaluate.h"

#include "coe/eval/device_batch.h"
#include "coe/model/autocast.h"
#include "coe/model/causal_lm.h"
#include "coe/model/chunked_loss.h"
#include "coe/util/error.h"
#include "coe/util/ignore_label.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cmath>
#include <set>

namespace coe {
namespace {

// Positions whose next-token prediction is scored: [B, S - 1] (labels are aligned with the inputs).
at::Tensor scored_mask(const at::Tensor& labels) { return labels.narrow(1, 1, labels.size(1) - 1).ne(kIgnoreLabel); }

// The token-averaged loss. From the fused loss: batch means summed on the device (one host sync
// at the end). From the logits (details): per row on the host, with next-token accuracy and the
// loss per record type.
class LossAccumulator {
 public:
  LossAccumulator(const c10::Device& device, const PreparedSplit* split)
      : split_(split),
        has_types_(split && !split->type_names().empty()),
        device_sum_(at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device))) {}

  // `loss`: the mean over the batch's `tokens` counted labels.
  void add_mean(const at::Tensor& loss, int64_t tokens) {
    device_sum_.add_(loss.to(at::kDouble) * static_cast<double>(tokens));
    tokens_ += tokens;
  }

  // logits [B, S, V], labels [B, S], mask = scored_mask(labels).
  void add(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& mask, const TokenBatch& batch) {
    const int64_t S = labels.size(1);
    at::Tensor target = labels.narrow(1, 1, S - 1);
    at::Tensor ce = shifted_cross_entropy_per_token(logits, labels);
    at::Tensor row_loss = (ce * mask).sum(1).to(at::kCPU, at::kDouble);
    at::Tensor row_tokens = mask.sum(1).to(at::kCPU);
    at::Tensor row_correct = (logits.narrow(1, 0, S - 1).argmax(-1).eq(target) & mask).sum(1).to(at::kCPU);
    for (int64_t b = 0; b < batch.batch_size; ++b) {
      const double l = row_loss[b].item<double>();
      const int64_t n = row_tokens[b].item<int64_t>();
      host_sum_ += l;
      tokens_ += n;
      correct_ += row_correct[b].item<int64_t>();
      const int64_t record = batch.record_index[b];
      if (has_types_ && record >= 0) {
        TypeLoss& t = per_type_[split_->record_type(record)];
        t.loss += l;
        t.tokens += n;
      }
    }
  }

  void report(EvalReport& r) const {
    const double loss_sum = split_ ? host_sum_ : device_sum_.item<double>();
    r.tokens = tokens_;
    r.loss_sum = loss_sum;
    r.val_loss = tokens_ > 0 ? loss_sum / tokens_ : std::nan("");
    r.perplexity = std::exp(r.val_loss);
    r.accuracy = tokens_ > 0 ? double(correct_) / tokens_ : 0.0;
    r.per_type = per_type_;
    for (auto& [type, t] : r.per_type) t.loss = t.tokens > 0 ? t.loss / t.tokens : std::nan("");
  }

 private:
  const PreparedSplit* split_;
  bool has_types_;
  at::Tensor device_sum_;
  double host_sum_ = 0;
  int64_t tokens_ = 0, correct_ = 0;
  std::map<std::string, TypeLoss> per_type_;
};

// Routing statistics count the positions whose prediction is scored (padding is left out): the
// scored_mask in the routers' [B * S] token order, on the host.
at::Tensor scored_positions(const at::Tensor& mask) {
  return at::cat({mask, at::zeros({mask.size(0), 1}, mask.options())}, 1).reshape(-1).to(at::kCPU);
}

// Each router call's expert choices [T, K] at the scored positions, on the host.
std::vector<at::Tensor> scored_choices(const std::vector<RoutingTrace>& routing, const at::Tensor& positions) {
  std::vector<at::Tensor> out;
  for (const RoutingTrace& trace : routing) out.push_back(trace.topk_idx.to(at::kCPU).index({positions}));
  return out;
}

// Per (layer, iteration): expert load and the mean entropy of the router's scores.
class RoutingAccumulator {
 public:
  explicit RoutingAccumulator(bool sigmoid_scores) : sigmoid_scores_(sigmoid_scores) {}

  // `idx` = scored_choices(routing, positions).
  void add(const std::vector<RoutingTrace>& routing, const std::vector<at::Tensor>& idx, const at::Tensor& positions) {
    for (size_t i = 0; i < routing.size(); ++i) {
      const RoutingTrace& trace = routing[i];
      at::Tensor scores = trace.scores.to(at::kCPU, at::kDouble).index({positions});
      if (sigmoid_scores_) scores = scores / scores.sum(1, true).clamp_min(1e-300);
      Sums& acc = sums_[{trace.layer, trace.iteration}];
      const int64_t E = scores.size(1);
      if (acc.load.empty()) acc.load.assign(E, 0);
      at::Tensor counts = at::bincount(idx[i].reshape(-1), {}, E);
      for (int64_t e = 0; e < E; ++e) acc.load[e] += counts[e].item<int64_t>();
      acc.entropy_sum += (-(scores * scores.clamp_min(1e-300).log()).sum(1)).sum().item<double>();
      acc.tokens += idx[i].size(0);
    }
  }

  void report(EvalReport& r) const {
    for (const auto& [key, acc] : sums_) {
      IterationRouting it;
      it.layer = key.first;
      it.iteration = key.second;
      it.expert_load = acc.load;
      const LoadStats balance = load_balance(acc.load);
      it.load_imbalance = balance.max_over_mean;
      it.load_cv = balance.cv;
      it.router_entropy = acc.tokens > 0 ? acc.entropy_sum / acc.tokens : 0;
      r.routing.push_back(std::move(it));
    }
  }

 private:
  struct Sums {
    std::vector<int64_t> load;
    double entropy_sum = 0;
    int64_t tokens = 0;
  };
  bool sigmoid_scores_;
  std::map<std::pair<int64_t, int64_t>, Sums> sums_;
};

// Per CoE layer: how its iterations combine experts (distinct chains, unique experts per token,
// coactivation between consecutive iterations).
class ChainAccumulator {
 public:
  // `idx` = scored_choices(routing, positions).
  void add(const std::vector<RoutingTrace>& routing, const std::vector<at::Tensor>& idx) {
    std::map<int64_t, std::vector<at::Tensor>> by_layer;
    std::map<int64_t, int64_t> experts;  // E, from the layer's first router call
    for (size_t i = 0; i < routing.size(); ++i) {
      by_layer[routing[i].layer].push_back(idx[i]);
      experts.emplace(routing[i].layer, routing[i].scores.size(1));
    }
    for (auto& [layer, iters] : by_layer) {
      Sums& acc = sums_[layer];
      const int64_t C = static_cast<int64_t>(iters.size());
      const int64_t E = experts[layer];
      acc.iterations = C;
      if (acc.coactivation.empty()) acc.coactivation.assign(E, std::vector<int64_t>(E, 0));
      std::vector<at::Tensor> sorted;
      for (auto& t : iters) sorted.push_back(std::get<0>(t.sort(1)).contiguous());
      const int64_t T = sorted[0].size(0), K = sorted[0].size(1);
      for (int64_t tok = 0; tok < T; ++tok) {
        std::vector<int64_t> key;
        std::set<int64_t> unique;
        for (int64_t c = 0; c < C; ++c) {
          const int64_t* row = sorted[c].data_ptr<int64_t>() + tok * K;
          key.insert(key.end(), row, row + K);
          unique.insert(row, row + K);
          if (c + 1 < C) {
            const int64_t* next = sorted[c + 1].data_ptr<int64_t>() + tok * K;
            for (int64_t a = 0; a < K; ++a)
              for (int64_t b = 0; b < K; ++b) acc.coactivation[row[a]][next[b]] += 1;
          }
        }
        acc.sets.insert(std::move(key));
        acc.unique_sum += static_cast<double>(unique.size());
      }
      acc.tokens += T;
    }
  }

  // Moves the coactivation counts out.
  void report(EvalReport& r) {
    for (auto& [layer, acc] : sums_) {
      LayerChain c;
      c.layer = layer;
      c.iterations = acc.iterations;
      c.distinct_expert_sets = static_cast<int64_t>(acc.sets.size());
      c.mean_unique_experts = acc.tokens > 0 ? acc.unique_sum / acc.tokens : 0;
      c.coactivation = std::move(acc.coactivation);
      r.chains.push_back(std::move(c));
    }
  }

 private:
  struct Sums {
    int64_t iterations = 0;
    std::set<std::vector<int64_t>> sets;
    double unique_sum = 0;
    int64_t tokens = 0;
    std::vector<std::vector<int64_t>> coactivation;
  };
  std::map<int64_t, Sums> sums_;
};

}  // namespace

EvalReport evaluate(CausalLMImpl& model, SequentialLoader& loader, const c10::Device& device,
                    const EvalOptions& options) {
  const bool was_training = model.is_training();
  model.eval();
  torch::NoGradGuard no_grad;
  EvalReport report;
  const PreparedSplit* split = options.details;
  const bool sigmoid_scores = model.config().scoring_func == ScoringFunc::kSigmoid;
  LossAccumulator loss(device, split);
  RoutingAccumulator routing(sigmoid_scores);
  ChainAccumulator chains;

  const bool lockstep = options.lockstep_forwards >= 0;
  if (lockstep && split) fail("evaluate: lockstep_forwards is only for the loss without details");
  int64_t forwards = 0;
  // A forward whose result nobody uses, so that this rank takes part in its expert group's
  // exchanges (lockstep_forwards).
  auto dummy_forward = [&] {
    AutocastGuard autocast(device.type(), options.bf16_autocast, at::kBFloat16);
    model.forward(at::zeros({1, 1}, at::TensorOptions().dtype(at::kLong).device(device)), {}, ForwardOptions{});
    ++forwards;
  };
  loader.reset();
  TokenBatch batch;
  while (loader.next(&batch)) {
    ++report.batches;
    if (batch.batch_size == 0) {
      if (lockstep) dummy_forward();
      continue;
    }
    report.rows += batch.batch_size;
    const DeviceBatch db = to_device(batch, device);
    AutocastGuard autocast(device.type(), options.bf16_autocast, at::kBFloat16);
    ForwardOptions forward;
    if (!split) {  // the fused chunked loss, no logits
      const int64_t n = count_loss_tokens(batch);
      if (n == 0) {
        if (lockstep) dummy_forward();
        continue;
      }
      forward.return_logits = false;
      loss.add_mean(model.forward(db.input_ids, db.labels, forward).loss, n);
      ++forwards;
      continue;
    }
    forward.record_routing = true;
    const LmOutput out = model.forward(db.input_ids, {}, forward);
    const at::Tensor mask = scored_mask(db.labels);
    const at::Tensor positions = scored_positions(mask);
    const std::vector<at::Tensor> idx = scored_choices(out.routing, positions);
    loss.add(out.logits, db.labels, mask, batch);
    routing.add(out.routing, idx, positions);
    chains.add(out.routing, idx);
  }
  while (lockstep && forwards < options.lockstep_forwards) dummy_forward();
  loader.reset();
  model.train(was_training);
  report.records = loader.records();
  loss.report(report);
  routing.report(report);
  chains.report(report);
  return report;
}

nlohmann::json EvalReport::to_json(bool with_coactivation) const {
  nlohmann::json j;
  j["val_loss"] = val_loss;
  j["perplexity"] = perplexity;
  j["accuracy"] = accuracy;
  j["tokens"] = tokens;
  j["records"] = records;
  j["rows"] = rows;
  if (!per_type.empty()) {
    nlohmann::json types = nlohmann::json::object();
    for (const auto& [name, t] : per_type)
      types[name.empty() ? "(none)" : name] = {{"loss", t.loss}, {"tokens", t.tokens}};
    j["per_type"] = types;
  }
  routing_report().write_to(j, with_coactivation);
  return j;
}

}  // namespace coe
