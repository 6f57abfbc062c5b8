// The engine against Hugging Face transformers (float32, CPU, the same GGUF): the golden
// file tests/data/golden/smollm2_golden.json, made by tools/make_golden.py. Checks the
// prompt tokens, the top-10 logits at every prompt position (decode path, teacher
// forced, and the prefill path at the last position), and 64-token greedy continuations.
//
// Tolerances on the logits, and why (docs/ENGINE.md has the measurements). The weights
// are the same dequantised values in both, so what differs is our arithmetic:
//  - matmul f32, f16 KV: float32 sums in another order, and K/V stored with 2^-11
//    relative rounding. A float64 numpy model with only that rounding moves logits by
//    7e-4 at position 0; measured over all golden positions: 0.025. Tolerance 0.05.
//  - matmul f32, bf16 KV (the default cache): 2^-9 relative rounding of K/V, four times
//    f16's: measured 0.12. Tolerance 0.2.
//  - matmul q8 (llama.cpp-style int8 activations, bf16 KV): every activation block of 32
//    is rounded to 1/254 of its largest value before each of 7 matmuls in 30 layers.
//    That rounding is discontinuous: a 1e-7 change upstream (float sums in another
//    order) flips an activation to the neighbouring int8 step, so the largest error is
//    a heavy-tailed, chaotic quantity. Measured maxima: 0.80, 0.92, then 1.15 after the
//    AVX2 attention loops changed only the order of float sums (the f32 paths' errors
//    did not move). So q8 is checked on its mean error (measured 0.143, bound 0.2) with
//    the maximum bounded at 2.0, and greedy agreement over at least 128 tokens.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "sinkrouter/engine/engine.h"
#include "sinkrouter/model/gguf.h"

namespace sinkrouter {
namespace {


const std::string kModel = std::string(SINKROUTER_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";

const nlohmann::json& golden() {
  static nlohmann::json j = [] {
    std::ifstream in(std::string(SINKROUTER_TEST_DATA) + "/golden/smollm2_golden.json");
    return nlohmann::json::parse(in);
  }();
  return j;
}

struct Errors {
  double max_logit_err = 0;
  double sum_logit_err = 0;    // over every compared logit, for the mean
  long compared = 0;
  int top1_mismatch = 0;       // positions whose top-1 differs while the golden margin exceeds the tolerance
  int greedy_checked = 0;      // greedy tokens compared
  int greedy_mismatch = 0;
};

// Compares our logits with the golden top-k at one position.
void compare_position(const std::vector<float>& ours, const nlohmann::json& pos, double tol, Errors& e) {
  const auto ids = pos["ids"].get<std::vector<int>>();
  const auto ref = pos["logits"].get<std::vector<double>>();
  for (size_t i = 0; i < ids.size(); ++i) {
    const double err = std::fabs(ours[size_t(ids[i])] - ref[i]);
    e.max_logit_err = std::max(e.max_logit_err, err);
    e.sum_logit_err += err;
    ++e.compared;
  }
  const int our_top = int(std::max_element(ours.begin(), ours.end()) - ours.begin());
  if (our_top != ids[0] && ref[0] - ref[1] > 2 * tol) ++e.top1_mismatch;
}

Errors check_model(const std::string& matmul, DType kv, double tol) {
  EngineOptions o;
  o.model_path = kModel;
  o.matmul = matmul;
  o.kv_dtype = kv;
  o.max_context = 1024;
  Engine engine(o);
  Errors e;
  for (const auto& p : golden()["prompts"]) {
    const auto tokens = p["tokens"].get<std::vector<int32_t>>();
    // Our tokenizer must give transformers' ids.
    EXPECT_EQ(engine.tokenizer().encode(p["text"].get<std::string>(), false, true), tokens) << p["name"];
    // Decode path, teacher forced: logits of every position.
    auto s = engine.new_session(AttentionPolicy{});
    std::vector<float> logits = s->prefill({tokens[0]});
    compare_position(logits, p["positions"][0], tol, e);
    for (size_t i = 1; i < tokens.size(); ++i) {
      logits = s->decode(tokens[i]);
      compare_position(logits, p["positions"][i], tol, e);
    }
    // Prefill path: the last position.
    auto s2 = engine.new_session(AttentionPolicy{});
    logits = s2->prefill(tokens);
    compare_position(logits, p["positions"][tokens.size() - 1], tol, e);
    // Greedy continuation: ours must pick the reference token at every step; a different
    // pick is accepted only at a near-tie in the reference (top two within tol), after
    // which the continuations legitimately part and the comparison stops.
    const auto greedy = p["greedy"].get<std::vector<int32_t>>();
    const auto margin = p["greedy_top2_margin"].get<std::vector<double>>();
    for (size_t i = 0; i < greedy.size(); ++i) {
      const int32_t ours = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      if (ours != greedy[i]) {
        if (margin[i] >= tol) ++e.greedy_mismatch;
        break;
      }
      ++e.greedy_checked;
      if (i + 1 < greedy.size()) logits = s2->decode(greedy[i]);
    }
  }
  return e;
}

class Golden : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::ifstream(kModel)) GTEST_SKIP() << kModel << " is missing: run tools/fetch_model.sh (make test does)";
    ASSERT_EQ(golden()["format"], "sinkrouter-golden");
    ASSERT_EQ(golden()["version"], 1);
    ASSERT_EQ(golden()["model_sha256"].get<std::string>(), sha256_file(kModel))
        << "the golden file was made from another model file";
  }
};

// tol: the largest logit error allowed, and the near-tie margin for greedy and top-1;
// mean_tol: the mean error allowed (checked when positive).
void expect_matches(const std::string& matmul, DType kv, double tol, int min_greedy, double mean_tol = 0) {
  const Errors e = check_model(matmul, kv, tol);
  const double mean = e.compared ? e.sum_logit_err / double(e.compared) : 0;
  std::printf("matmul %s, %s KV: max logit error %.4g (tolerance %.3g), mean %.4g, greedy tokens checked %d\n",
              matmul.c_str(), dtype_name(kv), e.max_logit_err, tol, mean, e.greedy_checked);
  ASSERT_GT(e.compared, 0);
  EXPECT_LE(e.max_logit_err, tol);
  if (mean_tol > 0) EXPECT_LE(mean, mean_tol);
  EXPECT_EQ(e.top1_mismatch, 0);
  EXPECT_EQ(e.greedy_mismatch, 0);
  EXPECT_GE(e.greedy_checked, min_greedy);
}

TEST_F(Golden, ExactMatmulF16CacheMatchesTransformers) { expect_matches("f32", DType::F16, 0.05, 360); }
TEST_F(Golden, ExactMatmulBf16CacheMatchesTransformers) { expect_matches("f32", DType::BF16, 0.2, 6 * 64); }
TEST_F(Golden, Int8ActivationsStayWithinTheirBound) { expect_matches("q8", DType::BF16, 2.0, 128, 0.2); }

}  // namespace
}  // namespace sinkrouter
