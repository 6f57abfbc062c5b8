#include "qmatmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

#if defined(SINKROUTER_HAVE_BLAS)
#include <cblas.h>
#endif

#include "sinkrouter/core/dtype.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter {

QMatrix QMatrix::from_tensor(const GGUFTensorInfo& t) {
  SR_CHECK(t.ne.size() == 2, "tensor '{}' has {} dimensions (expected a 2-D weight matrix)", t.name,
           t.ne.size());
  SR_CHECK(ggml_type_supported(t.type), "tensor '{}' has type {}, which is not supported", t.name,
           ggml_type_name(t.type));
  QMatrix m;
  m.type = t.type;
  m.data = t.data;
  m.cols = t.ne[0];
  m.rows = t.ne[1];
  m.row_bytes = ggml_row_bytes(t.type, m.cols);
  m.name = t.name;
  return m;
}

bool has_q8_fast_path(GGMLType t) {
  return t == GGMLType::Q4_0 || t == GGMLType::Q4_1 || t == GGMLType::Q8_0;
}

void Q8Activation::quantize(const float* in, int64_t n) {
  SR_CHECK(n % 32 == 0, "activation length {} is not a multiple of 32", n);
  const int64_t nb = n / 32;
  q.resize(size_t(n));
  d.resize(size_t(nb));
  sum.resize(size_t(nb));
  qsum.resize(size_t(nb));
  x.assign(in, in + n);
  for (int64_t b = 0; b < nb; ++b) {
    const float* v = in + b * 32;
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(v[i]));
    const float scale = amax / 127.f;
    const float inv = scale > 0 ? 1.f / scale : 0.f;
    int sumq = 0;
    for (int i = 0; i < 32; ++i) {
      const int qi = int(std::nearbyint(v[i] * inv));
      q[size_t(b * 32 + i)] = int8_t(qi);
      sumq += qi;
    }
    d[size_t(b)] = scale;
    qsum[size_t(b)] = sumq;
    sum[size_t(b)] = scale * float(sumq);
  }
}

void Q8Activation::set_float(const float* in, int64_t n) {
  q.clear();
  d.clear();
  sum.clear();
  qsum.clear();
  x.assign(in, in + n);
}

namespace {

// Block layouts (REFERENCE.md §1).
struct BlockQ4_0 { uint16_t d; uint8_t qs[16]; };
struct BlockQ4_1 { uint16_t d, m; uint8_t qs[16]; };
struct BlockQ8_0 { uint16_t d; int8_t qs[32]; };
static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ8_0) == 34, "layout");

// f16 scale to float: one instruction with F16C (the library's f16_to_float is a call).
inline float half_to_float(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return f16_to_float(h);
#endif
}

#if defined(__AVX2__)
// Sum over 32 lanes of u8 a * s8 b as 8 int32 lanes, as floats.
inline __m256 dot_u8s8(__m256i a, __m256i b) {
  const __m256i p16 = _mm256_maddubs_epi16(a, b);
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}
// Sum over 32 lanes of s8 a * s8 b (a made unsigned by moving its sign onto b).
inline __m256 dot_s8s8(__m256i a, __m256i b) {
  return dot_u8s8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
}
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
// 16 bytes of nibbles -> 32 bytes: low nibbles first (values 0..15), then high nibbles.
inline __m256i unpack_nibbles(const uint8_t* qs) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}
#endif

float dot_q4_0(const uint8_t* row, const Q8Activation& x, int64_t nb) {
  const BlockQ4_0* w = reinterpret_cast<const BlockQ4_0*>(row);
#if defined(__AVX2__)
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const __m256i wq = _mm256_sub_epi8(unpack_nibbles(w[b].qs), _mm256_set1_epi8(8));
    const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&x.q[size_t(b * 32)]));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float(w[b].d) * x.d[size_t(b)]), dot_s8s8(wq, xq), acc);
  }
  return hsum(acc);
#else
  float s = 0;
  for (int64_t b = 0; b < nb; ++b) {
    int sumi = 0;
    for (int j = 0; j < 16; ++j) {
      sumi += ((w[b].qs[j] & 15) - 8) * x.q[size_t(b * 32 + j)];
      sumi += ((w[b].qs[j] >> 4) - 8) * x.q[size_t(b * 32 + j + 16)];
    }
    s += half_to_float(w[b].d) * x.d[size_t(b)] * float(sumi);
  }
  return s;
