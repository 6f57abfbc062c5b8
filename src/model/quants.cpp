// ggml type table and dequantisation of F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
// Q2_K, Q3_K, Q4_K, Q5_K, Q6_K rows. Each block's arithmetic follows ggml's reference
// (ggml-quants.c dequantize_row_*) operation by operation, in float, so the output is
// bit-identical to ggml and to gguf-py (tests/model/gguf_quants_test.cpp checks this).
// Plain scalar kernels (written so that GCC vectorises most of them) serve every type;
// AVX2 kernels replace them for Q4_0 / Q4_1 and F16C for F16 when compiled for it.
#include <cstring>
#include <limits>

#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "quants.h"
#include "sinkrouter/core/dtype.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/model/gguf.h"

// Why: a fused multiply-add rounds once where ggml rounds twice (d*q, then + m), which
// would make results differ from the reference in the last bit (and by more under
// cancellation). Exact agreement keeps the golden tests exact. Placed after the includes
// so that it applies to this file's functions only.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "GGUF blocks are read as little-endian");

namespace sinkrouter {
namespace detail {
namespace {

// ids 0..41; block sizes as in ggml's type_traits (ggml.c) and ggml-common.h.
constexpr GGMLTypeTraits kTypes[] = {
    {0, "f32", 1, 4, true},         {1, "f16", 1, 2, true},         {2, "q4_0", 32, 18, true},
    {3, "q4_1", 32, 20, true},      {6, "q5_0", 32, 22, true},      {7, "q5_1", 32, 24, true},
    {8, "q8_0", 32, 34, true},      {9, "q8_1", 32, 36, false},     {10, "q2_K", 256, 84, true},
    {11, "q3_K", 256, 110, true},   {12, "q4_K", 256, 144, true},   {13, "q5_K", 256, 176, true},
    {14, "q6_K", 256, 210, true},   {15, "q8_K", 256, 292, false},  {16, "iq2_xxs", 256, 66, false},
    {17, "iq2_xs", 256, 74, false}, {18, "iq3_xxs", 256, 98, false}, {19, "iq1_s", 256, 50, false},
    {20, "iq4_nl", 32, 18, false},  {21, "iq3_s", 256, 110, false}, {22, "iq2_s", 256, 82, false},
    {23, "iq4_xs", 256, 136, false}, {24, "i8", 1, 1, false},       {25, "i16", 1, 2, false},
    {26, "i32", 1, 4, false},       {27, "i64", 1, 8, false},       {28, "f64", 1, 8, false},
    {29, "iq1_m", 256, 56, false},  {30, "bf16", 1, 2, true},       {34, "tq1_0", 256, 54, false},
    {35, "tq2_0", 256, 66, false},  {39, "mxfp4", 32, 17, false},
};

}  // namespace

const GGMLTypeTraits* find_ggml_type(uint32_t id) {
  for (const GGMLTypeTraits& t : kTypes)
    if (t.id == id) return &t;
  return nullptr;
}

const char* supported_type_list() {
  return "f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, q4_K, q5_K, q6_K";
}

}  // namespace detail

namespace {

using detail::GGMLTypeTraits;

const GGMLTypeTraits& known_type(GGMLType t, const char* what) {
  const GGMLTypeTraits* tr = detail::find_ggml_type(uint32_t(t));
  SR_CHECK(tr != nullptr, "{}: ggml type id {} has no known block layout", what, uint32_t(t));
  return *tr;
}

// ---- scalar helpers (defined here, after the fp-contract pragma, so they inline) ----

inline float half_to_float(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return f16_to_float(h);
#endif
}

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// ---- plain types ----

void dequant_f16(const uint8_t* __restrict x, float* __restrict y, int64_t n, bool simd) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; simd && i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 2 * i))));
#endif
  for (; i < n; ++i) y[i] = half_to_float(x + 2 * i);
}

void dequant_bf16(const uint8_t* __restrict x, float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, x + 2 * i, 2);
    const uint32_t bits = uint32_t(h) << 16;
    std::memcpy(y + i, &bits, 4);
  }
}

// ---- 32-value blocks ----

// Q4_0 {f16 d; u8 qs[16]}: low nibbles are values 0..15, high nibbles 16..31.
void dequant_q4_0(const uint8_t* __restrict x, float* __restrict y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 18, y += 32) {
    const float d = half_to_float(x);
    const uint8_t* qs = x + 2;
    for (int j = 0; j < 16; ++j) y[j] = float((int32_t(qs[j]) & 15) - 8) * d;
    for (int j = 0; j < 16; ++j) y[j + 16] = float((int32_t(qs[j]) >> 4) - 8) * d;
  }
}

