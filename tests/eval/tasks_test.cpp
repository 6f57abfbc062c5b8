// Task generators: deterministic for a seed, the needle at the requested depth (checked by
// character offset and by haystack units), the prompt fitted to the token budget within a
// stated tolerance, every needle present exactly once, the originals' prompt formats.
// The data directory is made here from random words, so the tests need no download; one
// test also runs on the real data/ when `make data` has fetched it.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "sinkrouter/core/error.h"
#include "sinkrouter/eval/tasks.h"

namespace sinkrouter::eval {
namespace {

namespace fs = std::filesystem;

// A BPE-like count: a run of letters is one token, every digit, other visible character
// and newline is one token. Appending text never lowers it.
int64_t toy_count(const std::string& s) {
  int64_t n = 0;
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (std::isalpha(c)) {
      while (i < s.size() && std::isalpha(static_cast<unsigned char>(s[i]))) ++i;
      ++n;
    } else {
      if (c != ' ' && c != '\t') ++n;
      ++i;
    }
  }
  return n;
}

std::string random_word(std::mt19937& rng, int min_len, int max_len) {
  std::string w;
  const int len = min_len + int(rng() % unsigned(max_len - min_len + 1));
  for (int i = 0; i < len; ++i) w += char('a' + rng() % 26);
  return w;
}

class TasksTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = (fs::temp_directory_path() / ("sinkrouter_eval_data_" + std::to_string(::getpid()))).string();
    fs::create_directories(dir_ + "/essays");
    fs::create_directories(dir_ + "/words");
    std::mt19937 rng(20240607);
    std::ofstream essays(dir_ + "/essays/paul_graham_essays.txt");
    for (int s = 0; s < 3000; ++s) {  // sentences of 4..22 words
      const int words = 4 + int(rng() % 19);
      for (int w = 0; w < words; ++w) essays << (w ? " " : "") << random_word(rng, 2, 9);
      essays << (s % 7 == 6 ? ".\n\n" : ". ");
    }
    for (auto [name, count] : {std::pair{"nouns", 211}, {"adjectives", 53}, {"verbs", 67}}) {
      std::ofstream f(dir_ + "/words/" + name + ".txt");
      for (int i = 0; i < count; ++i) f << random_word(rng, 3, 10) << "\n";
    }
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static TaskOptions options(int64_t context, int samples = 3, uint64_t seed = 7) {
    TaskOptions o;
    o.context_tokens = context;
    o.num_samples = samples;
    o.seed = seed;
    o.data_dir = dir_;
    return o;
  }
  static inline std::string dir_;
};

TEST_F(TasksTest, DeterministicForASeedAndIndependentOfTheSampleCount) {
  for (const std::string& task : synthetic_task_names()) {
    SCOPED_TRACE(task);
    const TaskOptions o = options(3000);
    const TaskSample a = generate_sample(task, o, toy_count, 1);
    const TaskSample b = generate_sample(task, o, toy_count, 1);
    EXPECT_EQ(to_json(a).dump(), to_json(b).dump());
    EXPECT_NE(generate_sample(task, options(3000, 3, 8), toy_count, 1).prompt, a.prompt);
    EXPECT_NE(generate_sample(task, o, toy_count, 2).prompt, a.prompt);
    // With an explicit depth, sample 2 is the same whether 3 or 6 samples are asked for.
    TaskOptions p = options(3000, 3), q = options(3000, 6);
    p.depth = q.depth = 0.3;
    EXPECT_EQ(generate_sample(task, p, toy_count, 2).prompt, generate_sample(task, q, toy_count, 2).prompt);
    // JSON round trip.
    EXPECT_EQ(to_json(task_sample_from_json(to_json(a))).dump(), to_json(a).dump());
  }
}

// Tolerance: the fit stops one haystack unit short of the budget at most. Under the toy
// counter the largest unit is a distractor needle or JSON record with two UUIDs (about 90
// tokens: every digit counts); a noise line is 23, an essay word 1.
constexpr int64_t kFitTolerance = 128;

