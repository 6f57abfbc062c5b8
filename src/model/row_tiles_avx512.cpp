// The AVX-512 VNNI row-tile kernel: a whole tile (16 rows) per 512-bit vector, one
// vpdpbusd per 4 values of 16 rows. Built with a per-function target so that the rest of
// the library stays at x86-64-v3; chosen at run time only when the CPU has the features
// (detail::cpu_has_avx512vnni). Same arithmetic as the scalar reference (row_tiles.cpp).
#include <cstring>

#include "qmatmul.h"
#include "row_tiles.h"
#include "sinkrouter/core/error.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SR_ROW_TILES_AVX512 1
#include <immintrin.h>
#endif

namespace sinkrouter::detail {

#if defined(SR_ROW_TILES_AVX512)

bool cpu_has_avx512vnni() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
           __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }();
  return has;
}

namespace {

#define SR_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")))

SR_AVX512_TARGET inline __m512i bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// 4-bit tiles: V_j low nibbles meet x[4j..4j+3], high nibbles x[16+4j..16+4j+3]. Four
// independent accumulators keep the vpdpbusd latency chains short.
SR_AVX512_TARGET inline __m512i block_isum_q4(const uint8_t* q, const int8_t* xq) {
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  __m512i a[4];
  for (int j = 0; j < 4; ++j) {
    const __m512i v = _mm512_loadu_si512(q + 64 * j);
    const __m512i lo = _mm512_and_si512(v, low4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
    a[j] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, bcast4(xq + 4 * j));
    a[j] = _mm512_dpbusd_epi32(a[j], hi, bcast4(xq + 16 + 4 * j));
  }
  return _mm512_add_epi32(_mm512_add_epi32(a[0], a[1]), _mm512_add_epi32(a[2], a[3]));
}

// 8-bit tiles: vpdpbusd wants unsigned weights, so w + 128 (xor 0x80) is dotted and
// 128 * sum(x) taken off in integers.
SR_AVX512_TARGET inline __m512i block_isum_q8(const uint8_t* q, const int8_t* xq, int32_t xsum) {
  const __m512i bias = _mm512_set1_epi8(char(0x80));
  __m512i a[4];
  for (int j = 0; j < 4; ++j) {
    const __m512i v0 = _mm512_xor_si512(_mm512_loadu_si512(q + 64 * j), bias);
    const __m512i v1 = _mm512_xor_si512(_mm512_loadu_si512(q + 64 * (j + 4)), bias);
    a[j] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v0, bcast4(xq + 4 * j));
    a[j] = _mm512_dpbusd_epi32(a[j], v1, bcast4(xq + 4 * (j + 4)));
  }
  const __m512i s = _mm512_add_epi32(_mm512_add_epi32(a[0], a[1]), _mm512_add_epi32(a[2], a[3]));
  return _mm512_sub_epi32(s, _mm512_set1_epi32(128 * xsum));
}

SR_AVX512_TARGET inline __m512 load_f16x16(const uint8_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

template <GGMLType T>
SR_AVX512_TARGET void run(const RowTiles& w, const Q8Activation& x, int64_t t0, int64_t t1, float* y) {
  constexpr int scales = T == GGMLType::Q4_1 ? 2 : 1;
  constexpr int64_t qoff = 2 * kTileRows * scales;
  const int8_t* xq = x.q.data();
  const float* xd = x.d.data();
  const float* xs = x.sum.data();
  const int32_t* xqs = x.qsum.data();
  for (int64_t t = t0; t < t1; ++t) {
    __m512 acc = _mm512_setzero_ps();
    const uint8_t* blk = w.tile(t);
    for (int64_t b = 0; b < w.blocks; ++b, blk += w.block_bytes) {
      __m512i isum;
      if constexpr (T == GGMLType::Q8_0) {
        isum = block_isum_q8(blk + qoff, xq + 32 * b, xqs[b]);
      } else {
        isum = block_isum_q4(blk + qoff, xq + 32 * b);
        if constexpr (T == GGMLType::Q4_0) isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(8 * xqs[b]));
      }
      const __m512 scale = _mm512_mul_ps(load_f16x16(blk), _mm512_set1_ps(xd[b]));
      acc = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(isum), acc);
      if constexpr (scales == 2) acc = _mm512_fmadd_ps(load_f16x16(blk + 2 * kTileRows), _mm512_set1_ps(xs[b]), acc);
    }
    _mm512_storeu_ps(y + t * kTileRows, acc);
  }
}

}  // namespace

void gemv_tiles_avx512vnni(const RowTiles& w, const Q8Activation& x, int64_t t0, int64_t t1, float* y) {
  SR_CHECK(cpu_has_avx512vnni(), "gemv: this CPU has no AVX-512 VNNI");
  switch (w.type) {
    case GGMLType::Q4_0: run<GGMLType::Q4_0>(w, x, t0, t1, y); break;
    case GGMLType::Q4_1: run<GGMLType::Q4_1>(w, x, t0, t1, y); break;
    case GGMLType::Q8_0: run<GGMLType::Q8_0>(w, x, t0, t1, y); break;
    default: fail("gemv: type {} has no tile kernel", ggml_type_name(w.type));
  }
}

#else

bool cpu_has_avx512vnni() { return false; }

void gemv_tiles_avx512vnni(const RowTiles&, const Q8Activation&, int64_t, int64_t, float*) {
  fail("gemv: the AVX-512 VNNI kernel is only built for x86-64 with GCC or Clang");
}

#endif

}  // namespace sinkrouter::detail
