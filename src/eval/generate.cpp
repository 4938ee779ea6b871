#include "coe/eval/generate.h"

#include "coe/model/causal_lm.h"
#include "coe/tokenizer/tokenizer.h"
#include "coe/util/clock.h"
#include "coe/util/error.h"
#include "coe/util/random.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace coe {

const char* to_string(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos: return "eos";
    case FinishReason::kStop: return "stop";
    case FinishReason::kMaxNewTokens: return "max_new_tokens";
    case FinishReason::kPositionLimit: return "position_limit";
  }
  return "?";
}

GenerateStats& GenerateStats::operator+=(const GenerateStats& o) {
  prompt_tokens += o.prompt_tokens;
  decode_tokens += o.decode_tokens;
  decode_steps += o.decode_steps;
  prefill_s += o.prefill_s;
  decode_s += o.decode_s;
  return *this;
}

int64_t choose_token(const float* logits, int64_t vocab, const SamplingOptions& sampling, double uniform) {
  for (int64_t i = 0; i < vocab; ++i)
    if (std::isnan(logits[i])) fail("generate: the model produced NaN logits (id {})", i);
  if (sampling.temperature <= 0.0) return std::max_element(logits, logits + vocab) - logits;

  // Candidates in descending order of logit (ties: lower id first), cut to top_k; sorting is
  // needed only when a cut applies.
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  const bool cut = sampling.top_k > 0 || sampling.top_p < 1.0;
  if (cut) {
    auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    const int64_t k = sampling.top_k > 0 ? std::min(sampling.top_k, vocab) : vocab;
    std::partial_sort(order.begin(), order.begin() + k, order.end(), by_logit);
    order.resize(static_cast<size_t>(k));
  }
  const float top = *std::max_element(logits, logits + vocab);
  std::vector<double> cumulative(order.size());
  double total = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    total += std::exp((static_cast<double>(logits[order[i]]) - top) / sampling.temperature);
    cumulative[i] = total;
  }
  size_t keep = order.size();
  if (sampling.top_p < 1.0) {
    // The smallest prefix whose probability reaches top_p (always at least one token).
    keep = static_cast<size_t>(std::lower_bound(cumulative.begin(), cumulative.end(), sampling.top_p * total) -
                               cumulative.begin()) +
           1;
    keep = std::min(keep, order.size());
  }
  const double target = uniform * cumulative[keep - 1];
  const size_t pick =
      static_cast<size_t>(std::upper_bound(cumulative.begin(), cumulative.begin() + keep, target) - cumulative.begin());
  return order[std::min(pick, keep - 1)];
}

