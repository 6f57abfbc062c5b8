// `sinkrouter eval`: one cell (--task, --context, --policy) or a suite (--suite FILE) of
// long-context tasks on the engine, dense always beside the policy; per-sample JSONL that
// resumes, report.md, results.json and plots (tools/plot_eval.py) under --out.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "commands.h"
#include "engine_options.h"
#include "policy_options.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/eval/runner.h"

namespace sinkrouter::apps {
namespace {

struct EvalCliOptions {
  EngineCliOptions engine;
  PolicyOptions policy;
  std::string suite;
  std::string task;
  std::vector<int64_t> contexts{4096};
  int samples = 4;
  uint64_t seed = 42;
  double depth = -1;
  int fidelity_tokens = 64;
  std::string data_dir = "data";
  std::string out;
  bool json = false;
  bool no_progress = false;
};

// Runs tools/plot_eval.py; returns the PNG files it wrote (it prints one per line).
std::vector<std::string> draw_plots(const std::string& out) {
  const char* env = std::getenv("SINKROUTER_PLOT_SCRIPT");
  const std::string script = env ? env : "tools/plot_eval.py";
  if (!std::filesystem::exists(script)) {
    std::fprintf(stderr, "note: %s not found (run from the repository root): no plots\n", script.c_str());
    return {};
  }
  const std::string cmd = fmt::format("python3 '{}' '{}/results.json' '{}'", script, out, out);
  std::vector<std::string> files;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char line[4096];
    while (std::fgets(line, sizeof line, p)) {
      std::string s(line);
      while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
      if (s.size() > 4 && s.compare(s.size() - 4, 4, ".png") == 0) files.push_back(s);
    }
    if (pclose(p) != 0)
      std::fprintf(stderr, "note: plots skipped (%s failed; `pip install matplotlib` or `make eval`)\n", script.c_str());
  }
  return files;
}

void print_table(const std::vector<eval::CellSummary>& cells) {
  fmt::print("{:<22} {:>7} {:<44} {:>3} {:>7} {:>7} {:>8} {:>9}\n", "task", "context", "policy", "n", "score", "dense",
             "KV read", "max delta");
  for (const auto& c : cells)
    fmt::print("{:<22} {:>7} {:<44} {:>3} {:>7.3f} {:>7} {:>7.1f}% {:>9.2e}\n", c.task, c.context, c.policy, c.samples,
               c.score, c.dense_score >= 0 ? fmt::format("{:.3f}", c.dense_score) : std::string("-"),
               100 * c.kv_read_fraction, c.delta_max);
}

int run(EvalCliOptions& o) {
  eval::EvalSuite suite;
  if (!o.suite.empty()) {
    SR_CHECK(o.task.empty(), "eval: give either --suite or --task, not both");
    suite = eval::load_suite(o.suite);
    if (!o.engine.engine.model_path.empty()) suite.model = o.engine.engine.model_path;
    if (!o.out.empty()) suite.out = o.out;
  } else {
    SR_CHECK(!o.task.empty(), "eval: give --task NAME (or --suite FILE)");
    suite.model = o.engine.engine.model_path;
    suite.tasks = {o.task};
    suite.contexts = o.contexts;
    suite.policies = {o.policy.resolve()};
    suite.samples = o.samples;
    suite.seed = o.seed;
    if (o.depth >= 0) suite.depth = o.depth;
    suite.fidelity_tokens = o.fidelity_tokens;
    suite.data_dir = o.data_dir;
    suite.out = o.out;
  }
  SR_CHECK(!suite.model.empty(), "eval: no model (give -m FILE or \"model\" in the suite)");
  EngineOptions eo = o.engine.resolve();
  eo.model_path = suite.model;
  if (suite.threads > 0 && eo.threads == 0) eo.threads = suite.threads;
  const Engine engine(eo);

  eval::RunnerOptions ro;
  ro.samples = suite.samples;
  ro.seed = suite.seed;
  ro.depth = suite.depth;
  ro.data_dir = suite.data_dir;
  ro.fidelity_tokens = suite.fidelity_tokens;
  ro.progress = !o.no_progress;
  eval::EvalRunner runner(engine, ro);

  std::string log_path;
  if (!suite.out.empty()) {
    std::filesystem::create_directories(suite.out);
    log_path = suite.out + "/samples.jsonl";
  }
  eval::ResultsLog log(log_path);
  if (!log.records().empty())
    std::fprintf(stderr, "resuming: %zu samples already in %s\n", log.records().size(), log_path.c_str());
  runner.run(suite.tasks, suite.contexts, suite.policies, log);

  // Summaries of this suite's cells only (the log may hold other runs' records too).
  std::vector<eval::SampleRecord> mine;
  std::vector<std::string> wanted{AttentionPolicy{}.describe()};
  for (const auto& p : suite.policies) wanted.push_back(p.describe());
  for (const auto& r : log.records())
    if (std::find(suite.contexts.begin(), suite.contexts.end(), r.context) != suite.contexts.end() &&
        std::find(wanted.begin(), wanted.end(), r.policy) != wanted.end())
      mine.push_back(r);
  const auto cells = eval::summarize(mine);
  if (o.json) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& c : cells) arr.push_back(eval::to_json(c));
    fmt::print("{}\n", arr.dump(2));
  } else {
    print_table(cells);
  }
  if (!suite.out.empty()) {
    const nlohmann::json meta = {{"model", suite.model},       {"seed", suite.seed},     {"samples", suite.samples},
                                 {"tasks", suite.tasks},       {"contexts", suite.contexts},
                                 {"fidelity_tokens", suite.fidelity_tokens},
                                 {"depth", suite.depth ? nlohmann::json(*suite.depth) : nlohmann::json("spread")}};
    eval::write_report(suite.out, cells, meta);
    const auto plots = draw_plots(suite.out);
    if (!plots.empty()) eval::write_report(suite.out, cells, meta, plots);
    std::fprintf(stderr, "report: %s/report.md\n", suite.out.c_str());
  }
  return 0;
}

}  // namespace

