#pragma once
// Synthetic MetaMathQA-style records: multi-step arithmetic word problems with worked answers.
//
// The quickstart's default data set, so coe trains end to end with nothing downloaded. It is
// synthetic and says so: every record's type starts with "SYNTH_" (prepared metadata then reads
// "synthetic": true). Records are {query, response, type, original_question} like MetaMathQA:
//  - type "SYNTH_ARITH": a problem as first phrased; original_question == query.
//  - type "SYNTH_ARITH_Rephrased": the same problem reworded (same numbers, same response);
//    original_question is the first phrasing, so group_by: original_question keeps both together.
// Every response is a chain of "a op b = c" steps (op in + - * /, integers, exact division) whose
// operands come from the question or earlier steps, ending with "The answer is: N".
// Generation uses SplitMix64 only, so a seed gives the same file everywhere, and the first k
// records for a seed do not depend on how many are requested.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace coe {

struct SynthRecord {
  std::string query, response, type, original_question;
  int64_t answer = 0;
};

std::vector<SynthRecord> generate_synth_records(int64_t count, uint64_t seed);

// The records as a JSON array of objects (keys in MetaMathQA's order).
nlohmann::ordered_json synth_records_json(const std::vector<SynthRecord>& records);

// Writes a MetaMathQA-format JSON array (one record per line) via a temporary file and rename.
void write_synth_file(const std::string& path, int64_t count, uint64_t seed);

}  // namespace coe