namespace {

// Length of the end of `text` that must wait: a proper prefix of a stop string, or an incomplete
// UTF-8 sequence / a lossy decoder's U+FFFD that more tokens may still complete.
size_t held_back(const std::string& text, const std::vector<std::string>& stop) {
  size_t hold = 0;
  for (const auto& s : stop)
    for (size_t n = std::min(s.size() - 1, text.size()); n > hold; --n)
      if (text.compare(text.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
  size_t end = text.size();
  while (end >= 3 && text.compare(end - 3, 3, "\xEF\xBF\xBD") == 0) end -= 3;
  // A lead byte whose continuation bytes have not all arrived.
  for (size_t back = 1; back <= 3 && back <= end; ++back) {
    const auto c = static_cast<unsigned char>(text[end - back]);
    if ((c & 0xC0) == 0x80) continue;
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (need > back) end -= back;
    break;
  }
  return std::max(hold, text.size() - end);
}

}  // namespace

std::vector<Generation> generate(CausalLMImpl& model, const Tokenizer& tokenizer,
                                 const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& options,
                                 const std::vector<uint64_t>& streams, GenerateStats* stats,
                                 const TextCallback& on_text) {
  const ModelConfig& config = model.config();
  const SamplingOptions& sampling = options.sampling;
  if (options.max_new_tokens < 1) fail("generate: max_new_tokens {} must be at least 1", options.max_new_tokens);
  if (!(sampling.temperature >= 0.0)) fail("generate: temperature {} must be >= 0", sampling.temperature);
  if (sampling.top_k < 0) fail("generate: top_k {} must be >= 0", sampling.top_k);
  if (!(sampling.top_p > 0.0 && sampling.top_p <= 1.0)) fail("generate: top_p {} must be in (0, 1]", sampling.top_p);
  for (const auto& s : options.stop)
    if (s.empty()) fail("generate: empty stop string");
  if (!streams.empty() && streams.size() != prompts.size())
    fail("generate: {} sampling streams for {} prompts", streams.size(), prompts.size());
  const int64_t rows = static_cast<int64_t>(prompts.size());
  if (rows == 0) return {};

  const int64_t max_pos = config.max_position_embeddings;
  const int64_t vocab = std::min<int64_t>(tokenizer.vocab_size(), config.vocab_size);
  int64_t longest = 0, slots_after_prompt = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const auto& p = prompts[static_cast<size_t>(r)];
    const int64_t n = static_cast<int64_t>(p.size());
    if (n == 0) fail("generate: prompt {} is empty", r);
    if (n >= max_pos)
      fail("generate: prompt {} has {} tokens, no room for a new one under the model's max_position_embeddings {}", r,
           n, max_pos);
    for (int32_t id : p)
      if (id < 0 || id >= config.vocab_size)
        fail("generate: prompt {} holds id {}, outside the model's vocabulary of {}", r, id, config.vocab_size);
    longest = std::max(longest, n);
    // Every generated token but the last is fed back, until the row reaches max_pos tokens.
    slots_after_prompt = std::max(slots_after_prompt, std::min(options.max_new_tokens, max_pos - n) - 1);
  }

  const at::Tensor weight = model.lm_head_weight();
  const auto device = weight.device();
  const int32_t pad = 0;  // padding is never attended to: any id in the model's vocabulary does
  const std::optional<int32_t> eos = tokenizer.eos_id();
  std::vector<int64_t> padding(static_cast<size_t>(rows));
  std::vector<int64_t> flat(static_cast<size_t>(rows * longest), pad);
  for (int64_t r = 0; r < rows; ++r) {
    const auto& p = prompts[static_cast<size_t>(r)];
    padding[static_cast<size_t>(r)] = longest - static_cast<int64_t>(p.size());
    std::copy(p.begin(), p.end(), flat.begin() + r * longest + padding[static_cast<size_t>(r)]);
  }
  std::vector<SplitMix64> rngs;
  for (int64_t r = 0; r < rows; ++r)
    rngs.emplace_back(
        mix_seed(sampling.seed, streams.empty() ? static_cast<uint64_t>(r) : streams[static_cast<size_t>(r)]));
  auto uniform = [&](int64_t r) { return static_cast<double>(rngs[static_cast<size_t>(r)].next() >> 11) * 0x1.0p-53; };

  GenerateStats local;
  auto t0 = Clock::now();
  KvCache cache(config, rows, longest + slots_after_prompt, weight.options());
  cache.mode = options.prefill_mode;
  at::Tensor logits =
      model
          .forward_cached(at::tensor(flat, at::TensorOptions().dtype(at::kLong)).view({rows, longest}).to(device),
                          cache, padding)
          .to(at::kCPU, at::kFloat)
          .contiguous();
  local.prompt_tokens = std::accumulate(prompts.begin(), prompts.end(), int64_t{0},
                                        [](int64_t s, const auto& p) { return s + static_cast<int64_t>(p.size()); });

  std::vector<Generation> out(static_cast<size_t>(rows));
  std::vector<std::string> emitted(static_cast<size_t>(rows));
  std::vector<int64_t> active(static_cast<size_t>(rows));
  std::iota(active.begin(), active.end(), 0);
  cache.mode = options.decode_mode;
  bool prefill = true;
  while (true) {
    // Take each active row's token and decide whether the row is done.
    const float* data = logits.data_ptr<float>();
    const int64_t width = logits.size(1);
    std::vector<int64_t> keep, next_tokens;
    for (size_t j = 0; j < active.size(); ++j) {
      const int64_t r = active[j];
      Generation& g = out[static_cast<size_t>(r)];
      const int64_t token = choose_token(data + static_cast<int64_t>(j) * width, vocab, sampling, uniform(r));
      bool done = false;
      if (options.stop_at_eos && eos && token == *eos) {
        g.finish = FinishReason::kEos;
        done = true;
      } else {
        g.tokens.push_back(static_cast<int32_t>(token));
        g.text = tokenizer.decode(g.tokens);
        size_t cut = std::string::npos;
        for (const auto& s : options.stop) cut = std::min(cut, g.text.find(s));
        const int64_t length = static_cast<int64_t>(prompts[static_cast<size_t>(r)].size() + g.tokens.size());
        if (cut != std::string::npos) {
          g.text.resize(cut);
          g.finish = FinishReason::kStop;
          done = true;
        } else if (static_cast<int64_t>(g.tokens.size()) == options.max_new_tokens) {
          g.finish = FinishReason::kMaxNewTokens;
          done = true;
        } else if (length == max_pos) {
          g.finish = FinishReason::kPositionLimit;
          done = true;
        }
      }
      if (on_text) {
        std::string& shown = emitted[static_cast<size_t>(r)];
        const size_t ready = done ? g.text.size() : g.text.size() - held_back(g.text, options.stop);
        if (ready > shown.size() && g.text.compare(0, shown.size(), shown) == 0) {
          on_text(r, g.text.substr(shown.size(), ready - shown.size()));
          shown = g.text.substr(0, ready);
        }
      }
      if (!done) {
        keep.push_back(static_cast<int64_t>(j));
        next_tokens.push_back(token);
      }
    }
    if (prefill) {
      local.prefill_s = seconds_since(t0);
      prefill = false;
      t0 = Clock::now();
    }
    if (keep.empty()) break;
    if (keep.size() < active.size()) {
      cache.keep_rows(keep);
      std::vector<int64_t> still;
      for (int64_t j : keep) still.push_back(active[static_cast<size_t>(j)]);
      active = std::move(still);
    }
    const int64_t n = static_cast<int64_t>(active.size());
    logits = model
                 .forward_cached(at::tensor(next_tokens, at::TensorOptions().dtype(at::kLong)).view({n, 1}).to(device),
                                 cache)
                 .to(at::kCPU, at::kFloat)
                 .contiguous();
    local.decode_tokens += n;
    ++local.decode_steps;
  }
  local.decode_s = seconds_since(t0);
  if (stats) *stats += local;
  return out;
}

}  // namespace coe
