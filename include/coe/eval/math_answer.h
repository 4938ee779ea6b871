#pragma once
// Final answers of math word problems, as GSM8K and MetaMathQA write them, for exact-match
// accuracy: GSM8K solutions end with "#### <number>", MetaMathQA responses with
// "The answer is: <answer>".
//
// Answers compare in a canonical form. A number may carry a sign ('-' or U+2212), '$', thousands
// commas (a comma followed by exactly three digits), a decimal part, a trailing '.', '%' or '\%',
// and may be a fraction "a/b" or "\frac{a}{b}" (also \dfrac, \tfrac); it becomes an exact reduced
// rational printed as an integer, a decimal when it has a finite one ("0.75"), else "a/b". So
// "$1,600.00", "1600" and "1600." agree, as do "0.5", "1/2" and "\frac{1}{2}". Any other answer
// (MATH-style "3\sqrt{2}", "(2,3)") compares as its text without whitespace, '$' and a trailing
// '.'.
#include <cstdint>
#include <optional>
#include <string>

namespace coe {

enum class MathTask { kGsm8k, kMetaMathQaAnswers };

// "gsm8k" | "metamathqa-answers"; anything else throws naming `what`.
MathTask parse_math_task(const std::string& name, const std::string& what);
const char* to_string(MathTask task);
// The raw data set's keys: question / answer (GSM8K), query / response (MetaMathQA).
const char* default_question_key(MathTask task);
const char* default_answer_key(MathTask task);
// "####" | "The answer is:"
const char* answer_marker(MathTask task);

// The answer after the last marker of the task, up to the end of that line, in canonical form;
// nullopt without a marker or with nothing after it. GSM8K's answer is numeric: the whole
// remainder when it is one number, else its first number ("#### 18 dollars" -> 18); nullopt when it
// holds none.
std::optional<std::string> marked_answer(MathTask task, const std::string& text);

// The last number in the text, canonical (the "flexible" extraction); nullopt when there is none.
// A '-' is a sign only where it cannot be a subtraction (not after a letter, digit or ')').
std::optional<std::string> last_number(const std::string& text);

// The canonical form of an answer text (see above).
std::string canonical_answer(const std::string& answer);

// Wilson score interval of a binomial proportion (successes of n) at the normal quantile z
// (1.96: 95%). n = 0 gives [0, 1].
struct ProportionInterval {
  double low = 0, high = 1;
};
ProportionInterval wilson_interval(int64_t successes, int64_t n, double z = 1.959963984540054);

}  // namespace coe
