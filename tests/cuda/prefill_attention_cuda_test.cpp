// The prefill attention kernels (the four flash versions on the tensor cores: v4 tma and v3
// wgmma on an sm_90 device, v2 and v1 on mma.sync; and the plain float32 one) and the
// sink-detection signal, against a float64 reference computed from the very bf16 values the
// kernels read (q as given, K and V as the device cache stores them), on random inputs: odd
// lengths, GQA 3:1, MHA, head dims 64 and 128, page sizes 1 to 256 in a shuffled page order,
// and chunks that start mid-tile (p0 > 0, earlier chunks' keys appended separately). Where a
// kernel does not run (tma: head_dim 128, page sizes other than 16-256 powers of two; both
// wgmma kernels off sm_90), asking for it must be a clear error.
//
// Tolerances, per element (ref: the float64 output, bound = sum_j p_j |v_j|):
//  - flash (every version): P enters the tensor cores as bf16 (relative rounding <= 2^-8 each), so
//    |err| <= 2^-8 * bound; the output is rounded to bf16 (<= 2^-8 |ref|); float32 sums
//    add ~1e-6. Allowed: 1.05 * 2^-8 * (bound + |ref|) + 1e-5, and a whole-tensor relative
//    error under 1e-2.
//  - reference kernel: exact probabilities in float32, output rounded to bf16: one bf16 ulp
//    of the rounded reference (tests/common/compare.h).
//  - lse: 1e-3 absolute (float32 scores and sums); received: 1e-3 relative + 2e-6.
#include <gtest/gtest.h>

#if defined(SINKROUTER_HAVE_CUDA)

#include <fmt/format.h>

#include <cmath>
#include <random>
#include <tuple>

#include "common/compare.h"
#include "cuda_test_util.h"
#include "model/cuda_prefill_attention.h"
#include "sinkrouter/kv/device_kv_cache.h"