#endif
}

float dot_q4_1(const uint8_t* row, const Q8Activation& x, int64_t nb) {
  const BlockQ4_1* w = reinterpret_cast<const BlockQ4_1*>(row);
  float min_terms = 0;
  for (int64_t b = 0; b < nb; ++b) min_terms += half_to_float(w[b].m) * x.sum[size_t(b)];
#if defined(__AVX2__)
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const __m256i wq = unpack_nibbles(w[b].qs);  // 0..15, unsigned
    const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&x.q[size_t(b * 32)]));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float(w[b].d) * x.d[size_t(b)]), dot_u8s8(wq, xq), acc);
  }
  return hsum(acc) + min_terms;
#else
  float s = 0;
  for (int64_t b = 0; b < nb; ++b) {
    int sumi = 0;
    for (int j = 0; j < 16; ++j) {
      sumi += (w[b].qs[j] & 15) * x.q[size_t(b * 32 + j)];
      sumi += (w[b].qs[j] >> 4) * x.q[size_t(b * 32 + j + 16)];
    }
    s += half_to_float(w[b].d) * x.d[size_t(b)] * float(sumi);
  }
  return s + min_terms;
#endif
}

float dot_q8_0(const uint8_t* row, const Q8Activation& x, int64_t nb) {
  const BlockQ8_0* w = reinterpret_cast<const BlockQ8_0*>(row);
#if defined(__AVX2__)
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs));
    const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&x.q[size_t(b * 32)]));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float(w[b].d) * x.d[size_t(b)]), dot_s8s8(wq, xq), acc);
  }
  return hsum(acc);
#else
  float s = 0;
  for (int64_t b = 0; b < nb; ++b) {
    int sumi = 0;
    for (int j = 0; j < 32; ++j) sumi += w[b].qs[j] * x.q[size_t(b * 32 + j)];
    s += half_to_float(w[b].d) * x.d[size_t(b)] * float(sumi);
  }
  return s;
#endif
}

float dot_float(const float* a, const float* b, int64_t n) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

void dequantize_matrix_row(const QMatrix& w, int64_t r, float* out) {
  SR_CHECK(r >= 0 && r < w.rows, "row {} out of range for '{}' ({} rows)", r, w.name, w.rows);
  dequantize_row(w.type, w.row(r), out, w.cols);
}

namespace {

// The rows of one matrix that are not in tiles (rows % 16), or every row of a type
// without tiles, dotted one at a time: rows [r0, r1).
void gemv_rows(const QMatrix& w, const Q8Activation& x, int64_t r0, int64_t r1, float* y) {
  const int64_t nb = w.cols / 32;
  if (x.quantized() && has_q8_fast_path(w.type)) {
    for (int64_t r = r0; r < r1; ++r) {
      switch (w.type) {
        case GGMLType::Q4_0: y[r] = dot_q4_0(w.row(r), x, nb); break;
        case GGMLType::Q4_1: y[r] = dot_q4_1(w.row(r), x, nb); break;
        default: y[r] = dot_q8_0(w.row(r), x, nb); break;
      }
    }
  } else if (w.type == GGMLType::F32) {
    for (int64_t r = r0; r < r1; ++r) y[r] = dot_float(reinterpret_cast<const float*>(w.row(r)), x.x.data(), w.cols);
  } else {
    std::vector<float> tmp(static_cast<size_t>(w.cols));
    for (int64_t r = r0; r < r1; ++r) {
      dequantize_row(w.type, w.row(r), tmp.data(), w.cols);
      y[r] = dot_float(tmp.data(), x.x.data(), w.cols);
    }
  }
}

// One work item: rows [r0, r1) of a target, either whole tiles or loose rows.
struct GemvItem {
  int target;
  bool tiled;
  int64_t begin, end;  // tiles when tiled, else rows
};

// Cuts every target into items of about the same number of weight bytes, enough items
// for the threads to balance (each claims items one at a time).
std::vector<GemvItem> plan_items(const std::vector<GemvTarget>& targets, const Q8Activation& x, int threads) {
  int64_t total_rows = 0;
  for (const auto& t : targets) total_rows += t.w->rows;
  const int64_t rows_per_item = std::max<int64_t>(kTileRows, total_rows / (int64_t(threads) * 8));
  std::vector<GemvItem> items;
  for (int i = 0; i < int(targets.size()); ++i) {
    const QMatrix& w = *targets[size_t(i)].w;
    int64_t loose_from = 0;
    if (x.quantized() && has_row_tiles(w.type) && w.rows >= kTileRows) {
      const int64_t tiles = w.rows / kTileRows, per = std::max<int64_t>(1, rows_per_item / kTileRows);
      for (int64_t t = 0; t < tiles; t += per) items.push_back({i, true, t, std::min(tiles, t + per)});
      loose_from = tiles * kTileRows;
    }
    for (int64_t r = loose_from; r < w.rows; r += rows_per_item)
      items.push_back({i, false, r, std::min(w.rows, r + rows_per_item)});
  }
  return items;
}

void run_gemv(const std::vector<GemvTarget>& targets, const Q8Activation& x, ThreadPool& pool, GemvKernel kernel) {
  for (const auto& t : targets)
    SR_CHECK(int64_t(x.x.size()) == t.w->cols, "gemv '{}': input has {} values (expected {})", t.w->name,
             x.x.size(), t.w->cols);
  // Tiles are made before the parallel region (on first use, once per matrix).
  for (const auto& t : targets)
    if (x.quantized() && has_row_tiles(t.w->type) && t.w->rows >= kTileRows) t.w->tiles();
  const std::vector<GemvItem> items = plan_items(targets, x, pool.size());
  pool.parallel_for(int64_t(items.size()), [&](int64_t k) {
    const GemvItem& it = items[size_t(k)];
    const GemvTarget& t = targets[size_t(it.target)];
    if (it.tiled)
      gemv_tiles(t.w->tiles(), x, it.begin, it.end, t.y, kernel);
    else
      gemv_rows(*t.w, x, it.begin, it.end, t.y);
  });
}

}  // namespace

