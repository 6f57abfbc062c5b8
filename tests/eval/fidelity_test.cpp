// Fidelity metrics from logits against hand-computed values and an independent float64
// computation on random logits of an odd vocabulary size.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "sinkrouter/core/error.h"
#include "sinkrouter/eval/fidelity.h"

namespace sinkrouter::eval {
namespace {

TEST(Fidelity, HandComputed) {
  // p = softmax([ln 3, 0]) = [3/4, 1/4], q = softmax([0, 0]) = [1/2, 1/2]:
  // KL = 3/4 ln(3/2) + 1/4 ln(1/2).
  const std::vector<float> p{std::log(3.0f), 0.0f}, q{0.0f, 0.0f};
  EXPECT_NEAR(kl_divergence(p, q), 0.75 * std::log(1.5) + 0.25 * std::log(0.5), 1e-7);
  // KL(q || p) = 1/2 ln(2/3) + 1/2 ln(2).
  EXPECT_NEAR(kl_divergence(q, p), 0.5 * std::log(2.0 / 3.0) + 0.5 * std::log(2.0), 1e-7);
  EXPECT_EQ(kl_divergence(q, q), 0.0);
  EXPECT_NEAR(log_prob(p, 0), std::log(0.75), 1e-7);
  EXPECT_NEAR(log_prob(p, 1), std::log(0.25), 1e-7);
  EXPECT_EQ(argmax(p), 0);
  EXPECT_EQ(argmax(std::vector<float>{1, 5, 5, 2}), 1);  // first maximum on ties

  // Two steps in two buckets: [0, 10) and [10, 20).
  FidelityAccumulator acc({0, 10, 20});
  acc.add(3, p, q, 1);   // argmax 0 vs 0 (tie -> 0): agree; NLL dense -ln 1/4, policy -ln 1/2
  acc.add(12, p, std::vector<float>{0.0f, 1.0f}, 0);  // argmax 0 vs 1: disagree
  const auto& b = acc.buckets();
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].steps, 1);
  EXPECT_EQ(b[0].top1_agreement(), 1.0);
  EXPECT_NEAR(b[0].ppl_dense(), 4.0, 1e-6);
  EXPECT_NEAR(b[0].ppl_policy(), 2.0, 1e-6);
  EXPECT_EQ(b[1].top1_agreement(), 0.0);
  // Bucket 2: q = softmax([0, 1]) = [1/(1+e), e/(1+e)]; KL = 3/4 ln(3/4 (1+e)) + 1/4 ln(1/4 (1+e)/e).
  const double e = std::exp(1.0);
  const double kl2 = 0.75 * std::log(0.75 * (1 + e)) + 0.25 * std::log(0.25 * (1 + e) / e);
  EXPECT_NEAR(b[1].kl_max, kl2, 1e-7);
  const FidelityBucket t = acc.total();
  EXPECT_EQ(t.steps, 2);
  EXPECT_EQ(t.top1_agreement(), 0.5);
  EXPECT_NEAR(t.kl_mean(), (0.75 * std::log(1.5) + 0.25 * std::log(0.5) + kl2) / 2, 1e-7);
  EXPECT_NEAR(t.kl_max, std::max(kl2, 0.75 * std::log(1.5) + 0.25 * std::log(0.5)), 1e-7);
  // ppl dense over both: exp((ln 4 + ln 4/3) / 2).
  EXPECT_NEAR(t.ppl_dense(), std::exp((std::log(4.0) + std::log(4.0 / 3.0)) / 2), 1e-6);
  // JSON round trip keeps every count.
  const auto back = FidelityAccumulator::from_json(acc.to_json());
  EXPECT_EQ(back.to_json().dump(), acc.to_json().dump());
}

TEST(Fidelity, RandomLogitsAgainstDirectFloat64) {
  std::mt19937 rng(99);
  std::normal_distribution<float> n(0.f, 3.f);
  for (int trial = 0; trial < 20; ++trial) {
    const size_t V = 1 + size_t(rng() % 997);  // odd sizes, 1 included
    std::vector<float> a(V), b(V);
    for (auto& x : a) x = n(rng);
    for (auto& x : b) x = n(rng);
    // Direct: normalise probabilities in float64 without the max shift.
    double za = 0, zb = 0;
    for (size_t i = 0; i < V; ++i) za += std::exp(double(a[i])), zb += std::exp(double(b[i]));
    double kl = 0;
    for (size_t i = 0; i < V; ++i) {
      const double pa = std::exp(double(a[i])) / za, pb = std::exp(double(b[i])) / zb;
      kl += pa * std::log(pa / pb);
    }
    EXPECT_NEAR(kl_divergence(a, b), kl, 1e-9 + 1e-9 * kl);
    // Shifting all logits by a constant changes nothing.
    std::vector<float> a_shift = a;
    for (auto& x : a_shift) x += 40.0f;
    EXPECT_NEAR(kl_divergence(a_shift, b), kl, 1e-5 + 1e-5 * kl);
    const size_t t = rng() % V;
    EXPECT_NEAR(log_prob(a, int64_t(t)), std::log(std::exp(double(a[t])) / za), 1e-9);
  }
}

TEST(Fidelity, ClearErrors) {
  const std::vector<float> ok{0.5f, 1.5f, -2.0f};
  auto expect_error = [](const std::function<void()>& f, const std::string& part) {
    try {
      f();
      FAIL() << "expected an Error containing '" << part << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_error([&] { kl_divergence(ok, std::vector<float>{1, 2}); }, "dense logits have 3 entries, policy logits 2");
  expect_error([&] { kl_divergence(ok, std::vector<float>{1, NAN, 2}); }, "policy logit 1 is nan");
  expect_error([&] { log_prob(ok, 3); }, "target token 3 outside the vocabulary of 3");
  expect_error([&] { FidelityAccumulator({5, 5}); }, "edges must increase");
  FidelityAccumulator acc({0, 8});
  expect_error([&] { acc.add(8, ok, ok, 0); }, "position 8 is outside the buckets [0, 8)");
  EXPECT_EQ(even_bucket_edges(100, 110, 4), (std::vector<int64_t>{100, 102, 105, 107, 110}));
  EXPECT_EQ(even_bucket_edges(0, 2, 4), (std::vector<int64_t>{0, 1, 2}));
}

}  // namespace
}  // namespace sinkrouter::eval
