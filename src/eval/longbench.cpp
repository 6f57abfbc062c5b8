// LongBench's English data sets: prompts from config/dataset2prompt.json, generation
// lengths from config/dataset2maxlen.json, metrics from eval.py's dataset2metric.
#include <algorithm>

#include "eval/jsonl_util.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/eval/datasets.h"

namespace sinkrouter::eval {
namespace {

struct LongBenchSpec {
  const char* name;
  const char* prompt;
  int max_new_tokens;
  Metric metric;
};

const std::vector<LongBenchSpec>& specs() {
  static const std::vector<LongBenchSpec> s = {
      {"narrativeqa",
       "You are given a story, which can be either a novel or a movie script, and a question. Answer the question "
       "asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nStory: "
       "{context}\n\nNow, answer the question based on the story asconcisely as you can, using a single phrase if "
       "possible. Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:",
       128, Metric::QaF1},
      {"qasper",
       "You are given a scientific article and a question. Answer the question as concisely as you can, using a "
       "single phrase or sentence if possible. If the question cannot be answered based on the information in the "
       "article, write \"unanswerable\". If the question is a yes/no question, answer \"yes\", \"no\", or "
       "\"unanswerable\". Do not provide any explanation.\n\nArticle: {context}\n\n Answer the question based on "
       "the above article as concisely as you can, using a single phrase or sentence if possible. If the question "
       "cannot be answered based on the information in the article, write \"unanswerable\". If the question is a "
       "yes/no question, answer \"yes\", \"no\", or \"unanswerable\". Do not provide any explanation.\n\nQuestion: "
       "{input}\n\nAnswer:",
       128, Metric::QaF1},
      {"multifieldqa_en",
       "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question based on "
       "the above text, only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
       64, Metric::QaF1},
      {"hotpotqa",
       "Answer the question based on the given passages. Only give me the answer and do not output any other "
       "words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. "
       "Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
       32, Metric::QaF1},
      {"2wikimqa",
       "Answer the question based on the given passages. Only give me the answer and do not output any other "
       "words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. "
       "Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
       32, Metric::QaF1},
      {"musique",
       "Answer the question based on the given passages. Only give me the answer and do not output any other "
       "words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. "
       "Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
       32, Metric::QaF1},
      {"gov_report",
       "You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n"
       "{context}\n\nNow, write a one-page summary of the report.\n\nSummary:",
       512, Metric::RougeL},
      {"qmsum",
       "You are given a meeting transcript and a query containing a question or instruction. Answer the query in "
       "one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the above meeting "
       "transcript in one or more sentences.\n\nQuery: {input}\nAnswer:",
       512, Metric::RougeL},
      {"multi_news",
       "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}\n\nNow, "
       "write a one-page summary of all the news.\n\nSummary:",
       512, Metric::RougeL},
      {"trec",
       "Please determine the type of the question below. Here are some examples of questions.\n\n{context}\n{input}",
       64, Metric::Classification},
      {"triviaqa",
       "Answer the question based on the given passage. Only give me the answer and do not output any other words. "
       "The following are some examples.\n\n{context}\n\n{input}",
       32, Metric::QaF1},
      {"samsum", "Summarize the dialogue into a few short sentences. The following are some examples.\n\n{context}\n\n{input}",
       128, Metric::RougeL},
      {"passage_count",
       "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please carefully "
       "read these paragraphs and determine how many unique paragraphs there are after removing duplicates. In "
       "other words, how many non-repeating paragraphs are there in total?\n\n{context}\n\nPlease enter the final "
       "count of unique paragraphs after removing duplicates. The output format should only contain the number, "
       "such as 1, 2, 3, and so on.\n\nThe final answer is: ",
       32, Metric::Count},
      {"passage_retrieval_en",
       "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the "
       "abstract is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the number of "
       "the paragraph that the abstract is from. The answer format must be like \"Paragraph 1\", \"Paragraph 2\", "
       "etc.\n\nThe answer is: ",
       32, Metric::Retrieval},
      {"lcc", "Please complete the code given below. \n{context}Next line of code:\n", 64, Metric::CodeSim},
      {"repobench-p", "Please complete the code given below. \n{context}{input}Next line of code:\n", 64,
       Metric::CodeSim},
  };
  return s;
}

const char* const kChinese[] = {"multifieldqa_zh", "dureader", "vcsum", "lsht", "passage_retrieval_zh"};

const LongBenchSpec& find_spec(const std::string& name, const std::string& where) {
  for (const auto& s : specs())
    if (name == s.name) return s;
  for (const char* zh : kChinese)
    SR_CHECK(name != zh, "{}: LongBench data set '{}' is Chinese; only the English ones are supported "
                         "(their metrics need a Chinese word segmenter)", where, name);
  std::string known;
  for (const auto& s : specs()) known += known.empty() ? s.name : std::string(", ") + s.name;
  fail("{}: unknown LongBench data set '{}' (expected one of: {})", where, name, known);
}

bool in(const std::string& name, std::initializer_list<const char*> names) {
  return std::any_of(names.begin(), names.end(), [&](const char* n) { return name == n; });
}

}  // namespace

const std::vector<std::string>& longbench_datasets() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& s : specs()) n.push_back(s.name);
    return n;
  }();
  return names;
}

std::vector<TaskSample> load_longbench(const std::string& path, const std::string& dataset) {
  std::vector<TaskSample> out;
  std::string from_file = detail::file_stem(path, ".jsonl");
  if (from_file.size() > 2 && from_file.compare(from_file.size() - 2, 2, "_e") == 0) from_file.resize(from_file.size() - 2);
  for (const detail::JsonLine& l : detail::read_jsonl(path)) {
    const std::string where = fmt::format("{}:{}", path, l.line);
    std::string name = dataset;
    if (name.empty()) name = l.value.contains("dataset") ? detail::string_field(l, "dataset", path) : from_file;
    const LongBenchSpec& spec = find_spec(name, where);
    TaskSample s;
    s.task = "longbench/" + name;
    s.id = l.value.contains("_id") ? detail::string_field(l, "_id", path) : fmt::format("{}-{}", name, l.line);
    const std::string context = detail::string_field(l, "context", path);
    const std::string input = l.value.contains("input") ? detail::string_field(l, "input", path) : "";
    s.prompt = detail::format_fields(spec.prompt, {{"context", context}, {"input", input}}, where);
    const size_t ctx = s.prompt.find(context);
    s.context_begin = ctx == std::string::npos ? 0 : int64_t(ctx);
    s.context_end = s.context_begin + int64_t(context.size());
    SR_CHECK(l.value.contains("answers"), "{}: missing field \"answers\"", where);
    s.answers = detail::string_list(l.value.at("answers"));
    SR_CHECK(!s.answers.empty(), "{}: \"answers\" is empty (expected a list of strings)", where);
    if (l.value.contains("all_classes") && !l.value.at("all_classes").is_null())
      s.all_classes = detail::string_list(l.value.at("all_classes"));
    SR_CHECK(spec.metric != Metric::Classification || !s.all_classes.empty(),
             "{}: a classification data set needs \"all_classes\"", where);
    s.metric = spec.metric;
    s.max_new_tokens = spec.max_new_tokens;
    s.chat = !in(name, {"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"});
    s.metadata["dataset"] = name;
    s.metadata["benchmark"] = "longbench";
    if (in(name, {"trec", "triviaqa", "samsum", "lsht"})) s.metadata["first_line_only"] = true;
    if (l.value.contains("length") && l.value.at("length").is_number()) s.metadata["length"] = l.value.at("length");
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace sinkrouter::eval
