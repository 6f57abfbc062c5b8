// Inner loops of the fast CPU decode attention (decode_cpu.cpp) over one span of one KV
// head, for the G query heads of its group (internal header):
//
//   span_scores(q, rows, len, s)      s[g * len + i] = q_g . k_i           q: [G][D] f32, pre-scaled
//   span_softmax(s, len, m, l, acc)   online softmax: rescale (m, l, acc) to the new maximum,
//                                     turn s into weights p = exp(s - m_new)
//   span_values(p, rows, vstride, len, acc)   acc_g += sum_i p[g * len + i] v_i   acc: [G][D]
//
// rows[i] points at token i's K row (16-bit storage, bf16 or f16); its V row is at
// rows[i] + vstride. The AVX2 versions (D = 64 or 128, G <= 8) reduce 8 tokens' dot
// products together, convert each K/V row once, use a vectorised exp (error below 3 ulp
// for arguments in [-87, 0]; 0 below) and prefetch rows ahead; the generic versions are
// the plain loops they replace, kept for other builds and shapes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "cpu_math.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define SR_SPAN_AVX2 1
#endif

namespace sinkrouter {
namespace cpu {

constexpr float kSpanNegInf = -std::numeric_limits<float>::infinity();

// ---- generic ---------------------------------------------------------------------------

inline void span_scores_generic(const float* q, int G, int D, bool bf, const uint16_t* const* rows, int len,
                                float* s, float* row) {
  for (int i = 0; i < len; ++i) {
    row_to_float(rows[i], bf, row, D);
    for (int g = 0; g < G; ++g) s[size_t(g) * len + i] = dot(q + size_t(g) * D, row, D);
  }
}

inline void span_softmax_generic(float* s, int G, int len, float* m, float* l, float* acc, int D) {
  for (int g = 0; g < G; ++g) {
    float* sg = s + size_t(g) * len;
    float mx = kSpanNegInf;
    for (int i = 0; i < len; ++i) mx = std::max(mx, sg[i]);
    const float m_new = std::max(m[g], mx);
    const float a = m[g] == kSpanNegInf ? 0.f : std::exp(m[g] - m_new);
    float* ag = acc + size_t(g) * D;
    if (a != 1.f)
      for (int d = 0; d < D; ++d) ag[d] *= a;
    float lsum = 0;
    for (int i = 0; i < len; ++i) {
      sg[i] = std::exp(sg[i] - m_new);
      lsum += sg[i];
    }
    l[g] = l[g] * a + lsum;
    m[g] = m_new;
  }
}

inline void span_values_generic(const float* p, int G, int D, bool bf, const uint16_t* const* rows, int64_t vstride,
                                int len, float* acc, float* row) {
  for (int i = 0; i < len; ++i) {
    row_to_float(rows[i] + vstride, bf, row, D);
    for (int g = 0; g < G; ++g) {
      const float w = p[size_t(g) * len + i];
      float* ag = acc + size_t(g) * D;
#pragma omp simd
      for (int d = 0; d < D; ++d) ag[d] += w * row[d];
    }
  }
}

#if defined(SR_SPAN_AVX2)
// ---- AVX2 ------------------------------------------------------------------------------

template <bool BF>
inline __m256 load8_to_float(const uint16_t* p) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (BF)
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
  else
    return _mm256_cvtph_ps(raw);
}

// exp(x) for x <= 0 (softmax weights): 2^n * e^r, |r| <= ln2/2, degree-7 Taylor
// polynomial (truncation < 6e-9 relative), n from the rounded x log2(e), ln 2 split in
// two for an exact reduction; x < -87 gives 0 (the true value is below 2^-125, and every
// caller adds it to a sum that holds at least 1).
inline __m256 exp_nonpositive(__m256 x) {
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.f / 5040);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 720));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  return _mm256_and_ps(y, _mm256_cmp_ps(x, _mm256_set1_ps(-87.f), _CMP_GE_OQ));
}

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