// Q4_1 {f16 d; f16 m; u8 qs[16]}: y = q*d + m.
void dequant_q4_1(const uint8_t* __restrict x, float* __restrict y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 20, y += 32) {
    const float d = half_to_float(x), m = half_to_float(x + 2);
    const uint8_t* qs = x + 4;
    for (int j = 0; j < 16; ++j) y[j] = float(int32_t(qs[j]) & 15) * d + m;
    for (int j = 0; j < 16; ++j) y[j + 16] = float(int32_t(qs[j]) >> 4) * d + m;
  }
}

// Q5_0 {f16 d; u8 qh[4]; u8 qs[16]}: bit j of qh (LE u32) is the 5th bit of value j.
void dequant_q5_0(const uint8_t* __restrict x, float* __restrict y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 22, y += 32) {
    const float d = half_to_float(x);
    const uint32_t qh = load_u32(x + 2);
    const uint8_t* qs = x + 6;
    for (int j = 0; j < 16; ++j) {
      const int lo = int((qs[j] & 15) | (((qh >> j) & 1) << 4));
      const int hi = int((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
      y[j] = float(lo - 16) * d;
      y[j + 16] = float(hi - 16) * d;
    }
  }
}

// Q5_1 {f16 d; f16 m; u8 qh[4]; u8 qs[16]}: y = q*d + m.
void dequant_q5_1(const uint8_t* __restrict x, float* __restrict y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 24, y += 32) {
    const float d = half_to_float(x), m = half_to_float(x + 2);
    const uint32_t qh = load_u32(x + 4);
    const uint8_t* qs = x + 8;
    for (int j = 0; j < 16; ++j) {
      const uint32_t lo = (qs[j] & 15) | (((qh >> j) & 1) << 4);
      const uint32_t hi = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
      y[j] = float(lo) * d + m;
      y[j + 16] = float(hi) * d + m;
    }
  }
}

// Q8_0 {f16 d; i8 qs[32]}.
void dequant_q8_0(const uint8_t* __restrict x, float* __restrict y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 34, y += 32) {
    const float d = half_to_float(x);
    const int8_t* qs = reinterpret_cast<const int8_t*>(x + 2);
    for (int j = 0; j < 32; ++j) y[j] = float(qs[j]) * d;
  }
}

#if defined(__AVX2__)
// Q4_0 / Q4_1 with AVX2, the model's main types (GCC does not vectorise the scalar
// kernels above). The same float operations in the same order -- convert, multiply,
// (add m) -- so the results are bit-identical to the scalar kernels.
template <bool kWithMin>
void dequant_q4_avx2(const uint8_t* __restrict x, float* __restrict y, int64_t nb) {
  constexpr int64_t kBlockBytes = kWithMin ? 20 : 18;
  const __m128i low4 = _mm_set1_epi8(15);
  const __m256i eight = _mm256_set1_epi32(8);
  for (int64_t b = 0; b < nb; ++b, x += kBlockBytes, y += 32) {
    const __m256 d = _mm256_set1_ps(half_to_float(x));
    const __m256 m = _mm256_set1_ps(kWithMin ? half_to_float(x + 2) : 0.f);
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + (kWithMin ? 4 : 2)));
    const __m128i lo = _mm_and_si128(raw, low4);                      // values 0..15
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), low4);  // values 16..31
    const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int k = 0; k < 4; ++k) {
      __m256i q = _mm256_cvtepu8_epi32(parts[k]);
      if (!kWithMin) q = _mm256_sub_epi32(q, eight);
      __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(q), d);
      if (kWithMin) v = _mm256_add_ps(v, m);
      _mm256_storeu_ps(y + 8 * k, v);
    }
  }
}
#endif

// ---- 256-value super-blocks (k-quants) ----

// Q2_K {u8 scales[16]; u8 qs[64]; f16 d; f16 dmin}: 16 groups of 16 values; group g's
// scale byte holds a 4-bit scale (low) and 4-bit min (high).
void dequant_q2_k(const uint8_t* __restrict x, float* __restrict y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 84) {
    const uint8_t* scales = x;
    const uint8_t* q = x + 16;
    const float d = half_to_float(x + 80), dmin = half_to_float(x + 82);
    int is = 0;
    for (int half = 0; half < 2; ++half, q += 32) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int part = 0; part < 2; ++part, y += 16) {
          const uint8_t sc = scales[is++];
          const float dl = d * float(sc & 15), ml = dmin * float(sc >> 4);
          const uint8_t* qq = q + 16 * part;
          for (int l = 0; l < 16; ++l) y[l] = dl * float((int32_t(qq[l]) >> shift) & 3) - ml;
        }
      }
    }
  }
}

