// Scorers against hand-computed cases (the arithmetic is in the comments), including the
// tricky ones: several numbers in the output, partial UUIDs, empty output, punctuation
// and articles, and the quirks of the original code that we keep on purpose.
#include <gtest/gtest.h>

#include <random>

#include "sinkrouter/core/error.h"
#include "sinkrouter/eval/metrics.h"

namespace sinkrouter::eval {
namespace {

TEST(QaF1, NormalisationDropsCasePunctuationArticles) {
  EXPECT_EQ(normalize_answer("The  Eiffel-Tower, in PARIS!"), "eiffeltower in paris");
  EXPECT_EQ(normalize_answer("an apple a day"), "apple day");
  EXPECT_EQ(normalize_answer("the theatre"), "theatre");  // "the" inside a word stays
  EXPECT_EQ(normalize_answer("U.S.A."), "usa");
  EXPECT_EQ(normalize_answer(""), "");
}

TEST(QaF1, HandComputed) {
  EXPECT_DOUBLE_EQ(qa_f1_score("The Eiffel Tower!", "eiffel tower"), 1.0);
  // pred "it is in paris france" (5 tokens), truth "paris": p = 1/5, r = 1, F1 = 1/3.
  EXPECT_NEAR(qa_f1_score("It is in Paris, France.", "Paris"), 1.0 / 3.0, 1e-12);
  // Repeats count once per occurrence in the truth: p = 1/3, r = 1, F1 = 0.5.
  EXPECT_NEAR(qa_f1_score("yes yes yes", "yes"), 0.5, 1e-12);
  // pred {john, smith, jr}, truth {john, smith}: p = 2/3, r = 1, F1 = 0.8.
  EXPECT_NEAR(qa_f1_score("John Smith, Jr.", "the John Smith"), 0.8, 1e-12);
  EXPECT_DOUBLE_EQ(qa_f1_score("", "Paris"), 0.0);
  EXPECT_DOUBLE_EQ(qa_f1_score("a the an", "Paris"), 0.0);  // only articles: nothing left
  // Max over several ground truths.
  EXPECT_DOUBLE_EQ(score_prediction(Metric::QaF1, "Lyon", {"Paris", "Lyon"}), 1.0);
}

TEST(RougeL, HandComputed) {
  // One sentence each; word sets of 5; LCS "the cat on the mat" has words {the,cat,on,mat}:
  // R = P = 4/5, F = 2 * 0.64 / (1.6 + 1e-8).
  EXPECT_NEAR(rouge_l_score("the cat sat on the mat", "the cat is on the mat"), 2 * 0.64 / (1.6 + 1e-8), 1e-12);
  // Sentences split at '.': reference sentences "a c" and "b d" each find their words in
  // the two hypothesis sentences: the union covers all 4 words: F = 2 / (2 + 1e-8).
  EXPECT_NEAR(rouge_l_score("a b. c d", "a c. b d"), 2.0 / (2.0 + 1e-8), 1e-12);
  // Disjoint: 0.
  EXPECT_NEAR(rouge_l_score("x y z", "a b c"), 0.0, 1e-15);
  // Empty or only dots: the package raises, LongBench scores 0.
  EXPECT_EQ(rouge_l_score("", "a b c"), 0.0);
  EXPECT_EQ(rouge_l_score("...", "a b c"), 0.0);
  EXPECT_EQ(rouge_l_score("a b c", ""), 0.0);
  // Case matters (no normalisation in LongBench's ROUGE): "The" != "the".
  // hyp {The, cat}, ref {the, cat}: LCS {cat}: R = P = 1/2.
  EXPECT_NEAR(rouge_l_score("The cat", "the cat"), 2 * 0.25 / (1.0 + 1e-8), 1e-12);
}

TEST(Classification, HandComputedAndLongBenchQuirk) {
  const std::vector<std::string> classes{"Manner", "Man", "Date", "Other"};
  // "Man" matches too but is a proper substring of the truth, so it is dropped: 1 match.
  EXPECT_DOUBLE_EQ(classification_score("Manner of action", "Manner", classes), 1.0);
  EXPECT_DOUBLE_EQ(classification_score("Date or Other", "Date", classes), 0.5);
  EXPECT_DOUBLE_EQ(classification_score("no idea", "Date", classes), 0.0);
  // LongBench removes from the list it iterates over, which skips the next element:
  // matches [a, ab, abc]; "a" removed, "ab" skipped, so [ab, abc] remain: 1/2.
  EXPECT_DOUBLE_EQ(classification_score("abc", "abc", {"a", "ab", "abc"}), 0.5);
  try {
    classification_score("x", "y", {});
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("all_classes"), std::string::npos) << e.what();
  }
}

TEST(RetrievalCount, SeveralNumbersInTheOutput) {
  EXPECT_DOUBLE_EQ(retrieval_score("Paragraph 12", "Paragraph 12"), 1.0);
  EXPECT_DOUBLE_EQ(retrieval_score("Paragraph 3 or Paragraph 12", "Paragraph 12"), 0.5);
  EXPECT_DOUBLE_EQ(retrieval_score("Paragraph 112", "Paragraph 12"), 0.0);  // whole numbers only
  EXPECT_DOUBLE_EQ(retrieval_score("I do not know", "Paragraph 12"), 0.0);
  EXPECT_DOUBLE_EQ(retrieval_score("", "Paragraph 12"), 0.0);
  try {
    retrieval_score("1", "the first one");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Paragraph N"), std::string::npos) << e.what();
  }
  // numbers 7, 7, 20: two of three are right.
  EXPECT_NEAR(count_score("There are 7 unique paragraphs, 7 in total out of 20", "7"), 2.0 / 3.0, 1e-12);
  EXPECT_DOUBLE_EQ(count_score("seven", "7"), 0.0);
}

// Weighted edit distance (substitution 2) by the textbook recurrence: an independent check
// of the LCS-based ratio.
int indel_distance(const std::u32string& a, const std::u32string& b) {
  std::vector<std::vector<int>> d(a.size() + 1, std::vector<int>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = int(i);
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = int(j);
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j)
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 2)});
  return d[a.size()][b.size()];
}