inline float hadd(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The 8 lane sums of a[0..7], as one vector (lane j = sum of a[j]).
inline __m256 transpose_sums(const __m256* a) {
  const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

inline void prefetch_row(const uint16_t* p, int bytes) {
  for (int o = 0; o < bytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(p) + o, _MM_HINT_T0);
}

// Scores of 8 tokens at a time: per token and head, one vector of partial products over
// D, then 8 tokens' vectors reduced together. `prefetch` bytes from the K row `ahead`
// tokens on, and from this token's V row, are prefetched (0: none).
template <int D, int G, bool BF>
void span_scores_avx2(const float* q, const uint16_t* const* rows, int64_t vstride, int len, float* s,
                      int prefetch = D * 2) {
  constexpr int C = D / 8;
  constexpr int ahead = 4;
  alignas(32) __m256 part[G][8];
  for (int i0 = 0; i0 < len; i0 += 8) {
    const int n = std::min(8, len - i0);
    for (int j = 0; j < n; ++j) {
      const uint16_t* k = rows[i0 + j];
      if (i0 + j + ahead < len) prefetch_row(rows[i0 + j + ahead], prefetch);
      prefetch_row(k + vstride, prefetch);
      __m256 acc[G];
      for (int g = 0; g < G; ++g) acc[g] = _mm256_setzero_ps();
      for (int c = 0; c < C; ++c) {
        const __m256 kf = load8_to_float<BF>(k + 8 * c);
        for (int g = 0; g < G; ++g) acc[g] = _mm256_fmadd_ps(_mm256_loadu_ps(q + g * D + 8 * c), kf, acc[g]);
      }
      for (int g = 0; g < G; ++g) part[g][j] = acc[g];
    }
    for (int j = n; j < 8; ++j)
      for (int g = 0; g < G; ++g) part[g][j] = _mm256_setzero_ps();
    for (int g = 0; g < G; ++g) {
      alignas(32) float out[8];
      _mm256_store_ps(out, transpose_sums(part[g]));
      for (int j = 0; j < n; ++j) s[size_t(g) * len + i0 + j] = out[j];
    }
  }
}

template <int D>
void span_softmax_avx2(float* s, int G, int len, float* m, float* l, float* acc) {
  for (int g = 0; g < G; ++g) {
    float* sg = s + size_t(g) * len;
    __m256 vmax = _mm256_set1_ps(kSpanNegInf);
    int i = 0;
    for (; i + 8 <= len; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(sg + i));
    float mx = hmax(vmax);
    for (; i < len; ++i) mx = std::max(mx, sg[i]);
    const float m_new = std::max(m[g], mx);
    const float a = m[g] == kSpanNegInf ? 0.f : std::exp(m[g] - m_new);
    float* ag = acc + size_t(g) * D;
    if (a != 1.f)
      for (int d = 0; d < D; d += 8) _mm256_storeu_ps(ag + d, _mm256_mul_ps(_mm256_loadu_ps(ag + d), _mm256_set1_ps(a)));
    const __m256 mv = _mm256_set1_ps(m_new);
    __m256 vsum = _mm256_setzero_ps();
    i = 0;
    for (; i + 8 <= len; i += 8) {
      const __m256 p = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(sg + i), mv));
      _mm256_storeu_ps(sg + i, p);
      vsum = _mm256_add_ps(vsum, p);
    }
    if (i < len) {  // the tail through the same exp, so that every weight is computed alike
      alignas(32) float t[8] = {};
      for (int j = i; j < len; ++j) t[j - i] = sg[j] - m_new;
      for (int j = len - i; j < 8; ++j) t[j] = kSpanNegInf;
      const __m256 p = exp_nonpositive(_mm256_load_ps(t));
      _mm256_store_ps(t, p);
      for (int j = i; j < len; ++j) sg[j] = t[j - i];
      vsum = _mm256_add_ps(vsum, p);
    }
    l[g] = l[g] * a + hadd(vsum);
    m[g] = m_new;
  }
}

// acc_g += sum_i p_gi v_i, 8 output dimensions (one vector) per head at a time in
// registers, the V rows converted once into `vbuf` [len][D].
template <int D, int G, bool BF>
void span_values_avx2(const float* p, const uint16_t* const* rows, int64_t vstride, int len, float* acc, float* vbuf) {
  constexpr int C = D / 8;
  for (int i = 0; i < len; ++i) {
    const uint16_t* v = rows[i] + vstride;
    for (int c = 0; c < C; ++c) _mm256_storeu_ps(vbuf + size_t(i) * D + 8 * c, load8_to_float<BF>(v + 8 * c));
  }
  // Blocks of 4 vectors (32 dimensions) x G heads of accumulators: at most 4 x 8 = 32 lanes
  // of registers for G = 8 would spill, so heads go in groups of 2.
  for (int g0 = 0; g0 < G; g0 += 2) {
    const int gn = std::min(2, G - g0);
    for (int c0 = 0; c0 < C; c0 += 4) {
      __m256 a[2][4];
      for (int g = 0; g < gn; ++g)
        for (int c = 0; c < 4; ++c) a[g][c] = _mm256_loadu_ps(acc + size_t(g0 + g) * D + 8 * (c0 + c));
      for (int i = 0; i < len; ++i) {
        const float* vr = vbuf + size_t(i) * D + 8 * c0;
        for (int g = 0; g < gn; ++g) {
          const __m256 w = _mm256_set1_ps(p[size_t(g0 + g) * len + i]);
          for (int c = 0; c < 4; ++c) a[g][c] = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 8 * c), a[g][c]);
        }
      }
      for (int g = 0; g < gn; ++g)
        for (int c = 0; c < 4; ++c) _mm256_storeu_ps(acc + size_t(g0 + g) * D + 8 * (c0 + c), a[g][c]);
    }
  }
}
#endif  // SR_SPAN_AVX2

}  // namespace cpu
}  // namespace sinkrouter