// Q3_K {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}: 2 low bits from qs, the 3rd bit
// from hmask (a set bit means no -4 offset), 16 signed 6-bit scales packed in 12 bytes.
void dequant_q3_k(const uint8_t* __restrict x, float* __restrict y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 110) {
    const uint8_t* hm = x;
    const uint8_t* q = x + 32;
    const uint8_t* s = x + 96;
    const float d = half_to_float(x + 108);
    int sc[16];
    for (int i = 0; i < 16; ++i) {
      const int low4 = i < 8 ? (s[i] & 15) : (s[i - 8] >> 4);
      const int hi2 = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
      sc[i] = (low4 | (hi2 << 4)) - 32;
    }
    int is = 0, hbit = 0;  // hmask bit hbit serves the 32 values of one shift step
    for (int half = 0; half < 2; ++half, q += 32) {
      for (int shift = 0; shift < 8; shift += 2, ++hbit) {
        for (int part = 0; part < 2; ++part, y += 16) {
          const float dl = d * float(sc[is++]);
          const uint8_t* qq = q + 16 * part;
          const uint8_t* hh = hm + 16 * part;
          // q = low2 - (bit set ? 0 : 4), written without a branch so that it vectorises
          for (int l = 0; l < 16; ++l)
            y[l] = dl * float(((int32_t(qq[l]) >> shift) & 3) - 4 + 4 * ((int32_t(hh[l]) >> hbit) & 1));
        }
      }
    }
  }
}

// 6-bit scale and min j (of 8) of Q4_K / Q5_K, packed in 12 bytes.
inline void k_scale_min(int j, const uint8_t* s, int& sc, int& m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Q4_K {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}: 4 chunks of 64 values; chunk c's
// 32 bytes give sub-block 2c (low nibbles) and 2c+1 (high nibbles). y = d*sc*q - dmin*m.
void dequant_q4_k(const uint8_t* __restrict x, float* __restrict y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 144) {
    const float d = half_to_float(x), dmin = half_to_float(x + 2);
    const uint8_t* s = x + 4;
    const uint8_t* q = x + 16;
    for (int c = 0; c < 4; ++c, q += 32, y += 64) {
      int sc, m;
      k_scale_min(2 * c, s, sc, m);
      const float d1 = d * float(sc), m1 = dmin * float(m);
      k_scale_min(2 * c + 1, s, sc, m);
      const float d2 = d * float(sc), m2 = dmin * float(m);
      for (int l = 0; l < 32; ++l) y[l] = d1 * float(int32_t(q[l]) & 15) - m1;
      for (int l = 0; l < 32; ++l) y[l + 32] = d2 * float(int32_t(q[l]) >> 4) - m2;
    }
  }
}

