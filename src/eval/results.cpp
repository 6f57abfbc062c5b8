#include "sinkrouter/eval/results.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>

#include "sinkrouter/core/error.h"
#include "sinkrouter/eval/fidelity.h"

namespace sinkrouter::eval {

nlohmann::json to_json(const SampleRecord& r) {
  return {{"key", r.key},
          {"task", r.task},
          {"context", r.context},
          {"policy", r.policy},
          {"policy_kind", r.policy_kind},
          {"sample_id", r.sample_id},
          {"score", r.score},
          {"bytes_read", r.bytes_read},
          {"bytes_dense", r.bytes_dense},
          {"kv_read_fraction", r.kv_read_fraction()},
          {"delta_max", r.delta_max},
          {"prompt_tokens", r.prompt_tokens},
          {"prefill_seconds", r.prefill_seconds},
          {"decode_seconds", r.decode_seconds},
          {"prediction", r.prediction},
          {"answers", r.answers},
          {"extra", r.extra}};
}

SampleRecord sample_record_from_json(const nlohmann::json& j) {
  SampleRecord r;
  r.key = j.at("key");
  r.task = j.at("task");
  r.context = j.at("context");
  r.policy = j.at("policy");
  r.policy_kind = j.value("policy_kind", "");
  r.sample_id = j.value("sample_id", "");
  r.score = j.at("score");
  r.bytes_read = j.value("bytes_read", int64_t(0));
  r.bytes_dense = j.value("bytes_dense", int64_t(0));
  // JSON has no infinity: nlohmann writes an unbounded delta (no certificate) as null.
  const auto delta = j.find("delta_max");
  r.delta_max = delta == j.end() ? 0.0
                : delta->is_null() ? std::numeric_limits<double>::infinity()
                                   : delta->get<double>();
  r.prompt_tokens = j.value("prompt_tokens", int64_t(0));
  r.prefill_seconds = j.value("prefill_seconds", 0.0);
  r.decode_seconds = j.value("decode_seconds", 0.0);
  r.prediction = j.value("prediction", "");
  r.answers = j.value("answers", std::vector<std::string>{});
  r.extra = j.value("extra", nlohmann::json::object());
  return r;
}

ResultsLog::ResultsLog(std::string path) : path_(std::move(path)) {
  if (path_.empty()) return;  // in memory only
  std::ifstream in(path_);
  if (!in) return;  // a new run
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  for (size_t i = 0; i < lines.size(); ++i) {
    try {
      SampleRecord r = sample_record_from_json(nlohmann::json::parse(lines[i]));
      keys_.insert(r.key);
      records_.push_back(std::move(r));
    } catch (const nlohmann::json::exception& e) {
      SR_CHECK(i + 1 == lines.size(), "{}:{}: bad result line ({}); only the last line may be cut short", path_,
               i + 1, e.what());
      std::fprintf(stderr, "note: %s: dropped a last line cut short by an interrupted run; it will be redone\n",
                   path_.c_str());
      // Rewrite the file without the partial line so that appends start on a clean line.
      std::ofstream out(path_, std::ios::trunc);
      for (size_t k = 0; k < i; ++k) out << lines[k] << "\n";
    }
  }
}

void ResultsLog::append(const SampleRecord& r) {
  if (!path_.empty()) {
    std::ofstream out(path_, std::ios::app);
    SR_CHECK(out.good(), "cannot append to '{}'", path_);
    out << to_json(r).dump() << "\n";
    out.flush();
    SR_CHECK(out.good(), "writing '{}' failed", path_);
  }
  keys_.insert(r.key);
  records_.push_back(r);
}

namespace {

struct Acc {
  CellSummary cell;
  double sum = 0, sum_sq = 0;
  int64_t bytes_read = 0, bytes_dense = 0;
  bool has_fidelity = false;
  std::vector<int64_t> edges;
  FidelityBucket total;
};

}  // namespace

std::vector<CellSummary> summarize(const std::vector<SampleRecord>& records) {
  std::vector<Acc> cells;
  std::map<std::string, size_t> index;
  for (const SampleRecord& r : records) {
    const std::string k = fmt::format("{}\x1f{}\x1f{}", r.task, r.context, r.policy);
    auto it = index.find(k);
    if (it == index.end()) {
      it = index.emplace(k, cells.size()).first;
      Acc a;
      a.cell.task = r.task;
      a.cell.context = r.context;
      a.cell.policy = r.policy;
      a.cell.policy_kind = r.policy_kind;
      cells.push_back(a);
    }
    Acc& a = cells[it->second];
    a.cell.samples += 1;
    a.sum += r.score;
    a.sum_sq += r.score * r.score;
    a.bytes_read += r.bytes_read;
    a.bytes_dense += r.bytes_dense;
    a.cell.delta_max = std::max(a.cell.delta_max, r.delta_max);
    if (r.extra.contains("fidelity")) {
      const FidelityBucket t = FidelityAccumulator::from_json(r.extra.at("fidelity")).total();
      a.has_fidelity = true;
      a.total.steps += t.steps;
      a.total.top1_agree += t.top1_agree;
      a.total.kl_sum += t.kl_sum;
      a.total.kl_max = std::max(a.total.kl_max, t.kl_max);
      a.total.nll_dense_sum += t.nll_dense_sum;
      a.total.nll_policy_sum += t.nll_policy_sum;
    }
  }
  std::vector<CellSummary> out;
  for (Acc& a : cells) {
    const double n = a.cell.samples;
    a.cell.score = a.sum / n;
    a.cell.score_stderr = n > 1 ? std::sqrt(std::max(0.0, (a.sum_sq - n * a.cell.score * a.cell.score) / (n - 1)) / n) : 0;
    a.cell.kv_read_fraction = a.bytes_dense ? double(a.bytes_read) / double(a.bytes_dense) : 1.0;
    if (a.has_fidelity)
      a.cell.fidelity = {{"steps", a.total.steps},         {"top1_agreement", a.total.top1_agreement()},
                         {"kl_mean", a.total.kl_mean()},    {"kl_max", a.total.kl_max},
                         {"ppl_dense", a.total.ppl_dense()}, {"ppl_policy", a.total.ppl_policy()}};
    out.push_back(a.cell);
  }
  // The dense score of the same task and context, beside every policy.
  for (CellSummary& c : out)
    for (const CellSummary& d : out)
      if (d.policy_kind == "dense" && d.task == c.task && d.context == c.context) {
        c.dense_score = d.score;
        c.dense_samples = d.samples;
      }
  return out;
}

nlohmann::json to_json(const CellSummary& c) {
  nlohmann::json j = {{"task", c.task},
                      {"context", c.context},
                      {"policy", c.policy},
                      {"policy_kind", c.policy_kind},
                      {"samples", c.samples},
                      {"score", c.score},
                      {"score_stderr", c.score_stderr},
                      {"kv_read_fraction", c.kv_read_fraction},
                      {"delta_max", c.delta_max},
                      {"dense_score", c.dense_score >= 0 ? nlohmann::json(c.dense_score) : nlohmann::json()},
                      {"dense_samples", c.dense_samples}};
  if (!c.fidelity.is_null()) j["fidelity"] = c.fidelity;
  return j;
}

void write_report(const std::string& dir, const std::vector<CellSummary>& cells, const nlohmann::json& meta,
                  const std::vector<std::string>& plot_files) {
  std::filesystem::create_directories(dir);
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& c : cells) arr.push_back(to_json(c));
  {
    std::ofstream f(dir + "/results.json");
    SR_CHECK(f.good(), "cannot write '{}/results.json'", dir);
    f << nlohmann::json{{"meta", meta}, {"cells", arr}}.dump(2) << "\n";
  }
  std::string md = "# SinkRouter evaluation report\n\n";
  if (meta.contains("model")) md += fmt::format("Model: `{}`", meta.at("model").get<std::string>());
  if (meta.contains("seed")) md += fmt::format(", seed {}", meta.at("seed").dump());
  md += "\n\nScore: the task's metric in [0, 1] (fidelity: top-1 agreement with dense). *Dense* is the dense "
        "score of the same task at the same length, so a low policy score where dense is low too is the "
        "model's failure, not the policy's. *KV read*: bytes of the KV cache read over all decode steps "
        "(summaries, anchors and window, blocks) / what dense reads.\n";
  std::vector<std::string> tasks;
  for (const auto& c : cells)
    if (std::find(tasks.begin(), tasks.end(), c.task) == tasks.end()) tasks.push_back(c.task);
  for (const std::string& t : tasks) {
    bool fid = false;
    for (const auto& c : cells) fid |= c.task == t && !c.fidelity.is_null();
    md += fmt::format("\n## {}\n\n| context | policy | n | score | dense | KV read | max delta |{}\n", t,
                      fid ? " KL mean | KL max | ppl (dense) | ppl |" : "");
    md += std::string("|---:|---|---:|---:|---:|---:|---:|") + (fid ? "---:|---:|---:|---:|" : "") + "\n";
    for (const auto& c : cells) {
      if (c.task != t) continue;
      md += fmt::format("| {} | `{}` | {} | {:.3f} ± {:.3f} | {} | {:.1f}% | {:.2e} |", c.context, c.policy,
                        c.samples, c.score, c.score_stderr,
                        c.dense_score >= 0 ? fmt::format("{:.3f}", c.dense_score) : std::string("not run"),
                        100 * c.kv_read_fraction, c.delta_max);
      if (fid) {
        if (c.fidelity.is_null())
          md += " | | | |";
        else
          md += fmt::format(" {:.2e} | {:.2e} | {:.3f} | {:.3f} |", c.fidelity.at("kl_mean").get<double>(),
                            c.fidelity.at("kl_max").get<double>(), c.fidelity.at("ppl_dense").get<double>(),
                            c.fidelity.at("ppl_policy").get<double>());
      }
      md += "\n";
    }
  }
  if (!plot_files.empty()) {
    md += "\n## Plots\n\n";
    for (const auto& p : plot_files) md += fmt::format("![{}]({})\n\n", p, p);
  }
  std::ofstream f(dir + "/report.md");
  SR_CHECK(f.good(), "cannot write '{}/report.md'", dir);
  f << md;
}

}  // namespace sinkrouter::eval
