// Evaluation results: one record per (sample, policy), appended as JSONL as each finishes
// so that an interrupted run resumes where it stopped; summaries per cell (task x context
// x policy) with the dense score of the same task and length beside every policy; the
// report (report.md, results.json) that tools/plot_eval.py draws from.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

namespace sinkrouter::eval {

struct SampleRecord {
  std::string key;          // resume identity: sample id, sample count, depth, policy
  std::string task;
  int64_t context = 0;      // requested context in tokens
  std::string policy;       // AttentionPolicy::describe()
  std::string policy_kind;  // "dense", "sinkrouter", ...
  std::string sample_id;
  double score = 0;         // task metric in [0, 1]; fidelity: top-1 agreement with dense
  int64_t bytes_read = 0, bytes_dense = 0;  // KV bytes over all decode steps, summed over layers and heads
  double delta_max = 0;     // largest certificate delta of any decode step
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
  std::string prediction;
  std::vector<std::string> answers;
  nlohmann::json extra = nlohmann::json::object();  // needles, fidelity buckets, ...

  double kv_read_fraction() const { return bytes_dense ? double(bytes_read) / double(bytes_dense) : 1.0; }
};

nlohmann::json to_json(const SampleRecord& r);
SampleRecord sample_record_from_json(const nlohmann::json& j);

// The JSONL file of records. Opening reads what is there; a last line cut short by an
// interrupted write is dropped (with a note on stderr), any other bad line is an Error.
// An empty path keeps the records in memory only.
class ResultsLog {
 public:
  explicit ResultsLog(std::string path);
  bool has(const std::string& key) const { return keys_.count(key) > 0; }
  void append(const SampleRecord& r);  // one line, flushed at once
  const std::vector<SampleRecord>& records() const { return records_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<SampleRecord> records_;
  std::set<std::string> keys_;
};

struct CellSummary {
  std::string task;
  int64_t context = 0;
  std::string policy, policy_kind;
  int samples = 0;
  double score = 0;             // mean
  double score_stderr = 0;      // standard error of the mean
  double kv_read_fraction = 1;  // bytes read / bytes dense, over all samples' decode steps
  double delta_max = 0;
  double dense_score = -1;      // mean dense score of the same task and context; -1 if not run
  int dense_samples = 0;
  nlohmann::json fidelity;      // fidelity task: kl_mean, kl_max, ppl_dense, ppl_policy, buckets
};

// Cells in first-seen order of (task, context, policy).
std::vector<CellSummary> summarize(const std::vector<SampleRecord>& records);
nlohmann::json to_json(const CellSummary& c);

// Writes dir/results.json ({meta, cells}) and dir/report.md (one table per task, dense
// beside every policy, fidelity columns where present, the plots' file names).
void write_report(const std::string& dir, const std::vector<CellSummary>& cells, const nlohmann::json& meta,
                  const std::vector<std::string>& plot_files = {});

}  // namespace sinkrouter::eval