// Q5_K {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}: as Q4_K plus a 5th bit,
// bit 2c (low-nibble values) and 2c+1 (high-nibble values) of qh[l].
void dequant_q5_k(const uint8_t* __restrict x, float* __restrict y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 176) {
    const float d = half_to_float(x), dmin = half_to_float(x + 2);
    const uint8_t* s = x + 4;
    const uint8_t* qh = x + 16;
    const uint8_t* q = x + 48;
    for (int c = 0; c < 4; ++c, q += 32, y += 64) {
      int sc, m;
      k_scale_min(2 * c, s, sc, m);
      const float d1 = d * float(sc), m1 = dmin * float(m);
      k_scale_min(2 * c + 1, s, sc, m);
      const float d2 = d * float(sc), m2 = dmin * float(m);
      const uint8_t u1 = uint8_t(1u << (2 * c)), u2 = uint8_t(2u << (2 * c));
      for (int l = 0; l < 32; ++l) y[l] = d1 * float((q[l] & 15) + ((qh[l] & u1) ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) y[l + 32] = d2 * float((q[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
    }
  }
}

// Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}: two halves of 128 values; 4 low
// bits from ql, 2 high bits from qh, signed 8-bit scale per 16 values. y = d*sc*(q-32).
void dequant_q6_k(const uint8_t* __restrict x, float* __restrict y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 210) {
    const uint8_t* ql = x;
    const uint8_t* qh = x + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(x + 192);
    const float d = half_to_float(x + 208);
    for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, y += 128) {
      for (int is = 0; is < 2; ++is) {  // 16 values share a scale: hoisted so the loop vectorises
        const float s1 = d * float(sc[is]), s2 = d * float(sc[is + 2]);
        const float s3 = d * float(sc[is + 4]), s4 = d * float(sc[is + 6]);
        for (int l = 16 * is; l < 16 * is + 16; ++l) {
          const int q1 = int((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
          const int q2 = int((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
          const int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
          const int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
          y[l] = s1 * float(q1);  // ggml: d * sc * q, evaluated left to right
          y[l + 32] = s2 * float(q2);
          y[l + 64] = s3 * float(q3);
          y[l + 96] = s4 * float(q4);
        }
      }
    }
  }
}

}  // namespace

std::string ggml_type_name(GGMLType t) {
  const GGMLTypeTraits* tr = detail::find_ggml_type(uint32_t(t));
  return tr ? std::string(tr->name) : "type " + std::to_string(uint32_t(t));
}

bool ggml_type_supported(GGMLType t) {
  const GGMLTypeTraits* tr = detail::find_ggml_type(uint32_t(t));
  return tr != nullptr && tr->dequantize;
}

int64_t ggml_block_values(GGMLType t) { return known_type(t, "ggml_block_values").block_values; }

int64_t ggml_block_bytes(GGMLType t) { return known_type(t, "ggml_block_bytes").block_bytes; }

int64_t ggml_row_bytes(GGMLType t, int64_t n) {
  const GGMLTypeTraits& tr = known_type(t, "ggml_row_bytes");
  SR_CHECK(n >= 0 && n % tr.block_values == 0,
           "ggml_row_bytes: a row of {} values is not a multiple of the {} block size {}", n, tr.name,
           tr.block_values);
  const int64_t blocks = n / tr.block_values;
  SR_CHECK(blocks <= std::numeric_limits<int64_t>::max() / tr.block_bytes,
           "ggml_row_bytes: a {} row of {} values overflows 64-bit byte counts", tr.name, n);
  return blocks * tr.block_bytes;
}

namespace {

// One switch per call; `simd` picks the intrinsics kernels where there are some.
void dequantize(GGMLType t, const void* src, float* dst, int64_t n, bool simd) {
  const GGMLTypeTraits& tr = known_type(t, "dequantize_row");
  SR_CHECK(tr.dequantize, "dequantize_row: ggml type {} (id {}) is not supported (supported: {})", tr.name,
           tr.id, detail::supported_type_list());
  SR_CHECK(n >= 0 && n % tr.block_values == 0,
           "dequantize_row: {} values is not a multiple of the {} block size {}", n, tr.name, tr.block_values);
  const auto* x = static_cast<const uint8_t*>(src);
  const int64_t nb = n / tr.block_values;
#if defined(__AVX2__)
  if (simd && t == GGMLType::Q4_0) return dequant_q4_avx2<false>(x, dst, nb);
  if (simd && t == GGMLType::Q4_1) return dequant_q4_avx2<true>(x, dst, nb);
#endif
  switch (t) {
    case GGMLType::F32: std::memcpy(dst, x, size_t(n) * 4); return;
    case GGMLType::F16: dequant_f16(x, dst, n, simd); return;
    case GGMLType::BF16: dequant_bf16(x, dst, n); return;
    case GGMLType::Q4_0: dequant_q4_0(x, dst, nb); return;
    case GGMLType::Q4_1: dequant_q4_1(x, dst, nb); return;
    case GGMLType::Q5_0: dequant_q5_0(x, dst, nb); return;
    case GGMLType::Q5_1: dequant_q5_1(x, dst, nb); return;
    case GGMLType::Q8_0: dequant_q8_0(x, dst, nb); return;
    case GGMLType::Q2_K: dequant_q2_k(x, dst, nb); return;
    case GGMLType::Q3_K: dequant_q3_k(x, dst, nb); return;
    case GGMLType::Q4_K: dequant_q4_k(x, dst, nb); return;
    case GGMLType::Q5_K: dequant_q5_k(x, dst, nb); return;
    case GGMLType::Q6_K: dequant_q6_k(x, dst, nb); return;
    default: break;
  }
  fail("dequantize_row: ggml type {} has a dequantize flag but no kernel (internal error)", tr.name);
}

}  // namespace

void dequantize_row(GGMLType t, const void* src, float* dst, int64_t n) { dequantize(t, src, dst, n, true); }

void detail::dequantize_row_scalar(GGMLType t, const void* src, float* dst, int64_t n) {
  dequantize(t, src, dst, n, false);
}

}  // namespace sinkrouter
