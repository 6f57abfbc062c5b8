// The task registry: names, per-sample seeds and depths, and JSON for samples.
#include "sinkrouter/eval/tasks.h"

#include <cmath>

#include "eval/task_support.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter::eval {
namespace {

struct TaskEntry {
  const char* name;
  TaskSample (*make)(const detail::SampleSpec&);
  bool uses_depth;
};

const std::vector<TaskEntry>& registry() {
  static const std::vector<TaskEntry> r = {
      {"passkey", detail::make_passkey, true},
      {"number_string", detail::make_number_string, true},
      {"kv_retrieval", detail::make_kv_retrieval, true},
      {"niah_single_1", detail::make_niah, true},
      {"niah_single_2", detail::make_niah, true},
      {"niah_single_3", detail::make_niah, true},
      {"niah_multikey_1", detail::make_niah, true},
      {"niah_multikey_2", detail::make_niah, true},
      {"niah_multikey_3", detail::make_niah, true},
      {"niah_multivalue", detail::make_niah, true},
      {"niah_multiquery", detail::make_niah, true},
      {"vt", detail::make_variable_tracking, false},
      {"cwe", detail::make_common_words, false},
  };
  return r;
}

const TaskEntry& find_task(const std::string& name) {
  for (const auto& e : registry())
    if (name == e.name) return e;
  std::string known;
  for (const auto& e : registry()) known += known.empty() ? e.name : std::string(", ") + e.name;
  fail("unknown task '{}' (expected one of: {})", name, known);
}

}  // namespace

const std::vector<std::string>& synthetic_task_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& e : registry()) n.push_back(e.name);
    return n;
  }();
  return names;
}

bool is_synthetic_task(const std::string& name) {
  for (const auto& e : registry())
    if (name == e.name) return true;
  return false;
}

double scheduled_depth(const std::optional<double>& depth, int index, int num_samples) {
  if (depth) return *depth;
  if (num_samples <= 1) return 0.5;
  return double(index) / double(num_samples - 1);
}

TaskSample generate_sample(const std::string& task, const TaskOptions& o, const TokenCounter& count, int index) {
  const TaskEntry& entry = find_task(task);
  SR_CHECK(bool(count), "{}: no token counter given", task);
  SR_CHECK(o.num_samples >= 1, "{}: num_samples is {} (expected >= 1)", task, o.num_samples);
  SR_CHECK(index >= 0 && index < o.num_samples, "{}: sample index {} out of range [0, {})", task, index,
           o.num_samples);
  SR_CHECK(!o.depth || (*o.depth >= 0.0 && *o.depth <= 1.0), "{}: depth {} is not a fraction in [0, 1]", task,
           o.depth.value_or(0));
  SR_CHECK(o.reserved_tokens >= 0 && o.context_tokens - o.reserved_tokens > 0,
           "{}: context of {} tokens minus {} reserved leaves no room for a prompt", task, o.context_tokens,
           o.reserved_tokens);
  detail::SampleSpec spec;
  spec.task = task;
  spec.options = &o;
  spec.count = &count;
  spec.index = index;
  spec.seed = detail::mix_seed(detail::mix_seed(o.seed, detail::hash_string(task)), uint64_t(index));
  spec.depth = scheduled_depth(o.depth, index, o.num_samples);
  spec.budget = o.context_tokens - o.reserved_tokens;
  TaskSample s = entry.make(spec);
  if (!entry.uses_depth) s.metadata.erase("requested_depth");
  return s;
}

std::vector<TaskSample> generate_task(const std::string& task, const TaskOptions& o, const TokenCounter& count) {
  std::vector<TaskSample> out;
  for (int i = 0; i < o.num_samples; ++i) out.push_back(generate_sample(task, o, count, i));
  return out;
}

nlohmann::json to_json(const TaskSample& s) {
  nlohmann::json needles = nlohmann::json::array();
  for (const Needle& n : s.needles)
    needles.push_back({{"text", n.text}, {"char_offset", n.char_offset}, {"token_offset", n.token_offset},
                       {"depth", n.depth}, {"queried", n.queried}});
  return {{"id", s.id},
          {"task", s.task},
          {"prompt", s.prompt},
          {"answer_prefix", s.answer_prefix},
          {"context_begin", s.context_begin},
          {"context_end", s.context_end},
          {"answers", s.answers},
          {"all_classes", s.all_classes},
          {"metric", metric_name(s.metric)},
          {"max_new_tokens", s.max_new_tokens},
          {"chat", s.chat},
          {"needles", needles},
          {"target_tokens", s.target_tokens},
          {"prompt_tokens", s.prompt_tokens},
          {"metadata", s.metadata}};
}

TaskSample task_sample_from_json(const nlohmann::json& j) {
  TaskSample s;
  try {
    s.id = j.at("id").get<std::string>();
    s.task = j.at("task").get<std::string>();
    s.prompt = j.at("prompt").get<std::string>();
    s.answer_prefix = j.value("answer_prefix", "");
    s.context_begin = j.value("context_begin", int64_t(0));
    s.context_end = j.value("context_end", int64_t(0));
    s.answers = j.at("answers").get<std::vector<std::string>>();
    s.all_classes = j.value("all_classes", std::vector<std::string>{});
    s.metric = parse_metric(j.at("metric").get<std::string>());
    s.max_new_tokens = j.value("max_new_tokens", 32);
    s.chat = j.value("chat", true);
    for (const auto& n : j.value("needles", nlohmann::json::array()))
      s.needles.push_back({n.at("text").get<std::string>(), n.at("char_offset").get<int64_t>(),
                           n.value("token_offset", int64_t(-1)), n.value("depth", 0.0), n.value("queried", false)});
    s.target_tokens = j.value("target_tokens", int64_t(0));
    s.prompt_tokens = j.value("prompt_tokens", int64_t(0));
    s.metadata = j.value("metadata", nlohmann::json::object());
  } catch (const nlohmann::json::exception& e) {
    fail("task sample JSON: {} (expected the fields written by to_json)", e.what());
  }
  return s;
}

}  // namespace sinkrouter::eval
