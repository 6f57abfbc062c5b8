// Small vectorisable helpers for the CPU attention paths (internal header).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "sinkrouter/core/dtype.h"

namespace sinkrouter {
namespace cpu {

// dst[i] = float(src[i]) for raw 16-bit storage values.
inline void bf16_row_to_float(const uint16_t* src, float* dst, int n) {
#pragma omp simd
  for (int i = 0; i < n; ++i) dst[i] = bits_float(uint32_t(src[i]) << 16);
}

inline void f16_row_to_float(const uint16_t* src, float* dst, int n) {
  int i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#endif
  for (; i < n; ++i) dst[i] = f16_to_float(src[i]);
}

inline void row_to_float(const uint16_t* src, bool bf, float* dst, int n) {
  if (bf)
    bf16_row_to_float(src, dst, n);
  else
    f16_row_to_float(src, dst, n);
}

inline float dot(const float* a, const float* b, int n) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Upper bound of max over the box [lo, hi] of q . k, its float rounding error aside: the sum of
// q_i times the end of [lo_i, hi_i] that maximises it (hi_i where q_i >= 0, as the CUDA router
// picks it). The rounding allowance is dot_error_factor(n) * (|q|_1 * box_end_max(lo, hi)),
// since sum_i |q_i e_i| <= |q|_1 end_max for the chosen ends e_i: both routers compute it from
// the same exact end_max and the same l1_norm_in_order, so their allowances are equal, and the
// CUDA router needs no per-dimension sum of absolute products (kernel run 28i). The factor also
// covers the tensor-core step's sum (decode_cuda_route_mma.cuh: products exact, 16 a step
// added with at most 34 u of their magnitudes, the steps then added in float: <= ~58 u at
// n = 128 and ~47 u at n = 64, against (n + 4) u).
inline float box_max_dot(const float* q, const float* lo, const float* hi, int n) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) s += q[i] * (q[i] >= 0.f ? hi[i] : lo[i]);
  return s;
}

// end_max = max_i max(|lo_i|, |hi_i|), the largest magnitude in the box: of either end, so that
// it does not depend on q (one per block for every head, as the CUDA router's tensor-core step
// takes it).
inline float box_end_max(const float* lo, const float* hi, int n) {
  float a = 0;
#pragma omp simd reduction(max : a)
  for (int i = 0; i < n; ++i) a = std::max(a, std::max(std::fabs(lo[i]), std::fabs(hi[i])));
  return a;
}

// |q|_1 in float, summed in index order: the CUDA router (route_bounds) sums it in the same
// order, so both get the same value (no vectorised reduction here, on purpose).
inline float l1_norm_in_order(const float* q, int n) {
  float s = 0;
  for (int i = 0; i < n; ++i) s += std::fabs(q[i]);
  return s;
}

// Relative bound on the rounding error of an n-term float32 dot product (gamma_n, padded).
inline float dot_error_factor(int n) { return float(n + 4) * 5.9604645e-8f; }

}  // namespace cpu
}  // namespace sinkrouter
