// RULER, Landmark and InfiniteBench scorers, and the one dispatch every task goes through.
#include <algorithm>
#include <cstdlib>
#include <functional>

#include "eval/text_util.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/eval/metrics.h"

namespace sinkrouter::eval {
namespace {

constexpr struct {
  Metric metric;
  const char* name;
} kMetricNames[] = {
    {Metric::RulerMatchAll, "ruler_match_all"}, {Metric::RulerMatchPart, "ruler_match_part"},
    {Metric::LandmarkPasskey, "landmark_passkey"}, {Metric::FirstIntMatch, "first_int_match"},
    {Metric::KvRetrieval, "kv_retrieval"},     {Metric::QaF1, "qa_f1"},
    {Metric::RougeL, "rouge_l"},               {Metric::Classification, "classification"},
    {Metric::Retrieval, "retrieval"},          {Metric::Count, "count"},
    {Metric::CodeSim, "code_sim"},             {Metric::IbChoice, "ib_choice"},
    {Metric::IbDialogue, "ib_dialogue"},       {Metric::IbMathFind, "ib_math_find"},
    {Metric::IbMathCalc, "ib_math_calc"},      {Metric::IbCodeRun, "ib_code_run"},
    {Metric::IbCodeDebug, "ib_code_debug"},
};

// Replaces each of `chars` by a space (InfiniteBench's split before a word match).
std::string blank_out(std::string s, std::string_view chars) {
  for (char& c : s)
    if (chars.find(c) != std::string_view::npos) c = ' ';
  return s;
}

// First match of \d+\.\d+|\d+ (InfiniteBench math_find).
std::string first_number(const std::string& s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (!text::is_digit(static_cast<unsigned char>(s[i]))) continue;
    size_t e = i;
    while (e < s.size() && text::is_digit(static_cast<unsigned char>(s[e]))) ++e;
    if (e + 1 < s.size() && s[e] == '.' && text::is_digit(static_cast<unsigned char>(s[e + 1]))) {
      size_t f = e + 1;
      while (f < s.size() && text::is_digit(static_cast<unsigned char>(s[f]))) ++f;
      return s.substr(i, f - i);
    }
    return s.substr(i, e - i);
  }
  return "";
}

bool ib_choice(std::string pred, const std::vector<std::string>& label) {
  auto in_label = [&](const std::string& s) { return std::find(label.begin(), label.end(), s) != label.end(); };
  pred = text::strip(pred);
  if (pred.empty()) return false;
  if (std::string_view("ABCD").find(pred[0]) != std::string_view::npos) return in_label(pred.substr(0, 1));
  if (in_label(pred)) return true;
  pred = blank_out(pred, "\n\"'.,?!{}");
  while (text::contains(pred, "  ")) pred = text::replace_all(pred, "  ", " ");
  for (const char* prefix : {"answer is:", "answer:", "answer is", "option is"}) {
    const size_t idx = pred.find(prefix);
    if (idx == std::string::npos) continue;
    const size_t start = idx + std::char_traits<char>::length(prefix) + 1;
    if (pred.size() < start) return false;
    const std::string after = pred.substr(start);
    for (const auto& s : label)
      if (after.compare(0, s.size(), s) == 0) return true;
    return false;
  }
  // Python's `word in "ABCD"` is a substring test: "AB" or "" would count; words are never
  // empty, and a word like "BC" matches as it does there.
  for (const auto& w : text::split_ws(pred))
    if (text::contains("ABCD", w)) return in_label(w);
  return false;
}

bool ib_code_debug(std::string pred, const std::string& fn_name, const std::string& letter) {
  pred = text::strip(pred);
  if (pred.compare(0, 2, letter + ".") == 0 || pred.compare(0, 2, letter + ":") == 0) return true;
  for (const char* c : {"\n", "`", "'", "\"", "-", "*", "Option", "option"}) pred = text::replace_all(pred, c, " ");
  while (text::contains(pred, "  ")) pred = text::replace_all(pred, "  ", " ");
  for (const char* prefix : {"answer is:", "is:", "answer:", "correct option is:"}) {
    const size_t idx = pred.find(prefix);
    if (idx == std::string::npos) continue;
    const size_t start = idx + std::char_traits<char>::length(prefix) + 1;
    if (pred.size() < start) return false;
    const std::string after = pred.substr(start);
    return after.compare(0, letter.size(), letter) == 0 || after.compare(0, fn_name.size(), fn_name) == 0;
  }
  return false;
}

const std::string& first_answer(Metric m, const std::vector<std::string>& answers) {
  SR_CHECK(!answers.empty(), "{}: no reference answer to score against", metric_name(m));
  return answers[0];
}

double max_over(const std::vector<std::string>& answers, Metric m,
                const std::function<double(const std::string&)>& f) {
  SR_CHECK(!answers.empty(), "{}: no reference answer to score against", metric_name(m));
  double best = 0;
  for (const auto& a : answers) best = std::max(best, f(a));
  return best;
}

}  // namespace

const char* metric_name(Metric m) {
  for (const auto& e : kMetricNames)
    if (e.metric == m) return e.name;
  return "unknown";
}

Metric parse_metric(const std::string& name) {
  std::string known;
  for (const auto& e : kMetricNames) {
    if (name == e.name) return e.metric;
    known += known.empty() ? e.name : std::string(", ") + e.name;
  }
  fail("unknown metric '{}' (expected one of: {})", name, known);
}

