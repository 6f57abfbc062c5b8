// Scoring a model's generated answer, as the original benchmarks score it, so that a
// number here means what it means in their papers:
//   RULER          string_match_all / string_match_part (scripts/eval/synthetic/constants.py)
//   Landmark       passkey: the first integer of the output equals the key
//   InfiniteBench  src/compute_scores.py: first_int_match (passkey, number_string), the
//                  kv_retrieval word match (a UUID counts only whole), choice, dialogue,
//                  math_find, math_calc, code_run, code_debug
//   LongBench      metrics.py: qa_f1 (SQuAD normalisation), ROUGE-L (the `rouge` package's
//                  summary-level LCS F), classification, retrieval, count, code_sim
//
// Text is UTF-8. Lower-casing and the \w / \d classes of the originals are applied to ASCII
// only; other bytes are kept as they are (LongBench's English tasks are ASCII in practice).
// code_sim uses the Levenshtein ratio (fuzzywuzzy with python-Levenshtein; without it
// fuzzywuzzy falls back to difflib, whose ratio differs slightly on long strings).
#pragma once

#include <string>
#include <vector>

namespace sinkrouter::eval {

enum class Metric {
  RulerMatchAll,    // share of the references found (case-insensitive substring)
  RulerMatchPart,   // 1 if any reference is found
  LandmarkPasskey,  // first integer of the output, as a number, equals the key
  FirstIntMatch,    // InfiniteBench passkey / number_string: first digit run equals the label
  KvRetrieval,      // InfiniteBench: the label is one of the output's words
  QaF1,             // LongBench / InfiniteBench token F1 after normalisation (max over answers)
  RougeL,           // LongBench rouge_score (max over answers)
  Classification,   // LongBench classification_score (needs all_classes)
  Retrieval,        // LongBench retrieval_score ("Paragraph N")
  Count,            // LongBench count_score
  CodeSim,          // LongBench code_sim_score
  IbChoice,         // InfiniteBench longbook_choice_eng; answers = {text, letter}
  IbDialogue,       // InfiniteBench longdialogue_qa_eng
  IbMathFind,       // InfiniteBench math_find; answers[0] an int or a float as text
  IbMathCalc,       // InfiniteBench math_calc; answers = the intermediate values
  IbCodeRun,        // InfiniteBench code_run; answers[0] an int as text
  IbCodeDebug,      // InfiniteBench code_debug; answers = {function name, letter}
};

const char* metric_name(Metric m);
Metric parse_metric(const std::string& name);  // throws Error for an unknown name

// Score in [0, 1] of one prediction against its references. all_classes: only for
// Classification. Throws Error when the references cannot be scored by that metric (e.g.
// no answers, a retrieval answer without "Paragraph N").
double score_prediction(Metric m, const std::string& prediction, const std::vector<std::string>& answers,
                        const std::vector<std::string>& all_classes = {});

// ---- The pieces, exposed for tests and for the loaders.

// SQuAD/LongBench normalize_answer: lower case, drop ASCII punctuation, drop the words
// a/an/the, collapse whitespace.
std::string normalize_answer(const std::string& s);
double qa_f1_score(const std::string& prediction, const std::string& ground_truth);
// The `rouge` package's "rouge-l" F (summary level, sentences split at '.', words as sets).
// 0 when either side has no sentence (the package raises and LongBench returns 0).
double rouge_l_score(const std::string& prediction, const std::string& ground_truth);
double classification_score(const std::string& prediction, const std::string& ground_truth,
                            const std::vector<std::string>& all_classes);
double retrieval_score(const std::string& prediction, const std::string& ground_truth);
double count_score(const std::string& prediction, const std::string& ground_truth);
double code_sim_score(const std::string& prediction, const std::string& ground_truth);
// Levenshtein ratio (lensum - indel distance) / lensum over Unicode code points, in [0, 1];
// fuzz_ratio is fuzzywuzzy's integer percentage: 100 for equal strings, 0 if one is empty,
// else the ratio * 100 rounded half to even.
double levenshtein_ratio(const std::string& a, const std::string& b);
int fuzz_ratio(const std::string& a, const std::string& b);

// RULER's postprocess_pred: strip, control characters to '\n', strip.
std::string ruler_postprocess(const std::string& prediction);
double string_match_all(const std::string& prediction, const std::vector<std::string>& refs);
double string_match_part(const std::string& prediction, const std::vector<std::string>& refs);

// InfiniteBench first_int_match: the first maximal run of ASCII digits, or "".
std::string first_int_match(const std::string& prediction);
bool kv_retrieval_match(const std::string& prediction, const std::string& label);

}  // namespace sinkrouter::eval
