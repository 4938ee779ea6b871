#include "coe/train/evaluate.h"

#include "coe/model/autocast.h"
#include "coe/model/causal_lm.h"
#include "coe/train/train_step.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cmath>
#include <set>

namespace coe {
namespace {

struct RoutingAccumulator {
  std::vector<int64_t> load;
  double entropy_sum = 0;
  int64_t tokens = 0;
};

struct ChainAccumulator {
  int64_t iterations = 0;
  std::set<std::vector<int64_t>> sets;
  double unique_sum = 0;
  int64_t tokens = 0;
  std::vector<std::vector<int64_t>> coactivation;
};

}  // namespace

LoadBalance load_balance(const std::vector<int64_t>& load) {
  LoadBalance b;
  if (load.empty()) return b;
  double total = 0, max_load = 0;
  for (int64_t v : load) total += double(v), max_load = std::max(max_load, double(v));
  const double mean = total / double(load.size());
  if (!(mean > 0)) return b;
  double var = 0;
  for (int64_t v : load) var += (double(v) - mean) * (double(v) - mean);
  b.max_over_mean = max_load / mean;
  b.cv = std::sqrt(var / double(load.size())) / mean;
  return b;
}

EvalReport evaluate(CausalLMImpl& model, SequentialLoader& loader, const c10::Device& device,
                    const EvalOptions& options) {
  const bool was_training = model.is_training();
  model.eval();
  torch::NoGradGuard no_grad;
  EvalReport report;
  // Loss-only: summed on the device (one host sync at the end). With details: per row, on the host.
  at::Tensor device_loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
  double loss_sum = 0;
  int64_t correct = 0;
  std::map<std::pair<int64_t, int64_t>, RoutingAccumulator> routing;
  std::map<int64_t, ChainAccumulator> chains;
  const PreparedSplit* split = options.details;
  const bool has_types = split && !split->type_names().empty();
  const bool sigmoid_scores = model.config().scoring_func == "sigmoid";

  loader.reset();
  TokenBatch batch;
  while (loader.next(&batch)) {
    ++report.batches;
    if (batch.batch_size == 0) continue;
    report.rows += batch.batch_size;
    const int64_t B = batch.batch_size, S = batch.seq_len;
    const DeviceBatch db = to_device(batch, device);
    AutocastGuard autocast(device.type(), options.bf16_autocast, at::kBFloat16);
    if (!split) {
      const int64_t n = count_loss_tokens(batch);
      if (n == 0) continue;
      ForwardOptions forward;
      forward.return_logits = false;
      LmOutput out = model.forward(db.input_ids, db.labels, forward);
      device_loss_sum.add_(out.loss.to(at::kDouble) * static_cast<double>(n));
      report.tokens += n;
      continue;
    }
    ForwardOptions forward;
    forward.record_routing = true;
    LmOutput out = model.forward(db.input_ids, {}, forward);
    const at::Tensor& labels = db.labels;

    at::Tensor logits = out.logits.narrow(1, 0, S - 1);
    at::Tensor target = labels.narrow(1, 1, S - 1);
    at::Tensor mask = target.ne(kIgnoreLabel);
    at::Tensor ce = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), target.reshape(-1), {},
                                           at::Reduction::None, kIgnoreLabel)
                        .view({B, S - 1});
    at::Tensor row_loss = (ce * mask).sum(1).to(at::kCPU, at::kDouble);
    at::Tensor row_tokens = mask.sum(1).to(at::kCPU);
    at::Tensor row_correct = (logits.argmax(-1).eq(target) & mask).sum(1).to(at::kCPU);
    for (int64_t b = 0; b < B; ++b) {
      const double l = row_loss[b].item<double>();
      const int64_t n = row_tokens[b].item<int64_t>();
      loss_sum += l;
      report.tokens += n;
      correct += row_correct[b].item<int64_t>();
      const int64_t record = batch.record_index[b];
      if (has_types && record >= 0) {
        TypeLoss& t = report.per_type[split->record_type(record)];
        t.loss += l;
        t.tokens += n;
      }
    }

