// The AVX2 span loops of the CPU decode attention (src/attention/cpu_span_kernels.h)
// against float64 references, every element, random rows of both storage types, every
// group size 1..8, both head sizes, span lengths around the 8-token batching.
//
// Tolerances: a float32 dot of D terms is within gamma_{D+4} * sum |q_d k_d| of the exact
// one (cpu::dot_error_factor); the vectorised exp within 3 ulp (its polynomial truncates
// at 6e-9 relative and the reduction is exact, so the float rounding of ~9 operations
// is what remains); the softmax-weighted V sums within 1e-5 relative to sum_i p_i |v_i|.
// The whole-decode path is held to the float64 reference by decode_dense_test.cpp too.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "attention/cpu_span_kernels.h"
#include "sinkrouter/core/dtype.h"

namespace sinkrouter {
namespace {

#if defined(SR_SPAN_AVX2)

TEST(SpanKernels, ExpIsWithin3UlpAndZeroBelowTheRange) {
  std::mt19937_64 rng(21);
  std::uniform_real_distribution<float> u(-87.f, 0.f);
  std::vector<float> xs = {0.f, -0.f, -1e-30f, -1e-8f, -0.3465f, -0.3466f, -0.6931472f, -1.f, -10.f, -86.99f, -87.f};
  for (int i = 0; i < 200000; ++i) xs.push_back(u(rng) * (i % 3 == 0 ? 0.01f : 1.f));
  for (size_t i = 0; i + 8 <= xs.size(); i += 8) {
    alignas(32) float y[8];
    _mm256_store_ps(y, cpu::exp_nonpositive(_mm256_loadu_ps(&xs[i])));
    for (int j = 0; j < 8; ++j) {
      const double want = std::exp(double(xs[i + j]));
      ASSERT_LE(std::fabs(y[j] - want), 3 * 1.1920929e-7 * want) << "exp(" << xs[i + j] << ") = " << y[j];
    }
  }
  alignas(32) float below[8] = {-87.01f, -88.f, -100.f, -1e4f, -1e30f, -INFINITY, -87.5f, -103.f};
  alignas(32) float y[8];
  _mm256_store_ps(y, cpu::exp_nonpositive(_mm256_load_ps(below)));
  for (int j = 0; j < 8; ++j) EXPECT_EQ(y[j], 0.f) << "exp(" << below[j] << ")";
}

struct SpanCase {
  int D, G, len;
  bool bf;
  std::string name() const {
    return "d" + std::to_string(D) + "_g" + std::to_string(G) + "_len" + std::to_string(len) + (bf ? "_bf16" : "_f16");
  }
};

// Rows laid out as in a page: token stride `stride` elements (other heads between rows).
struct SpanData {
  std::vector<uint16_t> store;
  std::vector<const uint16_t*> rows;
  int64_t vstride;
  std::vector<float> q;  // [G][D]
};

SpanData make_span(const SpanCase& c, std::mt19937_64& rng) {
  std::normal_distribution<float> n(0.f, 1.f);
  SpanData s;
  const int64_t stride = 3 * c.D;
  s.vstride = stride * c.len + 5 * c.D;
  s.store.resize(size_t(2 * s.vstride + stride * c.len));
  for (auto& v : s.store) v = c.bf ? to_bf16(n(rng)).bits : float_to_f16(n(rng));
  for (int i = 0; i < c.len; ++i) s.rows.push_back(s.store.data() + i * stride + c.D);
  s.q.resize(size_t(c.G) * c.D);
  for (auto& v : s.q) v = 0.3f * n(rng);
  return s;
}

double stored(uint16_t v, bool bf) { return bf ? double(bits_float(uint32_t(v) << 16)) : double(f16_to_float(v)); }

template <int D, int G, bool BF>
void check_case(const SpanCase& c) {
  std::mt19937_64 rng(std::hash<std::string>{}(c.name()));
  const SpanData s = make_span(c, rng);
  // Scores, every element, against float64.
  std::vector<float> scores(static_cast<size_t>(G * c.len), NAN);
  cpu::span_scores_avx2<D, G, BF>(s.q.data(), s.rows.data(), s.vstride, c.len, scores.data());
  std::vector<double> exact(static_cast<size_t>(G * c.len));
  for (int g = 0; g < G; ++g)
    for (int i = 0; i < c.len; ++i) {
      double dot = 0, mag = 0;
      for (int d = 0; d < D; ++d) {
        const double t = double(s.q[size_t(g) * D + d]) * stored(s.rows[size_t(i)][d], BF);
        dot += t;
        mag += std::fabs(t);
      }
      exact[size_t(g) * c.len + i] = dot;
      ASSERT_LE(std::fabs(scores[size_t(g) * c.len + i] - dot), cpu::dot_error_factor(D) * mag + 1e-30)
          << c.name() << " score g" << g << " i" << i;
    }
  // Softmax and V sums from a running state, against float64 from the same state and the
  // scores the kernel computed (their own rounding was checked above).
  for (size_t i = 0; i < exact.size(); ++i) exact[i] = scores[i];
  std::vector<float> m(G), l(G), acc(static_cast<size_t>(G * D));
  std::normal_distribution<float> n(0.f, 1.f);
  for (int g = 0; g < G; ++g) {
    m[size_t(g)] = g % 2 ? -INFINITY : float(exact[size_t(g) * c.len]) + n(rng);  // empty or running state
    l[size_t(g)] = g % 2 ? 0.f : 1.f + std::fabs(n(rng));
    for (int d = 0; d < D; ++d) acc[size_t(g) * D + d] = g % 2 ? 0.f : n(rng);
  }
  const std::vector<float> m0 = m, l0 = l, acc0 = acc;
  std::vector<float> vbuf(static_cast<size_t>(c.len * D));
  cpu::span_softmax_avx2<D>(scores.data(), G, c.len, m.data(), l.data(), acc.data());
  cpu::span_values_avx2<D, G, BF>(scores.data(), s.rows.data(), s.vstride, c.len, acc.data(), vbuf.data());
  for (int g = 0; g < G; ++g) {
    double mx = m0[size_t(g)];
    for (int i = 0; i < c.len; ++i) mx = std::max(mx, exact[size_t(g) * c.len + i]);
    const double a = std::isinf(m0[size_t(g)]) ? 0.0 : std::exp(double(m0[size_t(g)]) - mx);
    double lw = l0[size_t(g)] * a;
    std::vector<double> want(static_cast<size_t>(D)), mag(static_cast<size_t>(D));
    for (int d = 0; d < D; ++d) {
      want[size_t(d)] = acc0[size_t(g) * D + d] * a;
      mag[size_t(d)] = std::fabs(want[size_t(d)]);
    }
    for (int i = 0; i < c.len; ++i) {
      const double p = std::exp(exact[size_t(g) * c.len + i] - mx);
      lw += p;
      for (int d = 0; d < D; ++d) {
        const double v = stored(s.rows[size_t(i)][s.vstride + d], BF);
        want[size_t(d)] += p * v;
        mag[size_t(d)] += p * std::fabs(v);
      }
    }
    ASSERT_EQ(m[size_t(g)], float(mx)) << c.name() << " m g" << g;
    ASSERT_NEAR(l[size_t(g)], lw, 1e-5 * lw) << c.name() << " l g" << g;
    for (int d = 0; d < D; ++d)
      ASSERT_NEAR(acc[size_t(g) * D + d], want[size_t(d)], 1e-5 * mag[size_t(d)] + 1e-30)
          << c.name() << " acc g" << g << " d" << d;
  }
}

template <int D, bool BF>
void check_groups(int len) {
  check_case<D, 1, BF>({D, 1, len, BF});
  check_case<D, 2, BF>({D, 2, len, BF});
  check_case<D, 3, BF>({D, 3, len, BF});
  check_case<D, 4, BF>({D, 4, len, BF});
  check_case<D, 5, BF>({D, 5, len, BF});
  check_case<D, 6, BF>({D, 6, len, BF});
  check_case<D, 7, BF>({D, 7, len, BF});
  check_case<D, 8, BF>({D, 8, len, BF});
}

TEST(SpanKernels, ScoresSoftmaxAndValuesMatchFloat64) {
  for (int len : {1, 5, 8, 13, 64}) {
    check_groups<64, true>(len);
    check_groups<64, false>(len);
    check_groups<128, true>(len);
    check_groups<128, false>(len);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

#else

TEST(SpanKernels, NotBuiltWithoutAvx2) { GTEST_SKIP() << "AVX2 span kernels are not in this build"; }

#endif

}  // namespace
}  // namespace sinkrouter
