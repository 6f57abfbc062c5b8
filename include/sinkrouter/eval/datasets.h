// Loaders for LongBench and InfiniteBench JSONL files, so that a user who has those data
// sets runs them unchanged, with the prompts and metrics of the originals:
//
//   LongBench (THUDM/LongBench, LongBench/config/dataset2prompt.json, dataset2maxlen.json,
//   eval.py): one JSON object per line with "input", "context", "answers", "length",
//   "dataset", "all_classes", "_id". English data sets only: narrativeqa, qasper,
//   multifieldqa_en, hotpotqa, 2wikimqa, musique, gov_report, qmsum, multi_news, trec,
//   triviaqa, samsum, passage_count, passage_retrieval_en, lcc, repobench-p. trec,
//   triviaqa, samsum, lcc and repobench-p are run without the chat template, and trec,
//   triviaqa and samsum are scored on the first line of the output, as LongBench does.
//
//   InfiniteBench (OpenBMB/InfiniteBench, src/prompt.py's templates for open models,
//   src/eval_utils.py, src/compute_scores.py): "id", "context", "input", "answer",
//   "options". Tasks: passkey, number_string, kv_retrieval, longbook_qa_eng,
//   longbook_choice_eng, longdialogue_qa_eng, math_find, math_calc, code_run, code_debug.
//   (longbook_sum_eng needs HF's rougeLsum, longbook_qa_chn Chinese segmentation: both are
//   refused with a clear error.)
//
// A prompt longer than the model's budget is cut in the middle (both benchmarks do), by
// the runner with truncate_middle().
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "sinkrouter/eval/tasks.h"

namespace sinkrouter::eval {

const std::vector<std::string>& longbench_datasets();      // supported names
const std::vector<std::string>& infinitebench_tasks();     // supported names

// `dataset`: a supported name, or "" to take it from each line's "dataset" field (else the
// file name without .jsonl / _e.jsonl). Errors give the file, line and the missing field.
std::vector<TaskSample> load_longbench(const std::string& path, const std::string& dataset = "");
// `task`: a supported name, or "" to take it from the file name.
std::vector<TaskSample> load_infinitebench(const std::string& path, const std::string& task = "");

// Keeps the first and last max_tokens/2 tokens of the text and joins their decodings
// (LongBench's and InfiniteBench's middle truncation). Returns the text unchanged when it
// fits.
std::string truncate_middle(const std::string& text, int64_t max_tokens,
                            const std::function<std::vector<int32_t>(const std::string&)>& encode,
                            const std::function<std::string(const std::vector<int32_t>&)>& decode);

// Score of one output for a sample (generated or loaded): applies the sample's output
// post-processing (LongBench's first line) and its metric.
double score_sample(const TaskSample& sample, const std::string& prediction);

}  // namespace sinkrouter::eval