    // Routing statistics count the positions whose prediction is scored (padding is left out).
    at::Tensor real = at::cat({mask, at::zeros({B, 1}, mask.options())}, 1).reshape(-1).to(at::kCPU);
    std::map<int64_t, std::vector<at::Tensor>> by_layer;
    for (const RoutingTrace& trace : out.routing) {
      at::Tensor idx = trace.topk_idx.to(at::kCPU).index({real});
      at::Tensor scores = trace.scores.to(at::kCPU, at::kDouble).index({real});
      if (sigmoid_scores) scores = scores / scores.sum(1, true).clamp_min(1e-300);
      RoutingAccumulator& acc = routing[{trace.layer, trace.iteration}];
      const int64_t E = scores.size(1);
      if (acc.load.empty()) acc.load.assign(E, 0);
      at::Tensor counts = at::bincount(idx.reshape(-1), {}, E);
      for (int64_t e = 0; e < E; ++e) acc.load[e] += counts[e].item<int64_t>();
      acc.entropy_sum += (-(scores * scores.clamp_min(1e-300).log()).sum(1)).sum().item<double>();
      acc.tokens += idx.size(0);
      by_layer[trace.layer].push_back(idx);
    }
    for (auto& [layer, iters] : by_layer) {
      ChainAccumulator& acc = chains[layer];
      const int64_t C = static_cast<int64_t>(iters.size());
      const int64_t E = static_cast<int64_t>(routing[{layer, 0}].load.size());
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
  loader.reset();
  model.train(was_training);
  if (!split) loss_sum = device_loss_sum.item<double>();
  report.records = loader.records();
  report.loss_sum = loss_sum;
  report.val_loss = report.tokens > 0 ? loss_sum / report.tokens : std::nan("");
  report.perplexity = std::exp(report.val_loss);
  report.accuracy = report.tokens > 0 ? double(correct) / report.tokens : 0.0;
  for (auto& [type, t] : report.per_type) t.loss = t.tokens > 0 ? t.loss / t.tokens : std::nan("");
  for (auto& [key, acc] : routing) {
    IterationRouting r;
    r.layer = key.first;
    r.iteration = key.second;
    r.expert_load = acc.load;
    const LoadBalance balance = load_balance(acc.load);
    r.load_imbalance = balance.max_over_mean;
    r.load_cv = balance.cv;
    r.router_entropy = acc.tokens > 0 ? acc.entropy_sum / acc.tokens : 0;
    report.routing.push_back(std::move(r));
  }
  for (auto& [layer, acc] : chains) {
    LayerChain c;
    c.layer = layer;
    c.iterations = acc.iterations;
    c.distinct_expert_sets = static_cast<int64_t>(acc.sets.size());
    c.mean_unique_experts = acc.tokens > 0 ? acc.unique_sum / acc.tokens : 0;
    c.coactivation = std::move(acc.coactivation);
    report.chains.push_back(std::move(c));
  }
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
  nlohmann::json r = nlohmann::json::array();
  for (const auto& it : routing)
    r.push_back({{"layer", it.layer},
                 {"iteration", it.iteration},
                 {"expert_load", it.expert_load},
                 {"load_imbalance", it.load_imbalance},
                 {"load_cv", it.load_cv},
                 {"router_entropy", it.router_entropy}});
  j["routing"] = r;
  nlohmann::json c = nlohmann::json::array();
  for (const auto& ch : chains) {
    nlohmann::json item = {{"layer", ch.layer},
                           {"iterations", ch.iterations},
                           {"distinct_expert_sets", ch.distinct_expert_sets},
                           {"mean_unique_experts", ch.mean_unique_experts}};
    if (with_coactivation && ch.iterations > 1) item["coactivation"] = ch.coactivation;
    c.push_back(item);
  }
  j["chains"] = c;
  return j;
}

}  // namespace coe