TEST_F(TasksTest, FitsTheTokenBudget) {
  for (const std::string& task : synthetic_task_names()) {
    for (int64_t context : {1500, 4000, 9001}) {
      SCOPED_TRACE(task + " at " + std::to_string(context));
      TaskOptions o = options(context, 1);
      o.reserved_tokens = 37;  // e.g. a chat template
      const TaskSample s = generate_sample(task, o, toy_count, 0);
      EXPECT_EQ(s.prompt_tokens, toy_count(s.prompt + s.answer_prefix));
      EXPECT_LE(s.prompt_tokens, context - 37);
      EXPECT_GT(s.prompt_tokens, context - 37 - kFitTolerance);
      EXPECT_EQ(s.target_tokens, context);
      EXPECT_GT(s.context_end, s.context_begin);
      EXPECT_LE(s.context_end, int64_t(s.prompt.size()));
    }
  }
}

TEST_F(TasksTest, EveryNeedlePresentExactlyOnceAndEveryAnswerInTheContext) {
  for (const std::string& task : synthetic_task_names()) {
    SCOPED_TRACE(task);
    const auto samples = generate_task(task, options(5000, 3, 11), toy_count);
    for (const TaskSample& s : samples) {
      ASSERT_FALSE(s.answers.empty());
      const std::string context = s.prompt.substr(size_t(s.context_begin), size_t(s.context_end - s.context_begin));
      for (const std::string& a : s.answers) EXPECT_NE(context.find(a), std::string::npos) << a;
      for (const Needle& n : s.needles) {
        EXPECT_EQ(s.prompt.substr(size_t(n.char_offset), n.text.size()), n.text);
        EXPECT_GE(n.char_offset, s.context_begin);
        EXPECT_LE(n.char_offset + int64_t(n.text.size()), s.context_end);
        size_t count = 0;
        for (size_t p = s.prompt.find(n.text); p != std::string::npos; p = s.prompt.find(n.text, p + 1)) ++count;
        EXPECT_EQ(count, 1u) << n.text;
        EXPECT_EQ(n.token_offset, toy_count(s.prompt.substr(0, size_t(n.char_offset))));
      }
    }
  }
}

TEST_F(TasksTest, NeedleAtTheRequestedDepth) {
  // Units are equal-sized lines or characters, or sentences of 4-22 words: the character
  // position follows the unit position within 2 % (noise, records, characters) or 6 %
  // (sentences of uneven length).
  const std::map<std::string, double> char_tolerance = {
      {"passkey", 0.02},        {"number_string", 0.02},  {"kv_retrieval", 0.02},    {"niah_single_1", 0.02},
      {"niah_single_2", 0.06},  {"niah_single_3", 0.06},  {"niah_multikey_1", 0.06}, {"niah_multikey_2", 0.03},
      {"niah_multikey_3", 0.03}, {"niah_multivalue", 0.06}, {"niah_multiquery", 0.06}};
  for (const auto& [task, tol] : char_tolerance) {
    for (double depth : {0.0, 0.1, 0.37, 0.5, 0.9, 1.0}) {
      SCOPED_TRACE(task + " at depth " + std::to_string(depth));
      TaskOptions o = options(6000, 1, 5);
      o.depth = depth;
      const TaskSample s = generate_sample(task, o, toy_count, 0);
      const Needle* main = nullptr;
      for (const Needle& n : s.needles)
        if (n.queried && std::fabs(n.depth - depth) < 0.02) main = &n;
      ASSERT_NE(main, nullptr) << "no queried needle at the requested depth";
      const int64_t units = s.metadata.at("haystack_units").get<int64_t>();
      EXPECT_GT(units, 20);
      const double chars = double(main->char_offset - s.context_begin) / double(s.context_end - s.context_begin);
      EXPECT_NEAR(chars, depth, tol);
      EXPECT_EQ(s.metadata.at("requested_depth").get<double>(), depth);
    }
  }
}

TEST_F(TasksTest, DefaultDepthsSpreadOverTheWholeContext) {
  EXPECT_EQ(scheduled_depth(std::nullopt, 0, 5), 0.0);
  EXPECT_EQ(scheduled_depth(std::nullopt, 2, 5), 0.5);
  EXPECT_EQ(scheduled_depth(std::nullopt, 4, 5), 1.0);
  EXPECT_EQ(scheduled_depth(std::nullopt, 0, 1), 0.5);
  EXPECT_EQ(scheduled_depth(0.25, 3, 5), 0.25);
  const auto samples = generate_task("niah_single_1", options(3000, 5), toy_count);
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(samples[size_t(i)].needles.at(0).depth, i / 4.0, 0.02);
}

