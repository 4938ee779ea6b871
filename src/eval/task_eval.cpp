#include "coe/eval/task_eval.h"

#include "coe/data/content_hash.h"
#include "coe/data/jsonl.h"
#include "coe/data/prepared.h"
#include "coe/model/causal_lm.h"
#include "coe/tokenizer/tokenizer.h"
#include "coe/util/error.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <numeric>

namespace fs = std::filesystem;

namespace coe {

std::vector<SourceRecord> read_source_records(const std::string& data, const std::string& split, int64_t max_records) {
  auto count = [&](int64_t n) { return max_records < 0 ? n : std::min(n, max_records); };
  std::vector<SourceRecord> out;
  if (!fs::is_directory(data)) {
    if (!fs::exists(data)) fail("--data {}: no such file or prepared dataset", data);
    const RecordFile file(data);
    for (int64_t i = 0; i < count(file.size()); ++i)
      out.push_back({file.parse(i), fmt::format("{}:{}", data, file.line(i))});
    return out;
  }
  std::shared_ptr<const PreparedSplit> s;
  if (fs::exists(fs::path(data) / "meta.json")) {
    s = PreparedSplit::open(data);
  } else {
    const std::string name = !split.empty() ? split : fs::exists(fs::path(data) / "val") ? "val" : "train";
    s = open_split(data, name);
  }
  // A prepared split holds tokens only; its records come back from the inputs, which must be the
  // very files it was made from.
  std::vector<std::unique_ptr<RecordFile>> files;
  std::vector<int64_t> first;
  int64_t total = 0;
  for (const auto& src : s->metadata().at("sources")) {
    const std::string path = src.at("path").get<std::string>();
    const auto bytes = src.at("bytes").get<uint64_t>();
    std::error_code ec;
    if (!fs::is_regular_file(path, ec) || fs::file_size(path, ec) != bytes || hash_file(path) != src.at("hash"))
      fail("--data {}: the split was prepared from {} ({} bytes), which is gone or has changed; --task needs its raw "
           "records (pass the raw file as --data)",
           s->dir(), path, bytes);
    files.push_back(std::make_unique<RecordFile>(path));
    first.push_back(total);
    total += src.at("records").get<int64_t>();
  }
  for (int64_t i = 0; i < count(s->size()); ++i) {
    const int64_t index = s->source_index(i);
    const size_t f = static_cast<size_t>(std::upper_bound(first.begin(), first.end(), index) - first.begin()) - 1;
    const RecordFile& file = *files[f];
    const int64_t local = index - first[f];
    if (local >= file.size()) fail("--data {}: record {} points past the end of {}", s->dir(), i, file.path());
    out.push_back({file.parse(local), fmt::format("{}:{}", file.path(), file.line(local))});
  }
  return out;
}

MathTaskPrompter::MathTaskPrompter(MathTask task, TextTemplate text, std::string question_key, std::string answer_key)
    : task_(task), text_(std::move(text)), question_key_(std::move(question_key)), answer_key_(std::move(answer_key)) {
  const auto& keys = text_.keys();
  if (keys.size() < 2)
    fail("the text format reads the single key '{}': a task needs a question key and, after it, the answer's key",
         keys.front());
  text_question_key_ = keys.front();
  text_answer_key_ = keys.back();
}

nlohmann::json MathTaskPrompter::as_text_record(const SourceRecord& r, bool with_answer) const {
  auto get = [&](const std::string& key, const char* flag) -> const nlohmann::json& {
    const auto it = r.record.find(key);
    if (it == r.record.end()) fail("{}: record has no key '{}' ({})", r.where, key, flag);
    return *it;
  };
  nlohmann::json out = r.record;
  out[text_question_key_] = get(question_key_, "--question-key");
  if (with_answer) out[text_answer_key_] = get(answer_key_, "--answer-key");
  return out;
}

void MathTaskPrompter::set_shots(const std::vector<SourceRecord>& exemplars, const std::string& separator) {
  shots_.clear();
  for (const auto& e : exemplars) {
    try {
      shots_ += text_.render(as_text_record(e, true)) + separator;
    } catch (const Error& err) {
      if (std::string(err.what()).rfind(e.where, 0) == 0) throw;
      fail("{}: {}", e.where, err.what());
    }
  }
  shots_count_ = static_cast<int64_t>(exemplars.size());
}

std::string MathTaskPrompter::prompt(const SourceRecord& r) const {
  const nlohmann::json record = as_text_record(r, false);
  try {
    return shots_ + text_.render_prompt(record, text_answer_key_);
  } catch (const Error& err) {
    fail("{}: {}", r.where, err.what());
  }
}

std::string MathTaskPrompter::gold(const SourceRecord& r) const {
  const auto it = r.record.find(answer_key_);
  if (it == r.record.end()) fail("{}: record has no key '{}' (--answer-key)", r.where, answer_key_);
  const std::string answer = value_to_text(*it);
  const auto gold = marked_answer(task_, answer);
  if (!gold)
    fail("{}: its '{}' has no final answer after '{}' (is this {} data?)", r.where, answer_key_, answer_marker(task_),
         to_string(task_));
  return *gold;
}

std::string MathTaskPrompter::next_text_prefix() const {
  return text_.render_prompt(nlohmann::json{{text_question_key_, ""}}, text_question_key_);
}

nlohmann::ordered_json TaskSample::to_json() const {
  auto opt = [](const std::optional<std::string>& v) {
    return v ? nlohmann::ordered_json(*v) : nlohmann::ordered_json();
  };
  return {{"where", where},
          {"prompt", prompt},
          {"generation", generation},
          {"extracted", opt(extracted)},
          {"gold", gold},
          {"correct", correct},
          {"extracted_last_number", opt(extracted_last)},
          {"correct_last_number", correct_last},
          {"finish_reason", to_string(finish)},
          {"prompt_tokens", prompt_tokens},
          {"new_tokens", new_tokens}};
}

TaskScore score(const std::vector<TaskSample>& samples) {
  TaskScore s;
  for (const auto& x : samples) {
    ++s.records;
    s.correct += x.correct;
    s.correct_last += x.correct_last;
    s.answered += x.extracted.has_value();
  }
  return s;
}

nlohmann::ordered_json TaskScore::to_json() const {
  auto rate = [&](int64_t k) { return records > 0 ? static_cast<double>(k) / records : 0.0; };
  const ProportionInterval ci = wilson_interval(correct, records), ci_last = wilson_interval(correct_last, records);
  return {{"records", records},
          {"correct", correct},
          {"accuracy", rate(correct)},
          {"accuracy_ci95", {ci.low, ci.high}},
          {"answered", answered},
          {"correct_last_number", correct_last},
          {"accuracy_last_number", rate(correct_last)},
          {"accuracy_last_number_ci95", {ci_last.low, ci_last.high}},
          {"interval", "Wilson score interval, 95%"}};
}

std::vector<TaskSample> run_math_task(CausalLMImpl& model, const Tokenizer& tokenizer, const MathTaskPrompter& prompter,
                                      const std::vector<SourceRecord>& records, const GenerateOptions& options,
                                      int64_t batch, GenerateStats* stats,
                                      const std::function<void(int64_t, int64_t)>& progress) {
  if (batch < 1) fail("--batch {}: must be at least 1", batch);
  const int64_t max_pos = model.config().max_position_embeddings;
  const size_t n = records.size();
  std::vector<TaskSample> samples(n);
  std::vector<std::vector<int32_t>> ids(n);
  for (size_t i = 0; i < n; ++i) {
    TaskSample& s = samples[i];
    s.where = records[i].where;
    s.gold = prompter.gold(records[i]);
    s.prompt = prompter.prompt(records[i]);
    ids[i] = tokenizer.encode(s.prompt);
    s.prompt_tokens = static_cast<int64_t>(ids[i].size());
    if (s.prompt_tokens >= max_pos)
      fail("{}: the prompt has {} tokens{}, no room for an answer under the model's max_position_embeddings {}",
           s.where, s.prompt_tokens, prompter.shots() ? fmt::format(" with {} exemplars", prompter.shots()) : "",
           max_pos);
  }
  // Similar lengths share a batch: less padding to prefill.
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ids[a].size() < ids[b].size(); });
  for (size_t begin = 0; begin < n; begin += static_cast<size_t>(batch)) {
    const size_t end = std::min(n, begin + static_cast<size_t>(batch));
    std::vector<std::vector<int32_t>> prompts;
    std::vector<uint64_t> streams;
    for (size_t k = begin; k < end; ++k) {
      prompts.push_back(ids[order[k]]);
      streams.push_back(order[k]);
    }
    const auto generations = generate(model, tokenizer, prompts, options, streams, stats);
    for (size_t k = begin; k < end; ++k) {
      TaskSample& s = samples[order[k]];
      const Generation& g = generations[k - begin];
      s.generation = g.text;
      s.finish = g.finish;
      s.new_tokens = static_cast<int64_t>(g.tokens.size());
      s.extracted = marked_answer(prompter.task(), g.text);
      s.extracted_last = last_number(g.text);
      s.correct = s.extracted == s.gold;
      s.correct_last = s.extracted_last == s.gold;
    }
    if (progress) progress(static_cast<int64_t>(end), static_cast<int64_t>(n));
  }
  return samples;
}

}  // namespace coe
