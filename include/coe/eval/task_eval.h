#pragma once
// Answer accuracy on math word problems (coe-eval --task): each record is prompted as the model
// was trained (the run's text format, cut where the answer begins, after optional exemplars),
// answered greedily, and its final answer (eval/math_answer.h) compared with the gold one.
#include "coe/data/text_template.h"
#include "coe/eval/generate.h"
#include "coe/eval/math_answer.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace coe {

class CausalLMImpl;
class Tokenizer;

struct SourceRecord {
  nlohmann::json record;
  std::string where;  // "file:line"
};

// The records of a raw JSON / JSONL file, or those of a prepared split read back from the raw
// inputs it was made from (`data` a dataset directory with `split` "" meaning val when present,
// else train; or a split directory): each input must still have the size and hash recorded at
// preparation. The first `max_records` (negative: all).
std::vector<SourceRecord> read_source_records(const std::string& data, const std::string& split, int64_t max_records);

// Prompts, exemplars and gold answers of a task in a run's text format. The text's first key
// receives the record's question and its last key is where the answer begins (for
// text_keys [query, response]: "query : <question> response :").
class MathTaskPrompter {
 public:
  MathTaskPrompter(MathTask task, TextTemplate text, std::string question_key, std::string answer_key);

  // Exemplars (records with question and answer) rendered as whole training texts, each followed
  // by `separator`, in front of every prompt.
  void set_shots(const std::vector<SourceRecord>& exemplars, const std::string& separator);
  std::string prompt(const SourceRecord& r) const;
  // The canonical gold answer; throws "<where>: ... no final answer" when the answer has none.
  std::string gold(const SourceRecord& r) const;
  // How a training text begins ("query :"): the model writes it after finishing an answer, so
  // generation stops there. "" when the format starts with the question itself.
  std::string next_text_prefix() const;
  MathTask task() const { return task_; }
  const std::string& question_key() const { return question_key_; }
  const std::string& answer_key() const { return answer_key_; }
  int64_t shots() const { return shots_count_; }

 private:
  nlohmann::json as_text_record(const SourceRecord& r, bool with_answer) const;

  MathTask task_;
  TextTemplate text_;
  std::string question_key_, answer_key_, text_question_key_, text_answer_key_, shots_;
  int64_t shots_count_ = 0;
};

struct TaskSample {
  std::string where, prompt, generation, gold;
  std::optional<std::string> extracted;       // after the task's marker (the accuracy)
  std::optional<std::string> extracted_last;  // the last number (the flexible accuracy)
  bool correct = false, correct_last = false;
  FinishReason finish = FinishReason::kMaxNewTokens;
  int64_t prompt_tokens = 0, new_tokens = 0;
  nlohmann::ordered_json to_json() const;
};

struct TaskScore {
  int64_t records = 0, correct = 0, correct_last = 0, answered = 0;  // answered: a marked answer was found
  nlohmann::ordered_json to_json() const;  // accuracy with its Wilson 95% interval, and the flexible one
};

TaskScore score(const std::vector<TaskSample>& samples);

// Generates an answer for every record (greedy unless `options` say otherwise), in batches of
// `batch` prompts of similar length, and scores it. A prompt that does not fit the model's
// max_position_embeddings throws naming its record. `progress(done, total)` after each batch.
std::vector<TaskSample> run_math_task(CausalLMImpl& model, const Tokenizer& tokenizer, const MathTaskPrompter& prompter,
                                      const std::vector<SourceRecord>& records, const GenerateOptions& options,
                                      int64_t batch, GenerateStats* stats = nullptr,
                                      const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace coe