TEST_F(TasksTest, OriginalPromptFormats) {
  TaskOptions o = options(2000, 1);
  {
    const TaskSample s = generate_sample("passkey", o, toy_count, 0);
    EXPECT_EQ(s.prompt.rfind("There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
                             "them. I will quiz you about the important information there.\nThe grass is green.", 0),
              0u);
    const std::string full = s.prompt + s.answer_prefix;
    const std::string end = "\nWhat is the pass key? The pass key is";
    EXPECT_EQ(full.substr(full.size() - end.size()), end);
    const int key = std::stoi(s.answers[0]);
    EXPECT_TRUE(key >= 1 && key <= 50000);
    EXPECT_EQ(s.needles[0].text, "The pass key is " + s.answers[0] + ". Remember it. " + s.answers[0] + " is the pass key.");
    EXPECT_EQ(s.metric, Metric::LandmarkPasskey);
  }
  {
    const TaskSample s = generate_sample("niah_single_1", o, toy_count, 0);
    const std::string key = s.metadata.at("query");
    EXPECT_EQ(s.prompt.rfind("A special magic number is hidden within the following text. Make sure to memorize it. "
                             "I will quiz you about the number afterwards.\n", 0), 0u);
    EXPECT_NE(s.prompt.find("\nWhat is the special magic number for " + key + " mentioned in the provided text?"),
              std::string::npos);
    EXPECT_EQ(s.answer_prefix, " The special magic number for " + key + " mentioned in the provided text is");
    EXPECT_EQ(s.needles[0].text, "One of the special magic numbers for " + key + " is: " + s.answers[0] + ".");
    EXPECT_EQ(s.answers[0].size(), 7u);
    EXPECT_NE(key.find('-'), std::string::npos);  // adjective-noun
    EXPECT_EQ(s.max_new_tokens, 128);
  }
  {
    const TaskSample s = generate_sample("niah_multiquery", o, toy_count, 0);
    EXPECT_EQ(s.prompt.rfind("Some special magic numbers are hidden within the following text.", 0), 0u);
    EXPECT_EQ(s.answers.size(), 4u);
    EXPECT_EQ(s.needles.size(), 4u);
    EXPECT_NE(s.metadata.at("query").get<std::string>().find(", and "), std::string::npos);
    EXPECT_NE(s.answer_prefix.find("mentioned in the provided text are"), std::string::npos);
  }
  {
    const TaskSample s = generate_sample("niah_multikey_1", o, toy_count, 0);
    EXPECT_EQ(s.needles.size(), 4u);
    int queried = 0;
    for (const auto& n : s.needles) queried += n.queried;
    EXPECT_EQ(queried, 1);
    EXPECT_EQ(s.answers.size(), 1u);
  }
  {
    const TaskSample s = generate_sample("niah_multivalue", o, toy_count, 0);
    EXPECT_EQ(s.answers.size(), 4u);
    for (const auto& n : s.needles) EXPECT_TRUE(n.queried);
  }
  {
    const TaskSample s = generate_sample("niah_multikey_3", o, toy_count, 0);
    EXPECT_EQ(s.answers[0].size(), 36u);  // a UUID
    EXPECT_EQ(s.answers[0][14], '4');     // version 4
    EXPECT_GT(s.metadata.at("haystack_units").get<int64_t>(), 10);  // distractor needles
  }
  {
    const TaskSample s = generate_sample("number_string", o, toy_count, 0);
    EXPECT_EQ(s.answers[0].size(), 10u);
    EXPECT_EQ(s.answer_prefix, "\n\nThe sequence of digits is");
    EXPECT_NE(s.prompt.find("\n\nWhat is the sequence of digits?"), std::string::npos);
  }
  {
    const TaskSample s = generate_sample("kv_retrieval", o, toy_count, 0);
    EXPECT_EQ(s.prompt.rfind("Extract the value corresponding to the specified key in the JSON object below.\n\n"
                             "JSON data:\n{\"", 0), 0u);
    EXPECT_EQ(s.answer_prefix, "\nThe value associated with the specified key is: ");
    EXPECT_EQ(s.metric, Metric::KvRetrieval);
  }
}

