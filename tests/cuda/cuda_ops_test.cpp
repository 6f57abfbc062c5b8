// The forward pass's element-wise device pieces against float64 (or the CPU's own float
// code) on random inputs: RoPE at positions up to 2^19, RMSNorm, SwiGLU, the embedding
// lookup, the argmax of greedy decoding and the cuBLAS GEMM with and without the residual
// add (the decode GEMV: cuda_gemv_test.cpp).
//
// Tolerances: float32 sums of n products carry a relative error of a few n * 2^-24 of the
// sum of absolute terms; we allow 2e-5 * (sum |terms| + |ref|) + 1e-6. Outputs rounded to
// bf16 get one bf16 ulp of the rounded reference on top. RoPE against the CPU's float code:
// both round cos and sin to float (angles differ by <= 2e-7 after the reduction), 1e-5 on
// values of magnitude ~4 (a float angle at 2^19 would be off by ~0.03 rad: errors ~0.1).
#include <gtest/gtest.h>

#if defined(SINKROUTER_HAVE_CUDA)

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "cuda_ops_test_util.h"
#include "model/cuda_ops.h"
#include "model/llama_ops.h"

namespace sinkrouter {
namespace {

using namespace testing;  // sinkrouter::testing: DeviceBuffer, upload, download, ...

// Row t of h (bf16 bits, [n, E]) against the float64 RMSNorm of row t of x with gain g.
void expect_rms_norm_row(const std::vector<uint16_t>& h, const std::vector<float>& x, const std::vector<float>& g,
                         int64_t t, int E) {
  double ss = 0;
  for (int i = 0; i < E; ++i) ss += double(x[size_t(t * E + i)]) * x[size_t(t * E + i)];
  for (int i = 0; i < E; ++i)
    expect_bf16(h[size_t(t * E + i)], x[size_t(t * E + i)] / std::sqrt(ss / E + 1e-5) * g[size_t(i)],
                fmt::format("rmsnorm {} {}", t, i));
}

// Row t of a (bf16 bits, [n, F]) against the float64 SwiGLU of row t of gate | up ([n, 2F]).
void expect_swiglu_row(const std::vector<uint16_t>& a, const std::vector<float>& gu, int64_t t, int F) {
  for (int i = 0; i < F; ++i) {
    const double gate = gu[size_t(t * 2 * F + i)], up = gu[size_t(t * 2 * F + F + i)];
    expect_bf16(a[size_t(t * F + i)], gate / (1 + std::exp(-gate)) * up, fmt::format("swiglu {} {}", t, i));
  }
}

TEST(CudaOps, RopeSplitMatchesTheCpuAtLargePositions) {
  SR_REQUIRE_CUDA_DEVICE();
  std::mt19937_64 rng(5);
  const int D = 64, q_dim = 3 * D, kv_dim = D, width = q_dim + 2 * kv_dim;
  const int64_t n = 5, p0 = 524283;  // positions across 2^19
  const std::vector<float> qkv = normal_vector(size_t(n) * width, rng);
  std::vector<double> inv_freq(D / 2);
  for (int i = 0; i < D / 2; ++i) inv_freq[size_t(i)] = std::pow(100000.0, -2.0 * i / D);
  DeviceBuffer in = upload(qkv), fd = upload(inv_freq);
  DeviceBuffer q(size_t(n) * q_dim * 2), k(size_t(n) * kv_dim * 4), v(size_t(n) * kv_dim * 4);
  testing::poison(q);
  testing::poison(k);
  testing::poison(v);
  cuda::rope_split(static_cast<const float*>(in.get()), n, q_dim, kv_dim, p0,
                   {static_cast<const double*>(fd.get()), D}, static_cast<__nv_bfloat16*>(q.get()),
                   static_cast<float*>(k.get()), static_cast<float*>(v.get()), nullptr);
  SR_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<uint16_t> qg = download<uint16_t>(q, size_t(n) * q_dim);
  const std::vector<float> kg = download<float>(k, size_t(n) * kv_dim), vg = download<float>(v, size_t(n) * kv_dim);
  const Rope rope(D, 100000.f, {});
  for (int64_t t = 0; t < n; ++t) {
    std::vector<float> qc(qkv.begin() + t * width, qkv.begin() + t * width + q_dim);
    std::vector<float> kc(qkv.begin() + t * width + q_dim, qkv.begin() + t * width + q_dim + kv_dim);
    rope.apply(qc.data(), q_dim / D, p0 + t);
    rope.apply(kc.data(), kv_dim / D, p0 + t);
    for (int i = 0; i < q_dim; ++i) expect_bf16(qg[size_t(t * q_dim + i)], qc[size_t(i)], fmt::format("q {} {}", t, i));
    for (int i = 0; i < kv_dim; ++i) {
      ASSERT_NEAR(kg[size_t(t * kv_dim + i)], kc[size_t(i)], 1e-5) << "k " << t << " " << i;
      ASSERT_EQ(vg[size_t(t * kv_dim + i)], qkv[size_t(t * width + q_dim + kv_dim + i)]) << "v " << t << " " << i;
    }
  }
}

// The device argmax against std::max_element on random rows of odd widths, with the
// largest value planted twice in some rows (the first index must win) and at the ends.
TEST(CudaOps, ArgmaxRowsMatchesMaxElement) {
  SR_REQUIRE_CUDA_DEVICE();
  std::mt19937_64 rng(31);
  for (int width : {1, 7, 1000, 49152, 50001}) {
    const int rows = 5;
    std::vector<float> x = normal_vector(size_t(rows) * width, rng);
    if (width > 2) {
      x[size_t(1) * width + 3] = x[size_t(1) * width + size_t(width - 1)] = 10.f;  // a tie: index 3 wins
      x[size_t(2) * width + size_t(width - 1)] = 11.f;                             // the last index
      x[size_t(3) * width] = 12.f;                                                  // the first
    }
    DeviceBuffer xd = upload(x), out(size_t(rows) * 4);
    testing::poison(out);
    cuda::argmax_rows(static_cast<const float*>(xd.get()), rows, width, static_cast<int32_t*>(out.get()), nullptr);
    SR_ASSERT_CUDA(cudaDeviceSynchronize());
    const std::vector<int32_t> got = download<int32_t>(out, size_t(rows));
    for (int r = 0; r < rows; ++r) {
      const auto row = x.begin() + long(size_t(r) * width);
      EXPECT_EQ(got[size_t(r)], int32_t(std::max_element(row, row + width) - row)) << "width " << width << " row " << r;
    }
  }
}

TEST(CudaOps, NormSwigluEmbedAndGemmMatchFloat64) {
  SR_REQUIRE_CUDA_DEVICE();
  std::mt19937_64 rng(9);
  const int E = 88, F = 40, V = 31;
  const int64_t n = 13;
  // Embedding rows for random ids.
  const std::vector<uint16_t> table = to_bf16_bits(normal_vector(size_t(V) * E, rng));
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t& id : ids) id = int32_t(rng() % V);
  DeviceBuffer td = upload(table), idd = upload(ids), xd(size_t(n) * E * 4);
  testing::poison(xd);
  cuda::embed_rows(static_cast<const __nv_bfloat16*>(td.get()), static_cast<const int32_t*>(idd.get()), n, E,
                   static_cast<float*>(xd.get()), nullptr);
  // RMSNorm of those rows.
  const std::vector<float> g = normal_vector(size_t(E), rng);
  DeviceBuffer gd = upload(g), hd(size_t(n) * E * 2);
  testing::poison(hd);
  cuda::rms_norm_bf16(static_cast<const float*>(xd.get()), static_cast<const float*>(gd.get()), 1e-5f, n, E,
                      static_cast<__nv_bfloat16*>(hd.get()), nullptr);
  // SwiGLU of random gate | up rows.
  const std::vector<float> gu = normal_vector(size_t(n) * 2 * F, rng, 2.f);
  DeviceBuffer gud = upload(gu), ad(size_t(n) * F * 2);
  testing::poison(ad);
  cuda::swiglu_bf16(static_cast<const float*>(gud.get()), n, F, static_cast<__nv_bfloat16*>(ad.get()), nullptr);
  // GEMM: Y = W H^T, then Y += W2 A^T (the residual add through beta = 1).
  const std::vector<uint16_t> w = to_bf16_bits(normal_vector(size_t(F) * E, rng, 0.3f));
  const std::vector<uint16_t> w2 = to_bf16_bits(normal_vector(size_t(F) * F, rng, 0.3f));
  DeviceBuffer wd = upload(w), w2d = upload(w2), yd(size_t(n) * F * 4);
  cublasHandle_t handle;
  ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
  testing::poison(yd);
  cuda::gemm_bf16(handle, static_cast<const __nv_bfloat16*>(wd.get()), F, E, static_cast<const __nv_bfloat16*>(hd.get()),
                  n, static_cast<float*>(yd.get()), 0.f, nullptr);
  cuda::gemm_bf16(handle, static_cast<const __nv_bfloat16*>(w2d.get()), F, F, static_cast<const __nv_bfloat16*>(ad.get()),
                  n, static_cast<float*>(yd.get()), 1.f, nullptr);
  SR_ASSERT_CUDA(cudaDeviceSynchronize());
  cublasDestroy(handle);