TEST(CodeSim, LevenshteinRatio) {
  // LCS("kitten", "sitting") = "ittn": 8 / 13 = 0.615..., fuzz 62 (python-Levenshtein agrees).
  EXPECT_NEAR(levenshtein_ratio("kitten", "sitting"), 8.0 / 13.0, 1e-12);
  EXPECT_EQ(fuzz_ratio("kitten", "sitting"), 62);
  // Python's round is half to even: 12.5 -> 12, 37.5 -> 38.
  EXPECT_EQ(fuzz_ratio("abcdefgh", "aijklmno"), 12);
  EXPECT_EQ(fuzz_ratio("abcdefgh", "abcxxxxx"), 38);
  // Code points, not bytes: "café" vs "cafe" share 3 of 4 + 4.
  EXPECT_EQ(fuzz_ratio("caf\xc3\xa9", "cafe"), 75);
  EXPECT_EQ(fuzz_ratio("", ""), 100);
  EXPECT_EQ(fuzz_ratio("a", ""), 0);
  // The first line without ``` / # / // is the prediction.
  EXPECT_DOUBLE_EQ(code_sim_score("```python\nx = foo(a, b)\n```", "x = foo(a, b)"), 1.0);
  EXPECT_DOUBLE_EQ(code_sim_score("\n\n# comment\nreturn x", "return x"), 1.0);
  EXPECT_DOUBLE_EQ(code_sim_score("", "return x"), 0.0);
  EXPECT_DOUBLE_EQ(code_sim_score("# only a comment", "return x"), 0.0);

  std::mt19937 rng(1234);
  for (int trial = 0; trial < 200; ++trial) {
    std::u32string a, b;
    std::string sa, sb;
    const int la = int(rng() % 23), lb = int(rng() % 19);
    for (int i = 0; i < la; ++i) a += char32_t('a' + rng() % 4);
    for (int i = 0; i < lb; ++i) b += char32_t('a' + rng() % 4);
    for (char32_t c : a) sa += char(c);
    for (char32_t c : b) sb += char(c);
    const size_t total = a.size() + b.size();
    const double want = total == 0 ? 1.0 : double(total - size_t(indel_distance(a, b))) / double(total);
    EXPECT_NEAR(levenshtein_ratio(sa, sb), want, 1e-12) << sa << " / " << sb;
    EXPECT_NEAR(levenshtein_ratio(sb, sa), want, 1e-12);
  }
}

TEST(Ruler, StringMatch) {
  const std::vector<std::string> refs{"1234567", "7654321", "1111111"};
  EXPECT_NEAR(string_match_all("The special magic numbers are 1234567 and 7654321.", refs), 2.0 / 3.0, 1e-12);
  EXPECT_DOUBLE_EQ(string_match_part("The special magic numbers are 1234567 and 7654321.", refs), 1.0);
  EXPECT_DOUBLE_EQ(string_match_all("", refs), 0.0);
  EXPECT_DOUBLE_EQ(string_match_part("nothing", refs), 0.0);
  EXPECT_DOUBLE_EQ(string_match_all("QUICK-FOX", {"quick-fox"}), 1.0);  // case-insensitive
  EXPECT_EQ(ruler_postprocess("  12\x01" "34\t \n"), "12\n34");
  // The dispatch post-processes first: a control byte splits what would be one number.
  EXPECT_DOUBLE_EQ(score_prediction(Metric::RulerMatchAll, "123\x02" "4567", {"1234567"}), 0.0);
}