TEST_F(TasksTest, VariableTrackingChainInOrder) {
  const TaskSample s = generate_sample("vt", options(4000, 1), toy_count, 0);
  ASSERT_EQ(s.needles.size(), 5u);
  ASSERT_EQ(s.answers.size(), 5u);
  const std::string value = s.metadata.at("value");
  EXPECT_EQ(s.needles[0].text, "VAR " + s.answers[0] + " = " + value);
  for (size_t j = 1; j < 5; ++j) {
    EXPECT_EQ(s.needles[j].text, "VAR " + s.answers[j] + " = VAR " + s.answers[j - 1] + " ");
    EXPECT_GT(s.needles[j].char_offset, s.needles[j - 1].char_offset);
  }
  // The one-shot example comes first and ends with its own answer.
  EXPECT_EQ(s.prompt.rfind("Memorize and track the chain(s) of variable assignment", 0), 0u);
  EXPECT_NE(s.answer_prefix.find("5 variables are assigned the value " + value + ", they are:"), std::string::npos);
  EXPECT_GT(s.context_begin, 300);
}

TEST_F(TasksTest, CommonWordsHaveTheirFrequencies) {
  for (int64_t context : {2000, 6000}) {
    const TaskSample s = generate_sample("cwe", options(context, 1), toy_count, 0);
    const int want_cw = context < 4096 ? 6 : 30, want_ucw = context < 4096 ? 1 : 3;
    EXPECT_EQ(s.metadata.at("freq_cw").get<int>(), want_cw);
    const std::string list = s.prompt.substr(size_t(s.context_begin), size_t(s.context_end - s.context_begin));
    std::map<std::string, int> freq;
    std::istringstream in(list);
    std::string number, word;
    int expected_index = 1;
    while (in >> number >> word) {
      EXPECT_EQ(number, std::to_string(expected_index++) + ".");
      ++freq[word];
    }
    ASSERT_EQ(s.answers.size(), 10u);
    for (const auto& w : s.answers) EXPECT_EQ(freq[w], want_cw) << w;
    int uncommon = 0;
    for (const auto& [w, f] : freq)
      if (std::find(s.answers.begin(), s.answers.end(), w) == s.answers.end()) {
        EXPECT_EQ(f, want_ucw) << w;
        ++uncommon;
      }
    EXPECT_EQ(uncommon, s.metadata.at("haystack_units").get<int>() - 10);
  }
}

TEST_F(TasksTest, ClearErrors) {
  auto expect_error = [](const std::function<void()>& f, const std::string& part) {
    try {
      f();
      FAIL() << "expected an Error containing '" << part << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_error([&] { generate_sample("niah_single_9", options(2000), toy_count, 0); }, "unknown task 'niah_single_9'");
  expect_error([&] { generate_sample("niah_single_1", options(40), toy_count, 0); }, "too short");
  TaskOptions deep = options(2000);
  deep.depth = 1.5;
  expect_error([&] { generate_sample("passkey", deep, toy_count, 0); }, "depth 1.5");
  TaskOptions missing = options(2000);
  missing.data_dir = dir_ + "/nowhere";
  expect_error([&] { generate_sample("niah_single_2", missing, toy_count, 0); }, "make data");
  expect_error([&] { generate_sample("passkey", options(2000, 3), toy_count, 3); }, "index 3 out of range");
  TaskOptions full = options(2000);
  full.reserved_tokens = 2000;
  expect_error([&] { generate_sample("passkey", full, toy_count, 0); }, "no room");
}

TEST(TasksRealData, EssayHaystackFromFetchedData) {
  const std::string dir = std::string(SINKROUTER_SOURCE_DIR) + "/data";
  if (!fs::exists(dir + "/essays/paul_graham_essays.txt")) GTEST_SKIP() << "run `make data` to fetch " << dir;
  TaskOptions o;
  o.context_tokens = 3000;
  o.data_dir = dir;
  const TaskSample s = generate_sample("niah_single_2", o, toy_count, 0);
  EXPECT_LE(s.prompt_tokens, 3000);
  EXPECT_GT(s.prompt_tokens, 3000 - kFitTolerance);
  // RULER's essay haystack starts with the first essay in file-name order ("addiction").
  EXPECT_NE(s.prompt.find("technological progress"), std::string::npos);
}

}  // namespace
}  // namespace sinkrouter::eval
