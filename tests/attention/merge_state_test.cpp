#include "sinkrouter/attention/merge_state.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace sinkrouter {
namespace {

struct State {
  float m, l;
  std::vector<float> acc;
};

// The exact partial state of scores s and values v (rows of D).
State make_state(const std::vector<float>& s, const std::vector<std::vector<float>>& v, int D) {
  State st{-std::numeric_limits<float>::infinity(), 0.f, std::vector<float>(size_t(D), 0.f)};
  for (float x : s) st.m = std::max(st.m, x);
  for (size_t i = 0; i < s.size(); ++i) {
    const float p = std::exp(s[i] - st.m);
    st.l += p;
    for (int d = 0; d < D; ++d) st.acc[size_t(d)] += p * v[i][size_t(d)];
  }
  return st;
}

State merged(State a, const State& b, int D) {
  merge_state(a.m, a.l, a.acc.data(), b.m, b.l, b.acc.data(), D);
  return a;
}

TEST(MergeState, IsAssociativeAndCommutative) {
  std::mt19937 rng(9);
  std::normal_distribution<float> n(0.f, 3.f);
  const int D = 64;
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<State> parts;
    for (int p = 0; p < 3; ++p) {
      const int count = trial % 5 == 0 && p == 1 ? 0 : 1 + int(rng() % 20);  // some empty parts
      std::vector<float> s;
      std::vector<std::vector<float>> v;
      for (int i = 0; i < count; ++i) {
        s.push_back(n(rng) + (p == 2 ? 20.f : 0.f));
        std::vector<float> row(static_cast<size_t>(D));
        for (float& x : row) x = n(rng);
        v.push_back(row);
      }
      parts.push_back(make_state(s, v, D));
    }
    const State left = merged(merged(parts[0], parts[1], D), parts[2], D);
    const State right = merged(parts[0], merged(parts[1], parts[2], D), D);
    const State swapped = merged(merged(parts[2], parts[0], D), parts[1], D);
    for (const State* other : {&right, &swapped}) {
      ASSERT_EQ(left.m, other->m);
      ASSERT_NEAR(left.l, other->l, 1e-5f * left.l);
      for (int d = 0; d < D; ++d)
        ASSERT_NEAR(left.acc[size_t(d)] / left.l, other->acc[size_t(d)] / other->l, 1e-5f);
    }
  }
}

TEST(MergeState, EmptyPartialsAreNeutralAndNaNFree) {
  const int D = 4;
  State empty{-std::numeric_limits<float>::infinity(), 0.f, std::vector<float>(D, 0.f)};
  State a{1.5f, 2.f, {1.f, 2.f, 3.f, 4.f}};
  State x = merged(a, empty, D);
  State y = merged(empty, a, D);
  State z = merged(empty, empty, D);
  EXPECT_EQ(x.m, a.m);
  EXPECT_EQ(y.l, a.l);
  EXPECT_EQ(y.acc, a.acc);
  EXPECT_EQ(z.l, 0.f);
  for (float v : z.acc) EXPECT_FALSE(std::isnan(v));
}

}  // namespace
}  // namespace sinkrouter
