// InfiniteBench: the prompt templates it uses for open models (src/prompt.py,
// yarn_mistral_templates, also used for Yi and ChatGLM3), create_prompt() and
// get_answer() of src/eval_utils.py, generation lengths of DATA_NAME_TO_MAX_NEW_TOKENS.
// Each template's closing cue (e.g. "\n\nThe pass key is") becomes the answer prefix, so
// that prompt + answer_prefix is the original string.
#include <regex>

#include "eval/jsonl_util.h"
#include "eval/text_util.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/eval/datasets.h"

namespace sinkrouter::eval {
namespace {

struct IbSpec {
  const char* name;
  const char* prompt;
  const char* answer_prefix;
  int max_new_tokens;
  Metric metric;
};

const std::vector<IbSpec>& specs() {
  static const std::vector<IbSpec> s = {
      {"passkey",
       "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you "
       "about the important information.\n\n{context}\n\n{input}",
       "\n\nThe pass key is", 6, Metric::FirstIntMatch},
      {"number_string",
       "There is an important info hidden inside a lot of irrelevant text. Find it. I will quiz you about the "
       "important information there.\n\n{context}\n\n{input}",
       "\n\nThe sequence of digits is", 12, Metric::FirstIntMatch},
      {"kv_retrieval", "Extract the value corresponding to the specified key in the JSON object below.\n\n{context}\n\n{input}",
       "", 50, Metric::KvRetrieval},
      {"longbook_choice_eng",
       "Read the book and answer the question.\n\n{context}\n\nQuestion: {question}\nA. {OPTION_A}\nB. {OPTION_B}\nC. "
       "{OPTION_C}\nD. {OPTION_D}",
       "\n\nThe letter of the correct answer is", 40, Metric::IbChoice},
      {"longbook_qa_eng",
       "Read the book and answer the question. Be very concise in your answer.\n\n{context}\n\nQuestion: {question}",
       "\nAnswer:", 40, Metric::QaF1},
      {"longdialogue_qa_eng",
       "Below is a dialogue script where one random occurrence of a character name is replaced with \"$$MASK$$\", "
       "and you should try to guess who that character is.\n\n{context}",
       "\n\nThe name that has been replaced with $$MASK$$ is likely", 40, Metric::IbDialogue},
      {"math_find", "{prefix}\n\n{context}\n\n{input}", "", 3, Metric::IbMathFind},
      {"math_calc",
       "Let us calculate the intermediate values of an expression.\n\nExpression: 1 + 3 + 4\nValues: [1, 4, 8]\n\n"
       "Expression: 8 - 3 + 2 - 4\nValues: [8, 5, 7, 3]\n\nExpression: {context}",
       "\nValues:", 30000, Metric::IbMathCalc},
      {"code_run",
       "There is a function called {func} in the following Python code.\n\n{context}\n\nPlease compute the exact "
       "value of {func_call}.",
       " The value of {func_call} is", 5, Metric::IbCodeRun},
      {"code_debug",
       "Following is a Python code where exactly one of the functions/methods has a deliberate error that makes it "
       "crash.\n\n{context}\n\nOptions:\nA. {OPTION_A}\nB. {OPTION_B}\nC. {OPTION_C}\nD. {OPTION_D}",
       "\n\nThe correct option is:", 5, Metric::IbCodeDebug},
  };
  return s;
}

const IbSpec& find_spec(const std::string& name, const std::string& where) {
  for (const auto& s : specs())
    if (name == s.name) return s;
  SR_CHECK(name != "longbook_sum_eng", "{}: InfiniteBench longbook_sum_eng is not supported (its metric is "
                                       "HF evaluate's rougeLsum, not implemented here)", where);
  SR_CHECK(name != "longbook_qa_chn", "{}: InfiniteBench longbook_qa_chn is not supported (Chinese)", where);
  std::string known;
  for (const auto& s : specs()) known += known.empty() ? s.name : std::string(", ") + s.name;
  fail("{}: unknown InfiniteBench task '{}' (expected one of: {})", where, name, known);
}

// get_answer(): choice tasks are scored against {answer text, its letter}.
std::vector<std::string> choice_answer(const nlohmann::json& eg, const std::vector<std::string>& options,
                                       const std::string& where) {
  const std::vector<std::string> answer = detail::string_list(eg.at("answer"));
  auto letter_of = [&](const std::string& a) {
    for (size_t i = 0; i < options.size(); ++i)
      if (options[i] == a) return std::string(1, char('A' + i));
    fail("{}: the answer '{}' is not one of the options", where, a);
  };
  if (answer.size() == 1) return {answer[0], letter_of(answer[0])};
  SR_CHECK(answer.size() == 2 && answer[1].size() == 1 && text::contains("ABCD", answer[1]),
           "{}: expected \"answer\" to be an option or [option, letter]", where);
  return answer;
}

}  // namespace

const std::vector<std::string>& infinitebench_tasks() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& s : specs()) n.push_back(s.name);
    return n;
  }();
  return names;
}