std::string ruler_postprocess(const std::string& prediction) {
  std::string s = text::strip(prediction);
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20) c = '\n';
  return text::strip(s);
}

double string_match_all(const std::string& prediction, const std::vector<std::string>& refs) {
  SR_CHECK(!refs.empty(), "string_match_all: no reference to look for");
  const std::string p = text::lower(prediction);
  int found = 0;
  for (const auto& r : refs) found += text::contains(p, text::lower(r));
  return double(found) / double(refs.size());
}

double string_match_part(const std::string& prediction, const std::vector<std::string>& refs) {
  SR_CHECK(!refs.empty(), "string_match_part: no reference to look for");
  const std::string p = text::lower(prediction);
  for (const auto& r : refs)
    if (text::contains(p, text::lower(r))) return 1.0;
  return 0.0;
}

std::string first_int_match(const std::string& prediction) {
  const auto runs = text::digit_runs(prediction);
  return runs.empty() ? std::string() : runs[0];
}

bool kv_retrieval_match(const std::string& prediction, const std::string& label) {
  const auto words = text::split_ws(blank_out(prediction, "\n:\"'.,?!{}"));
  return std::find(words.begin(), words.end(), label) != words.end();
}

double score_prediction(Metric m, const std::string& prediction, const std::vector<std::string>& answers,
                        const std::vector<std::string>& all_classes) {
  switch (m) {
    case Metric::RulerMatchAll:
      return string_match_all(ruler_postprocess(prediction), answers);
    case Metric::RulerMatchPart:
      return string_match_part(ruler_postprocess(prediction), answers);
    case Metric::LandmarkPasskey: {
      // Landmark: int(re.search(r'\d+', response)) == pass_key, as numbers.
      const std::string want = first_answer(m, answers), got = first_int_match(prediction);
      if (got.empty()) return 0.0;
      const auto strip_zeros = [](const std::string& s) {
        const size_t nz = s.find_first_not_of('0');
        return nz == std::string::npos ? std::string("0") : s.substr(nz);
      };
      return strip_zeros(got) == strip_zeros(want) ? 1.0 : 0.0;
    }
    case Metric::FirstIntMatch:
      return first_int_match(prediction) == first_answer(m, answers) ? 1.0 : 0.0;
    case Metric::KvRetrieval:
      return kv_retrieval_match(prediction, first_answer(m, answers)) ? 1.0 : 0.0;
    case Metric::QaF1:
      return max_over(answers, m, [&](const std::string& a) { return qa_f1_score(prediction, a); });
    case Metric::RougeL:
      return max_over(answers, m, [&](const std::string& a) { return rouge_l_score(prediction, a); });
    case Metric::Classification:
      return max_over(answers, m,
                      [&](const std::string& a) { return classification_score(prediction, a, all_classes); });
    case Metric::Retrieval:
      return max_over(answers, m, [&](const std::string& a) { return retrieval_score(prediction, a); });
    case Metric::Count:
      return max_over(answers, m, [&](const std::string& a) { return count_score(prediction, a); });
    case Metric::CodeSim:
      return max_over(answers, m, [&](const std::string& a) { return code_sim_score(prediction, a); });
    case Metric::IbChoice:
      first_answer(m, answers);
      return ib_choice(prediction, answers) ? 1.0 : 0.0;
    case Metric::IbDialogue: {
      const std::string label = first_answer(m, answers);
      for (const auto& w : text::split_ws(blank_out(text::strip(prediction), "\n:\"'.,?!{}")))
        if (text::upper(w) == label) return 1.0;
      return 0.0;
    }
    case Metric::IbMathFind: {
      const std::string label = first_answer(m, answers), got = first_number(prediction);
      if (got.empty()) return 0.0;
      const bool label_is_float = text::contains(label, ".");
      if (!label_is_float && text::contains(got, ".")) return 0.0;  // int("3.5") raises there
      return std::strtod(got.c_str(), nullptr) == std::strtod(label.c_str(), nullptr) ? 1.0 : 0.0;
    }
    case Metric::IbMathCalc: {
      SR_CHECK(!answers.empty(), "ib_math_calc: no reference values");
      const auto nums = text::digit_runs(prediction);
      size_t right = 0;
      for (size_t i = 0; i < answers.size() && i < nums.size(); ++i) {
        if (std::strtoll(nums[i].c_str(), nullptr, 10) != std::strtoll(answers[i].c_str(), nullptr, 10)) break;
        ++right;
      }
      return double(right) / double(answers.size());
    }
    case Metric::IbCodeRun: {
      const std::string label = first_answer(m, answers);
      const auto words = text::split_ws(blank_out(text::strip(prediction), "\n.`'\":"));
      if (words.empty()) return 0.0;
      const std::string& last = words.back();
      char* end = nullptr;
      const long long v = std::strtoll(last.c_str(), &end, 10);
      if (end == last.c_str() || *end != '\0') return 0.0;  // int() of a non-number raises there
      return v == std::strtoll(label.c_str(), nullptr, 10) ? 1.0 : 0.0;
    }
    case Metric::IbCodeDebug:
      SR_CHECK(answers.size() == 2, "ib_code_debug: expected answers {{function name, letter}}, got {}",
               answers.size());
      return ib_code_debug(prediction, answers[0], answers[1]) ? 1.0 : 0.0;
  }
  fail("score_prediction: unhandled metric {}", int(m));
}

}  // namespace sinkrouter::eval
