// Runs evaluation cells on the engine: tasks x contexts x policies, dense always included,
// every finished sample appended to the results log (so a rerun resumes), a progress bar
// with the time left on stderr.
//
// Task names: the generated tasks of tasks.h; "fidelity" (teacher-forced agreement with
// dense on the real texts of data/texts/); "longbench:FILE.jsonl" and
// "infinitebench:FILE.jsonl" for the data sets' own files (the context is then the
// truncation budget).
//
// Prompts: a sample with chat = true is wrapped in the model's chat template as the user
// turn, and its answer prefix (stripped) opens the assistant turn, as RULER does for chat
// models; otherwise prompt + answer_prefix is fed as it is. The context length counts
// every token fed, template included; generation comes on top (KV capacity must hold
// context + max_new_tokens).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sinkrouter/attention/policy.h"
#include "sinkrouter/engine/engine.h"
#include "sinkrouter/eval/results.h"
#include "sinkrouter/eval/tasks.h"

namespace sinkrouter::eval {

// A matrix of cells from a small JSON file:
// { "model": "models/x.gguf", "tasks": ["passkey", "fidelity"], "contexts": [1024, 2048],
//   "policies": [{"name": "sinkrouter", "mode": "certified", "epsilon": 1e-3}, ...],
//   "samples": 4, "seed": 42, "depth": 0.5 (optional), "fidelity_tokens": 64,
//   "data_dir": "data", "out": "eval/results/example", "threads": 0 }
// Policy fields: name, mode, epsilon, tau, window, sink_tokens, quest_budget,
// blasst_threshold, bound, estimate, spread (defaults as in policy.h). Relative paths are relative
// to the current directory. Unknown keys are an Error (a typo must not silently change a run).
struct EvalSuite {
  std::string model;
  std::vector<std::string> tasks;
  std::vector<int64_t> contexts;
  std::vector<AttentionPolicy> policies;
  int samples = 4;
  uint64_t seed = 42;
  std::optional<double> depth;
  int fidelity_tokens = 64;
  std::string data_dir = "data";
  std::string out = "eval/results";
  int threads = 0;
};

EvalSuite parse_suite(const nlohmann::json& j, const std::string& where);
EvalSuite load_suite(const std::string& path);
AttentionPolicy policy_from_json(const nlohmann::json& j, const std::string& where);

struct RunnerOptions {
  int samples = 4;
  uint64_t seed = 42;
  std::optional<double> depth;
  std::string data_dir = "data";
  int fidelity_tokens = 64;  // teacher-forced steps at the end of each fidelity window
  int fidelity_buckets = 4;
  bool progress = true;      // progress bar on stderr
};

// A prompt prefilled once (dense, as every policy prefills) and forked for each policy.
struct PrefilledPrompt {
  std::vector<int32_t> prompt;
  std::unique_ptr<Session> session;  // dense, right after the prefill; forked, never decoded
  std::vector<float> logits;         // the prefill's last logits
  double prefill_seconds = 0;
  // Fidelity: the dense logits before each teacher-forced step, with their statistics.
  std::vector<std::vector<float>> dense_steps;
  HeadStats dense_stats;
  double dense_decode_seconds = 0;
};

class EvalRunner {
 public:
  EvalRunner(const Engine& engine, RunnerOptions options);

  // Runs what the log does not have yet. Dense runs first for every (task, context).
  void run(const std::vector<std::string>& tasks, const std::vector<int64_t>& contexts,
           const std::vector<AttentionPolicy>& policies, ResultsLog& log);

  // Tokens of `text` as the model sees it (no BOS), and of the chat wrapper plus BOS.
  int64_t count_tokens(const std::string& text) const;
  int64_t prompt_overhead() const { return overhead_; }
  // The token ids fed for a sample: chat-wrapped or plain, BOS when the model wants it.
  std::vector<int32_t> prompt_tokens(const TaskSample& s) const;

 private:
  SampleRecord run_generation(const TaskSample& s, const AttentionPolicy& p, int64_t context);
  SampleRecord run_fidelity(int index, int64_t context, const AttentionPolicy& p);
  std::vector<TaskSample> load_file_task(const std::string& task, int64_t context);
  // The dense session right after this prompt's prefill (made once, forked per policy).
  PrefilledPrompt& prefilled(const std::vector<int32_t>& prompt);

  const Engine& engine_;
  RunnerOptions o_;
  bool chat_ok_ = true;
  int64_t overhead_ = 0;
  // Every policy prefills densely, so the policies of one sample share one prefill: the
  // last prompt prefilled, and for fidelity the dense logits of its teacher-forced steps.
  PrefilledPrompt prefilled_;
};


}  // namespace sinkrouter::eval