namespace sinkrouter {
namespace {

using testing::DeviceBuffer;
using testing::download;
using testing::upload;

struct PrefillCase {
  int head_dim, q_heads, kv_heads, page;
  int64_t p0, c;  // keys before the chunk, rows in the chunk
};

// (the flash kernel under test, the case)
using PrefillParam = std::tuple<PrefillAttentionKernel, PrefillCase>;

std::string case_name(const ::testing::TestParamInfo<PrefillParam>& info) {
  const PrefillCase& p = std::get<1>(info.param);
  return fmt::format("{}_d{}_q{}_kv{}_page{}_p0_{}_c{}", prefill_attention_kernel_name(std::get<0>(info.param)),
                     p.head_dim, p.q_heads, p.kv_heads, p.page, p.p0, p.c);
}

struct Float64Attention {
  std::vector<double> out, bound;  // [c, QH, D]
  std::vector<double> lse;         // [c, QH]
  std::vector<double> received;    // [H, n]
};

float kv_value(const HostKVSnapshot& s, int64_t t, int h, int d, bool value) {
  const uint16_t* k = s.pages.data() + s.view.k_offset(0, t, h);
  return to_float(bf16{(value ? k + s.view.v_stride() : k)[d]});
}

Float64Attention float64_attention(const std::vector<uint16_t>& q, const HostKVSnapshot& snap, const PrefillCase& pc,
                                   double scale, int rows) {
  const int D = pc.head_dim, QH = pc.q_heads, G = pc.q_heads / pc.kv_heads;
  const int64_t n = pc.p0 + pc.c;
  Float64Attention r;
  r.out.assign(size_t(pc.c * QH * D), 0.0);
  r.bound.assign(r.out.size(), 0.0);
  r.lse.assign(size_t(pc.c * QH), 0.0);
  r.received.assign(size_t(pc.kv_heads * n), 0.0);
  std::vector<double> kf(size_t(n * D)), vf(size_t(n * D)), s(static_cast<size_t>(n));
  for (int h = 0; h < pc.kv_heads; ++h) {
    for (int64_t t = 0; t < n; ++t)
      for (int d = 0; d < D; ++d) {
        kf[size_t(t * D + d)] = kv_value(snap, t, h, d, false);
        vf[size_t(t * D + d)] = kv_value(snap, t, h, d, true);
      }
    for (int g = 0; g < G; ++g) {
      const int qh = h * G + g;
      for (int64_t i = 0; i < pc.c; ++i) {
        const uint16_t* qi = q.data() + (i * QH + qh) * D;
        const int64_t visible = pc.p0 + i + 1;
        double m = -INFINITY;
        for (int64_t j = 0; j < visible; ++j) {
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += double(to_float(bf16{qi[d]})) * kf[size_t(j * D + d)];
          s[size_t(j)] = scale * dot;
          m = std::max(m, s[size_t(j)]);
        }
        double l = 0;
        for (int64_t j = 0; j < visible; ++j) l += (s[size_t(j)] = std::exp(s[size_t(j)] - m));
        double* o = &r.out[size_t((i * QH + qh) * D)];
        double* b = &r.bound[size_t((i * QH + qh) * D)];
        for (int64_t j = 0; j < visible; ++j) {
          const double p = s[size_t(j)] / l;
          for (int d = 0; d < D; ++d) {
            o[d] += p * vf[size_t(j * D + d)];
            b[d] += p * std::fabs(vf[size_t(j * D + d)]);
          }
          if (i >= pc.c - rows) r.received[size_t(h * n + j)] += p / double(rows * G);
        }
        r.lse[size_t(i * QH + qh)] = m + std::log(l);
      }
    }
  }
  return r;
}

class CudaPrefillAttention : public ::testing::TestWithParam<PrefillParam> {};

TEST_P(CudaPrefillAttention, MatchesFloat64) {
  SR_REQUIRE_CUDA_DEVICE();
  const PrefillAttentionKernel kernel = std::get<0>(GetParam());
  const PrefillCase pc = std::get<1>(GetParam());
  const int D = pc.head_dim, QH = pc.q_heads, H = pc.kv_heads;
  const int64_t n = pc.p0 + pc.c;
  std::mt19937_64 rng(uint64_t(pc.p0 * 131 + pc.c * 7 + D + pc.page));
  std::normal_distribution<float> normal(0.f, 1.f);

  KVCacheConfig kc;
  kc.num_kv_heads = H;
  kc.head_dim = D;
  kc.dtype = DType::BF16;
  kc.page_size = pc.page;
  kc.block_size = 64;
  kc.default_anchors = 4;
  kc.max_anchors = 8;
  DeviceKVCache cache(kc, {n}, /*page_order_seed=*/uint64_t(pc.c) + 5);
  // The earlier chunk, then this one: two appends, as the engine makes them.
  for (const auto& [first, count] : {std::pair<int64_t, int64_t>{0, pc.p0}, {pc.p0, pc.c}}) {
    if (count == 0) continue;
    std::vector<float> k(size_t(count * H * D)), v(k.size());
    for (float& x : k) x = normal(rng);
    for (float& x : v) x = normal(rng);
    DeviceBuffer kd = upload(k.data(), k.size() * 4), vd = upload(v.data(), v.size() * 4);
    cache.append(0, kd.get(), vd.get(), count, DType::F32, nullptr);
    (void)first;
  }
  ASSERT_NO_THROW(cache.check_errors());
  std::vector<uint16_t> q(size_t(pc.c * QH * D));
  for (uint16_t& x : q) x = to_bf16(2.f * normal(rng)).bits;  // scores ~ N(0, 4): peaked rows
  DeviceBuffer qd = upload(q.data(), q.size() * 2);
  DeviceBuffer out(q.size() * 2), out_ref(q.size() * 2), lse(size_t(pc.c * QH) * 4), lse_ref(size_t(pc.c * QH) * 4);
  DeviceBuffer received(size_t(H * n) * 4);
  testing::poison(out);
  testing::poison(out_ref);
  testing::poison(lse);
  testing::poison(lse_ref);
  testing::poison(received);

  const float scale = 1.f / std::sqrt(float(D));
  PrefillAttentionArgs a;
  a.kv = cache.view(0, 1).kv;
  a.q = static_cast<const __nv_bfloat16*>(qd.get());
  a.out = static_cast<__nv_bfloat16*>(out.get());
  a.lse = static_cast<float*>(lse.get());
  a.c = pc.c;
  a.p0 = pc.p0;
  a.n_head = QH;
  a.scale = scale;
  const int rows = int(std::min<int64_t>(32, pc.c));
  const bool tma = kernel == PrefillAttentionKernel::WgmmaTma;
  if ((tma && !detail::prefill_attention_tma_supported(a)) ||
      (kernel == PrefillAttentionKernel::Wgmma && !detail::prefill_attention_wgmma_supported(a))) {
    // Where a wgmma kernel does not run, asking for it is a clear error, not a silent fallback.
    const bool page_fits = !tma || (pc.page >= 16 && pc.page <= 256 && (pc.page & (pc.page - 1)) == 0);
    const char* why = D != 64 ? "takes head_dim 64, not 128" : !page_fits ? "takes page sizes" : "needs an sm_90 device";
    try {
      prefill_attention_cuda(a, nullptr, kernel);
      ADD_FAILURE() << "no error for the " << prefill_attention_kernel_name(kernel) << " kernel where it does not run";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
    if (D == 64 && page_fits) GTEST_SKIP() << "the wgmma kernels need an sm_90 device (this one is not)";
    return;
  }
  prefill_attention_cuda(a, nullptr, kernel);
  attention_received_cuda(a, rows, static_cast<float*>(received.get()), nullptr);
  PrefillAttentionArgs r = a;
  r.out = static_cast<__nv_bfloat16*>(out_ref.get());
  r.lse = static_cast<float*>(lse_ref.get());
  prefill_attention_cuda(r, nullptr, PrefillAttentionKernel::Reference);
  SR_ASSERT_CUDA(cudaDeviceSynchronize());

  const Float64Attention f64 = float64_attention(q, cache.download(), pc, double(scale), rows);
  const std::vector<uint16_t> got = download<uint16_t>(out, q.size()), got_ref = download<uint16_t>(out_ref, q.size());
  const std::vector<float> got_lse = download<float>(lse, size_t(pc.c * QH)),
                           got_lse_ref = download<float>(lse_ref, size_t(pc.c * QH)),
                           got_received = download<float>(received, size_t(H * n));

  // Flash: every element within its bound, then the whole tensor.
  double err2 = 0, ref2 = 0, worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = to_float(bf16{got[i]}), want = f64.out[i];
    const double e = std::fabs(g - want), tol = 1.05 * std::ldexp(1.0, -8) * (f64.bound[i] + std::fabs(want)) + 1e-5;
    ASSERT_LE(e, tol) << "flash element " << i << " (row " << i / size_t(QH * D) << ", head " << i / D % QH
                      << ", dim " << i % D << "): got " << g << ", expected " << want;
    err2 += (g - want) * (g - want);
    ref2 += want * want;
    worst = std::max(worst, e);
  }
  const double rel = std::sqrt(err2 / ref2);
  EXPECT_LT(rel, 1e-2) << "flash whole-tensor relative error";
  std::printf("flash: max error %.3g, relative %.3g\n", worst, rel);

  // Reference kernel: one bf16 ulp.
  const std::string msg = testing::compare_to_reference(
      TensorView(const_cast<uint16_t*>(got_ref.data()), DType::BF16, {pc.c, QH, D}),
      TensorView(const_cast<double*>(f64.out.data()), DType::F64, {pc.c, QH, D}), testing::tolerance_for(DType::BF16));
  EXPECT_EQ(msg, "") << "reference kernel";

  for (size_t i = 0; i < got_lse.size(); ++i) {
    ASSERT_NEAR(got_lse[i], f64.lse[i], 1e-3) << "flash lse of row " << i / size_t(QH) << " head " << i % QH;
    ASSERT_NEAR(got_lse_ref[i], f64.lse[i], 1e-3) << "reference lse of row " << i / size_t(QH) << " head " << i % QH;
  }
  for (size_t i = 0; i < got_received.size(); ++i)
    ASSERT_NEAR(got_received[i], f64.received[i], 2e-6 + 1e-3 * f64.received[i])
        << "received of head " << i / size_t(n) << " key " << i % size_t(n);
}

// Flash is the default's choice (tma, else wgmma, on an H100/H200 at head_dim 64, else
// flash2); each version is also tested by name.
const auto kFlashKernels =
    ::testing::Values(PrefillAttentionKernel::Flash, PrefillAttentionKernel::WgmmaTma, PrefillAttentionKernel::Wgmma,
                      PrefillAttentionKernel::Flash2, PrefillAttentionKernel::FlashV1);

INSTANTIATE_TEST_SUITE_P(
    Grid, CudaPrefillAttention,
    ::testing::Combine(kFlashKernels, ::testing::Values(PrefillCase{64, 9, 3, 16, 0, 1},          // one token
                      PrefillCase{64, 9, 3, 16, 0, 77},         // a tile and a bit, GQA 3:1
                      PrefillCase{64, 9, 3, 64, 131, 203},      // a chunk starting mid-tile
                      PrefillCase{64, 3, 1, 16, 517, 300},      // one KV head
                      PrefillCase{64, 9, 3, 16, 1500, 700},     // many key tiles and query tiles
                      PrefillCase{128, 6, 2, 16, 64, 129},      // head_dim 128, GQA 3:1
                      PrefillCase{128, 4, 4, 64, 1000, 33},     // MHA, short chunk after a long prefix
                      PrefillCase{128, 8, 2, 16, 0, 64},        // exactly one tile, GQA 4:1
                      PrefillCase{64, 9, 3, 16, 0, 1000},       // the v2 tile (128 rows) with a partial last one
                      PrefillCase{64, 9, 3, 32, 4000, 300},     // 68 key tiles: the wgmma kernel's kept max
                      PrefillCase{64, 6, 2, 1, 77, 150},        // page size 1
                      PrefillCase{64, 9, 3, 256, 300, 333},     // page size 256, tiles across a page boundary
                      PrefillCase{64, 9, 3, 8, 200, 190},       // page size 8 (tma: a clear error)
                      PrefillCase{64, 6, 2, 128, 1000, 517},    // page size 128, the end mid-page
                      PrefillCase{64, 9, 3, 16, 6000, 1},       // one row after 94 tiles
                      PrefillCase{128, 4, 1, 32, 2000, 257})),  // GQA 4:1 after a long prefix
    case_name);

// A small case for compute-sanitizer (memcheck, racecheck): bf16 rows and page gathers at
// odd offsets, both kernels.
INSTANTIATE_TEST_SUITE_P(Small, CudaPrefillAttention,
                         ::testing::Combine(kFlashKernels, ::testing::Values(PrefillCase{64, 9, 3, 16, 45, 70},
                                                                             PrefillCase{128, 6, 2, 64, 3, 61})),
                         case_name);

// Shape errors come from the host-side checks, before any launch: no device needed.
TEST(CudaPrefillAttentionErrors, UnsupportedShapesAreClear) {
  uint16_t dummy[8] = {};
  PrefillAttentionArgs a;
  a.kv.pages = dummy;
  a.kv.dtype = DType::BF16;
  a.kv.head_dim = 96;
  a.kv.num_kv_heads = 3;
  a.kv.batch = 1;
  a.q = reinterpret_cast<const __nv_bfloat16*>(dummy);
  a.out = reinterpret_cast<__nv_bfloat16*>(dummy);
  a.c = 5;
  a.n_head = 9;
  a.scale = 0.125f;
  auto message = [&](const PrefillAttentionArgs& args) {
    try {
      prefill_attention_cuda(args, nullptr);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(a).find("head_dim 96 is not supported (expected 64 or 128)"), std::string::npos) << message(a);
  a.kv.head_dim = 64;
  a.kv.dtype = DType::F16;
  EXPECT_NE(message(a).find("KV dtype f16 is not supported (expected bf16)"), std::string::npos) << message(a);
  a.kv.dtype = DType::BF16;
  a.n_head = 10;
  EXPECT_NE(message(a).find("10 query heads are not a multiple of 3 KV heads"), std::string::npos) << message(a);
  a.n_head = 9;
  a.kv.batch = 2;
  EXPECT_NE(message(a).find("holds 2 sequences (expected exactly one)"), std::string::npos) << message(a);
  a.kv.batch = 1;
  a.c = 0;
  EXPECT_NE(message(a).find("chunk of 0 rows"), std::string::npos) << message(a);
  a.c = 5;
  EXPECT_THROW(attention_received_cuda(a, 4, nullptr, nullptr), Error);  // no lse
}

// The engine's SINKROUTER_PREFILL_ATTENTION values, and a clear error for anything else.
TEST(CudaPrefillAttentionErrors, KernelNames) {
  for (const PrefillAttentionKernel k : {PrefillAttentionKernel::Flash, PrefillAttentionKernel::WgmmaTma,
                                         PrefillAttentionKernel::Wgmma,
                                         PrefillAttentionKernel::Flash2, PrefillAttentionKernel::FlashV1,
                                         PrefillAttentionKernel::Reference})
    EXPECT_EQ(prefill_attention_kernel_from_name(prefill_attention_kernel_name(k)), k);
  try {
    prefill_attention_kernel_from_name("fast");
    ADD_FAILURE() << "no error for an unknown kernel name";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'fast' is unknown (expected flash, tma, wgmma, flash2, flash1 or reference)"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace sinkrouter
#endif  // SINKROUTER_HAVE_CUDA
