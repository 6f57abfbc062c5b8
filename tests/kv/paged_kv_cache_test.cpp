#include "sinkrouter/kv/paged_kv_cache.h"

#include <gtest/gtest.h>

#include <random>

#include "sinkrouter/kv/synthetic_kv.h"

namespace sinkrouter {
namespace {


float kv_at(const PagedKV& kv, int b, int64_t t, int h, int d, bool value) {
  const uint16_t x = static_cast<const uint16_t*>(kv.pages)[kv.k_offset(b, t, h) + (value ? kv.v_stride() : 0) + d];
  return kv.dtype == DType::BF16 ? to_float(bf16{x}) : f16_to_float(x);
}

struct CacheCase {
  int page_size;
  int block_size;
  DType dtype;
  int chunk;
};

class CacheLayout : public ::testing::TestWithParam<CacheCase> {};

TEST_P(CacheLayout, StoresTokensAndTrueSummaries) {
  const CacheCase c = GetParam();
  std::mt19937_64 rng(11 + c.page_size * 7 + c.block_size);
  SyntheticKVSpec spec;
  spec.num_kv_heads = 3;
  spec.head_dim = 64;
  spec.dtype = c.dtype;
  spec.page_size = c.page_size;
  spec.block_size = c.block_size;
  spec.lengths = {1, 77, 300, 129};
  spec.append_chunk = c.chunk;
  auto r = make_synthetic_kv(spec, rng);
  const PagedKV& kv = r.batch.view;
  const bool bf = c.dtype == DType::BF16;
  for (int b = 0; b < kv.batch; ++b) {
    const int64_t n = spec.lengths[size_t(b)];
    ASSERT_EQ(kv.seq_len(b), n);
    const int64_t blocks = (n + c.block_size - 1) / c.block_size;
    ASSERT_EQ(kv.summary_indptr[b + 1] - kv.summary_indptr[b], blocks);
    for (int h = 0; h < 3; ++h)
      for (int64_t j = 0; j < blocks; ++j) {
        const uint16_t* s = static_cast<const uint16_t*>(kv.summaries) + kv.summary_offset(b, j, h);
        float vmax = 0;
        for (int d = 0; d < 64; ++d) {
          const float lo = bf ? to_float(bf16{s[d]}) : f16_to_float(s[d]);
          const float hi = bf ? to_float(bf16{s[64 + d]}) : f16_to_float(s[64 + d]);
          float seen_lo = 1e30f, seen_hi = -1e30f;
          for (int64_t t = j * c.block_size; t < std::min<int64_t>(n, (j + 1) * c.block_size); ++t) {
            const float x = kv_at(kv, b, t, h, d, false);
            seen_lo = std::min(seen_lo, x);
            seen_hi = std::max(seen_hi, x);
          }
          // The keys are stored in the summary's type, so the bounds are tight.
          ASSERT_EQ(lo, seen_lo);
          ASSERT_EQ(hi, seen_hi);
        }
        for (int64_t t = j * c.block_size; t < std::min<int64_t>(n, (j + 1) * c.block_size); ++t) {
          double nv = 0;
          for (int d = 0; d < 64; ++d) nv += double(kv_at(kv, b, t, h, d, true)) * kv_at(kv, b, t, h, d, true);
          vmax = std::max(vmax, float(std::sqrt(nv)));
        }
        const float stored = kv.block_value_norm(b, j, h);
        ASSERT_GE(stored, vmax);
        ASSERT_LE(stored, vmax * 1.0001f + 1e-6f);
      }
  }
  // Rebuilding the summaries from the pages gives the same bytes.
  std::vector<uint16_t> rebuilt(r.cache->summaries().size());
  std::vector<float> vnorm(r.cache->value_norm_max().size());
  build_summaries(kv, rebuilt.data(), vnorm.data());
  EXPECT_EQ(rebuilt, r.cache->summaries());
  EXPECT_EQ(vnorm, r.cache->value_norm_max());
}

INSTANTIATE_TEST_SUITE_P(
    PagesBlocksDtypes, CacheLayout,
    ::testing::Values(CacheCase{1, 64, DType::BF16, 0}, CacheCase{16, 64, DType::BF16, 5},
                      CacheCase{16, 64, DType::F16, 1}, CacheCase{64, 16, DType::BF16, 33},
                      CacheCase{256, 64, DType::F16, 0}, CacheCase{7, 10, DType::BF16, 3}),
    [](const auto& info) {
      return "p" + std::to_string(info.param.page_size) + "_r" + std::to_string(info.param.block_size) +
             "_" + dtype_name(info.param.dtype) + "_c" + std::to_string(info.param.chunk);
    });

TEST(PagedKVCache, ChunkedAppendEqualsWholeAppend) {
  SyntheticKVSpec spec;
  spec.lengths = {333};
  std::mt19937_64 rng1(5), rng2(5);
  auto a = make_synthetic_kv(spec, rng1);
  spec.append_chunk = 17;
  auto b = make_synthetic_kv(spec, rng2);
  EXPECT_EQ(a.cache->pages(), b.cache->pages());
  EXPECT_EQ(a.cache->summaries(), b.cache->summaries());
}

TEST(PagedKVCache, RoundsInputToNearestEven) {
  KVCacheConfig cfg{1, 64, DType::BF16, 16, 64, 4};
  PagedKVCache cache(cfg);
  const int s = cache.create_sequence();
  std::vector<float> k(64, 1.0f + std::ldexp(1.0f, -8)), v(64, 1.0f + 3 * std::ldexp(1.0f, -8));
  cache.append(s, TensorView(k.data(), DType::F32, {1, 1, 64}), TensorView(v.data(), DType::F32, {1, 1, 64}));
  auto batch = cache.batch({s});
  EXPECT_EQ(kv_at(batch.view, 0, 0, 0, 5, false), 1.0f);
  EXPECT_EQ(kv_at(batch.view, 0, 0, 0, 5, true), 1.0f + std::ldexp(1.0f, -6));
}

TEST(PagedKVCache, FullCacheIsAClearErrorAndChangesNothing) {
  KVCacheConfig cfg{2, 64, DType::F16, 16, 64, /*num_pages=*/3};
  PagedKVCache cache(cfg);
  const int s = cache.create_sequence();
  std::vector<float> k(40 * 2 * 64, 0.5f);
  TensorView kv(k.data(), DType::F32, {40, 2, 64});
  cache.append(s, kv, kv);
  EXPECT_EQ(cache.length(s), 40);
  TensorView more(k.data(), DType::F32, {9, 2, 64});
  try {
    cache.append(s, more, more);
    FAIL() << "expected the cache to be full";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("KV cache is full"), std::string::npos) << e.what();
  }
  EXPECT_EQ(cache.length(s), 40);
  cache.free_sequence(s);
  EXPECT_EQ(cache.free_pages(), 3);
}

TEST(PagedKVCache, BadInputGetsClearErrors) {
  EXPECT_THROW(PagedKVCache(KVCacheConfig{2, 64, DType::F32, 16, 64, 4}), Error);
  EXPECT_THROW(PagedKVCache(KVCacheConfig{2, 64, DType::BF16, 0, 64, 4}), Error);
  EXPECT_THROW(PagedKVCache(KVCacheConfig{2, 64, DType::BF16, 257, 64, 4}), Error);
  PagedKVCache cache(KVCacheConfig{2, 64, DType::BF16, 16, 64, 4});
  const int s = cache.create_sequence();
  std::vector<float> k(3 * 64, 0.5f);
  try {
    cache.append(s, TensorView(k.data(), DType::F32, {1, 3, 64}), TensorView(k.data(), DType::F32, {1, 3, 64}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("shape [1, 3, 64] f32 does not match the expected [*, 2, 64]"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(cache.register_anchors(s, 0, {0}), Error);  // position beyond the length
  EXPECT_THROW(cache.register_anchors(s, 5, {}), Error);   // no such head
  EXPECT_THROW(cache.length(42), Error);
}

TEST(PagedKVCache, AnchorsDefaultToFirstTokensAndAcceptDetectedSinks) {
  KVCacheConfig cfg{2, 64, DType::BF16, 16, 64, 8};
  cfg.default_anchors = 2;
  cfg.max_anchors = 4;
  PagedKVCache cache(cfg);
  const int s = cache.create_sequence();
  std::vector<float> k(100 * 2 * 64, 0.25f);
  TensorView kv(k.data(), DType::F32, {100, 2, 64});
  cache.append(s, kv, kv);
  EXPECT_EQ(cache.anchors(s, 1), (std::vector<int32_t>{0, 1}));
  cache.register_anchors(s, 1, {57, 1, 13});
  EXPECT_EQ(cache.anchors(s, 1), (std::vector<int32_t>{0, 1, 13, 57}));
  EXPECT_EQ(cache.anchors(s, 0), (std::vector<int32_t>{0, 1}));
  EXPECT_THROW(cache.register_anchors(s, 1, {80}), Error);  // over max_anchors
  auto batch = cache.batch({s});
  EXPECT_EQ(batch.view.anchor_count[1], 4);
  EXPECT_EQ(batch.view.anchor_pos[1 * 4 + 3], 57);
}

}  // namespace
}  // namespace sinkrouter
