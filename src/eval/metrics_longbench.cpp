// LongBench's metrics (LongBench/metrics.py), reimplemented: qa_f1, ROUGE-L, classification,
// retrieval, count, code_sim. InfiniteBench's qa_f1 is the same function.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <unordered_map>

#include "eval/text_util.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/eval/metrics.h"

namespace sinkrouter::eval {
namespace {

// Python's string.punctuation.
bool is_punct(unsigned char c) {
  return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
}

// \w of Python's re on str: ASCII letters, digits, '_' and (approximately) any non-ASCII
// byte, which belongs to a letter in the texts these metrics see.
bool is_word_byte(unsigned char c) { return text::is_ascii_alnum(c) || c == '_' || c >= 0x80; }

double token_f1(const std::vector<std::string>& pred, const std::vector<std::string>& truth) {
  std::map<std::string, int> count;
  for (const auto& t : truth) ++count[t];
  int same = 0;
  for (const auto& t : pred) {
    auto it = count.find(t);
    if (it != count.end() && it->second > 0) {
      --it->second;
      ++same;
    }
  }
  if (same == 0) return 0.0;
  const double precision = double(same) / double(pred.size());
  const double recall = double(same) / double(truth.size());
  return 2 * precision * recall / (precision + recall);
}

// The `rouge` package splits a text into sentences at '.', keeps the non-empty pieces and
// collapses their whitespace; words are then split at single spaces.
std::vector<std::vector<std::string>> rouge_sentences(const std::string& s) {
  std::vector<std::vector<std::string>> out;
  for (const std::string& piece : text::split_on(s, ".")) {
    if (piece.empty()) continue;
    out.push_back(text::split_on(text::join(text::split_ws(piece), " "), " "));
  }
  return out;
}

// The words of x on the LCS of x and y that the `rouge` package reconstructs (its
// tie-break: go up only when strictly better).
std::set<std::string> lcs_words(const std::vector<std::string>& x, const std::vector<std::string>& y) {
  const size_t n = x.size(), m = y.size();
  std::vector<int32_t> t((n + 1) * (m + 1), 0);
  auto at = [&](size_t i, size_t j) -> int32_t& { return t[i * (m + 1) + j]; };
  for (size_t i = 1; i <= n; ++i)
    for (size_t j = 1; j <= m; ++j)
      at(i, j) = x[i - 1] == y[j - 1] ? at(i - 1, j - 1) + 1 : std::max(at(i - 1, j), at(i, j - 1));
  std::set<std::string> words;
  size_t i = n, j = m;
  while (i > 0 && j > 0) {
    if (x[i - 1] == y[j - 1]) {
      words.insert(x[i - 1]);
      --i, --j;
    } else if (at(i - 1, j) > at(i, j - 1)) {
      --i;
    } else {
      --j;
    }
  }
  return words;
}

}  // namespace

std::string normalize_answer(const std::string& s) {
  std::string no_punct;
  for (char c : text::lower(s))
    if (!is_punct(static_cast<unsigned char>(c))) no_punct += c;
  // \b(a|an|the)\b -> " ": a whole word run equal to an article is replaced.
  std::string no_articles;
  size_t i = 0;
  while (i < no_punct.size()) {
    if (!is_word_byte(static_cast<unsigned char>(no_punct[i]))) {
      no_articles += no_punct[i++];
      continue;
    }
    const size_t b = i;
    while (i < no_punct.size() && is_word_byte(static_cast<unsigned char>(no_punct[i]))) ++i;
    const std::string word = no_punct.substr(b, i - b);
    no_articles += (word == "a" || word == "an" || word == "the") ? std::string(" ") : word;
  }
  return text::join(text::split_ws(no_articles), " ");
}

double qa_f1_score(const std::string& prediction, const std::string& ground_truth) {
  return token_f1(text::split_ws(normalize_answer(prediction)), text::split_ws(normalize_answer(ground_truth)));
}

double rouge_l_score(const std::string& prediction, const std::string& ground_truth) {
  const auto hyp = rouge_sentences(prediction);
  const auto ref = rouge_sentences(ground_truth);
  if (hyp.empty() || ref.empty()) return 0.0;  // the package raises; LongBench returns 0
  std::set<std::string> ref_words, hyp_words;
  for (const auto& s : ref) ref_words.insert(s.begin(), s.end());
  for (const auto& s : hyp) hyp_words.insert(s.begin(), s.end());
  // Union LCS per reference sentence, accumulated over one running union (as the package
  // does): a word counts once however many sentences share it.
  std::set<std::string> running;
  size_t llcs = 0;
  for (const auto& r : ref) {
    const size_t before = running.size();
    for (const auto& h : hyp) {
      const auto w = lcs_words(r, h);
      running.insert(w.begin(), w.end());
    }
    llcs += running.size() - before;
  }
  const double recall = double(llcs) / double(ref_words.size());
  const double precision = double(llcs) / double(hyp_words.size());
  return 2.0 * (precision * recall) / (precision + recall + 1e-8);
}

double classification_score(const std::string& prediction, const std::string& ground_truth,
                            const std::vector<std::string>& all_classes) {
  SR_CHECK(!all_classes.empty(), "classification score: all_classes is empty (the data set's "
                                 "\"all_classes\" field lists the labels)");
  std::vector<std::string> matches;
  for (const auto& c : all_classes)
    if (text::contains(prediction, c)) matches.push_back(c);
  // LongBench drops a match that is a proper substring of the ground truth while iterating
  // over the same list, which skips the element after each removal: kept as it is.
  for (size_t i = 0; i < matches.size(); ++i) {
    const std::string term = matches[i];
    if (text::contains(ground_truth, term) && term != ground_truth)
      matches.erase(std::find(matches.begin(), matches.end(), term));
  }
  if (std::find(matches.begin(), matches.end(), ground_truth) == matches.end()) return 0.0;
  return 1.0 / double(matches.size());
}

static double share_equal(const std::string& prediction, const std::string& target) {
  const auto numbers = text::digit_runs(prediction);
  if (numbers.empty()) return 0.0;
  const auto right = std::count(numbers.begin(), numbers.end(), target);
  return double(right) / double(numbers.size());
}

double retrieval_score(const std::string& prediction, const std::string& ground_truth) {
  const std::string key = "Paragraph ";
  size_t pos = 0;
  std::string id;
  while ((pos = ground_truth.find(key, pos)) != std::string::npos) {
    pos += key.size();
    size_t e = pos;
    while (e < ground_truth.size() && text::is_digit(static_cast<unsigned char>(ground_truth[e]))) ++e;
    if (e > pos) {
      id = ground_truth.substr(pos, e - pos);
      break;
    }
  }
  SR_CHECK(!id.empty(), "retrieval score: the answer '{}' has no 'Paragraph N' (expected e.g. 'Paragraph 7')",
           ground_truth);
  return share_equal(prediction, id);
}

double count_score(const std::string& prediction, const std::string& ground_truth) {
  return share_equal(prediction, ground_truth);
}

double levenshtein_ratio(const std::string& a, const std::string& b) {
  const auto x = text::code_points(a), y = text::code_points(b);
  const size_t total = x.size() + y.size();
  if (total == 0) return 1.0;
  // With substitutions weighted 2 (python-Levenshtein's ratio), the distance is the indel
  // distance |x| + |y| - 2 LCS, so the ratio is 2 LCS / (|x| + |y|).
  std::vector<int32_t> prev(y.size() + 1, 0), cur(y.size() + 1, 0);
  for (size_t i = 1; i <= x.size(); ++i) {
    for (size_t j = 1; j <= y.size(); ++j)
      cur[j] = x[i - 1] == y[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  return 2.0 * double(prev[y.size()]) / double(total);
}

int fuzz_ratio(const std::string& a, const std::string& b) {
  if (a == b) return 100;
  if (a.empty() || b.empty()) return 0;
  return int(std::nearbyint(100.0 * levenshtein_ratio(a, b)));  // Python round: half to even
}

double code_sim_score(const std::string& prediction, const std::string& ground_truth) {
  std::string line;
  for (const auto& l : text::split_on(text::lstrip_chars(prediction, "\n"), "\n")) {
    if (!text::contains(l, "`") && !text::contains(l, "#") && !text::contains(l, "//")) {
      line = l;
      break;
    }
  }
  return fuzz_ratio(line, ground_truth) / 100.0;
}

}  // namespace sinkrouter::eval
