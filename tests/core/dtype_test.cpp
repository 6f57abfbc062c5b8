#include "sinkrouter/core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace sinkrouter {
namespace {

TEST(BF16, RoundsToNearestEven) {
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
  EXPECT_EQ(to_float(to_bf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  // 1 + 3*2^-8 is halfway between 1+2^-7 and 1+2^-6: ties go to even (1+2^-6).
  EXPECT_EQ(to_float(to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))), 1.0f + std::ldexp(1.0f, -6));
  // Just above the tie rounds up.
  EXPECT_EQ(to_float(to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20))),
            1.0f + std::ldexp(1.0f, -7));
  EXPECT_EQ(to_float(to_bf16(-2.5f)), -2.5f);
  EXPECT_TRUE(std::isnan(to_float(to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isinf(to_float(to_bf16(std::numeric_limits<float>::infinity()))));
  // Overflow of the largest finite float rounds to infinity.
  EXPECT_TRUE(std::isinf(to_float(to_bf16(std::numeric_limits<float>::max()))));
}

TEST(BF16, NearestOnRandomFloats) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> exp_dist(-30.f, 30.f);
  for (int i = 0; i < 200000; ++i) {
    const float f = std::ldexp(std::uniform_real_distribution<float>(-1.f, 1.f)(rng), int(exp_dist(rng)));
    const bf16 r = to_bf16(f);
    const float x = to_float(r);
    const float up = to_float(bf16{uint16_t(r.bits + 1)});
    const float dn = to_float(bf16{uint16_t(r.bits - 1)});
    ASSERT_LE(std::fabs(x - f), std::fabs(up - f)) << f;
    ASSERT_LE(std::fabs(x - f), std::fabs(dn - f)) << f;
  }
}

TEST(F16, RoundTripsEveryFiniteValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_float(uint16_t(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(f))));
      continue;
    }
    ASSERT_EQ(float_to_f16(f), uint16_t(h)) << "pattern " << h;
  }
}

TEST(F16, MatchesHardwareConversion) {
#if defined(__F16C__)
  std::mt19937 rng(2);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 500000; ++i) {
    const float f = bits_float(bits(rng));
    if (std::isnan(f)) continue;
    const uint16_t hw = _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
    ASSERT_EQ(float_to_f16(f), hw) << f;
  }
  // Subnormal ties and the overflow threshold.
  for (float f : {std::ldexp(1.f, -25), 3 * std::ldexp(1.f, -25), 65519.f, 65520.f, 65504.f, -65520.f})
    EXPECT_EQ(float_to_f16(f), _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT)) << f;
#else
  GTEST_SKIP() << "no F16C on this build: compared only by round trip";
#endif
}

TEST(Rounding, OutwardIsABound) {
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0.f, 100.f);
  for (int i = 0; i < 100000; ++i) {
    float f = n(rng);
    if (i % 7 == 0) f = std::ldexp(f, -30);  // tiny values, subnormal in f16
    EXPECT_GE(to_float(to_bf16_up(f)), f);
    EXPECT_LE(to_float(to_bf16_down(f)), f);
    EXPECT_GE(to_float(to_f16_up(f)), f);
    EXPECT_LE(to_float(to_f16_down(f)), f);
    // At most one unit away from the nearest value.
    EXPECT_LE(std::fabs(to_float(to_bf16_up(f)) - f), std::fabs(f) * 0x1p-7f + 1e-38f);
  }
  // Exactly representable values are unchanged.
  EXPECT_EQ(to_float(to_bf16_up(1.5f)), 1.5f);
  EXPECT_EQ(to_float(to_f16_down(-0.25f)), -0.25f);
}

TEST(DType, NamesAndErrors) {
  EXPECT_EQ(parse_dtype("bf16"), DType::BF16);
  EXPECT_EQ(parse_dtype("fp16"), DType::F16);
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  try {
    parse_dtype("int8");
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("int8"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("expected"), std::string::npos);
  }
}

}  // namespace
}  // namespace sinkrouter
