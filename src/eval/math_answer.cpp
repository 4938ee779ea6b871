#include "coe/eval/math_answer.h"

#include "coe/util/error.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>

namespace coe {
namespace {

using Int = __int128;
constexpr size_t kMaxDigits = 30;  // 10^30 < 2^127: every parsed number fits, exactly

struct Rational {
  Int num = 0, den = 1;
};

Int gcd(Int a, Int b) {
  if (a < 0) a = -a;
  while (b != 0) {
    const Int t = a % b;
    a = b;
    b = t;
  }
  return a;
}

Rational reduced(Int num, Int den) {
  if (den < 0) num = -num, den = -den;
  const Int g = gcd(num, den);
  return g > 1 ? Rational{num / g, den / g} : Rational{num, den};
}

std::string to_text(Int v) {
  if (v == 0) return "0";
  const bool negative = v < 0;
  std::string digits;
  for (; v != 0; v /= 10)
    digits.insert(digits.begin(), static_cast<char>('0' + static_cast<int>(negative ? -(v % 10) : v % 10)));
  return negative ? "-" + digits : digits;
}

std::string to_text(const Rational& r) {
  if (r.den == 1) return to_text(r.num);
  // A finite decimal when the denominator divides a power of ten.
  Int scale = 1;
  for (int k = 1; k <= static_cast<int>(kMaxDigits); ++k) {
    scale *= 10;
    if (scale % r.den != 0) continue;
    const Int scaled = r.num * (scale / r.den);
    const Int magnitude = scaled < 0 ? -scaled : scaled;
    std::string frac = to_text(magnitude % scale);
    frac.insert(frac.begin(), static_cast<size_t>(k) - frac.size(), '0');
    return (scaled < 0 ? "-" : "") + to_text(magnitude / scale) + "." + frac;
  }
  return to_text(r.num) + "/" + to_text(r.den);
}

bool is_digit(const std::string& s, size_t i) { return i < s.size() && s[i] >= '0' && s[i] <= '9'; }
bool starts(const std::string& s, size_t i, const char* prefix) {
  return s.compare(i, std::strlen(prefix), prefix) == 0;
}

struct Parsed {
  size_t end;
  Rational value;
};

std::optional<Parsed> parse_signed(const std::string& s, size_t i, bool sign_allowed);

// Digits with thousands commas and a decimal part, a fraction a/b, or \frac{a}{b}; then an
// optional percent sign.
std::optional<Parsed> parse_unsigned(const std::string& s, size_t i) {
  for (const char* frac : {"\\frac{", "\\dfrac{", "\\tfrac{"}) {
    if (!starts(s, i, frac)) continue;
    const auto a = parse_signed(s, i + std::strlen(frac), true);
    if (!a || !starts(s, a->end, "}{")) return std::nullopt;
    const auto b = parse_signed(s, a->end + 2, true);
    if (!b || !starts(s, b->end, "}") || b->value.num == 0) return std::nullopt;
    return Parsed{b->end + 1, reduced(a->value.num * b->value.den, a->value.den * b->value.num)};
  }
  std::string digits;
  size_t j = i, decimals = 0;
  while (is_digit(s, j)) digits += s[j++];
  while (!digits.empty() && j < s.size() && s[j] == ',' && is_digit(s, j + 1) && is_digit(s, j + 2) &&
         is_digit(s, j + 3) && !is_digit(s, j + 4)) {
    digits.append(s, j + 1, 3);
    j += 4;
  }
  if (j < s.size() && s[j] == '.' && is_digit(s, j + 1)) {
    for (++j; is_digit(s, j); ++j, ++decimals) digits += s[j];
  }
  if (digits.empty() || digits.size() > kMaxDigits) return std::nullopt;
  Int num = 0, den = 1;
  for (char c : digits) num = num * 10 + (c - '0');
  for (size_t k = 0; k < decimals; ++k) den *= 10;
  if (decimals == 0 && j < s.size() && s[j] == '/' && is_digit(s, j + 1)) {
    size_t e = j + 1;
    Int d = 0;
    for (; is_digit(s, e) && e - j <= kMaxDigits; ++e) d = d * 10 + (s[e] - '0');
    if (d != 0 && !is_digit(s, e)) {
      den = d;
      j = e;
    }
  }
  if (j < s.size() && s[j] == '%') ++j;
  else if (starts(s, j, "\\%")) j += 2;
  return Parsed{j, reduced(num, den)};
}

// A sign ('-', U+2212) and a '$' in either order, then an unsigned number.
std::optional<Parsed> parse_signed(const std::string& s, size_t i, bool sign_allowed) {
  size_t j = i;
  bool dollar = false, negative = false;
  if (j < s.size() && s[j] == '$') dollar = true, ++j;
  if (sign_allowed || dollar) {
    if (j < s.size() && s[j] == '-') negative = true, ++j;
    else if (starts(s, j, "\xE2\x88\x92")) negative = true, j += 3;
  }
  if (!dollar && j < s.size() && s[j] == '$') ++j;
  auto r = parse_unsigned(s, j);
  if (r && negative) r->value.num = -r->value.num;
  return r;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// The whole text as one number, or nullopt.
std::optional<Rational> whole_number(const std::string& t) {
  const auto r = parse_signed(t, 0, true);
  if (r && r->end == t.size()) return r->value;
  return std::nullopt;
}

// Trimmed, without a trailing '.' and a \boxed{...} wrapper.
std::string answer_core(const std::string& answer) {
  std::string t = trim(answer);
  if (!t.empty() && t.back() == '.') t = trim(t.substr(0, t.size() - 1));
  if (starts(t, 0, "\\boxed{") && !t.empty() && t.back() == '}') t = trim(t.substr(7, t.size() - 8));
  return t;
}

std::optional<std::string> first_number(const std::string& s) {
  for (size_t i = 0; i < s.size(); ++i) {
    const bool sign_allowed = i == 0 || !(std::isalnum(static_cast<unsigned char>(s[i - 1])) || s[i - 1] == ')');
    if (const auto r = parse_signed(s, i, sign_allowed)) return to_text(r->value);
  }
  return std::nullopt;
}

}  // namespace

MathTask parse_math_task(const std::string& name, const std::string& what) {
  if (name == "gsm8k") return MathTask::kGsm8k;
  if (name == "metamathqa-answers") return MathTask::kMetaMathQaAnswers;
  fail("{}: unknown task '{}' (gsm8k | metamathqa-answers)", what, name);
}

const char* to_string(MathTask task) { return task == MathTask::kGsm8k ? "gsm8k" : "metamathqa-answers"; }
const char* default_question_key(MathTask task) { return task == MathTask::kGsm8k ? "question" : "query"; }
const char* default_answer_key(MathTask task) { return task == MathTask::kGsm8k ? "answer" : "response"; }
const char* answer_marker(MathTask task) { return task == MathTask::kGsm8k ? "####" : "The answer is:"; }

std::string canonical_answer(const std::string& answer) {
  const std::string t = answer_core(answer);
  if (const auto r = whole_number(t)) return to_text(*r);
  std::string out;
  for (char c : t)
    if (!is_space(c) && c != '$') out += c;
  return out;
}

std::optional<std::string> marked_answer(MathTask task, const std::string& text) {
  const std::string marker = answer_marker(task);
  const size_t at = text.rfind(marker);
  if (at == std::string::npos) return std::nullopt;
  const size_t begin = at + marker.size();
  const size_t eol = text.find('\n', begin);
  const std::string rest = answer_core(text.substr(begin, eol == std::string::npos ? std::string::npos : eol - begin));
  if (rest.empty()) return std::nullopt;
  if (task == MathTask::kGsm8k) {
    if (const auto r = whole_number(rest)) return to_text(*r);
    return first_number(rest);
  }
  return canonical_answer(rest);
}

std::optional<std::string> last_number(const std::string& s) {
  std::optional<std::string> last;
  for (size_t i = 0; i < s.size();) {
    const bool sign_allowed = i == 0 || !(std::isalnum(static_cast<unsigned char>(s[i - 1])) || s[i - 1] == ')');
    if (const auto r = parse_signed(s, i, sign_allowed); r && r->end > i) {
      last = to_text(r->value);
      i = r->end;
    } else {
      ++i;
    }
  }
  return last;
}

ProportionInterval wilson_interval(int64_t successes, int64_t n, double z) {
  if (n <= 0) return {0.0, 1.0};
  const double p = static_cast<double>(successes) / n, z2 = z * z, nn = static_cast<double>(n);
  const double center = (p + z2 / (2 * nn)) / (1 + z2 / nn);
  const double half = z / (1 + z2 / nn) * std::sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn));
  return {std::max(0.0, center - half), std::min(1.0, center + half)};
}

}  // namespace coe
