// The flat Split-K schedule's chunk (src/attention/split_schedule.h), which the CUDA decode
// kernels compute in parallel (find_split) and the CUDA tests exercise on the GPU: here its
// plain reference against brute force on random unit lengths, and the case that motivated
// the candidates.
#include "attention/split_schedule.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace sinkrouter {
namespace {

namespace ss = split_schedule;

int total_splits(const std::vector<int64_t>& tokens, int64_t chunk) {
  int n = 0;
  for (int64_t t : tokens) n += ss::splits_of(t, chunk);
  return n;
}

// The most tokens one CTA takes (a unit's tokens are cut evenly over its splits).
int64_t max_cta_tokens(const std::vector<int64_t>& tokens, int64_t chunk) {
  int64_t m = 0;
  for (int64_t t : tokens) m = std::max(m, ss::ceil_div(t, ss::splits_of(t, chunk)));
  return m;
}

TEST(SplitSchedule, SplitsOfIsCeilingDivision) {
  const int64_t big = int64_t(1) << 33;
  for (int64_t t : {int64_t(0), int64_t(1), int64_t(127), int64_t(128), int64_t(129), int64_t(2147483647), big + 5})
    for (int64_t c : {int64_t(1), int64_t(7), int64_t(128), int64_t(2147483647), big})
      EXPECT_EQ(ss::splits_of(t, c), t > 0 ? int(ss::ceil_div(t, c)) : 1) << t << " / " << c;
}

TEST(SplitSchedule, ChunkFitsAndIsTheSmallestCandidateThatFits) {
  std::mt19937_64 rng(20261129);
  std::uniform_int_distribution<int> pick(0, 1 << 30);
  for (int trial = 0; trial < 3000; ++trial) {
    const int units = 1 + pick(rng) % 300;
    const int target = 1 + pick(rng) % 600;
    const int min_split = 1 + pick(rng) % 256;
    // Lengths: equal, nearly equal, or spread over three orders of magnitude; some empty.
    const int kind = pick(rng) % 3;
    const int64_t base = 1 + pick(rng) % 600000;
    std::vector<int64_t> tokens(static_cast<size_t>(units), 0);
    for (int64_t& t : tokens) {
      if (kind == 0) t = base;
      else if (kind == 1) t = base + pick(rng) % (base / 8 + 1);
      else t = pick(rng) % 1000000 / (1 + pick(rng) % 1000);
      if (pick(rng) % 50 == 0) t = 0;
    }
    int64_t total = 0;
    for (int64_t t : tokens) total += t;
    const int64_t safe = ss::candidate_chunk(total, target, units, min_split, ss::kCandidates - 1);
    const int64_t chunk = ss::choose_chunk(tokens, target, min_split);
    SCOPED_TRACE(testing::Message() << "trial " << trial << " units " << units << " target " << target
                                    << " min_split " << min_split << " total " << total);
    ASSERT_GE(chunk, min_split);
    ASSERT_LE(chunk, safe);
    // It fits the grid the decoder launches (target + units CTAs), and the wave of target
    // CTAs wherever the safe chunk does.
    const int n = total_splits(tokens, chunk);
    ASSERT_LE(n, target + units);
    if (total_splits(tokens, safe) <= target) {
      ASSERT_LE(n, target);
    }
    ASSERT_LE(max_cta_tokens(tokens, chunk), max_cta_tokens(tokens, safe));
    // No smaller candidate fits (where the candidates are counted at all).
    if (ss::refine(safe, target, units, min_split)) {
      for (int k = 0; k < ss::kCandidates - 1; ++k) {
        const int64_t c = ss::candidate_chunk(total, target, units, min_split, k);
        if (c < chunk) {
          ASSERT_GT(total_splits(tokens, c), target) << "candidate " << k;
        }
      }
    } else {
      ASSERT_EQ(chunk, safe);
    }
  }
}

// Kernel run 12g's routed decode at Llama B=8 512K: 64 units whose kept tokens differ by
// head. Shaped here as 52 units a little under the mean and 12 above it: the safe chunk gives
// most units 3 splits and leaves a quarter of the 264 slots idle.
TEST(SplitSchedule, UnequalUnitsUseMoreOfTheWave) {
  std::vector<int64_t> tokens;
  for (int u = 0; u < 52; ++u) tokens.push_back(240000);
  for (int u = 0; u < 12; ++u) tokens.push_back(300000);
  const int target = 264, units = 64, min_split = 128;
  int64_t total = 0;
  for (int64_t t : tokens) total += t;
  const int64_t safe = ss::candidate_chunk(total, target, units, min_split, ss::kCandidates - 1);
  const int64_t chunk = ss::choose_chunk(tokens, target, min_split);
  EXPECT_EQ(total_splits(tokens, safe), 52 * 3 + 12 * 4);
  EXPECT_EQ(total_splits(tokens, chunk), 64 * 4);
  // The busiest CTA takes 75,000 tokens where it took 80,000.
  EXPECT_EQ(max_cta_tokens(tokens, safe), 80000);
  EXPECT_EQ(max_cta_tokens(tokens, chunk), 75000);
}

// Equal units: the candidates change nothing where the wave divides evenly, and small calls
// (chunk at min_split) skip them.
TEST(SplitSchedule, EqualUnitsAndSmallCalls) {
  EXPECT_EQ(total_splits(std::vector<int64_t>(64, 524288), ss::choose_chunk(std::vector<int64_t>(64, 524288), 264, 128)),
            256);
  const std::vector<int64_t> small(8, 4096);
  EXPECT_EQ(ss::choose_chunk(small, 264, 128), 128);
  EXPECT_FALSE(ss::refine(128, 264, 8, 128));
  EXPECT_FALSE(ss::refine(1 << 20, 264, 1, 128));  // one unit: the safe chunk is the only fit known
}

}  // namespace
}  // namespace sinkrouter
