// The decode GEMV against float64 on random inputs, every version (V1, V2 and Chain,
// cuda_ops.h), with each prologue / epilogue pair it is used with (1 to 11 tokens: one and
// two launch groups; widths 96 and 136, whose chunks of 8 do not divide evenly among the
// lanes of a row, SmolLM2's 576 and 1536, and 3200, past what V2 holds in registers); chains
// of several stages against V1; dependent launches under programmatic dependent launch,
// direct and from a CUDA graph; and the shape checks.
//
// Tolerances: float32 sums of n products carry a relative error of a few n * 2^-24 of the
// sum of absolute terms; we allow 2e-5 * (sum |terms| + |ref|) + 1e-6.
#include <gtest/gtest.h>

#if defined(SINKROUTER_HAVE_CUDA)

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>

#include "cuda_ops_test_util.h"
#include "core/cuda_graph.h"
#include "model/cuda_ops.h"

namespace sinkrouter {
namespace {

using namespace testing;  // sinkrouter::testing: DeviceBuffer, upload, download, ...

// What every GEMV of these tests sets: weights [out, in] (bf16), T tokens of x (float) with
// row stride ldx, RMSNorm's epsilon; the caller adds the prologue's and epilogue's fields.
cuda::GemvArgs gemv_args(const DeviceBuffer& w, int out, int in, int T, const DeviceBuffer& x, int64_t ldx) {
  cuda::GemvArgs g;
  g.w = static_cast<const __nv_bfloat16*>(w.get());
  g.out = out;
  g.in = in;
  g.tokens = T;
  g.x = static_cast<const float*>(x.get());
  g.ldx = ldx;
  g.eps = 1e-5f;
  return g;
}

// Captures what `enqueue` launches on `stream` into a CUDA graph, replays it once and waits.
void replay_as_graph(cudaStream_t stream, const std::function<void()>& enqueue) {
  cudaGraphExec_t exec = cuda::capture_graph(stream, enqueue);
  const cudaError_t launched = cudaGraphLaunch(exec, stream);
  const cudaError_t done = cudaStreamSynchronize(stream);
  cudaGraphExecDestroy(exec);
  if (launched != cudaSuccess || done != cudaSuccess)
    throw Error(fmt::format("the graph's replay failed: {}", cudaGetErrorString(launched != cudaSuccess ? launched : done)));
}

struct GemvCase {
  cuda::GemvIn in;
  cuda::GemvOut out;
  int tokens;
  int width = 96;  // the input width `in`
  cuda::GemvVersion version = cuda::GemvVersion::V2;
};

class CudaGemv : public ::testing::TestWithParam<GemvCase> {};

TEST_P(CudaGemv, MatchesFloat64) {
  SR_REQUIRE_CUDA_DEVICE();
  const GemvCase gc = GetParam();
  std::mt19937_64 rng(uint64_t(gc.tokens) * 17 + uint64_t(gc.in) * 3 + uint64_t(gc.out) + uint64_t(gc.width) * 101);
  const int D = 64, q_dim = 2 * D, kv_dim = D;
  const int rows = gc.out == cuda::GemvOut::QkvRope ? q_dim + 2 * kv_dim : 250;
  const int in = gc.width, T = gc.tokens;
  const bool swiglu = gc.in == cuda::GemvIn::SwiGlu;
  const int ldx = swiglu ? 2 * in : in + 8;  // a row stride other than the width, where allowed
  const int ldy = rows + 6;
  const std::vector<uint16_t> w = to_bf16_bits(normal_vector(size_t(rows) * in, rng, 0.2f));
  const std::vector<float> x = normal_vector(size_t(T) * ldx, rng, 1.5f);
  std::vector<float> gain = normal_vector(size_t(in), rng);
  const std::vector<float> y0 = normal_vector(size_t(T) * ldy, rng);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (int t = 0; t < T; ++t) pos[size_t(t)] = int32_t(rng() % 600000);
  std::vector<double> inv_freq(D / 2);
  for (int i = 0; i < D / 2; ++i) inv_freq[size_t(i)] = std::pow(100000.0, -2.0 * i / D);

  DeviceBuffer wd = upload(w), xd = upload(x), gd = upload(gain), yd = upload(y0), pd = upload(pos),
               fd = upload(inv_freq);
  DeviceBuffer qo(size_t(T) * q_dim * 4), ko(size_t(T) * kv_dim * 4), vo(size_t(T) * kv_dim * 4);
  testing::poison(qo);
  testing::poison(ko);
  testing::poison(vo);
  if (gc.out == cuda::GemvOut::Store) testing::poison(yd);
  cuda::GemvArgs a = gemv_args(wd, rows, in, T, xd, ldx);
  a.gain = static_cast<const float*>(gd.get());
  a.y = static_cast<float*>(yd.get());
  a.ldy = ldy;
  a.q_out = static_cast<float*>(qo.get());
  a.k_out = static_cast<float*>(ko.get());
  a.v_out = static_cast<float*>(vo.get());
  a.q_dim = q_dim;
  a.kv_dim = kv_dim;
  a.positions = static_cast<const int32_t*>(pd.get());
  a.rope.inv_freq = static_cast<const double*>(fd.get());
  a.rope.head_dim = D;
  cuda::gemv(a, gc.in, gc.out, nullptr, gc.version);
  SR_ASSERT_CUDA(cudaDeviceSynchronize());

  const std::vector<float> y = download<float>(yd, y0.size()), q = download<float>(qo, size_t(T) * q_dim),
                           k = download<float>(ko, size_t(T) * kv_dim), v = download<float>(vo, size_t(T) * kv_dim);
  for (int t = 0; t < T; ++t) {
    // The transformed input in float64.
    std::vector<double> xin(static_cast<size_t>(in));
    const float* xt = &x[size_t(t) * ldx];
    double ss = 0;
    for (int i = 0; i < in; ++i) ss += double(xt[i]) * xt[i];
    for (int i = 0; i < in; ++i) {
      if (gc.in == cuda::GemvIn::RmsNorm)
        xin[size_t(i)] = xt[i] / std::sqrt(ss / in + 1e-5) * gain[size_t(i)];
      else if (swiglu)
        xin[size_t(i)] = xt[i] / (1 + std::exp(-double(xt[i]))) * xt[in + i];
      else
        xin[size_t(i)] = xt[i];
    }
    std::vector<double> ref(static_cast<size_t>(rows)), sum_abs(static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r)
      for (int i = 0; i < in; ++i) {
        const double p = bf16_value(w[size_t(r) * in + size_t(i)]) * xin[size_t(i)];
        ref[size_t(r)] += p;
        sum_abs[size_t(r)] += std::fabs(p);
      }
    for (int r = 0; r < rows; r += 2) {
      const std::string where = fmt::format("token {} rows {},{}", t, r, r + 1);
      if (gc.out == cuda::GemvOut::Store || gc.out == cuda::GemvOut::Accumulate) {
        const double base = gc.out == cuda::GemvOut::Accumulate ? 1.0 : 0.0;
        for (int e = 0; e < 2; ++e)
          expect_close(y[size_t(t) * ldy + size_t(r + e)], base * y0[size_t(t) * ldy + size_t(r + e)] + ref[size_t(r + e)],
                       sum_abs[size_t(r + e)] + 1, where);
        continue;
      }
      double a0 = ref[size_t(r)], a1 = ref[size_t(r + 1)];
      if (r < q_dim + kv_dim) {  // rotate in float64
        const double angle = double(pos[size_t(t)]) * inv_freq[size_t((r % D) / 2)];
        const double c = std::cos(angle), s = std::sin(angle), b0 = a0 * c - a1 * s, b1 = a0 * s + a1 * c;
        a0 = b0;
        a1 = b1;
      }
      const float* got = r < q_dim ? &q[size_t(t) * q_dim + size_t(r)]
                         : r < q_dim + kv_dim ? &k[size_t(t) * kv_dim + size_t(r - q_dim)]
                                              : &v[size_t(t) * kv_dim + size_t(r - q_dim - kv_dim)];
      const double scale = sum_abs[size_t(r)] + sum_abs[size_t(r + 1)];
      expect_close(got[0], a0, scale, where);
      expect_close(got[1], a1, scale, where);
    }
  }
  // Columns of y past `rows` (the row stride's padding) are untouched: still poisoned
  // after a store, still the initial values after an accumulation.
  for (int t = 0; t < T && gc.out != cuda::GemvOut::QkvRope; ++t)
    for (int r = rows; r < ldy; ++r) {
      const float got = y[size_t(t) * ldy + size_t(r)];
      if (gc.out == cuda::GemvOut::Store)
        ASSERT_TRUE(std::isnan(got)) << "padding column " << r << " of token " << t << " was written";
      else
        ASSERT_EQ(got, y0[size_t(t) * ldy + size_t(r)]) << "padding column " << r << " of token " << t;
    }
}

std::string gemv_case_name(const ::testing::TestParamInfo<GemvCase>& info) {
  static const char* const in[] = {"plain", "rmsnorm", "swiglu"};
  static const char* const out[] = {"store", "accumulate", "qkvrope"};
  return fmt::format("{}_{}_t{}_in{}", in[int(info.param.in)], out[int(info.param.out)], info.param.tokens,
                     info.param.width);
}

// Every case at width 96, and the engine's shapes and the awkward widths, for one version.
std::vector<GemvCase> gemv_cases(cuda::GemvVersion v) {
  using In = cuda::GemvIn;
  using Out = cuda::GemvOut;
  return {{In::RmsNorm, Out::QkvRope, 1, 96, v},     {In::RmsNorm, Out::QkvRope, 11, 96, v},
          {In::Plain, Out::Accumulate, 3, 96, v},    {In::RmsNorm, Out::Store, 2, 96, v},
          {In::RmsNorm, Out::Store, 9, 96, v},       {In::SwiGlu, Out::Accumulate, 1, 96, v},
          {In::SwiGlu, Out::Accumulate, 8, 96, v},   {In::Plain, Out::Store, 5, 96, v},
          {In::RmsNorm, Out::QkvRope, 1, 576, v},    {In::RmsNorm, Out::QkvRope, 3, 136, v},
          {In::RmsNorm, Out::QkvRope, 8, 1536, v},   {In::RmsNorm, Out::QkvRope, 2, 3200, v},
          {In::RmsNorm, Out::Store, 1, 576, v},      {In::RmsNorm, Out::Store, 8, 3200, v},
          {In::Plain, Out::Accumulate, 1, 576, v},   {In::Plain, Out::Store, 4, 136, v},
          {In::SwiGlu, Out::Accumulate, 1, 1536, v}, {In::SwiGlu, Out::Accumulate, 5, 3200, v},
          {In::SwiGlu, Out::Accumulate, 2, 136, v}};
}

INSTANTIATE_TEST_SUITE_P(V1, CudaGemv, ::testing::ValuesIn(gemv_cases(cuda::GemvVersion::V1)), gemv_case_name);
INSTANTIATE_TEST_SUITE_P(V2, CudaGemv, ::testing::ValuesIn(gemv_cases(cuda::GemvVersion::V2)), gemv_case_name);
INSTANTIATE_TEST_SUITE_P(Chain, CudaGemv, ::testing::ValuesIn(gemv_cases(cuda::GemvVersion::Chain)), gemv_case_name);

// A chain of the engine's four stages (o: y += Wo a, gate|up: g = Wgu rms(y), down:
// y += Wd swiglu(g), QKV: rms(y) -> q, k, v with RoPE) in one launch, `rounds` launches
// back to back on a created stream (each reads the y the one before left, every barrier
// word reused: the counter must come back to zero), directly and replayed from a CUDA graph,
// against the same GEMVs launched one by one on version 1. The chain does V1's arithmetic in
// V1's order except the RMSNorm's sum of squares (12 warps add it, not 4), so outputs agree
// to float32 rounding: 1e-5 of the largest output of the array (a stage that read a stale
// or poisoned input would be off by O(1) or NaN). Token counts 1, 3, 8 and 11 (two slices).
TEST(CudaGemvChain, FourStagesMatchVersionOne) {
  SR_REQUIRE_CUDA_DEVICE();
  const int E = 576, F = 1536, D = 64, QD = 9 * D, KD = 3 * D, rounds = 3;
  std::mt19937_64 rng(23);
  auto weights = [&](int out, int in) { return to_bf16_bits(normal_vector(size_t(out) * in, rng, 0.5f / std::sqrt(float(in)))); };
  const std::vector<uint16_t> wo = weights(E, QD), wgu = weights(2 * F, E), wd = weights(E, F), wqkv = weights(QD + 2 * KD, E);
  const std::vector<float> g1 = normal_vector(size_t(E), rng), g2 = normal_vector(size_t(E), rng);
  std::vector<double> inv_freq(D / 2);
  for (int i = 0; i < D / 2; ++i) inv_freq[size_t(i)] = std::pow(100000.0, -2.0 * i / D);
  DeviceBuffer wod = upload(wo), wgud = upload(wgu), wdd = upload(wd), wqkvd = upload(wqkv), g1d = upload(g1),
               g2d = upload(g2), fd = upload(inv_freq), barrier(sizeof(unsigned));
  SR_ASSERT_CUDA(cudaMemset(barrier.get(), 0, sizeof(unsigned)));
  cudaStream_t stream = nullptr;
  SR_ASSERT_CUDA(cudaStreamCreate(&stream));
  for (int T : {1, 3, 8, 11}) {
    SCOPED_TRACE(fmt::format("{} tokens", T));
    const std::vector<float> a0 = normal_vector(size_t(T) * QD, rng), y0 = normal_vector(size_t(T) * E, rng);
    std::vector<int32_t> pos(static_cast<size_t>(T));
    for (int32_t& p : pos) p = int32_t(rng() % 600000);
    DeviceBuffer ad = upload(a0), yd(size_t(T) * E * 4), gud(size_t(T) * 2 * F * 4), pd = upload(pos),
                 qo(size_t(T) * QD * 4), ko(size_t(T) * KD * 4), vo(size_t(T) * KD * 4);
    auto arg = [&](const DeviceBuffer& w, int out, int in, const DeviceBuffer& x, int64_t ldx) {
      return gemv_args(w, out, in, T, x, ldx);
    };
    cuda::GemvStage st[4];
    st[0] = {arg(wod, E, QD, ad, QD), cuda::GemvIn::Plain, cuda::GemvOut::Accumulate};
    st[0].args.y = static_cast<float*>(yd.get());
    st[0].args.ldy = E;
    st[1] = {arg(wgud, 2 * F, E, yd, E), cuda::GemvIn::RmsNorm, cuda::GemvOut::Store};
    st[1].args.gain = static_cast<const float*>(g1d.get());
    st[1].args.y = static_cast<float*>(gud.get());
    st[1].args.ldy = 2 * F;
    st[2] = {arg(wdd, E, F, gud, 2 * F), cuda::GemvIn::SwiGlu, cuda::GemvOut::Accumulate};
    st[2].args.y = static_cast<float*>(yd.get());
    st[2].args.ldy = E;
    st[3] = {arg(wqkvd, QD + 2 * KD, E, yd, E), cuda::GemvIn::RmsNorm, cuda::GemvOut::QkvRope};
    st[3].args.gain = static_cast<const float*>(g2d.get());
    st[3].args.q_out = static_cast<float*>(qo.get());
    st[3].args.k_out = static_cast<float*>(ko.get());
    st[3].args.v_out = static_cast<float*>(vo.get());
    st[3].args.q_dim = QD;
    st[3].args.kv_dim = KD;
    st[3].args.positions = static_cast<const int32_t*>(pd.get());
    st[3].args.rope = {static_cast<const double*>(fd.get()), D};

    auto reset = [&] {
      SR_ASSERT_CUDA(cudaMemcpy(yd.get(), y0.data(), y0.size() * sizeof(float), cudaMemcpyHostToDevice));
      testing::poison(gud);
      testing::poison(qo);
      testing::poison(ko);
      testing::poison(vo);
    };
    auto outputs = [&] {
      if (cudaStreamSynchronize(stream) != cudaSuccess) throw Error("the GEMVs failed on the device");
      std::vector<float> r = download<float>(yd, size_t(T) * E);
      for (const DeviceBuffer* b : {&qo, &ko, &vo}) {
        const size_t n = (b == &qo ? size_t(QD) : size_t(KD)) * size_t(T);
        const std::vector<float> part = download<float>(*b, n);
        r.insert(r.end(), part.begin(), part.end());
      }
      return r;
    };
    reset();
    for (int r = 0; r < rounds; ++r)
      for (const cuda::GemvStage& s : st) cuda::gemv(s.args, s.in, s.out, stream, cuda::GemvVersion::V1);
    const std::vector<float> want = outputs();
    for (float v : want) ASSERT_TRUE(std::isfinite(v)) << "version 1 left a poisoned output";
    auto expect_same = [&](const char* how) {
      const std::vector<float> got = outputs();
      ASSERT_EQ(got.size(), want.size());
      // The arrays y [T, E], q [T, QD], k, v [T, KD] one after another, each with its own scale.
      const size_t ends[4] = {size_t(T) * E, size_t(T) * (E + QD), size_t(T) * (E + QD + KD), got.size()};
      for (size_t part = 0, begin = 0; part < 4; begin = ends[part++]) {
        double scale = 0;
        for (size_t i = begin; i < ends[part]; ++i) scale = std::max(scale, std::fabs(double(want[i])));
        for (size_t i = begin; i < ends[part]; ++i)
          ASSERT_LE(std::fabs(double(got[i]) - want[i]), 1e-5 * scale + 1e-6)
              << how << ": output " << i << " (y, then q, k, v): " << got[i] << ", version 1 " << want[i] << ", PDL "
              << (cuda::pdl_enabled() ? "on" : "off");
      }
      unsigned left = 1;
      SR_ASSERT_CUDA(cudaMemcpy(&left, barrier.get(), sizeof(unsigned), cudaMemcpyDeviceToHost));
      ASSERT_EQ(left, 0u) << how << ": the barrier word was not reset";
    };
    reset();
    for (int r = 0; r < rounds; ++r) cuda::gemv_chain(st, 4, static_cast<unsigned*>(barrier.get()), stream);
    expect_same("direct launches");

    reset();
    replay_as_graph(stream, [&] {
      for (int r = 0; r < rounds; ++r) cuda::gemv_chain(st, 4, static_cast<unsigned*>(barrier.get()), stream);
    });
    expect_same("graph replay");
  }
  SR_ASSERT_CUDA(cudaStreamDestroy(stream));
}

// A stage that adds into what the stage before it stored (h = A x, then h += B x): its
// epilogue must read h after the grid barrier, not before (a stage reading ahead would see
// the NaN poison h starts with).
TEST(CudaGemvChain, AccumulateIntoThePreviousStagesOutput) {
  SR_REQUIRE_CUDA_DEVICE();
  std::mt19937_64 rng(41);
  const int n = 200, in = 136, T = 3;
  const std::vector<uint16_t> wa = to_bf16_bits(normal_vector(size_t(n) * in, rng, 0.2f));
  const std::vector<uint16_t> wb = to_bf16_bits(normal_vector(size_t(n) * in, rng, 0.2f));
  const std::vector<float> x = normal_vector(size_t(T) * in, rng);
  DeviceBuffer wad = upload(wa), wbd = upload(wb), xd = upload(x), hd(size_t(T) * n * 4), barrier(sizeof(unsigned));
  SR_ASSERT_CUDA(cudaMemset(barrier.get(), 0, sizeof(unsigned)));
  testing::poison(hd);
  cuda::GemvStage st[2];
  for (int s = 0; s < 2; ++s) {
    cuda::GemvArgs& g = st[s].args;
    g = gemv_args(s == 0 ? wad : wbd, n, in, T, xd, in);
    g.y = static_cast<float*>(hd.get());
    g.ldy = n;
    st[s].in = cuda::GemvIn::Plain;
    st[s].out = s == 0 ? cuda::GemvOut::Store : cuda::GemvOut::Accumulate;
  }
  cuda::gemv_chain(st, 2, static_cast<unsigned*>(barrier.get()), nullptr);
  SR_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<float> h = download<float>(hd, size_t(T) * n);
  for (int t = 0; t < T; ++t)
    for (int o = 0; o < n; ++o) {
      double want = 0, sum_abs = 0;
      for (int i = 0; i < in; ++i) {
        const double xi = x[size_t(t) * in + size_t(i)];
        const double p = bf16_value(wa[size_t(o) * in + size_t(i)]) * xi, q = bf16_value(wb[size_t(o) * in + size_t(i)]) * xi;
        want += p + q;
        sum_abs += std::fabs(p) + std::fabs(q);
      }
      expect_close(h[size_t(t) * n + size_t(o)], want, sum_abs, fmt::format("token {} row {}", t, o));
    }
}

TEST(CudaOps, GemvChainRejectsBadChains) {
  cuda::GemvStage st[5];
  for (cuda::GemvStage& s : st) {
    s.args.out = 8;
    s.args.in = 96;
    s.args.tokens = 2;
  }
  auto expect_error = [](const std::function<void()>& f, const std::string& what) {
    try {
      f();
      FAIL() << "no error, expected: " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  unsigned* no_barrier = nullptr;
  expect_error([&] { cuda::gemv_chain(st, 5, no_barrier, nullptr); }, "5 stages (1 to 4 per launch)");
  expect_error([&] { cuda::gemv_chain(st, 2, no_barrier, nullptr); }, "need a barrier counter");
  st[1].args.tokens = 3;
  unsigned word = 0;  // never reached: the checks come first
  expect_error([&] { cuda::gemv_chain(st, 2, &word, nullptr); }, "stage 1 has 3 tokens");
}

// Dependent GEMVs back to back on a created stream (as the engine launches them), under
// programmatic dependent launch when the device has it (SINKROUTER_PDL=0: plain launches),
// for both GEMV versions:
// round r computes h = W1 y (Store), then y += W2 h (Accumulate), so every launch reads
// what the one before it wrote. A launch that read its input before pdl_wait() returned
// would see the previous round's h or y, or the NaN poison of round 0. Once launched
// directly and once captured into a CUDA graph (programmatic edges), both against float64.
TEST(CudaGemvPdl, ChainedLaunchesSeeEachOthersOutputs) {
  SR_REQUIRE_CUDA_DEVICE();
  std::mt19937_64 rng(11);
  const int n = 576, f = 1536, rounds = 8;
  const std::vector<uint16_t> w1 = to_bf16_bits(normal_vector(size_t(f) * n, rng, 0.2f / std::sqrt(float(n))));
  const std::vector<uint16_t> w2 = to_bf16_bits(normal_vector(size_t(n) * f, rng, 0.2f / std::sqrt(float(f))));
  const std::vector<float> y0 = normal_vector(size_t(n), rng);
  std::vector<double> ref(y0.begin(), y0.end()), h(static_cast<size_t>(f));
  for (int r = 0; r < rounds; ++r) {
    for (int o = 0; o < f; ++o) {
      double acc = 0;
      for (int i = 0; i < n; ++i) acc += bf16_value(w1[size_t(o) * n + size_t(i)]) * ref[size_t(i)];
      h[size_t(o)] = acc;
    }
    for (int o = 0; o < n; ++o) {
      double acc = 0;
      for (int i = 0; i < f; ++i) acc += bf16_value(w2[size_t(o) * f + size_t(i)]) * h[size_t(i)];
      ref[size_t(o)] += acc;
    }
  }
  double ref_max = 0;
  for (double v : ref) ref_max = std::max(ref_max, std::fabs(v));

  DeviceBuffer w1d = upload(w1), w2d = upload(w2), yd(size_t(n) * 4), hd(size_t(f) * 4);
  cudaStream_t stream = nullptr;
  SR_ASSERT_CUDA(cudaStreamCreate(&stream));
  // One token through a [out x in] matrix: x [in] -> y [out].
  auto one_token = [](const DeviceBuffer& w, int out, int in, const DeviceBuffer& x, DeviceBuffer& y) {
    cuda::GemvArgs g = gemv_args(w, out, in, 1, x, in);
    g.y = static_cast<float*>(y.get());
    g.ldy = out;
    return g;
  };
  for (cuda::GemvVersion version : {cuda::GemvVersion::V1, cuda::GemvVersion::V2}) {
    SCOPED_TRACE(cuda::gemv_version_name(version));
    auto enqueue = [&] {
      const cuda::GemvArgs a = one_token(w1d, f, n, yd, hd);  // h = W1 y
      const cuda::GemvArgs b = one_token(w2d, n, f, hd, yd);  // y += W2 h
      for (int r = 0; r < rounds; ++r) {
        cuda::gemv(a, cuda::GemvIn::Plain, cuda::GemvOut::Store, stream, version);
        cuda::gemv(b, cuda::GemvIn::Plain, cuda::GemvOut::Accumulate, stream, version);
      }
    };
    auto check = [&](const char* how) {
      SR_ASSERT_CUDA(cudaStreamSynchronize(stream));
      const std::vector<float> y = download<float>(yd, size_t(n));
      for (int o = 0; o < n; ++o)
        ASSERT_LE(std::fabs(double(y[size_t(o)]) - ref[size_t(o)]), 1e-4 * ref_max + 1e-6)
            << how << " (PDL " << (cuda::pdl_enabled() ? "on" : "off") << "): y[" << o << "] = " << y[size_t(o)]
            << ", expected " << ref[size_t(o)];
    };
    auto reset = [&] {
      SR_ASSERT_CUDA(cudaMemcpy(yd.get(), y0.data(), y0.size() * sizeof(float), cudaMemcpyHostToDevice));
      testing::poison(hd);
    };

    reset();
    enqueue();
    check("direct launches");

    reset();
    replay_as_graph(stream, enqueue);
    check("graph replay");
  }
  SR_ASSERT_CUDA(cudaStreamDestroy(stream));
}

TEST(CudaOps, GemvRejectsUnsupportedShapes) {
  cuda::GemvArgs a;
  a.out = 7;  // odd
  a.in = 96;
  a.tokens = 1;
  for (cuda::GemvVersion v : {cuda::GemvVersion::V1, cuda::GemvVersion::V2, cuda::GemvVersion::Chain}) {
    try {
      cuda::gemv(a, cuda::GemvIn::Plain, cuda::GemvOut::Store, nullptr, v);
      FAIL() << "no error from " << cuda::gemv_version_name(v);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("shape [7 x 96] not supported"), std::string::npos) << e.what();
    }
  }
}

TEST(CudaOps, GemvV2RejectsMisalignedInputs) {
  cuda::GemvArgs a;
  a.out = 8;
  a.in = 96;
  a.tokens = 1;
  a.ldx = 98;  // not a multiple of 4 floats
  try {
    cuda::gemv(a, cuda::GemvIn::Plain, cuda::GemvOut::Store, nullptr, cuda::GemvVersion::V2);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("16-byte boundaries"), std::string::npos) << e.what();
  }
}
}  // namespace
}  // namespace sinkrouter

#endif  // SINKROUTER_HAVE_CUDA
