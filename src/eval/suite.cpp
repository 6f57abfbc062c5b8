// The suite file: a small JSON matrix of tasks x contexts x policies.
#include <fstream>
#include <set>

#include "sinkrouter/core/error.h"
#include "sinkrouter/eval/runner.h"

namespace sinkrouter::eval {
namespace {

void check_keys(const nlohmann::json& j, const std::set<std::string>& allowed, const std::string& where) {
  SR_CHECK(j.is_object(), "{}: expected a JSON object, got {}", where, j.type_name());
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (allowed.count(it.key())) continue;
    std::string list;
    for (const auto& a : allowed) list += list.empty() ? a : ", " + a;
    fail("{}: unknown key '{}' (expected one of: {})", where, it.key(), list);
  }
}

}  // namespace

AttentionPolicy policy_from_json(const nlohmann::json& j, const std::string& where) {
  check_keys(j, {"name", "mode", "epsilon", "tau", "window", "sink_tokens", "quest_budget", "blasst_threshold",
                 "bound", "estimate", "spread"},
             where);
  SR_CHECK(j.contains("name"), "{}: a policy needs a \"name\" (dense, sinkrouter, streaming, quest, blasst)", where);
  try {
    AttentionPolicy p = default_sinkrouter_policy();  // unnamed settings: the command line's defaults
    p.kind = parse_policy_kind(j.at("name").get<std::string>());
    if (j.contains("mode")) p.mode = parse_router_mode(j.at("mode").get<std::string>());
    p.epsilon = j.value("epsilon", p.epsilon);
    p.tau = j.value("tau", p.tau);
    p.window = j.value("window", p.window);
    p.sink_tokens = j.value("sink_tokens", p.sink_tokens);
    p.quest_budget = j.value("quest_budget", p.quest_budget);
    p.blasst_threshold = j.value("blasst_threshold", p.blasst_threshold);
    if (j.contains("bound")) p.bound = parse_bound_kind(j.at("bound").get<std::string>());
    if (j.contains("estimate")) p.estimate = parse_estimate_kind(j.at("estimate").get<std::string>());
    p.spread = j.value("spread", p.spread);
    p.validate();
    return p;
  } catch (const nlohmann::json::exception& e) {
    fail("{}: {}", where, e.what());
  } catch (const Error& e) {
    fail("{}: {}", where, e.what());
  }
}

EvalSuite parse_suite(const nlohmann::json& j, const std::string& where) {
  check_keys(j, {"model", "tasks", "contexts", "policies", "samples", "seed", "depth", "fidelity_tokens", "data_dir",
                 "out", "threads", "comment"},
             where);
  EvalSuite s;
  try {
    s.model = j.value("model", std::string());
    s.tasks = j.at("tasks").get<std::vector<std::string>>();
    s.contexts = j.at("contexts").get<std::vector<int64_t>>();
    s.samples = j.value("samples", s.samples);
    s.seed = j.value("seed", s.seed);
    if (j.contains("depth")) s.depth = j.at("depth").get<double>();
    s.fidelity_tokens = j.value("fidelity_tokens", s.fidelity_tokens);
    s.data_dir = j.value("data_dir", s.data_dir);
    s.out = j.value("out", s.out);
    s.threads = j.value("threads", s.threads);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: {} (expected \"tasks\": [names], \"contexts\": [token counts], ...)", where, e.what());
  }
  SR_CHECK(!s.tasks.empty(), "{}: \"tasks\" is empty", where);
  SR_CHECK(!s.contexts.empty(), "{}: \"contexts\" is empty", where);
  for (int64_t c : s.contexts) SR_CHECK(c >= 64, "{}: context {} is too short (expected >= 64 tokens)", where, c);
  SR_CHECK(s.samples >= 1, "{}: samples {} (expected >= 1)", where, s.samples);
  SR_CHECK(s.fidelity_tokens >= 1, "{}: fidelity_tokens {} (expected >= 1)", where, s.fidelity_tokens);
  SR_CHECK(!s.depth || (*s.depth >= 0 && *s.depth <= 1), "{}: depth {} is not in [0, 1]", where, *s.depth);
  for (const auto& t : s.tasks)
    SR_CHECK(is_synthetic_task(t) || t == "fidelity" || t.rfind("longbench:", 0) == 0 ||
                 t.rfind("infinitebench:", 0) == 0,
             "{}: unknown task '{}' (a generated task, fidelity, longbench:FILE or infinitebench:FILE)", where, t);
  SR_CHECK(j.contains("policies") && j.at("policies").is_array() && !j.at("policies").empty(),
           "{}: \"policies\" must be a non-empty list of policy objects", where);
  for (size_t i = 0; i < j.at("policies").size(); ++i)
    s.policies.push_back(policy_from_json(j.at("policies")[i], fmt::format("{}: policies[{}]", where, i)));
  return s;
}

EvalSuite load_suite(const std::string& path) {
  std::ifstream f(path);
  SR_CHECK(f.good(), "cannot open suite file '{}'", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f, nullptr, true, /*ignore_comments=*/true);
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: invalid JSON ({})", path, e.what());
  }
  return parse_suite(j, path);
}

}  // namespace sinkrouter::eval
