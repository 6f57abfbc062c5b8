// DeviceKVCache against PagedKVCache: the same appends (prefill chunks and decode steps,
// f32/bf16/f16 inputs, odd sizes, pages 1 to 256, routing blocks that do and do not
// divide the pages) leave the same K/V bits, the same summary bits, the same anchors and
// lengths; value-norm maxima agree to the last bit up to FMA contraction on the host.
#include <gtest/gtest.h>

#if defined(SINKROUTER_HAVE_CUDA)

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>

#include "cuda_test_util.h"
#include "sinkrouter/kv/device_kv_cache.h"
#include "sinkrouter/kv/paged_kv_cache.h"
#include "sinkrouter/kv/synthetic_kv.h"

namespace sinkrouter {
namespace {

using testing::DeviceBuffer;
using testing::to_device;

struct CacheCase {
  int heads, head_dim, page_size, block_size;
  DType dtype;
};

std::string case_name(const CacheCase& c) {
  return fmt::format("h{}_d{}_p{}_r{}_{}", c.heads, c.head_dim, c.page_size, c.block_size, dtype_name(c.dtype));
}

// Checks every used token, summary and anchor of sequence seq (host) against sequence
// b of the device snapshot.
void expect_same_sequence(const PagedKVCache& host, int seq, const HostKVSnapshot& dev, int b,
                          const std::string& where) {
  const KVCacheConfig& cfg = host.config();
  const int H = cfg.num_kv_heads, D = cfg.head_dim, R = cfg.block_size;
  const PagedKVBatch hb = host.batch({seq});
  const PagedKV& hv = hb.view;
  const PagedKV& dv = dev.view;
  const int64_t n = host.length(seq);
  ASSERT_EQ(dev.lengths[size_t(b)], n) << where;
  const uint16_t* hp = host.pages().data();
  for (int64_t t = 0; t < n; ++t)
    for (int h = 0; h < H; ++h) {
      const int64_t ho = hv.k_offset(0, t, h), dof = dv.k_offset(b, t, h);
      for (int d = 0; d < D; ++d) {
        ASSERT_EQ(dev.pages[size_t(dof + d)], hp[ho + d]) << where << " K token " << t << " head " << h;
        ASSERT_EQ(dev.pages[size_t(dof + dv.v_stride() + d)], hp[ho + hv.v_stride() + d])
            << where << " V token " << t << " head " << h;
      }
    }
  const uint16_t* hs = host.summaries().data();
  for (int64_t j = 0; j * R < n; ++j)
    for (int h = 0; h < H; ++h) {
      const int64_t ho = hv.summary_offset(0, j, h), dof = dv.summary_offset(b, j, h);
      for (int d = 0; d < 2 * D; ++d)
        ASSERT_EQ(dev.summaries[size_t(dof + d)], hs[ho + d])
            << where << " summary block " << j << " head " << h << (d < D ? " min" : " max") << " dim " << d % D;
      const float hn = hv.block_value_norm(0, j, h), dn = dv.block_value_norm(b, j, h);
      // One ulp: the host may or may not fuse norm2 += y * y (compiler flags).
      ASSERT_LE(std::fabs(hn - dn), std::fabs(hn) * 1.2e-7f) << where << " value norm block " << j << " head " << h;
    }
  for (int h = 0; h < H; ++h) {
    const std::vector<int32_t>& ha = host.anchors(seq, h);
    ASSERT_EQ(dev.anchor_count[size_t(b) * H + size_t(h)], int32_t(ha.size())) << where << " anchors head " << h;
    for (size_t i = 0; i < ha.size(); ++i)
      ASSERT_EQ(dev.anchor_pos[(size_t(b) * H + size_t(h)) * size_t(dv.max_anchors) + i], ha[i]) << where;
  }
}

class DeviceCacheAppend : public ::testing::TestWithParam<CacheCase> {};

TEST_P(DeviceCacheAppend, MatchesHostCacheBitForBit) {
  SR_REQUIRE_CUDA_DEVICE();
  const CacheCase c = GetParam();
  std::mt19937_64 rng(std::hash<std::string>{}(case_name(c)));
  KVCacheConfig cfg;
  cfg.num_kv_heads = c.heads;
  cfg.head_dim = c.head_dim;
  cfg.dtype = c.dtype;
  cfg.page_size = c.page_size;
  cfg.block_size = c.block_size;
  cfg.num_pages = 4096;
  const int S = 3;
  const std::vector<int64_t> caps = {700, 333, 901};
  PagedKVCache host(cfg);
  std::vector<int> seqs;
  for (int s = 0; s < S; ++s) seqs.push_back(host.create_sequence());
  DeviceKVCache dev(cfg, caps, /*page_order_seed=*/rng() | 1);
  const int H = c.heads, D = c.head_dim;
  const DType inputs[] = {DType::F32, DType::BF16, DType::F16};
  std::uniform_int_distribution<int> chunk(1, 150);
  int round = 0;
  auto lengths = [&] {
    std::vector<int64_t> l;
    for (int s : seqs) l.push_back(host.length(s));
    return l;
  };
  // Prefill chunks of odd sizes, then decode steps, interleaved, until a capacity is near.
  for (int iter = 0; iter < 12; ++iter, ++round) {
    const DType in = inputs[round % 3];
    if (iter % 3 != 2) {
      const int s = iter % S;
      const int64_t n = std::min<int64_t>(chunk(rng), caps[size_t(s)] - host.length(seqs[size_t(s)]) - 25);  // room for the steps
      if (n < 1) continue;
      HostTensor k(DType::F32, {n, H, D}), v(DType::F32, {n, H, D});
      fill_normal(k.view(), rng, 2.f);
      fill_normal(v.view(), rng, 1.f);
      const HostTensor kc = testing::convert(k, in), vc = testing::convert(v, in);
      host.append(seqs[size_t(s)], kc.view(), vc.view());
      DeviceBuffer kd = to_device(kc), vd = to_device(vc);
      dev.append(s, kd.get(), vd.get(), n, in, nullptr);
    } else {
      for (int step = 0; step < 5; ++step) {
        HostTensor k(DType::F32, {S, H, D}), v(DType::F32, {S, H, D});
        fill_normal(k.view(), rng, 2.f);
        fill_normal(v.view(), rng, 1.f);
        const HostTensor kc = testing::convert(k, in), vc = testing::convert(v, in);
        for (int s = 0; s < S; ++s) {
          TensorView ks = kc.view(), vs = vc.view();
          const int64_t row = int64_t(H) * D * int64_t(dtype_size(in));
          ks.data = static_cast<char*>(ks.data) + s * row;
          vs.data = static_cast<char*>(vs.data) + s * row;
          ks.shape[0] = vs.shape[0] = 1;
          host.append(seqs[size_t(s)], ks, vs);
        }
        DeviceBuffer kd = to_device(kc), vd = to_device(vc);
        dev.append_step(kd.get(), vd.get(), in, nullptr);
      }
    }
    ASSERT_NO_THROW(dev.check_errors());
    ASSERT_EQ(dev.lengths(), lengths()) << case_name(c) << " after round " << iter;
  }
  const HostKVSnapshot snap = dev.download();
  for (int s = 0; s < S; ++s) {
    expect_same_sequence(host, seqs[size_t(s)], snap, s, case_name(c) + " seq " + std::to_string(s));
    if (::testing::Test::HasFatalFailure()) return;
  }
  // Rebuilding every summary from the pages gives the same bits again.
  dev.rebuild_summaries(nullptr);
  const HostKVSnapshot again = dev.download();
  for (int s = 0; s < S; ++s) expect_same_sequence(host, seqs[size_t(s)], again, s, case_name(c) + " rebuilt");
}

std::vector<CacheCase> cache_cases() {
  std::vector<CacheCase> cases;
  int i = 0;
  for (int page : {1, 3, 16, 64, 256})
    for (int block : {1, 7, 16, 64}) {
      cases.push_back({1 + i % 3, i % 2 ? 128 : 64, page, block, i % 4 < 2 ? DType::BF16 : DType::F16});
      ++i;
    }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Grid, DeviceCacheAppend, ::testing::ValuesIn(cache_cases()),
                         [](const auto& info) { return case_name(info.param); });

// Three KV heads, pages of 16, routing blocks of 32, sinks at 0 and 41.
SyntheticKVSpec three_head_spec(int head_dim, std::vector<int64_t> lengths) {
  SyntheticKVSpec spec;
  spec.num_kv_heads = 3;
  spec.head_dim = head_dim;
  spec.page_size = 16;
  spec.block_size = 32;
  spec.lengths = std::move(lengths);
  spec.sink_positions = {0, 41};
  return spec;
}

TEST(DeviceCache, UploadThenDownloadIsTheHostCache) {
  SR_REQUIRE_CUDA_DEVICE();
  std::mt19937_64 rng(11);
  auto r = make_synthetic_kv(three_head_spec(128, {77, 1, 300}), rng);
  DeviceKVCache dev = DeviceKVCache::upload(*r.cache, r.seqs, 50);
  EXPECT_EQ(dev.capacities(), (std::vector<int64_t>{127, 51, 350}));
  const HostKVSnapshot snap = dev.download();
  for (size_t s = 0; s < r.seqs.size(); ++s) expect_same_sequence(*r.cache, r.seqs[s], snap, int(s), "upload");
}

// Anchors registered on the device, one head at a time and all heads at once, end as the
// host cache's after the same registrations (merged with the existing ones, ascending,
// duplicates dropped), and the other sequences' anchors stay as they were.
TEST(DeviceCache, RegisteredAnchorsMatchTheHostCache) {
  SR_REQUIRE_CUDA_DEVICE();
  std::mt19937_64 rng(12);
  auto r = make_synthetic_kv(three_head_spec(64, {300, 90}), rng);
  DeviceKVCache dev = DeviceKVCache::upload(*r.cache, r.seqs, 10);
  const std::vector<std::vector<int32_t>> per_head = {{250, 7}, {}, {41, 120, 3}};  // 41: already an anchor
  for (int h = 0; h < 3; ++h) r.cache->register_anchors(r.seqs[0], h, per_head[size_t(h)]);
  dev.register_anchors(0, per_head);
  r.cache->register_anchors(r.seqs[1], 1, {88, 17});
  dev.register_anchors(1, 1, {88, 17});
  const HostKVSnapshot snap = dev.download();
  for (size_t s = 0; s < r.seqs.size(); ++s) expect_same_sequence(*r.cache, r.seqs[s], snap, int(s), "anchors");
  const std::vector<int32_t>& head0 = r.cache->anchors(r.seqs[0], 0);  // the registrations took effect
  EXPECT_NE(std::find(head0.begin(), head0.end(), 250), head0.end());
  EXPECT_EQ(snap.anchor_count[2], int32_t(r.cache->anchors(r.seqs[0], 2).size()));
}

TEST(DeviceCache, OverflowAndBadInputsAreClearErrors) {
  SR_REQUIRE_CUDA_DEVICE();
  KVCacheConfig cfg;
  cfg.num_kv_heads = 2;
  cfg.head_dim = 64;
  cfg.num_pages = 1;
  DeviceKVCache dev(cfg, {5, 3});
  std::mt19937_64 rng(12);
  HostTensor k(DType::F32, {2, 2, 64}), v(DType::F32, {2, 2, 64});
  fill_normal(k.view(), rng);
  fill_normal(v.view(), rng);
  DeviceBuffer kd = testing::to_device(k), vd = testing::to_device(v);
  for (int step = 0; step < 4; ++step) dev.append_step(kd.get(), vd.get(), DType::F32, nullptr);
  // Sequence 1 has room for 3 tokens: the fourth step overflowed it and left it unchanged.
  try {
    dev.check_errors();
    ADD_FAILURE() << "expected an overflow error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exceeded a sequence's capacity"), std::string::npos) << e.what();
  }
  EXPECT_EQ(dev.lengths(), (std::vector<int64_t>{4, 3}));
  EXPECT_NO_THROW(dev.check_errors());  // the flag was cleared
  auto expect_error = [](auto fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([&] { dev.append_step(kd.get(), vd.get(), DType::F64, nullptr); }, "input dtype f64 is not supported");
  expect_error([&] { dev.append(2, kd.get(), vd.get(), 1, DType::F32, nullptr); }, "sequence 2 out of range");
  expect_error([&] { dev.append(0, kd.get(), vd.get(), 9, DType::F32, nullptr); }, "do not fit sequence 0");
  expect_error([&] { dev.view(1, 2); }, "out of range");
  expect_error([&] { DeviceKVCache bad(cfg, {0}); }, "capacity 0 out of range");
  expect_error([&] { dev.register_anchors(0, 0, {4}); }, "position 4 is outside sequence 0");
  expect_error([&] { dev.register_anchors(0, std::vector<std::vector<int32_t>>(3)); },
               "positions for 3 KV heads, the cache has 2");
}

}  // namespace
}  // namespace sinkrouter

#else

TEST(DeviceCache, Skipped) { GTEST_SKIP() << "built without CUDA"; }

#endif  // SINKROUTER_HAVE_CUDA
