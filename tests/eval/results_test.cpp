// Results log (append, resume, a cut-short last line), cell summaries with the dense score
// beside every policy, the report files, and the suite file (the committed example too).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <set>

#include "sinkrouter/core/error.h"
#include "sinkrouter/eval/fidelity.h"
#include "sinkrouter/eval/runner.h"

namespace sinkrouter::eval {
namespace {

namespace fs = std::filesystem;

std::string temp_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("sinkrouter_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

SampleRecord record(const std::string& task, int64_t ctx, const std::string& policy, const std::string& kind, int i,
                    double score, int64_t read, int64_t dense) {
  SampleRecord r;
  r.key = task + "|" + std::to_string(ctx) + "|" + std::to_string(i) + "|" + policy;
  r.task = task;
  r.context = ctx;
  r.policy = policy;
  r.policy_kind = kind;
  r.score = score;
  r.bytes_read = read;
  r.bytes_dense = dense;
  r.prediction = "pred " + std::to_string(i);
  r.answers = {"a"};
  return r;
}

void expect_error(const std::function<void()>& f, const std::string& part) {
  try {
    f();
    FAIL() << "expected an Error containing '" << part << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(ResultsLog, AppendsResumesAndDropsACutShortLastLine) {
  const std::string dir = temp_dir("log");
  const std::string path = dir + "/samples.jsonl";
  {
    ResultsLog log(path);
    EXPECT_TRUE(log.records().empty());
    log.append(record("passkey", 512, "dense", "dense", 0, 1.0, 100, 100));
    log.append(record("passkey", 512, "dense", "dense", 1, 0.0, 100, 100));
    EXPECT_TRUE(log.has("passkey|512|1|dense"));
  }
  {
    ResultsLog log(path);  // a rerun sees both
    ASSERT_EQ(log.records().size(), 2u);
    EXPECT_EQ(log.records()[1].prediction, "pred 1");
    EXPECT_TRUE(log.has("passkey|512|0|dense"));
    EXPECT_FALSE(log.has("passkey|512|2|dense"));
  }
  {  // an interrupted write leaves half a line: it is dropped and the file repaired
    std::ofstream(path, std::ios::app) << "{\"key\": \"passkey|512|2|de";
    ResultsLog log(path);
    EXPECT_EQ(log.records().size(), 2u);
    log.append(record("passkey", 512, "dense", "dense", 2, 1.0, 100, 100));
    ResultsLog again(path);
    EXPECT_EQ(again.records().size(), 3u);
  }
  {  // a bad line in the middle is not silently skipped
    std::ofstream out(path, std::ios::trunc);
    out << "not json\n" << to_json(record("passkey", 512, "dense", "dense", 0, 1.0, 1, 1)).dump() << "\n";
    out.close();
    expect_error([&] { ResultsLog bad(path); }, "samples.jsonl:1: bad result line");
  }
  fs::remove_all(dir);
}

// Policies without a certificate (quest, streaming) report an infinite delta, which JSON
// writes as null: a resumed run must read it back, as infinity.
TEST(ResultsLog, ResumesRecordsWithAnUnboundedDelta) {
  const std::string dir = temp_dir("inf");
  const std::string path = dir + "/samples.jsonl";
  SampleRecord r = record("fidelity", 512, "quest(budget=64)", "quest", 0, 0.5, 10, 100);
  r.delta_max = std::numeric_limits<double>::infinity();
  SampleRecord f = record("fidelity", 512, "sinkrouter(x)", "sinkrouter", 0, 0.9, 20, 100);
  f.delta_max = 0.25;
  {
    ResultsLog log(path);
    log.append(r);
    log.append(f);
  }
  ResultsLog again(path);
  ASSERT_EQ(again.records().size(), 2u);
  EXPECT_TRUE(std::isinf(again.records()[0].delta_max));
  EXPECT_GT(again.records()[0].delta_max, 0);
  EXPECT_EQ(again.records()[1].delta_max, 0.25);
  fs::remove_all(dir);
}

TEST(Summaries, MeansDenseBesideEveryPolicyAndBytes) {
  std::vector<SampleRecord> rs;
  // dense: scores 1, 0, 1 -> mean 2/3; sinkrouter: 1, 0, 0 -> 1/3; another context: dense only.
  const double dense_scores[] = {1, 0, 1}, sr_scores[] = {1, 0, 0};
  for (int i = 0; i < 3; ++i) {
    rs.push_back(record("niah_single_1", 1024, "dense", "dense", i, dense_scores[i], 1000, 1000));
    rs.push_back(record("niah_single_1", 1024, "sinkrouter(x)", "sinkrouter", i, sr_scores[i], 100 * (i + 1), 1000));
  }
  rs.push_back(record("niah_single_1", 2048, "sinkrouter(x)", "sinkrouter", 0, 1.0, 50, 2000));
  const auto cells = summarize(rs);
  ASSERT_EQ(cells.size(), 3u);
  EXPECT_EQ(cells[0].policy, "dense");
  EXPECT_NEAR(cells[0].score, 2.0 / 3.0, 1e-12);
  // sample standard deviation of {1, 0, 1} is sqrt(1/3); stderr = sqrt(1/3) / sqrt(3) = 1/3.
  EXPECT_NEAR(cells[0].score_stderr, 1.0 / 3.0, 1e-12);
  EXPECT_EQ(cells[1].policy, "sinkrouter(x)");
  EXPECT_NEAR(cells[1].score, 1.0 / 3.0, 1e-12);
  EXPECT_NEAR(cells[1].dense_score, 2.0 / 3.0, 1e-12);  // dense beside the policy
  EXPECT_EQ(cells[1].dense_samples, 3);
  EXPECT_NEAR(cells[1].kv_read_fraction, 600.0 / 3000.0, 1e-12);
  EXPECT_EQ(cells[2].context, 2048);
  EXPECT_EQ(cells[2].dense_score, -1);  // not run: shown as such, never borrowed from 1024
  EXPECT_NEAR(cells[2].kv_read_fraction, 0.025, 1e-12);

  // Fidelity records merge their buckets.
  FidelityAccumulator a({10, 20});
  a.add(12, {1.f, 0.f}, {0.f, 1.f}, 0);
  SampleRecord f = record("fidelity", 512, "streaming(x)", "streaming", 0, 0.0, 10, 20);
  f.extra["fidelity"] = a.to_json();
  const auto fc = summarize({f});
  ASSERT_TRUE(fc[0].fidelity.is_object());
  EXPECT_EQ(fc[0].fidelity.at("steps"), 1);
  EXPECT_EQ(fc[0].fidelity.at("top1_agreement"), 0.0);
  EXPECT_GT(fc[0].fidelity.at("kl_mean").get<double>(), 0.0);

  const std::string dir = temp_dir("report");
  write_report(dir, cells, {{"model", "m.gguf"}, {"seed", 42}}, {"niah_single_1.png"});
  std::ifstream md(dir + "/report.md");
  const std::string text((std::istreambuf_iterator<char>(md)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("## niah_single_1"), std::string::npos);
  EXPECT_NE(text.find("| 1024 | `sinkrouter(x)` | 3 | 0.333 ± 0.333 | 0.667 | 20.0% |"), std::string::npos) << text;
  EXPECT_NE(text.find("| 2048 | `sinkrouter(x)` | 1 | 1.000 ± 0.000 | not run | 2.5% |"), std::string::npos) << text;
  EXPECT_NE(text.find("![niah_single_1.png](niah_single_1.png)"), std::string::npos);
  std::ifstream js(dir + "/results.json");
  const auto j = nlohmann::json::parse(js);
  EXPECT_EQ(j.at("cells").size(), 3u);
  EXPECT_EQ(j.at("meta").at("model"), "m.gguf");
  EXPECT_TRUE(j.at("cells")[2].at("dense_score").is_null());
  fs::remove_all(dir);
}

TEST(Suite, CommittedExampleParses) {
  const EvalSuite s = load_suite(std::string(SINKROUTER_SOURCE_DIR) + "/eval/suites/example.json");
  EXPECT_FALSE(s.tasks.empty());
  EXPECT_FALSE(s.contexts.empty());
  EXPECT_FALSE(s.policies.empty());
  EXPECT_EQ(s.model, "models/SmolLM2-135M-Instruct.Q4_1.gguf");
  const EvalSuite r = load_suite(std::string(SINKROUTER_SOURCE_DIR) + "/eval/suites/ruler_smollm2.json");
  EXPECT_EQ(r.policies.size(), 7u);
  EXPECT_EQ(r.policies[2].mode, RouterMode::Fast);
  EXPECT_DOUBLE_EQ(r.policies[2].tau, 0.001);
}

// Every committed suite loads (docs/RESULTS.md's commands run them), with distinct policies
// and names a sinkrouter setting left out takes from the product default.
TEST(Suite, EveryCommittedSuiteParses) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(std::string(SINKROUTER_SOURCE_DIR) + "/eval/suites")) {
    if (e.path().extension() != ".json") continue;
    SCOPED_TRACE(e.path().string());
    const EvalSuite s = load_suite(e.path().string());
    EXPECT_FALSE(s.tasks.empty());
    EXPECT_FALSE(s.policies.empty());
    std::set<std::string> names;
    for (const AttentionPolicy& p : s.policies) EXPECT_TRUE(names.insert(p.describe()).second) << p.describe();
    ++n;
  }
  EXPECT_GE(n, 6);
  const EvalSuite d = parse_suite({{"tasks", {"passkey"}}, {"contexts", {1024}}, {"policies", {{{"name", "sinkrouter"}}}}}, "t.json");
  const AttentionPolicy want = default_sinkrouter_policy();
  EXPECT_EQ(d.policies[0].mode, want.mode);
  EXPECT_EQ(d.policies[0].estimate, want.estimate);
  EXPECT_DOUBLE_EQ(d.policies[0].tau, want.tau);
}

TEST(Suite, ClearErrors) {
  const nlohmann::json ok = {{"tasks", {"passkey"}}, {"contexts", {1024}}, {"policies", {{{"name", "quest"}, {"quest_budget", 256}}}}};
  const EvalSuite s = parse_suite(ok, "t.json");
  EXPECT_EQ(s.policies[0].kind, PolicyKind::Quest);
  EXPECT_EQ(s.policies[0].quest_budget, 256);
  nlohmann::json typo = ok;
  typo["sample"] = 3;
  expect_error([&] { parse_suite(typo, "t.json"); }, "t.json: unknown key 'sample'");
  nlohmann::json bad_task = ok;
  bad_task["tasks"] = {"needle"};
  expect_error([&] { parse_suite(bad_task, "t.json"); }, "unknown task 'needle'");
  nlohmann::json bad_policy = ok;
  bad_policy["policies"] = {{{"name", "sinkrouter"}, {"epsilon", 2.0}}};
  expect_error([&] { parse_suite(bad_policy, "t.json"); }, "policies[0]: policy: epsilon 2 out of range");
  nlohmann::json no_name = ok;
  no_name["policies"] = {{{"window", 8}}};
  expect_error([&] { parse_suite(no_name, "t.json"); }, "a policy needs a \"name\"");
  nlohmann::json short_ctx = ok;
  short_ctx["contexts"] = {16};
  expect_error([&] { parse_suite(short_ctx, "t.json"); }, "context 16 is too short");
  expect_error([&] { load_suite("/nonexistent/suite.json"); }, "cannot open suite file");
}

}  // namespace
}  // namespace sinkrouter::eval