Runner register_eval(CLI::App& app) {
  auto o = std::make_shared<EvalCliOptions>();
  CLI::App* cmd = app.add_subcommand("eval", "long-context tasks, fidelity to dense, LongBench/InfiniteBench files");
  o->engine.add_to(cmd, /*model_required=*/false, /*default_matmul=*/"f32");
  o->policy.add_to(cmd);
  cmd->add_option("--suite", o->suite, "JSON suite: tasks x contexts x policies (see eval/suites/example.json)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--task", o->task,
                  "passkey, number_string, kv_retrieval, niah_single_1..3, niah_multikey_1..3, niah_multivalue, "
                  "niah_multiquery, vt, cwe, fidelity, longbench:FILE.jsonl, infinitebench:FILE.jsonl");
  cmd->add_option("--context", o->contexts, "context length(s) in tokens")->capture_default_str();
  cmd->add_option("--samples", o->samples, "samples per cell")->check(CLI::Range(1, 100000))->capture_default_str();
  cmd->add_option("--seed", o->seed, "seed of the generated samples")->capture_default_str();
  cmd->add_option("--depth", o->depth, "needle depth in [0, 1] (default: spread over the samples)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--fidelity-tokens", o->fidelity_tokens, "teacher-forced steps per fidelity window")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--data-dir", o->data_dir, "texts fetched by `make data`")->capture_default_str();
  cmd->add_option("--out", o->out, "directory for samples.jsonl (resumable), report.md, results.json, plots");
  cmd->add_flag("--json", o->json, "print the cells as JSON");
  cmd->add_flag("--no-progress", o->no_progress, "no progress bar on stderr");
  return [o] { return run(*o); };
}

}  // namespace sinkrouter::apps
