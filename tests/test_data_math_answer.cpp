// Final-answer extraction for GSM8K and MetaMathQA: a table of solution and generation texts in
// both styles (markers, commas, '$', trailing '.', fractions, negative numbers, MATH-style
// answers), every gold answer of the real GSM8K test split, the prompt a run's text format
// gives, and the Wilson interval.
#include "coe/data/jsonl.h"
#include "coe/data/text_template.h"
#include "coe/eval/math_answer.h"
#include "support/expect_error.h"
#include "support/test_env.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

namespace {

using coe::MathTask;

struct Case {
  MathTask task;
  std::string text;
  std::optional<std::string> marked;  // marked_answer
  std::optional<std::string> last;    // last_number
};

const std::vector<Case>& cases() {
  static const std::vector<Case> table = {
      // GSM8K solutions (the data set's own style: <<calculator>> annotations, "#### N").
      {MathTask::kGsm8k,
       "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in "
       "April and May.\n#### 72",
       "72", "72"},
      {MathTask::kGsm8k,
       "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day at the "
       "farmer’s market.\n#### 18",
       "18", "18"},
      {MathTask::kGsm8k, "The house is worth 850,000 - 0 = <<850000=850000>>850,000.\n#### 850,000", "850000",
       "850000"},
      {MathTask::kGsm8k, "So the total is 109,200,000 dollars.\n#### 109,200,000", "109200000", "109200000"},
      {MathTask::kGsm8k, "The temperature fell 4 - 11 = <<4-11=-7>>-7 degrees.\n#### -7", "-7", "-7"},
      {MathTask::kGsm8k, "He has 3/4 of a pizza left.\n#### 3/4", "0.75", "0.75"},
      {MathTask::kGsm8k, "Each share is 1/3 of the cake.\n#### 1/3", "1/3", "1/3"},
      {MathTask::kGsm8k, "Half an hour is 0.5 hours.\n#### 0.5", "0.5", "0.5"},
      // Model generations in GSM8K style.
      {MathTask::kGsm8k, "She pays 3 * $4 = $12 for apples.\n#### $12.00", "12", "12"},
      {MathTask::kGsm8k, "So he earns $1,600.\n#### $1,600.", "1600", "1600"},
      {MathTask::kGsm8k, "Total: 20 + 30 = 50\n#### 50 dollars", "50", "50"},
      {MathTask::kGsm8k, "The answer is 5 apples.\n####72", "72", "72"},
      {MathTask::kGsm8k, "First guess 5\n#### 5\nWait, it is 7\n#### 7", "7", "7"},
      {MathTask::kGsm8k, "The discount is 25% of 80 = 20\n#### 25%", "25", "25"},
      {MathTask::kGsm8k, "She had 12 eggs and used 5.", std::nullopt, "5"},
      {MathTask::kGsm8k, "She sells them all.\n#### ", std::nullopt, std::nullopt},
      {MathTask::kGsm8k, "#### twelve", std::nullopt, std::nullopt},
      {MathTask::kGsm8k,
       "It drops to \xE2\x88\x92"
       "3 degrees.\n#### \xE2\x88\x92"
       "3",
       "-3", "-3"},
      {MathTask::kGsm8k, "question : how many", std::nullopt, std::nullopt},
      // MetaMathQA responses ("The answer is: X"), GSM-derived and MATH-derived.
      {MathTask::kMetaMathQaAnswers,
       "James buys 5 packs of beef that are 4 pounds each, so he buys 5 * 4 = 20 pounds of beef.\nThe price of beef is "
       "$5.50 per pound, so he pays 20 * $5.50 = $110.\n#### 110\nThe answer is: 110",
       "110", "110"},
      {MathTask::kMetaMathQaAnswers, "We have $\\frac{3}{4}$ of the tank.\nThe answer is: \\frac{3}{4}", "0.75",
       "0.75"},
      {MathTask::kMetaMathQaAnswers, "So $x = -\\frac{1}{2}$.\nThe answer is: -\\frac{1}{2}", "-0.5", "-0.5"},
      {MathTask::kMetaMathQaAnswers, "Thus the ratio is \\dfrac{7}{3}.\nThe answer is: \\dfrac{7}{3}", "7/3", "7/3"},
      {MathTask::kMetaMathQaAnswers, "The side is $3\\sqrt{2}$.\nThe answer is: 3\\sqrt{2}", "3\\sqrt{2}", "2"},
      {MathTask::kMetaMathQaAnswers, "The point is $(2,3)$.\nThe answer is: (2,3)", "(2,3)", "3"},
      {MathTask::kMetaMathQaAnswers, "He saves 1,000 dollars.\nThe answer is: 1,000", "1000", "1000"},
      {MathTask::kMetaMathQaAnswers, "The cost is $5.50.\nThe answer is: $5.50", "5.5", "5.5"},
      {MathTask::kMetaMathQaAnswers, "So there are 12 cookies left.\nThe answer is: 12.", "12", "12"},
      {MathTask::kMetaMathQaAnswers, "The increase is 5\\%.\nThe answer is: 5\\%", "5", "5"},
      {MathTask::kMetaMathQaAnswers, "The correct option is B.\nThe answer is: \\text{(B)}", "\\text{(B)}",
       std::nullopt},
      {MathTask::kMetaMathQaAnswers, "The polynomial is $x^2 + 1$.\nThe answer is: x^2 + 1", "x^2+1", "1"},
      {MathTask::kMetaMathQaAnswers, "The value of x is 4.\nThe answer is: \\boxed{4}", "4", "4"},
      {MathTask::kMetaMathQaAnswers, "If the answer is 4, then x = 8.", std::nullopt, "8"},
      {MathTask::kMetaMathQaAnswers, "The answer is: 0.25", "0.25", "0.25"},
      {MathTask::kMetaMathQaAnswers, "We subtract: 10-4 = 6, then 6-9 = -3.\nThe answer is: -3", "-3", "-3"},
  };
  return table;
}

TEST(MathAnswer, ExtractsMarkedAndLastNumbers) {
  ASSERT_GE(cases().size(), 30u);
  for (const auto& c : cases()) {
    EXPECT_EQ(coe::marked_answer(c.task, c.text), c.marked) << coe::to_string(c.task) << ": " << c.text;
    EXPECT_EQ(coe::last_number(c.text), c.last) << c.text;
  }
}

TEST(MathAnswer, CanonicalFormsAgree) {
  const std::vector<std::pair<std::string, std::string>> same = {{"0.5", "1/2"},
                                                                 {"\\frac{1}{2}", "0.50"},
                                                                 {"$1,600.00", "1600"},
                                                                 {"1600.", "1,600"},
                                                                 {"007", "7"},
                                                                 {"-\\frac{6}{8}", "-0.75"},
                                                                 {"\xE2\x88\x92"
                                                                  "4",
                                                                  "-4"},
                                                                 {"12 ", " 12"},
                                                                 {"(2, 3)", "(2,3)"}};
  for (const auto& [a, b] : same) EXPECT_EQ(coe::canonical_answer(a), coe::canonical_answer(b)) << a << " vs " << b;
  EXPECT_NE(coe::canonical_answer("18"), coe::canonical_answer("-18"));
  EXPECT_NE(coe::canonical_answer("1,2"), coe::canonical_answer("12"));  // not a thousands comma
  EXPECT_EQ(coe::canonical_answer("2/3"), "2/3");
  EXPECT_EQ(coe::canonical_answer("12.5"), "12.5");
}

TEST(MathAnswer, EveryGsm8kTestGoldIsAnInteger) {
  const coe::RecordFile file((coe::test::shared_root() / "data" / "gsm8k" / "test.jsonl").string());
  ASSERT_EQ(file.size(), 1319);
  for (int64_t i = 0; i < file.size(); ++i) {
    const std::string answer = file.parse(i)["answer"].get<std::string>();
    const auto gold = coe::marked_answer(MathTask::kGsm8k, answer);
    ASSERT_TRUE(gold.has_value()) << "line " << file.line(i) << ": " << answer;
    std::string raw = answer.substr(answer.rfind("####") + 4);
    std::string digits;
    for (char ch : raw)
      if (ch != ',' && ch != ' ') digits += ch;
    EXPECT_EQ(*gold, std::to_string(std::stoll(digits))) << "line " << file.line(i);
  }
}

TEST(MathAnswer, TaskNames) {
  EXPECT_EQ(coe::parse_math_task("gsm8k", "--task"), MathTask::kGsm8k);
  EXPECT_EQ(coe::parse_math_task("metamathqa-answers", "--task"), MathTask::kMetaMathQaAnswers);
  coe::test::expect_error([] { coe::parse_math_task("math500", "--task"); }, {"--task", "math500", "gsm8k"});
}

TEST(MathAnswer, WilsonInterval) {
  // 10 of 20: statsmodels' proportion_confint(10, 20, method="wilson"); 0 or n of n: the closed
  // form z^2 / (n + z^2) for the far end.
  const double z2 = 1.959963984540054 * 1.959963984540054;
  auto ci = coe::wilson_interval(10, 20);
  EXPECT_NEAR(ci.low, 0.299298, 1e-6);
  EXPECT_NEAR(ci.high, 0.700702, 1e-6);
  ci = coe::wilson_interval(0, 20);
  EXPECT_DOUBLE_EQ(ci.low, 0.0);
  EXPECT_NEAR(ci.high, z2 / (20 + z2), 1e-12);
  ci = coe::wilson_interval(20, 20);
  EXPECT_NEAR(ci.low, 1 - z2 / (20 + z2), 1e-12);
  EXPECT_DOUBLE_EQ(ci.high, 1.0);
  ci = coe::wilson_interval(0, 0);
  EXPECT_EQ(ci.low, 0.0);
  EXPECT_EQ(ci.high, 1.0);
}

TEST(TextPrompt, EndsWhereTheAnswerBegins) {
  const nlohmann::json record = {{"question", "How many eggs?"}, {"answer", "12\n#### 12"}};
  const coe::TextTemplate plain({"question", "answer"}, std::nullopt);
  EXPECT_EQ(plain.render_prompt(record, "answer"), "question : How many eggs? answer :");
  // The training text continues the prompt exactly.
  EXPECT_EQ(plain.render(record).rfind(plain.render_prompt(record, "answer"), 0), 0u);
  EXPECT_EQ(plain.render_prompt(nlohmann::json{{"question", "Q"}}, "answer"), "question : Q answer :");

  const coe::TextTemplate custom({}, std::string("Q: {question}\nA: {answer}"));
  EXPECT_EQ(custom.render_prompt(record, "answer"), "Q: How many eggs?\nA:");
  coe::test::expect_error([&] { plain.render_prompt(record, "response"); }, {"response", "question, answer"});
}

}  // namespace
