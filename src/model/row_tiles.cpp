// Row tiles: packing, the scalar reference kernel, the AVX2 kernel and the kernel choice.
// The AVX-512 VNNI kernel is in row_tiles_avx512.cpp. Layout: row_tiles.h.
#include "row_tiles.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "qmatmul.h"
#include "sinkrouter/core/dtype.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter {

namespace {

// GGUF block sizes and where the quants start in them (REFERENCE.md section 1).
struct TypeLayout {
  int64_t gguf_block;   // bytes of one GGUF block (32 values)
  int64_t quant_offset; // bytes before the quants: d (and m)
  int64_t quant_bytes;  // 16 (4-bit) or 32 (8-bit)
  int scales;           // f16 values before the quants: 1 (d) or 2 (d, m)
};

TypeLayout layout_of(GGMLType t) {
  switch (t) {
    case GGMLType::Q4_0: return {18, 2, 16, 1};
    case GGMLType::Q4_1: return {20, 4, 16, 2};
    case GGMLType::Q8_0: return {34, 2, 32, 1};
    default: fail("row tiles: type {} has no tile layout (expected q4_0, q4_1 or q8_0)", ggml_type_name(t));
  }
}

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

inline int32_t load_i32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

}  // namespace

const char* gemv_kernel_name(GemvKernel k) {
  switch (k) {
    case GemvKernel::Scalar: return "scalar";
    case GemvKernel::Avx2: return "avx2";
    case GemvKernel::Avx512Vnni: return "avx512vnni";
  }
  return "?";
}

bool gemv_kernel_supported(GemvKernel k) {
  switch (k) {
    case GemvKernel::Scalar: return true;
    case GemvKernel::Avx2:
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
      return true;
#else
      return false;
#endif
    case GemvKernel::Avx512Vnni: return detail::cpu_has_avx512vnni();
  }
  return false;
}

GemvKernel best_gemv_kernel() {
  static const GemvKernel best = [] {
    if (const char* env = std::getenv("SINKROUTER_GEMV_KERNEL")) {
      const std::string name = env;
      for (GemvKernel k : {GemvKernel::Scalar, GemvKernel::Avx2, GemvKernel::Avx512Vnni})
        if (name == gemv_kernel_name(k)) {
          SR_CHECK(gemv_kernel_supported(k), "SINKROUTER_GEMV_KERNEL={}: this build or CPU cannot run it", name);
          return k;
        }
      fail("SINKROUTER_GEMV_KERNEL={}: unknown kernel (expected scalar, avx2 or avx512vnni)", name);
    }
    if (gemv_kernel_supported(GemvKernel::Avx512Vnni)) return GemvKernel::Avx512Vnni;
    if (gemv_kernel_supported(GemvKernel::Avx2)) return GemvKernel::Avx2;
    return GemvKernel::Scalar;
  }();
  return best;
}

bool has_row_tiles(GGMLType t) { return t == GGMLType::Q4_0 || t == GGMLType::Q4_1 || t == GGMLType::Q8_0; }

RowTiles pack_row_tiles(GGMLType type, const uint8_t* data, int64_t rows, int64_t cols, int64_t row_bytes) {
  const TypeLayout L = layout_of(type);
  SR_CHECK(cols > 0 && cols % 32 == 0, "row tiles: {} columns is not a positive multiple of 32", cols);
  SR_CHECK(rows >= 0 && row_bytes == cols / 32 * L.gguf_block,
           "row tiles: row of {} bytes does not hold {} {} values", row_bytes, cols, ggml_type_name(type));
  RowTiles w;
  w.type = type;
  w.tiles = rows / kTileRows;
  w.blocks = cols / 32;
  w.block_bytes = kTileRows * L.gguf_block;
  w.data.resize(size_t(w.tiles * w.blocks * w.block_bytes));
  const int64_t scale_bytes = 2 * kTileRows * L.scales;
  for (int64_t t = 0; t < w.tiles; ++t)
    for (int64_t b = 0; b < w.blocks; ++b) {
      uint8_t* out = w.data.data() + size_t((t * w.blocks + b) * w.block_bytes);
      for (int r = 0; r < kTileRows; ++r) {
        const uint8_t* src = data + (t * kTileRows + r) * row_bytes + b * L.gguf_block;
        for (int s = 0; s < L.scales; ++s) std::memcpy(out + 2 * (s * kTileRows + r), src + 2 * s, 2);
        // Group g (4 bytes of quants) of row r goes to vector g, lane r.
        for (int64_t g = 0; g < L.quant_bytes / 4; ++g)
          std::memcpy(out + scale_bytes + g * 64 + 4 * r, src + L.quant_offset + 4 * g, 4);
      }
    }
  return w;
}

