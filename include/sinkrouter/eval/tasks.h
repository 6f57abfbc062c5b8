// Long-context tasks generated from a seed, in the prompt formats of their originals:
//
//   passkey            Landmark Attention's passkey retrieval (garbage text, key 1..50000)
//   number_string      InfiniteBench: a 10-digit string hidden in noise lines
//   kv_retrieval       InfiniteBench: one UUID key of a JSON object of UUID pairs
//   niah_single_1..3   RULER NIAH: noise / essay / essay haystack, number / number / UUID value
//   niah_multikey_1..3 RULER: 4 keys in essays; a haystack of distractor needles (words / UUIDs)
//   niah_multivalue    RULER: 4 values for one key
//   niah_multiquery    RULER: 4 keys asked at once
//   vt                 RULER variable tracking (1 chain, 4 hops, one-shot example)
//   cwe                RULER common-words extraction (10 words x30 among words x3, one-shot)
//
// The length is given in tokens: the generator receives a token counter and fits the
// haystack so that counter(prompt + answer_prefix) <= context_tokens - reserved_tokens,
// with the largest haystack that fits (binary search, as RULER does). Everything random
// (keys, values, positions, word choices) comes from the seed and the sample index only,
// never from the haystack size, so a sample is the same whatever tokenizer fitted it,
// except for its haystack length.
//
// The texts come from data/ (tools/fetch_data.py, `make data`); see docs/EVAL.md.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "sinkrouter/eval/metrics.h"

namespace sinkrouter::eval {

// Tokens in a text (the runner's is the model tokenizer; tests use simple counters).
using TokenCounter = std::function<int64_t(const std::string&)>;

struct Needle {
  std::string text;          // exactly as inserted
  int64_t char_offset = 0;   // byte offset of its first character in TaskSample::prompt
  int64_t token_offset = -1; // counter(prompt[0, char_offset)); -1 when not computed
  double depth = 0;          // haystack units before it / all units (0: first, 1: last)
  bool queried = false;      // its value is (part of) the expected answer
};

struct TaskSample {
  std::string id;             // "<task>-<context>-s<seed>-<index>", or the data set's id
  std::string task;
  std::string prompt;         // the user turn: instructions, context, question
  std::string answer_prefix;  // cue that starts the answer (e.g. " The pass key is"); may be empty.
                              // prompt + answer_prefix is the original single-string prompt.
  int64_t context_begin = 0, context_end = 0;  // the haystack/document span in prompt
  std::vector<std::string> answers;
  std::vector<std::string> all_classes;  // classification data sets only
  Metric metric = Metric::RulerMatchAll;
  int max_new_tokens = 32;    // the original's generation budget
  bool chat = true;           // false: LongBench's few-shot and code tasks skip the chat template
  std::vector<Needle> needles;
  int64_t target_tokens = 0;  // the length asked for (0 for loaded data sets)
  int64_t prompt_tokens = 0;  // counter(prompt + answer_prefix)
  nlohmann::json metadata = nlohmann::json::object();  // haystack kind, units, depths, ...
};

struct TaskOptions {
  int64_t context_tokens = 4096;  // target length, counted on prompt + answer_prefix
  int64_t reserved_tokens = 0;    // subtracted from it (chat template, generation budget)
  int num_samples = 1;
  uint64_t seed = 42;
  // Depth of the (first) queried needle as a fraction of the haystack. Unset: sample i of K
  // gets i / (K - 1) (0.5 when K = 1), so a run spreads over 0..100 %. Other needles of
  // multi-needle tasks sit at random depths of RULER's 40-point grid. vt and cwe ignore it.
  std::optional<double> depth;
  std::string data_dir = "data";  // tools/fetch_data.py's output
  bool needle_token_offsets = true;  // count tokens before each needle (one count per needle)
};

// Names of the generated tasks, in the order of the list above.
const std::vector<std::string>& synthetic_task_names();
bool is_synthetic_task(const std::string& name);

// Sample `index` of a run (indices are independent: sample 3 of 5 equals sample 3 of 10).
// Throws Error for an unknown task, a missing data file (says to run `make data`), bad
// options, or a context too short for the task's prompt without its haystack.
TaskSample generate_sample(const std::string& task, const TaskOptions& options, const TokenCounter& count,
                           int index);
std::vector<TaskSample> generate_task(const std::string& task, const TaskOptions& options,
                                      const TokenCounter& count);

// The depth used for sample `index` of `num_samples` under `depth` (see TaskOptions).
double scheduled_depth(const std::optional<double>& depth, int index, int num_samples);

nlohmann::json to_json(const TaskSample& s);
TaskSample task_sample_from_json(const nlohmann::json& j);

}  // namespace sinkrouter::eval
