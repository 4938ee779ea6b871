#include "coe/data/synth.h"

#include "coe/util/error.h"
#include "coe/util/file_io.h"
#include "coe/util/random.h"

#include <fmt/format.h>

#include <array>
#include <filesystem>

namespace coe {
namespace {

struct Person {
  const char* name;
  const char* he;   // subject pronoun
  const char* him;  // object pronoun
};
constexpr std::array<Person, 16> kPeople{{{"Ava", "she", "her"},
                                          {"Ben", "he", "him"},
                                          {"Chloe", "she", "her"},
                                          {"Diego", "he", "him"},
                                          {"Emma", "she", "her"},
                                          {"Farid", "he", "him"},
                                          {"Grace", "she", "her"},
                                          {"Hiro", "he", "him"},
                                          {"Isla", "she", "her"},
                                          {"Jamal", "he", "him"},
                                          {"Kira", "she", "her"},
                                          {"Liam", "he", "him"},
                                          {"Maya", "she", "her"},
                                          {"Noah", "he", "him"},
                                          {"Olga", "she", "her"},
                                          {"Pedro", "he", "him"}}};
constexpr std::array<const char*, 10> kItems{"apples",  "marbles", "stickers", "books",  "coins",
                                             "pencils", "cookies", "stamps",   "shells", "cards"};
constexpr std::array<const char*, 8> kGoods{"notebooks", "pens",    "mugs",    "toy cars",
                                            "plants",    "candles", "scarves", "puzzles"};
constexpr std::array<const char*, 5> kExtras{"bag", "card", "ribbon", "box", "pin"};
struct Activity {
  const char* verb;  // third person
  const char* unit;
};
constexpr std::array<Activity, 5> kActivities{
    {{"reads", "pages"}, {"runs", "kilometers"}, {"swims", "laps"}, {"writes", "words"}, {"bakes", "muffins"}}};

std::string cap(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

template <typename T, size_t N>
const T& pick(SplitMix64& rng, const std::array<T, N>& options) {
  return options[rng.below(N)];
}

struct Problem {
  std::string original, rephrased, response;
  int64_t answer = 0;
};

// Worked line "a op b = c" in the response.
std::string eq(int64_t a, char op, int64_t b, int64_t c) { return fmt::format("{} {} {} = {}", a, op, b, c); }

// "X has a items, then changes it step by step; how many now?"
Problem collection(SplitMix64& rng) {
  const Person& p = pick(rng, kPeople);
  const Person* friend_ = &pick(rng, kPeople);
  while (friend_->name == p.name) friend_ = &pick(rng, kPeople);
  const std::string items = pick(rng, kItems);
  const int64_t start = rng.between(6, 60);
  int64_t x = start;
  Problem out;
  std::string sentences = fmt::format("{} has {} {}.", p.name, x, items);
  std::string clauses;
  out.response = fmt::format("{} starts with {} {}.\n", p.name, x, items);
  const int64_t steps = rng.between(2, 4);
  for (int64_t s = 0; s < steps; ++s) {
    // Choose an operation that keeps every intermediate a positive integer of modest size.
    std::vector<int> ops{0};
    if (x >= 2) ops.push_back(1);
    if (x <= 500) ops.push_back(2);
    for (int64_t k = 2; k <= 5; ++k)
      if (x % k == 0 && x / k >= 2) {
        ops.push_back(3);
        break;
      }
    int op = ops[rng.below(ops.size())];
    int64_t y = 0;
    if (op == 0) {
      int64_t b = rng.between(2, 40);
      y = x + b;
      sentences += fmt::format(" Then {} gets {} more from {}.", p.he, b, friend_->name);
      clauses += fmt::format(", gets {} more from {}", b, friend_->name);
      out.response += fmt::format("After getting {} more, {} has {} {}.\n", b, p.name, eq(x, '+', b, y), items);
    } else if (op == 1) {
      int64_t b = rng.between(1, std::min<int64_t>(x - 1, 30));
      y = x - b;
      sentences += fmt::format(" {} gives {} of them to {}.", cap(p.he), b, friend_->name);
      clauses += fmt::format(", gives {} to {}", b, friend_->name);
      out.response += fmt::format("After giving away {}, {} has {} {}.\n", b, p.name, eq(x, '-', b, y), items);
    } else if (op == 2) {
      int64_t k = rng.between(2, 4);
      y = x * k;
      sentences +=
          fmt::format(" {} keeps collecting until {} has {} times as many {} as before.", cap(p.he), p.he, k, items);
      clauses += fmt::format(", collects until {} has {} times as many", p.he, k);
      out.response += fmt::format("{} times as many is {} {}.\n", k, eq(x, '*', k, y), items);
    } else {
      std::vector<int64_t> divisors;
      for (int64_t k = 2; k <= 5; ++k)
        if (x % k == 0 && x / k >= 2) divisors.push_back(k);
      int64_t k = divisors[rng.below(divisors.size())];
      y = x / k;
      sentences += fmt::format(" {} splits the {} equally into {} boxes and keeps only one box.", cap(p.he), items, k);
      clauses += fmt::format(", splits them equally into {} boxes and keeps one", k);
      out.response += fmt::format("One of {} equal boxes holds {} {}.\n", k, eq(x, '/', k, y), items);
    }
    x = y;
  }
  out.original = sentences + fmt::format(" How many {} does {} have now?", items, p.name);
  out.rephrased = fmt::format("{} starts with {} {}{}. What is the number of {} {} ends up with?", p.name, start, items,
                              clauses, items, p.he);
  out.answer = x;
  return out;
}

// "X buys q goods at p each (and an extra), pays with a bill; what change?"
Problem shopping(SplitMix64& rng) {
  const Person& p = pick(rng, kPeople);
  const std::string goods = pick(rng, kGoods);
  const int64_t q = rng.between(2, 9), price = rng.between(2, 25);
  const bool extra = rng.below(2) == 1;
  const std::string extra_name = pick(rng, kExtras);
  const int64_t extra_cost = rng.between(1, 9);
  const int64_t cost = q * price, total = cost + (extra ? extra_cost : 0);
  int64_t bill = 20;
  while (bill <= total) bill = bill == 20 ? 50 : bill * 2;
  Problem out;
  out.response = fmt::format("The {} cost {} dollars.\n", goods, eq(q, '*', price, cost));
  if (extra)
    out.response +=
        fmt::format("With the {}, the total is {} dollars.\n", extra_name, eq(cost, '+', extra_cost, total));
  out.response += fmt::format("The change is {} dollars.\n", eq(bill, '-', total, bill - total));
  const std::string extra_text = extra ? fmt::format(" and a gift {} for ${}", extra_name, extra_cost) : "";
  out.original = fmt::format("{} buys {} {} for ${} each{}. {} pays with a ${} bill. How much change does {} get?",
                             p.name, q, goods, price, extra_text, cap(p.he), bill, p.he);
  out.rephrased =
      fmt::format("If {} pays for {} {} at ${} each{} with a ${} bill, what change does {} receive?", p.name, q, goods,
                  price, extra ? fmt::format(" plus a gift {} costing ${}", extra_name, extra_cost) : "", bill, p.he);
  out.answer = bill - total;
  return out;
}

// "X does r units a day for d days, then r2 a day for d2 days; how many in total?"
Problem rates(SplitMix64& rng) {
  const Person& p = pick(rng, kPeople);
  const Activity& a = pick(rng, kActivities);
  const int64_t r1 = rng.between(2, 30), d1 = rng.between(2, 9), r2 = rng.between(2, 30), d2 = rng.between(2, 9);
  Problem out;
  out.response =
      fmt::format("In the first {} days {} {} {} {}.\n", d1, p.name, a.verb, eq(r1, '*', d1, r1 * d1), a.unit);
  out.response += fmt::format("In the next {} days {} {} {} {}.\n", d2, p.he, a.verb, eq(r2, '*', d2, r2 * d2), a.unit);
  out.response += fmt::format("In total that is {} {}.\n", eq(r1 * d1, '+', r2 * d2, r1 * d1 + r2 * d2), a.unit);
  out.original =
      fmt::format("{} {} {} {} every day for {} days, then {} {} a day for {} days. How many {} does {} {} in total?",
                  p.name, a.verb, r1, a.unit, d1, r2, a.unit, d2, a.unit, p.he,
                  std::string(a.verb).substr(0, std::string(a.verb).size() - 1));
  out.rephrased = fmt::format(
      "Over {} days {} {} {} {} a day, and over the next {} days {} {} a day. What is the total number of {}?", d1,
      p.name, a.verb, r1, a.unit, d2, r2, a.unit, a.unit);
  out.answer = r1 * d1 + r2 * d2;
  return out;
}

}  // namespace

std::vector<SynthRecord> generate_synth_records(int64_t count, uint64_t seed) {
  if (count <= 0) fail("synth: --records must be positive, got {}", count);
  SplitMix64 rng(seed);
  std::vector<SynthRecord> out;
  out.reserve(static_cast<size_t>(count));
  while (static_cast<int64_t>(out.size()) < count) {
    const uint64_t kind = rng.below(3);
    Problem p = kind == 0 ? collection(rng) : kind == 1 ? shopping(rng) : rates(rng);
    const std::string response = p.response + fmt::format("The answer is: {}", p.answer);
    const bool rephrase = rng.below(2) == 1;
    out.push_back({p.original, response, "SYNTH_ARITH", p.original, p.answer});
    if (rephrase && static_cast<int64_t>(out.size()) < count)
      out.push_back({p.rephrased, response, "SYNTH_ARITH_Rephrased", p.original, p.answer});
  }
  return out;
}

nlohmann::ordered_json synth_records_json(const std::vector<SynthRecord>& records) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const auto& r : records)
    out.push_back(
        {{"query", r.query}, {"response", r.response}, {"type", r.type}, {"original_question", r.original_question}});
  return out;
}

void write_synth_file(const std::string& path, int64_t count, uint64_t seed) {
  namespace fs = std::filesystem;
  const nlohmann::ordered_json records = synth_records_json(generate_synth_records(count, seed));
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  std::string text = "[\n";
  for (size_t i = 0; i < records.size(); ++i) text += records[i].dump() + (i + 1 < records.size() ? ",\n" : "\n");
  text += "]\n";
  write_file_atomic(target, text);
}

}  // namespace coe