TEST(InfiniteBench, DigitMatches) {
  EXPECT_EQ(first_int_match("The pass key is 71432. Remember it."), "71432");
  EXPECT_EQ(first_int_match(""), "");
  // Several numbers: only the first counts.
  EXPECT_DOUBLE_EQ(score_prediction(Metric::FirstIntMatch, "Numbers 12 and 71432", {"71432"}), 0.0);
  EXPECT_DOUBLE_EQ(score_prediction(Metric::FirstIntMatch, "71432 and 12", {"71432"}), 1.0);
  EXPECT_DOUBLE_EQ(score_prediction(Metric::FirstIntMatch, "", {"71432"}), 0.0);
  // A longer digit run containing the key is wrong.
  EXPECT_DOUBLE_EQ(score_prediction(Metric::FirstIntMatch, "714321", {"71432"}), 0.0);
  // InfiniteBench compares strings (leading zeros matter), Landmark compares numbers.
  EXPECT_DOUBLE_EQ(score_prediction(Metric::FirstIntMatch, "07123", {"7123"}), 0.0);
  EXPECT_DOUBLE_EQ(score_prediction(Metric::LandmarkPasskey, "is 07123.", {"7123"}), 1.0);
  EXPECT_DOUBLE_EQ(score_prediction(Metric::LandmarkPasskey, "is 7124.", {"7123"}), 0.0);
  EXPECT_DOUBLE_EQ(score_prediction(Metric::LandmarkPasskey, "no digits", {"7123"}), 0.0);
}

TEST(InfiniteBench, UuidMatchIsWholeWord) {
  const std::string uuid = "9f4a3c2e-1b7d-4e8a-9c61-0d2f5b7e8a13";
  EXPECT_TRUE(kv_retrieval_match("The value is \"" + uuid + "\".", uuid));
  EXPECT_TRUE(kv_retrieval_match("{" + uuid + "}", uuid));
  EXPECT_FALSE(kv_retrieval_match("9f4a3c2e-1b7d-4e8a", uuid));           // partial UUID
  EXPECT_FALSE(kv_retrieval_match(uuid.substr(0, uuid.size() - 1), uuid));  // one character short
  EXPECT_FALSE(kv_retrieval_match(uuid + "x", uuid));                      // glued to more text
  EXPECT_FALSE(kv_retrieval_match("9F4A3C2E-1B7D-4E8A-9C61-0D2F5B7E8A13", uuid));  // case-sensitive
  EXPECT_FALSE(kv_retrieval_match("", uuid));
}

TEST(InfiniteBench, OtherScorers) {
  const std::vector<std::string> choice{"the answer text", "B"};
  EXPECT_EQ(score_prediction(Metric::IbChoice, "B. because", choice), 1.0);
  EXPECT_EQ(score_prediction(Metric::IbChoice, "The answer is: C", choice), 0.0);
  EXPECT_EQ(score_prediction(Metric::IbChoice, "I think the answer is B", choice), 1.0);
  EXPECT_EQ(score_prediction(Metric::IbChoice, "", choice), 0.0);
  EXPECT_EQ(score_prediction(Metric::IbDialogue, "John.", {"JOHN"}), 1.0);
  EXPECT_EQ(score_prediction(Metric::IbDialogue, "Johnny", {"JOHN"}), 0.0);
  EXPECT_EQ(score_prediction(Metric::IbMathFind, "The largest is 42.", {"42"}), 1.0);
  EXPECT_EQ(score_prediction(Metric::IbMathFind, "4.2", {"42"}), 0.0);
  EXPECT_EQ(score_prediction(Metric::IbMathFind, "median 3.5", {"3.5"}), 1.0);
  // [1, 4, 9] against [1, 4, 8]: the first two are right, then it stops: 2/3.
  EXPECT_NEAR(score_prediction(Metric::IbMathCalc, "[1, 4, 9]", {"1", "4", "8"}), 2.0 / 3.0, 1e-12);
  EXPECT_EQ(score_prediction(Metric::IbCodeRun, "The return value is: -3", {"-3"}), 1.0);
  EXPECT_EQ(score_prediction(Metric::IbCodeRun, "12.", {"12"}), 1.0);
  EXPECT_EQ(score_prediction(Metric::IbCodeRun, "value: twelve", {"12"}), 0.0);
  EXPECT_EQ(score_prediction(Metric::IbCodeDebug, "C. func_a", {"func_a", "C"}), 1.0);
  EXPECT_EQ(score_prediction(Metric::IbCodeDebug, "The correct option is: func_a", {"func_a", "C"}), 1.0);
  EXPECT_EQ(score_prediction(Metric::IbCodeDebug, "A", {"func_a", "C"}), 0.0);
}

TEST(Metric, NamesRoundTripAndErrors) {
  for (Metric m : {Metric::RulerMatchAll, Metric::QaF1, Metric::CodeSim, Metric::IbCodeDebug, Metric::KvRetrieval})
    EXPECT_EQ(parse_metric(metric_name(m)), m);
  try {
    parse_metric("bleu");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown metric 'bleu'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(score_prediction(Metric::QaF1, "x", {}), Error);
  EXPECT_THROW(score_prediction(Metric::IbCodeDebug, "x", {"only one"}), Error);
}

}  // namespace
}  // namespace sinkrouter::eval