  const std::vector<float> x = download<float>(xd, size_t(n) * E);
  const std::vector<uint16_t> h = download<uint16_t>(hd, size_t(n) * E), a = download<uint16_t>(ad, size_t(n) * F);
  const std::vector<float> y = download<float>(yd, size_t(n) * F);
  for (int64_t t = 0; t < n; ++t) {
    for (int i = 0; i < E; ++i)
      ASSERT_EQ(x[size_t(t * E + i)], float(bf16_value(table[size_t(ids[size_t(t)]) * E + size_t(i)])));
    expect_rms_norm_row(h, x, g, t, E);
    expect_swiglu_row(a, gu, t, F);
    for (int o = 0; o < F; ++o) {
      double want = 0, sum_abs = 0;
      for (int i = 0; i < E; ++i) {
        const double p = bf16_value(w[size_t(o) * E + size_t(i)]) * bf16_value(h[size_t(t * E + i)]);
        want += p;
        sum_abs += std::fabs(p);
      }
      for (int i = 0; i < F; ++i) {
        const double p = bf16_value(w2[size_t(o) * F + size_t(i)]) * bf16_value(a[size_t(t * F + i)]);
        want += p;
        sum_abs += std::fabs(p);
      }
      expect_close(y[size_t(t * F + o)], want, sum_abs, fmt::format("gemm token {} row {}", t, o));
    }
  }
}

// Widths that are not multiples of 4 take the kernels' scalar paths (the engine's take the
// 16-byte ones, tested above); more rows than one block of RMSNorm holds.
TEST(CudaOps, NormAndSwigluAtOddWidths) {
  SR_REQUIRE_CUDA_DEVICE();
  std::mt19937_64 rng(21);
  const int E = 87, F = 37;
  const int64_t n = 11;
  const std::vector<float> x = normal_vector(size_t(n) * E, rng), g = normal_vector(size_t(E), rng);
  const std::vector<float> gu = normal_vector(size_t(n) * 2 * F, rng, 2.f);
  DeviceBuffer xd = upload(x), gd = upload(g), hd(size_t(n) * E * 2), gud = upload(gu), ad(size_t(n) * F * 2);
  testing::poison(hd);
  testing::poison(ad);
  cuda::rms_norm_bf16(static_cast<const float*>(xd.get()), static_cast<const float*>(gd.get()), 1e-5f, n, E,
                      static_cast<__nv_bfloat16*>(hd.get()), nullptr);
  cuda::swiglu_bf16(static_cast<const float*>(gud.get()), n, F, static_cast<__nv_bfloat16*>(ad.get()), nullptr);
  SR_ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<uint16_t> h = download<uint16_t>(hd, size_t(n) * E), a = download<uint16_t>(ad, size_t(n) * F);
  for (int64_t t = 0; t < n; ++t) {
    expect_rms_norm_row(h, x, g, t, E);
    expect_swiglu_row(a, gu, t, F);
  }
}

}  // namespace
}  // namespace sinkrouter

#endif  // SINKROUTER_HAVE_CUDA