namespace detail {

void gemv_tiles_scalar(const RowTiles& w, const Q8Activation& x, int64_t t0, int64_t t1, float* y) {
  const bool four_bit = w.type != GGMLType::Q8_0;
  const int scales = w.type == GGMLType::Q4_1 ? 2 : 1;
  const int64_t qoff = 2 * kTileRows * scales;
  for (int64_t t = t0; t < t1; ++t) {
    float acc[kTileRows] = {};
    const uint8_t* blk = w.tile(t);
    for (int64_t b = 0; b < w.blocks; ++b, blk += w.block_bytes) {
      const int8_t* xq = x.q.data() + b * 32;
      for (int r = 0; r < kTileRows; ++r) {
        int32_t isum = 0;
        if (four_bit) {
          for (int j = 0; j < 4; ++j)
            for (int i = 0; i < 4; ++i) {
              const uint8_t byte = blk[qoff + 64 * j + 4 * r + i];
              isum += int32_t(byte & 15) * xq[4 * j + i] + int32_t(byte >> 4) * xq[16 + 4 * j + i];
            }
          if (w.type == GGMLType::Q4_0) isum -= 8 * x.qsum[size_t(b)];
        } else {
          for (int k = 0; k < 8; ++k)
            for (int i = 0; i < 4; ++i)
              isum += int32_t(int8_t(blk[qoff + 64 * k + 4 * r + i])) * xq[4 * k + i];
        }
        const float scale = f16_to_float(load_u16(blk + 2 * r)) * x.d[size_t(b)];
        acc[r] = std::fma(scale, float(isum), acc[r]);
        if (scales == 2) acc[r] = std::fma(f16_to_float(load_u16(blk + 2 * (kTileRows + r))), x.sum[size_t(b)], acc[r]);
      }
    }
    for (int r = 0; r < kTileRows; ++r) y[t * kTileRows + r] = acc[r];
  }
}

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
// Half a tile (8 rows, lanes of the low or high 32 bytes of each 64-byte vector) per pass.
void gemv_tiles_avx2(const RowTiles& w, const Q8Activation& x, int64_t t0, int64_t t1, float* y) {
  const bool four_bit = w.type != GGMLType::Q8_0;
  const int scales = w.type == GGMLType::Q4_1 ? 2 : 1;
  const int64_t qoff = 2 * kTileRows * scales;
  const __m256i ones = _mm256_set1_epi16(1), low4 = _mm256_set1_epi8(0x0f);
  for (int64_t t = t0; t < t1; ++t)
    for (int half = 0; half < 2; ++half) {
      __m256 acc = _mm256_setzero_ps();
      const uint8_t* blk = w.tile(t);
      for (int64_t b = 0; b < w.blocks; ++b, blk += w.block_bytes) {
        const int8_t* xq = x.q.data() + b * 32;
        const uint8_t* q = blk + qoff + 32 * half;
        __m256i isum = _mm256_setzero_si256();
        if (four_bit) {
          for (int j = 0; j < 4; ++j) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 64 * j));
            const __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
            const __m256i plo = _mm256_maddubs_epi16(lo, _mm256_set1_epi32(load_i32(xq + 4 * j)));
            const __m256i phi = _mm256_maddubs_epi16(hi, _mm256_set1_epi32(load_i32(xq + 16 + 4 * j)));
            // |lo * x| + |hi * x| pairs stay below 4 * 15 * 127: no 16-bit overflow.
            isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_add_epi16(plo, phi), ones));
          }
          if (w.type == GGMLType::Q4_0) isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(8 * x.qsum[size_t(b)]));
        } else {
          for (int k = 0; k < 8; ++k) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 64 * k));
            const __m256i xk = _mm256_set1_epi32(load_i32(xq + 4 * k));
            // s8 x s8 through maddubs: |w| unsigned, the sign moved onto x (|w| <= 128, |x| <= 127).
            const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(xk, v));
            isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, ones));
          }
        }
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16 * half)));
        acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x.d[size_t(b)])), _mm256_cvtepi32_ps(isum), acc);
        if (scales == 2) {
          const __m256 m = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 32 + 16 * half)));
          acc = _mm256_fmadd_ps(m, _mm256_set1_ps(x.sum[size_t(b)]), acc);
        }
      }
      _mm256_storeu_ps(y + t * kTileRows + 8 * half, acc);
    }
}
#else
void gemv_tiles_avx2(const RowTiles&, const Q8Activation&, int64_t, int64_t, float*) {
  fail("gemv: the AVX2 kernel is not built in (compile with -march=x86-64-v3)");
}
#endif

}  // namespace detail

void gemv_tiles(const RowTiles& w, const Q8Activation& x, int64_t t0, int64_t t1, float* y, GemvKernel kernel) {
  SR_CHECK(x.quantized() && int64_t(x.q.size()) == w.blocks * 32 && x.qsum.size() == x.d.size(),
           "gemv tiles: the activation has {} quantised values (expected {})", x.q.size(), w.blocks * 32);
  SR_CHECK(t0 >= 0 && t0 <= t1 && t1 <= w.tiles, "gemv tiles: tile range [{}, {}) outside [0, {})", t0, t1, w.tiles);
  switch (kernel) {
    case GemvKernel::Scalar: detail::gemv_tiles_scalar(w, x, t0, t1, y); break;
    case GemvKernel::Avx2: detail::gemv_tiles_avx2(w, x, t0, t1, y); break;
    case GemvKernel::Avx512Vnni: detail::gemv_tiles_avx512vnni(w, x, t0, t1, y); break;
  }
}

}  // namespace sinkrouter
