// LongBench and InfiniteBench loaders on small hand-made files in their formats
// (tests/data/eval/): the exact prompt strings, answers, metrics and flags, scoring of
// sample outputs, and clear errors for bad files.
#include <gtest/gtest.h>

#include "sinkrouter/core/error.h"
#include "sinkrouter/eval/datasets.h"

namespace sinkrouter::eval {
namespace {

const std::string kData = std::string(SINKROUTER_TEST_DATA) + "/eval/";

void expect_error(const std::function<void()>& f, const std::string& part) {
  try {
    f();
    FAIL() << "expected an Error containing '" << part << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(LongBench, HotpotQaPromptAnswersAndScores) {
  const auto samples = load_longbench(kData + "longbench/hotpotqa.jsonl");
  ASSERT_EQ(samples.size(), 2u);
  const TaskSample& s = samples[0];
  EXPECT_EQ(s.id, "hp-001");
  EXPECT_EQ(s.task, "longbench/hotpotqa");
  EXPECT_EQ(s.prompt,
            "Answer the question based on the given passages. Only give me the answer and do not output any other "
            "words.\n\nThe following are given passages.\nPassage 1:\nThe Eiffel Tower is a wrought-iron lattice "
            "tower in Paris.\nPassage 2:\nLyon is a city in France.\n\nAnswer the question based on the given "
            "passages. Only give me the answer and do not output any other words.\n\nQuestion: Which city hosts the "
            "tower designed by Gustave Eiffel's company?\nAnswer:");
  EXPECT_EQ(s.answer_prefix, "");
  EXPECT_EQ(s.prompt.substr(size_t(s.context_begin), 10), "Passage 1:");
  EXPECT_TRUE(s.chat);
  EXPECT_EQ(s.max_new_tokens, 32);
  EXPECT_EQ(s.metric, Metric::QaF1);
  EXPECT_EQ(s.metadata.at("length"), 24);
  EXPECT_DOUBLE_EQ(score_sample(s, " Paris."), 1.0);
  // Several answers: the best one counts. "melville" against {herman, melville}: 2/3.
  EXPECT_NEAR(score_sample(samples[1], "Melville"), 1.0, 1e-12);
  EXPECT_NEAR(score_sample(samples[1], "It was Melville"), 2.0 * (1.0 / 3.0) / (1.0 / 3.0 + 1.0), 1e-12);
}

TEST(LongBench, FewShotAndCodeTasksSkipTheChatTemplateAndScoreTheFirstLine) {
  const TaskSample trec = load_longbench(kData + "longbench/trec.jsonl").at(0);
  EXPECT_FALSE(trec.chat);
  EXPECT_EQ(trec.prompt,
            "Please determine the type of the question below. Here are some examples of questions.\n\nQuestion: Who "
            "invented the telephone ?\nType: Individual\nQuestion: How far is the Moon ?\nType: Distance\nQuestion: "
            "What is the capital of Peru ?\nType:");
  EXPECT_EQ(trec.all_classes.size(), 4u);
  EXPECT_DOUBLE_EQ(score_sample(trec, " City\nQuestion: Who is it ?\nType: Individual"), 1.0);  // first line only
  EXPECT_DOUBLE_EQ(score_sample(trec, "\n\nCity or Country"), 0.5);
  const TaskSample lcc = load_longbench(kData + "longbench/lcc.jsonl").at(0);
  EXPECT_FALSE(lcc.chat);
  EXPECT_EQ(lcc.prompt, "Please complete the code given below. \ndef add(a, b):\n    Next line of code:\n");
  EXPECT_EQ(lcc.metric, Metric::CodeSim);
  EXPECT_DOUBLE_EQ(score_sample(lcc, "return a + b\n"), 1.0);
  // "return a - b" vs "return a + b": 11 of 12 + 12 characters in common: 22/24 -> 92.
  EXPECT_DOUBLE_EQ(score_sample(lcc, "return a - b"), 0.92);
}

TEST(LongBench, RetrievalCountAndSummary) {
  const TaskSample pr = load_longbench(kData + "longbench/passage_retrieval_en.jsonl").at(0);
  EXPECT_EQ(pr.metric, Metric::Retrieval);
  EXPECT_NE(pr.prompt.find("\n\nThe following is an abstract.\n\nA tower of iron in Paris.\n\nPlease enter the number"),
            std::string::npos);
  EXPECT_DOUBLE_EQ(score_sample(pr, "Paragraph 2"), 1.0);
  EXPECT_DOUBLE_EQ(score_sample(pr, "Paragraph 1 or 2"), 0.5);
  const TaskSample pc = load_longbench(kData + "longbench/passage_count.jsonl").at(0);
  EXPECT_EQ(pc.answers, std::vector<std::string>{"2"});  // a number in the file
  EXPECT_DOUBLE_EQ(score_sample(pc, "2"), 1.0);
  // The LongBench-E file name suffix is dropped; the "dataset" field decides anyway.
  const TaskSample gr = load_longbench(kData + "longbench/gov_report_e.jsonl").at(0);
  EXPECT_EQ(gr.task, "longbench/gov_report");
  EXPECT_EQ(gr.max_new_tokens, 512);
  EXPECT_EQ(gr.metric, Metric::RougeL);
  // hyp words {The, agency, found, waste, in, program}, ref the same plus "the": 6 of 7 and 6 of 6.
  const double r = 6.0 / 7.0, p = 1.0;
  EXPECT_NEAR(score_sample(gr, "The agency found waste in program"), 2 * r * p / (r + p + 1e-8), 1e-12);
}

TEST(LongBench, ClearErrors) {
  expect_error([] { load_longbench(kData + "longbench/vcsum.jsonl"); }, "'vcsum' is Chinese");
  expect_error([] { load_longbench(kData + "longbench/hotpotqa.jsonl", "nosuchset"); },
               "unknown LongBench data set 'nosuchset'");
  expect_error([] { load_longbench(kData + "longbench/missing.jsonl"); }, "cannot open");
}

TEST(InfiniteBench, RetrievalPrompts) {
  const TaskSample pk = load_infinitebench(kData + "infinitebench/passkey.jsonl").at(0);
  EXPECT_EQ(pk.id, "0");
  EXPECT_EQ(pk.prompt + pk.answer_prefix,
            "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz "
            "you about the important information.\n\nThe grass is green. The sky is blue.\nThe pass key is 31415. "
            "Remember it. 31415 is the pass key.\nThe grass is green.\n\nWhat is the pass key?\n\nThe pass key is");
  EXPECT_EQ(pk.max_new_tokens, 6);
  EXPECT_DOUBLE_EQ(score_sample(pk, " 31415."), 1.0);
  EXPECT_DOUBLE_EQ(score_sample(pk, " 3141"), 0.0);
  const TaskSample kv = load_infinitebench(kData + "infinitebench/kv_retrieval.jsonl").at(0);
  EXPECT_EQ(kv.answer_prefix, "");
  const std::string cue = "\nKey: \"5b8c2f5e-0d0c-4b3e-9a5e-2f7f2c1f9e11\"\nThe value associated with the specified key is: ";
  EXPECT_EQ(kv.prompt.substr(kv.prompt.size() - cue.size()), cue);
  EXPECT_EQ(kv.prompt.rfind("Extract the value corresponding to the specified key in the JSON object below.\n\nJSON data:\n{", 0), 0u);
  EXPECT_DOUBLE_EQ(score_sample(kv, "\"9f4a3c2e-1b7d-4e8a-9c61-0d2f5b7e8a13\""), 1.0);
  EXPECT_DOUBLE_EQ(score_sample(kv, "9f4a3c2e-1b7d-4e8a-9c61"), 0.0);  // partial UUID
}

TEST(InfiniteBench, ChoiceMathAndCodePrompts) {
  const TaskSample ch = load_infinitebench(kData + "infinitebench/longbook_choice_eng.jsonl").at(0);
  EXPECT_EQ(ch.prompt, "Read the book and answer the question.\n\nCall me Ishmael.\n\nQuestion: What does the narrator "
                       "ask to be called?\nA. Ahab\nB. Ishmael\nC. Queequeg\nD. Starbuck");
  EXPECT_EQ(ch.answers, (std::vector<std::string>{"Ishmael", "B"}));
  EXPECT_DOUBLE_EQ(score_sample(ch, " B"), 1.0);
  EXPECT_DOUBLE_EQ(score_sample(ch, " A"), 0.0);
  const TaskSample mf = load_infinitebench(kData + "infinitebench/math_find.jsonl").at(0);
  // InfiniteBench's prefix: "The largest number of" lower-cased without its last 3 characters.
  EXPECT_EQ(mf.prompt, "What is the largest number in the following list?\n\n[3, 99, 12, 7]\n\nYou should answer "
                       "with only one number, no other words. The largest number of the list is: ");
  EXPECT_EQ(mf.answers, std::vector<std::string>{"99"});
  EXPECT_DOUBLE_EQ(score_sample(mf, "99"), 1.0);
  const TaskSample cr = load_infinitebench(kData + "infinitebench/code_run.jsonl").at(0);
  EXPECT_EQ(cr.prompt.rfind("There is a function called func_1 in the following Python code.\n\n", 0), 0u);
  EXPECT_EQ(cr.answer_prefix, " The value of func_1(-4) is");
  EXPECT_DOUBLE_EQ(score_sample(cr, " -6"), 1.0);
  const TaskSample cd = load_infinitebench(kData + "infinitebench/code_debug.jsonl").at(0);
  EXPECT_EQ(cd.answers, (std::vector<std::string>{"bad", "B"}));
  EXPECT_DOUBLE_EQ(score_sample(cd, "B. bad"), 1.0);
}

TEST(InfiniteBench, ClearErrors) {
  expect_error([] { load_infinitebench(kData + "infinitebench/longbook_sum_eng.jsonl"); }, "rougeLsum");
  expect_error([] { load_infinitebench(kData + "infinitebench/broken.jsonl", "passkey"); }, "broken.jsonl:2: invalid JSON");
  expect_error([] { load_infinitebench(kData + "infinitebench/broken.jsonl"); }, "unknown InfiniteBench task 'broken'");
  expect_error([] { load_infinitebench(kData + "infinitebench/passkey.jsonl", "longbook_choice_eng"); },
               "expected 4 \"options\", got 0");
}

TEST(Datasets, MiddleTruncation) {
  // One token per character; keeps the first and last max/2.
  auto encode = [](const std::string& s) {
    std::vector<int32_t> ids;
    for (char c : s) ids.push_back(int32_t(static_cast<unsigned char>(c)));
    return ids;
  };
  auto decode = [](const std::vector<int32_t>& ids) {
    std::string s;
    for (int32_t i : ids) s += char(i);
    return s;
  };
  EXPECT_EQ(truncate_middle("abcdefghij", 4, encode, decode), "abij");
  EXPECT_EQ(truncate_middle("abcdefghij", 5, encode, decode), "abij");
  EXPECT_EQ(truncate_middle("abc", 4, encode, decode), "abc");
  expect_error([&] { truncate_middle("abc", 1, encode, decode); }, "cannot keep both ends");
}

}  // namespace
}  // namespace sinkrouter::eval