std::vector<TaskSample> load_infinitebench(const std::string& path, const std::string& task) {
  const std::string name = task.empty() ? detail::file_stem(path, ".jsonl") : task;
  const IbSpec& spec = find_spec(name, path);
  std::vector<TaskSample> out;
  for (const detail::JsonLine& l : detail::read_jsonl(path)) {
    const std::string where = fmt::format("{}:{}", path, l.line);
    const nlohmann::json& eg = l.value;
    SR_CHECK(eg.contains("answer"), "{}: missing field \"answer\"", where);
    TaskSample s;
    s.task = "infinitebench/" + name;
    s.id = eg.contains("id") ? detail::string_field(l, "id", path) : fmt::format("{}-{}", name, l.line);
    const std::string context = detail::string_field(l, eg.contains("content") ? "content" : "context", path);
    const std::string input = eg.contains("input") ? detail::string_field(l, "input", path) : "";
    std::map<std::string, std::string> fields{{"context", context}, {"input", input}, {"question", input}};
    std::string prefix = spec.answer_prefix;
    const bool choice = spec.metric == Metric::IbChoice || spec.metric == Metric::IbCodeDebug;
    if (choice) {  // other tasks carry "options": [] in the released files
      const auto options = eg.contains("options") ? detail::string_list(eg.at("options")) : std::vector<std::string>{};
      SR_CHECK(options.size() >= 4, "{}: expected 4 \"options\", got {}", where, options.size());
      for (int i = 0; i < 4; ++i) fields[std::string("OPTION_") + char('A' + i)] = options[size_t(i)];
    }
    if (name == "code_run") {
      std::smatch m;
      SR_CHECK(std::regex_search(input, m, std::regex(R"(func_[0-9]+\(-?[0-9]+\))")),
               "{}: no func_N(x) call in \"input\"", where);
      fields["func_call"] = m.str(0);
      fields["func"] = m.str(0).substr(0, m.str(0).find('('));
      prefix = detail::format_fields(prefix, fields, where);
    } else if (name == "math_find") {
      // re.findall(r"The .+ of", input)[0].lower()[:-3]: greedy up to the line's last " of".
      std::smatch m;
      SR_CHECK(std::regex_search(input, m, std::regex("The .+ of")), "{}: no 'The ... of' in \"input\"", where);
      const std::string target = text::lower(m.str(0)).substr(0, m.str(0).size() - 3);
      fields["prefix"] = "What is " + target + " in the following list?";
    }
    s.prompt = detail::format_fields(spec.prompt, fields, where);
    s.answer_prefix = prefix;
    const size_t ctx = s.prompt.find(context);
    s.context_begin = ctx == std::string::npos ? 0 : int64_t(ctx);
    s.context_end = s.context_begin + int64_t(context.size());
    if (choice) {
      s.answers = choice_answer(eg, detail::string_list(eg.at("options")), where);
    } else {
      s.answers = detail::string_list(eg.at("answer"));
    }
    SR_CHECK(!s.answers.empty(), "{}: \"answer\" is empty", where);
    s.metric = spec.metric;
    s.max_new_tokens = spec.max_new_tokens;
    s.metadata["benchmark"] = "infinitebench";
    s.metadata["dataset"] = name;
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace sinkrouter::eval
