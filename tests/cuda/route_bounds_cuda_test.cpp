// The routing pass's block bounds on the device against their exact values: for every
// routable block j of every (sequence, KV head), the device's bound (CudaRouting::block_bounds,
// max over the group's heads of u_jg with its rounding allowance) is at least the exact box
// bound max_g sum_d max(q_gd hi_jd, q_gd lo_jd), summed in double from the same float q (q x
// scale, as both routers pre-scale it) and the cache's summaries. The keys' spread falls by e^-20
// across their dimensions and the queries are scaled by 2^-10 .. 2^10 at random, so that a sum
// that lost more than its allowance of its small terms would fall under the exact value. It runs the tensor-core step (bf16, G <= 8: head dims 64 and
// 128, G 1, 3, 4 and 8) and the quads' (the step off, G 12, an fp16 cache), and checks that the
// two steps' bounds of the same block differ by no more than their two allowances. The first
// sequence is long enough that routing CTAs take four steps each (adaptive chunks), so both
// stages of the summary ring are refilled.
#include <gtest/gtest.h>

#if defined(SINKROUTER_HAVE_CUDA)

#include <algorithm>
#include <cmath>
#include <random>

#include "attention/cpu_math.h"
#include "cuda_test_util.h"
#include "sinkrouter/attention/decode_cuda.h"
#include "sinkrouter/kv/synthetic_kv.h"

namespace sinkrouter {
namespace {

struct BoundsCase {
  int head_dim, group;
  DType dtype;
};

// The device's bounds under route_tensor_cores = tc, and whether the tensor-core step ran.
std::vector<std::vector<float>> device_bounds(const SyntheticKV& r, const DeviceKVCache& dev, int QH, float scale,
                                              int tc, bool* on_tensor_cores, const std::string& what) {
  CudaDecodeOptions o;
  o.route_tensor_cores = tc;
  CudaDecoder decoder(dev.view(), QH, testing::certified_policy(1e-3, 32), scale, o);
  *on_tensor_cores = decoder.routes_on_tensor_cores();
  testing::DeviceBuffer qd = testing::to_device(r.q);
  testing::DeviceBuffer od(r.q.bytes());
  decoder.run(dev.view(), qd.get(), DType::F32, od.get(), DType::F32, nullptr);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess) << what;
  return decoder.download_routing().block_bounds;
}

void check_case(const BoundsCase& c, uint64_t seed) {
  std::mt19937_64 rng{seed};
  SyntheticKVSpec spec;
  spec.num_kv_heads = 2;
  spec.group = c.group;
  spec.head_dim = c.head_dim;
  spec.dtype = c.dtype;
  spec.page_size = 16;
  spec.block_size = 16;
  spec.lengths = {24000, 1500, 611};  // the first: 1,496 routable blocks, CTAs of four steps
  spec.sink_positions = {0};
  spec.key_scale = c.dtype == DType::F16 ? 64.f : 4096.f;  // fp16 keys stay under its 65504
  spec.key_decay = c.dtype == DType::F16 ? 12.f : 20.f;    // dimension d's std falls by e^-20 over D
  auto r = make_synthetic_kv(spec, rng);
  const int B = int(spec.lengths.size()), H = spec.num_kv_heads, G = spec.group, QH = H * G, D = spec.head_dim;
  // Queries scaled by 2^-10 .. 2^10 at random per element, so that the products one mma adds
  // (16 adjacent dimensions) differ by up to ~2^20 besides the keys' own spread.
  float* q = static_cast<float*>(r.q.data());
  std::uniform_real_distribution<float> exponent(-10.f, 10.f);
  for (int64_t i = 0; i < int64_t(B) * QH * D; ++i) q[i] *= std::exp2(exponent(rng));
  const float scale = 1.f / std::sqrt(float(D));
  const std::string what = fmt::format("seed {} D{} G{} {}", seed, D, G, dtype_name(c.dtype));
  DeviceKVCache dev = DeviceKVCache::upload(*r.cache, r.seqs, 0);

  bool tc_on = false, tc_off = true;
  const auto on = device_bounds(r, dev, QH, scale, 1, &tc_on, what);
  const auto off = device_bounds(r, dev, QH, scale, 0, &tc_off, what);
  EXPECT_EQ(tc_on, c.dtype == DType::BF16 && G <= 8) << what;
  EXPECT_FALSE(tc_off) << what;

  const PagedKV& kv = r.batch.view;
  const bool bf = kv.dtype == DType::BF16;
  std::vector<float> qf(static_cast<size_t>(D)), lo(static_cast<size_t>(D)), hi(static_cast<size_t>(D));
  int64_t blocks = 0;
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const size_t bh = size_t(b) * H + size_t(h);
      ASSERT_EQ(on[bh].size(), off[bh].size()) << what;
      for (size_t j = 0; j < on[bh].size(); ++j) {
        const uint16_t* row = static_cast<const uint16_t*>(kv.summaries) + kv.summary_offset(b, int64_t(j), h);
        cpu::row_to_float(row, bf, lo.data(), D);
        cpu::row_to_float(row + D, bf, hi.data(), D);
        const float end_max = cpu::box_end_max(lo.data(), hi.data(), D);
        double exact = -INFINITY, slack = 0;
        for (int g = 0; g < G; ++g) {
          const float* qh = q + (int64_t(b) * QH + int64_t(h) * G + g) * D;
          for (int d = 0; d < D; ++d) qf[size_t(d)] = qh[d] * scale;
          double u = 0;
          for (int d = 0; d < D; ++d) u += std::max(double(qf[size_t(d)]) * hi[size_t(d)], double(qf[size_t(d)]) * lo[size_t(d)]);
          exact = std::max(exact, u);
          slack = std::max(slack, double(cpu::dot_error_factor(D)) * cpu::l1_norm_in_order(qf.data(), D) * end_max);
        }
        ASSERT_GE(double(on[bh][j]), exact) << what << " b" << b << " h" << h << " block " << j << " (step on)";
        ASSERT_GE(double(off[bh][j]), exact) << what << " b" << b << " h" << h << " block " << j << " (step off)";
        // Each is within its allowance (plus a float rounding of the sum) above the exact bound.
        EXPECT_LE(std::fabs(double(on[bh][j]) - double(off[bh][j])), 2.0 * slack * (1 + 1e-3) + 1e-6 * std::fabs(exact))
            << what << " block " << j;
        ++blocks;
      }
    }
  EXPECT_GT(blocks, 100) << what;
}

TEST(CudaRouteBounds, AtLeastTheExactBoxBoundOnWideMagnitudes) {
  SR_REQUIRE_CUDA_DEVICE();
  const BoundsCase cases[] = {{128, 4, DType::BF16}, {128, 1, DType::BF16}, {128, 8, DType::BF16},
                              {64, 3, DType::BF16},  {64, 8, DType::BF16},  {64, 12, DType::BF16},
                              {128, 4, DType::F16}};
  uint64_t seed = 1;
  for (const BoundsCase& c : cases)
    for (int k = 0; k < 2; ++k) {
      check_case(c, seed++);
      if (::testing::Test::HasFatalFailure()) return;
    }
}

}  // namespace
}  // namespace sinkrouter

#else

TEST(CudaRouteBounds, Skipped) { GTEST_SKIP() << "built without CUDA"; }

#endif
