// End to end on the real model (SmolLM2-135M, `tools/fetch_model.sh`) and the real texts
// (`make data`), at a short context so that it runs in CI on 2 cores: a passkey sample and
// a fidelity window, dense and sinkrouter, results logged and resumed. Skipped, saying
// why, when the model or the data are not there.
#include <gtest/gtest.h>

#include <filesystem>

#include "sinkrouter/eval/runner.h"

namespace sinkrouter::eval {
namespace {

namespace fs = std::filesystem;

TEST(EvalEndToEnd, PasskeyAndFidelityOnSmolLM2) {
  const std::string root = SINKROUTER_SOURCE_DIR;
  const std::string model = root + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!fs::exists(model)) GTEST_SKIP() << "no " << model << " (tools/fetch_model.sh)";
  if (!fs::exists(root + "/data/texts/mobydick.txt")) GTEST_SKIP() << "no data/ (make data)";

  EngineOptions eo;
  eo.model_path = model;
  eo.max_context = 512;
  eo.threads = 2;
  const Engine engine(eo);
  RunnerOptions ro;
  ro.samples = 1;
  ro.seed = 3;
  ro.data_dir = root + "/data";
  ro.fidelity_tokens = 6;
  ro.fidelity_buckets = 2;
  ro.progress = false;
  EvalRunner runner(engine, ro);
  EXPECT_GT(runner.prompt_overhead(), 5);  // ChatML wrapper and default system prompt

  AttentionPolicy sr;
  sr.kind = PolicyKind::SinkRouter;
  sr.window = 32;
  const std::string dir = (fs::temp_directory_path() / ("sinkrouter_e2e_" + std::to_string(::getpid()))).string();
  fs::create_directories(dir);
  const std::string path = dir + "/samples.jsonl";
  {
    ResultsLog log(path);
    runner.run({"passkey", "fidelity"}, {256}, {sr}, log);
    ASSERT_EQ(log.records().size(), 4u);  // 2 tasks x (dense, sinkrouter)
    for (const SampleRecord& r : log.records()) {
      SCOPED_TRACE(r.task + " " + r.policy);
      EXPECT_GE(r.score, 0.0);
      EXPECT_LE(r.score, 1.0);
      EXPECT_GT(r.bytes_dense, 0);
      EXPECT_LE(r.prompt_tokens, 256);
      if (r.task == "passkey") {
        EXPECT_GT(r.prompt_tokens, 256 - 16);  // fitted within a noise sentence's worth
        EXPECT_EQ(r.answers.size(), 1u);
      } else {
        ASSERT_TRUE(r.extra.contains("fidelity"));
        EXPECT_EQ(r.extra.at("fidelity").size(), 2u);
        EXPECT_GT(r.extra.at("ppl_dense").get<double>(), 1.0);
        if (r.policy_kind == "dense") {  // dense against itself: exact agreement
          EXPECT_EQ(r.score, 1.0);
          EXPECT_EQ(r.extra.at("kl_max").get<double>(), 0.0);
        } else {
          EXPECT_GE(r.extra.at("kl_mean").get<double>(), 0.0);
        }
      }
    }
  }
  {
    ResultsLog log(path);  // a rerun finds everything done
    runner.run({"passkey", "fidelity"}, {256}, {sr}, log);
    EXPECT_EQ(log.records().size(), 4u);
    const auto cells = summarize(log.records());
    ASSERT_EQ(cells.size(), 4u);
    for (const auto& c : cells) EXPECT_GE(c.dense_score, 0.0);
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sinkrouter::eval
