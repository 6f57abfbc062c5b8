// Routed policies: the fast CPU run against the float64 run of the same plan, and the
// certificate against the exact attention: the exact skipped mass never exceeds delta
// and the exact output error never exceeds the stated bound.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "common/compare.h"
#include "sinkrouter/attention/decode.h"
#include "sinkrouter/kv/key_basis.h"
#include "sinkrouter/kv/synthetic_kv.h"

namespace sinkrouter {
namespace {

using testing::compare_to_reference;
using testing::tolerance_for;

AttentionPolicy random_policy(std::mt19937_64& rng, PolicyKind kind) {
  AttentionPolicy p;
  p.kind = kind;
  std::uniform_real_distribution<double> u(0, 1);
  p.mode = u(rng) < 0.5 ? RouterMode::Certified : RouterMode::Fast;
  p.epsilon = std::pow(10.0, -1 - 5 * u(rng));
  p.tau = std::pow(10.0, -1 - 6 * u(rng));
  p.window = 1 + int(u(rng) * 150);
  p.sink_tokens = int(u(rng) * 6);
  p.quest_budget = 16 + int(u(rng) * 400);
  p.blasst_threshold = std::pow(10.0, -1 - 6 * u(rng));
  return p;
}

SyntheticKVSpec random_spec(std::mt19937_64& rng, bool small) {
  std::uniform_int_distribution<int> pick(0, 1 << 20);
  SyntheticKVSpec s;
  s.num_kv_heads = 1 + pick(rng) % 3;
  s.group = 1 + pick(rng) % (small ? 4 : 8);
  s.head_dim = pick(rng) % 4 == 0 ? 128 : 64;
  s.dtype = pick(rng) % 2 ? DType::BF16 : DType::F16;
  const int pages[] = {1, 4, 16, 64, 256};
  s.page_size = pages[pick(rng) % 5];
  const int blocks[] = {8, 16, 32, 64};
  s.block_size = blocks[pick(rng) % 4];
  const int B = 1 + pick(rng) % 2;
  s.lengths.clear();
  for (int b = 0; b < B; ++b) s.lengths.push_back(1 + pick(rng) % (small ? 400 : 1500));
  // Planted sinks: usually position 0, sometimes others (a sink away from the start).
  s.sink_positions.clear();
  if (pick(rng) % 8 != 0) s.sink_positions.push_back(0);
  if (pick(rng) % 3 == 0) s.sink_positions.push_back(int32_t(pick(rng) % 300));
  s.sink_score = 4.f + float(pick(rng) % 160) / 10.f;
  s.sink_value_norm = float(pick(rng) % 100) / 100.f;
  s.key_scale = 0.5f + float(pick(rng) % 20) / 10.f;
  s.key_decay = float(pick(rng) % 3) * 2.f;
  s.quiet_block_fraction = float(pick(rng) % 4) / 4.f;
  return s;
}

// A random orthonormal basis [heads, D, D] (Gram-Schmidt of Gaussian rows in float64).
std::vector<float> random_basis(int heads, int D, std::mt19937_64& rng) {
  std::normal_distribution<double> n(0, 1);
  std::vector<float> basis(size_t(heads) * D * D);
  std::vector<double> m(size_t(D) * D);
  for (int h = 0; h < heads; ++h) {
    for (double& x : m) x = n(rng);
    for (int a = 0; a < D; ++a) {
      double* x = &m[size_t(a) * D];
      for (int p = 0; p < a; ++p) {
        const double* y = &m[size_t(p) * D];
        double d = 0;
        for (int k = 0; k < D; ++k) d += x[k] * y[k];
        for (int k = 0; k < D; ++k) x[k] -= d * y[k];
      }
      double s = 0;
      for (int k = 0; k < D; ++k) s += x[k] * x[k];
      for (int k = 0; k < D; ++k) basis[size_t(h) * D * D + size_t(a) * D + k] = float(x[k] / std::sqrt(s));
    }
  }
  return basis;
}

// One random case; returns false (with a message) when the certificate fails. With
// basis_bounds, a sinkrouter policy bounds blocks in a key basis (bound basis or min, any
// spread): fitted on the first sequence's keys every 50th case (the fit is slow), else a
// random rotation (any orthonormal basis gives a valid bound).
void check_certificate_case(uint64_t seed, PolicyKind kind, bool basis_bounds = false) {
  std::mt19937_64 rng(seed);
  const SyntheticKVSpec spec = random_spec(rng, /*small=*/true);
  auto r = make_synthetic_kv(spec, rng);
  AttentionPolicy policy = random_policy(rng, kind);
  if (basis_bounds) {
    std::uniform_real_distribution<double> u(0, 1);
    policy.bound = u(rng) < 0.5 ? BoundKind::Basis : BoundKind::Min;
    policy.spread = u(rng) < 0.3 ? 1.0 : u(rng);
    // A few random bases per shape, made once (Gram-Schmidt of 128 x 128 is not free).
    static std::map<std::pair<int, int>, std::vector<std::vector<float>>> bases;
    auto& pool = bases[{spec.num_kv_heads, spec.head_dim}];
    if (pool.size() < 4) pool.push_back(random_basis(spec.num_kv_heads, spec.head_dim, rng));
    r.cache->set_key_basis(seed % 50 == 0 ? fit_key_basis(r.batch.view, 0) : pool[seed % pool.size()]);
    r.batch = r.cache->batch(r.seqs);
  }
  const int B = int(spec.lengths.size()), QH = spec.num_kv_heads * spec.group, D = spec.head_dim;
  const float scale = 1.f / std::sqrt(float(D));
  RoutePlan plan = plan_decode(r.q.view(), r.batch.view, policy, scale);
  HostTensor out(DType::F32, {B, QH, D}), routed(DType::F64, {B, QH, D}), exact(DType::F64, {B, QH, D});
  static ThreadPool pool(2);
  decode_cpu(r.q.view(), r.batch.view, plan, out.view(), pool);
  decode_reference(r.q.view(), r.batch.view, plan, routed.view());
  std::vector<double> skipped;
  decode_exact(r.q.view(), r.batch.view, scale, exact.view(), &plan, &skipped);
  for (int b = 0; b < B; ++b)
    for (int qh = 0; qh < QH; ++qh) {
      const size_t qi = size_t(b) * QH + size_t(qh);
      ASSERT_LE(skipped[qi], double(plan.delta[qi]) + 1e-300)
          << "seed " << seed << " " << policy.describe() << " b" << b << " qh" << qh;
      if (kind == PolicyKind::SinkRouter && policy.mode == RouterMode::Certified)
        ASSERT_LE(plan.delta[qi], policy.epsilon * (1 + 1e-5)) << "seed " << seed;
      double err2 = 0, kept2 = 0;
      for (int d = 0; d < D; ++d) {
        const double e = exact.view().ptr<double>()[exact.view().offset(b, qh, d)];
        const double o = routed.view().ptr<double>()[routed.view().offset(b, qh, d)];
        err2 += (e - o) * (e - o);
        kept2 += o * o;
      }
      const double bound = plan.skipped_v_bound[qi] + plan.delta[qi] * std::sqrt(kept2);
      ASSERT_LE(std::sqrt(err2), bound * (1 + 1e-6) + 1e-12)
          << "seed " << seed << " " << policy.describe() << " delta " << plan.delta[qi];
      // The statistic the run reports covers this head too (it uses the float32 output).
      const HeadStats& st = plan.stats[size_t(b) * spec.num_kv_heads + size_t(qh / spec.group)];
      ASSERT_LE(std::sqrt(err2), st.output_error_bound * (1 + 1e-4) + 1e-6) << "seed " << seed;
    }
  // The fast run computes what the float64 run of the same plan computes.
  ASSERT_EQ(compare_to_reference(out.view(), routed.view(), tolerance_for(DType::F32)), "")
      << "seed " << seed << " " << policy.describe();
}

// 10,000+ random cases over every routed policy, planted sinks included.
TEST(Certificate, IsATrueBoundOnRandomCases) {
  const PolicyKind kinds[] = {PolicyKind::SinkRouter, PolicyKind::SinkRouter, PolicyKind::Quest,
                              PolicyKind::Streaming, PolicyKind::Blasst};
  for (uint64_t seed = 0; seed < 10500; ++seed) {
    check_certificate_case(seed, kinds[seed % 5]);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

// 10,000 more sinkrouter cases whose blocks are bounded in a key basis (bound basis or
// min, certified and fast at any spread): the certificate still holds.
TEST(Certificate, BasisBoundsAreTrueBoundsOnRandomCases) {
  for (uint64_t seed = 20000; seed < 30000; ++seed) {
    check_certificate_case(seed, PolicyKind::SinkRouter, /*basis_bounds=*/true);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(SinkRouter, EpsilonZeroEqualsDense) {
  for (uint64_t seed = 100; seed < 140; ++seed) {
    std::mt19937_64 rng(seed);
    SyntheticKVSpec spec = random_spec(rng, false);
    auto r = make_synthetic_kv(spec, rng);
    const int B = int(spec.lengths.size()), QH = spec.num_kv_heads * spec.group, D = spec.head_dim;
    const float scale = 1.f / std::sqrt(float(D));
    AttentionPolicy routed;
    routed.kind = PolicyKind::SinkRouter;
    routed.mode = RouterMode::Certified;
    routed.epsilon = 0;
    HostTensor a(DType::F32, {B, QH, D}), dense_out(DType::F32, {B, QH, D}), exact(DType::F64, {B, QH, D});
    auto stats = decode_attention(r.q.view(), r.batch.view, routed, scale, a.view());
    decode_attention(r.q.view(), r.batch.view, AttentionPolicy{}, scale, dense_out.view());
    decode_exact(r.q.view(), r.batch.view, scale, exact.view());
    const HeadStats total = accumulate(stats);
    EXPECT_EQ(total.blocks_skipped, 0) << seed;
    EXPECT_EQ(total.delta, 0.f) << seed;
    EXPECT_EQ(compare_to_reference(a.view(), exact.view(), tolerance_for(DType::F32)), "") << seed;
    for (int64_t i = 0; i < a.numel(); ++i) ASSERT_NEAR(a.view().load(i), dense_out.view().load(i), 1e-5f);
  }
}

TEST(SinkRouter, SkipsBlocksAroundAPlantedSink) {
  std::mt19937_64 rng(3);
  SyntheticKVSpec spec;
  spec.num_kv_heads = 2;
  spec.group = 4;
  spec.lengths = {8192};
  spec.sink_positions = {0};
  spec.sink_score = 20.f;
  spec.key_scale = 1.f;
  spec.key_decay = 4.f;               // anisotropic keys, as trained models have
  spec.quiet_block_fraction = 0.75f;  // three blocks in four hold dormant content
  auto r = make_synthetic_kv(spec, rng);
  AttentionPolicy p;
  p.kind = PolicyKind::SinkRouter;
  p.mode = RouterMode::Certified;
  p.epsilon = 1e-2;
  HostTensor out(DType::F32, {1, 8, 64});
  RoutePlan plan = plan_decode(r.q.view(), r.batch.view, p, 0.125f);
  decode_cpu(r.q.view(), r.batch.view, plan, out.view());
  const HeadStats t = accumulate(plan.stats);
  EXPECT_GT(t.blocks_skipped, t.blocks_total / 2) << "a dominant sink should let the quiet blocks go";
  EXPECT_LT(t.bytes_read(), t.bytes_dense / 2);
  EXPECT_LE(t.delta, 1e-2f);
  // Bytes are accounted by kind: summaries + anchors/window + kept blocks.
  const int64_t tb = r.batch.view.token_bytes();
  for (const HeadStats& s : plan.stats) {
    EXPECT_EQ(s.bytes_summary, s.blocks_total * r.batch.view.summary_bytes());
    EXPECT_EQ(s.bytes_blocks % tb, 0);
    EXPECT_EQ(s.bytes_blocks / tb <= (s.blocks_total - s.blocks_skipped) * 64, true);
  }
}

TEST(Streaming, ReadsOnlySinksAndWindow) {
  std::mt19937_64 rng(4);
  SyntheticKVSpec spec;
  spec.lengths = {1000};
  auto r = make_synthetic_kv(spec, rng);
  AttentionPolicy p;
  p.kind = PolicyKind::Streaming;
  p.sink_tokens = 4;
  p.window = 100;
  RoutePlan plan = plan_decode(r.q.view(), r.batch.view, p, 0.125f);
  // Window start: 1000 - 100 = 900, aligned down to the block grid (64): 896.
  const int64_t tb = r.batch.view.token_bytes();
  EXPECT_EQ(plan.stats[0].bytes_anchor_window, (4 + 1000 - 896) * tb);
  EXPECT_EQ(plan.stats[0].bytes_blocks, 0);
  EXPECT_EQ(plan.stats[0].blocks_skipped, 896 / 64);
}

TEST(Quest, KeepsTheBudget) {
  std::mt19937_64 rng(5);
  SyntheticKVSpec spec;
  spec.lengths = {2000};
  auto r = make_synthetic_kv(spec, rng);
  AttentionPolicy p;
  p.kind = PolicyKind::Quest;
  p.quest_budget = 512;
  p.window = 64;
  RoutePlan plan = plan_decode(r.q.view(), r.batch.view, p, 0.125f);
  const int64_t tb = r.batch.view.token_bytes();
  for (const HeadStats& s : plan.stats)
    EXPECT_LE((s.bytes_blocks + s.bytes_anchor_window) / tb, 512);
}

TEST(DecodeErrors, BadShapesAndDtypesAreClear) {
  std::mt19937_64 rng(6);
  SyntheticKVSpec spec;
  spec.lengths = {50};
  auto r = make_synthetic_kv(spec, rng);
  AttentionPolicy dense;
  auto expect_error = [](auto fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  // Query with the wrong head count (5 is not a multiple of 2 KV heads).
  HostTensor q5(DType::F32, {1, 5, 64});
  expect_error([&] { plan_decode(q5.view(), r.batch.view, dense, 0.1f); }, "not a multiple");
  // Wrong head_dim in q.
  HostTensor q96(DType::F32, {1, 4, 96});
  expect_error([&] { plan_decode(q96.view(), r.batch.view, dense, 0.1f); }, "does not match");
  // Unsupported head_dim in the cache.
  PagedKV odd = r.batch.view;
  odd.head_dim = 96;
  expect_error([&] { plan_decode(q96.view(), odd, dense, 0.1f); }, "head_dim 96 is not supported (expected 64 or 128)");
  // f32 KV is not a KV dtype.
  PagedKV f32 = r.batch.view;
  f32.dtype = DType::F32;
  expect_error([&] { plan_decode(r.q.view(), f32, dense, 0.1f); }, "KV dtype f32 is not supported");
  // Output of the wrong shape or dtype.
  RoutePlan plan = plan_decode(r.q.view(), r.batch.view, dense, 0.1f);
  HostTensor bad_out(DType::F32, {1, 4, 32});
  expect_error([&] { decode_cpu(r.q.view(), r.batch.view, plan, bad_out.view()); }, "decode: out");
  HostTensor f64_out(DType::F64, {1, 4, 64});
  expect_error([&] { decode_cpu(r.q.view(), r.batch.view, plan, f64_out.view()); }, "dtype f64 is not supported");
  // Bad policy parameters and names.
  AttentionPolicy bad;
  bad.kind = PolicyKind::SinkRouter;
  bad.epsilon = 2;
  expect_error([&] { plan_decode(r.q.view(), r.batch.view, bad, 0.1f); }, "epsilon");
  expect_error([&] { parse_policy_kind("h2o"); }, "unknown attention policy 'h2o'");
  // A routed policy on a cache without summaries.
  PagedKV bare = r.batch.view;
  bare.summaries = nullptr;
  AttentionPolicy routed;
  routed.kind = PolicyKind::SinkRouter;
  expect_error([&] { plan_decode(r.q.view(), bare, routed, 0.1f); }, "needs block summaries");
}

}  // namespace
}  // namespace sinkrouter