const RowTiles& QMatrix::tiles() const {
  SR_CHECK(has_row_tiles(type), "'{}': type {} has no row tiles", name, ggml_type_name(type));
  std::call_once(tile_cache_->once, [&] { tile_cache_->tiles = pack_row_tiles(type, data, rows, cols, row_bytes); });
  return tile_cache_->tiles;
}

void gemv(const QMatrix& w, const Q8Activation& x, float* y, ThreadPool& pool) {
  run_gemv({{&w, y}}, x, pool, best_gemv_kernel());
}

void gemv_with_kernel(const QMatrix& w, const Q8Activation& x, float* y, ThreadPool& pool, GemvKernel kernel) {
  SR_CHECK(gemv_kernel_supported(kernel), "gemv: kernel {} is not supported by this build or CPU",
           gemv_kernel_name(kernel));
  run_gemv({{&w, y}}, x, pool, kernel);
}

void gemv_many(const std::vector<GemvTarget>& targets, const Q8Activation& x, ThreadPool& pool) {
  run_gemv(targets, x, pool, best_gemv_kernel());
}

void gemv(const QMatrix& w, const float* x, float* y, ThreadPool& pool) {
  Q8Activation exact;
  exact.set_float(x, w.cols);
  gemv(w, exact, y, pool);
}

void gemm(const QMatrix& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  // Dequantise a tile of weight rows, then one sgemm per tile: Y[:, tile] = X W_tile^T.
  constexpr int64_t kTileRows = 256;
  const int64_t tiles = (w.rows + kTileRows - 1) / kTileRows;
  std::vector<float> tile(static_cast<size_t>(kTileRows * w.cols));
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t r0 = t * kTileRows, nr = std::min(kTileRows, w.rows - r0);
    pool.parallel_for(nr, [&](int64_t i) { dequantize_row(w.type, w.row(r0 + i), &tile[size_t(i * w.cols)], w.cols); });
#if defined(SINKROUTER_HAVE_BLAS)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n_tokens), int(nr), int(w.cols), 1.f, x,
                int(w.cols), tile.data(), int(w.cols), 0.f, y + r0, int(w.rows));
#else
    pool.parallel_for(n_tokens, [&](int64_t tok) {
      for (int64_t i = 0; i < nr; ++i)
        y[tok * w.rows + r0 + i] = dot_float(x + tok * w.cols, &tile[size_t(i * w.cols)], w.cols);
    });
#endif
  }
}

}  // namespace sinkrouter
