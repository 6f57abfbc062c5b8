// Helpers of the tests of the forward pass's device pieces (cuda_ops_test.cpp,
// cuda_gemv_test.cpp; copies to and from the device: cuda_test_util.h): random inputs, bf16 bits, and the
// tolerances (float32 sums: 2e-5 * (sum |terms| + |ref|) + 1e-6; bf16 outputs: one ulp of the
// rounded reference).
#pragma once

#if defined(SINKROUTER_HAVE_CUDA)

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "sinkrouter/core/dtype.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter::testing {

inline std::vector<float> normal_vector(size_t n, std::mt19937_64& rng, float stddev = 1.f) {
  std::normal_distribution<float> d(0.f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

inline std::vector<uint16_t> to_bf16_bits(const std::vector<float>& v) {
  std::vector<uint16_t> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = to_bf16(v[i]).bits;
  return r;
}

inline double bf16_value(uint16_t b) { return to_float(bf16{b}); }

// |got - want| within the float32-sum tolerance (sum_abs: sum of |terms| behind want).
inline void expect_close(double got, double want, double sum_abs, const std::string& where) {
  ASSERT_LE(std::fabs(got - want), 2e-5 * (sum_abs + std::fabs(want)) + 1e-6)
      << where << ": got " << got << ", expected " << want;
}

// One bf16 ulp of the rounded reference.
inline void expect_bf16(uint16_t got, double want, const std::string& where) {
  const double w = to_float(to_bf16(float(want)));
  ASSERT_LE(std::fabs(bf16_value(got) - w), 1.01 * std::ldexp(std::fabs(w), -7) + 1e-6)
      << where << ": got " << bf16_value(got) << ", expected " << want;
}

}  // namespace sinkrouter::testing

#endif  // SINKROUTER_HAVE_CUDA
