// The flat Split-K schedule's chunk (src/attention/split_schedule.h), which the CUDA decode
// kernels compute on the device (find_split) and the CUDA tests exercise on the GPU: here
// its guarantees on random unit lengths, checked by brute force.
#include "attention/split_schedule.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace sinkrouter {
namespace {

namespace ss = split_schedule;

int64_t total_splits(const std::vector<int64_t>& tokens, int64_t chunk) {
  int64_t n = 0;
  for (int64_t t : tokens) n += ss::splits_of(t, chunk);
  return n;
}

TEST(SplitSchedule, SplitsOfIsCeilingDivisionAndOneForEmptyUnits) {
  const int64_t big = int64_t(1) << 33;
  for (int64_t t : {int64_t(1), int64_t(127), int64_t(128), int64_t(129), int64_t(2147483647)})  // a unit's tokens: int32
    for (int64_t c : {int64_t(1), int64_t(7), int64_t(128), int64_t(2147483647), big})
      EXPECT_EQ(ss::splits_of(t, c), ss::ceil_div(t, c)) << t << " / " << c;
  EXPECT_EQ(ss::splits_of(0, 128), 1);
}

// Every split has a CTA of the grid (waves * wave_ctas + units), no split is shorter than
// min_split unless its unit is, and the most waves are taken whose splits keep
// waves_min_chunk tokens (brute force over the wave counts).
TEST(SplitSchedule, SplitsFitTheGridAndWavesOnlyForLongSplits) {
  std::mt19937_64 rng(20261129);
  std::uniform_int_distribution<int> pick(0, 1 << 30);
  for (int trial = 0; trial < 5000; ++trial) {
    const int units = 1 + pick(rng) % 300;
    const int wave_ctas = 1 + pick(rng) % 600;
    const int waves = 1 + pick(rng) % 8;
    const int min_split = 1 + pick(rng) % 256;
    const int waves_min = 1 + pick(rng) % 20000;
    // Lengths: equal, nearly equal, or spread over three orders of magnitude; some empty.
    const int kind = pick(rng) % 3;
    const int64_t base = 1 + pick(rng) % 600000;
    std::vector<int64_t> tokens(static_cast<size_t>(units), 0);
    int64_t total = 0;
    for (int64_t& t : tokens) {
      if (kind == 0)
        t = base;
      else if (kind == 1)
        t = base + pick(rng) % (base / 8 + 1);
      else
        t = pick(rng) % 1000000 / (1 + pick(rng) % 1000);
      if (pick(rng) % 50 == 0) t = 0;
      total += t;
    }
    SCOPED_TRACE(testing::Message() << "trial " << trial << " units " << units << " wave " << wave_ctas
                                    << " waves " << waves << " min_split " << min_split << " total " << total);
    const int64_t chunk = ss::chunk_for(total, units, wave_ctas, waves, waves_min, min_split);
    const int64_t one_wave = ss::chunk_for(total, units, wave_ctas, 1, waves_min, min_split);
    ASSERT_GE(chunk, min_split);
    ASSERT_LE(total_splits(tokens, chunk), int64_t(waves) * wave_ctas + units);
    ASSERT_LE(total_splits(tokens, chunk), ss::ceil_div(total, chunk) + units);  // find_split's early return
    if (wave_ctas > units) {  // one wave is enough for every split of the one-wave chunk
      ASSERT_LE(total_splits(tokens, one_wave), wave_ctas);
    }
    int64_t expected = one_wave;
    for (int w = 2; w <= waves; ++w) {
      const int64_t c = ss::chunk_over(total, int64_t(w) * wave_ctas - units, min_split);
      if (c >= waves_min) expected = c;
    }
    ASSERT_EQ(chunk, expected);
  }
}

// Kernel run 13a's routed decode at Llama B=8 512K: 52 units of 262K kept tokens and 12 of
// 350K on a wave of 264 CTAs. One wave: 204 splits of ~87K tokens. Four waves: ~1,000 splits
// of ~22K, which the CTAs that finish early take in turn.
TEST(SplitSchedule, LongCallsTakeTheWavesShortOnesKeepOne) {
  std::vector<int64_t> tokens(52, 262144);
  tokens.insert(tokens.end(), 12, 349525);
  int64_t total = 0;
  for (int64_t t : tokens) total += t;
  const int64_t one = ss::chunk_for(total, 64, 264, 1, 8192, 128);
  const int64_t four = ss::chunk_for(total, 64, 264, 4, 8192, 128);
  EXPECT_EQ(total_splits(tokens, one), 52 * 3 + 12 * 4);
  EXPECT_EQ(ss::ceil_div(262144, 3), 87382);
  EXPECT_GE(total_splits(tokens, four), 4 * 200);
  EXPECT_LE(total_splits(tokens, four), 4 * 264 + 64);
  EXPECT_GE(four, 8192);
  EXPECT_EQ(four, ss::chunk_over(total, 4 * 264 - 64, 128));
  // Llama B=1 512K dense: 16K-token splits in one wave; two waves would make them 8,066 < 8K.
  EXPECT_EQ(ss::chunk_for(8 * 524288, 8, 264, 4, 8192, 128), 16384);
  // Llama B=8 64K dense: 4 waves would make 4.2K-token splits, 2 make 9K.
  EXPECT_EQ(ss::chunk_for(64 * 65536, 64, 264, 4, 8192, 128), ss::chunk_over(64 * 65536, 2 * 264 - 64, 128));
  // Llama B=1 4K: a one-wave split of 128 tokens stays one wave.
  const std::vector<int64_t> small(8, 4096);
  EXPECT_EQ(ss::chunk_for(8 * 4096, 8, 264, 4, 8192, 128), 128);
  EXPECT_EQ(total_splits(small, 128), 256);
}

}  // namespace
}  // namespace sinkrouter
