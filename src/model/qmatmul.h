// Matrix products over GGUF weights, on the CPU.
//
// Decode (one token): y = W x with W kept quantised. x is quantised once per call into
// 32-value int8 blocks (as llama.cpp's Q8 activations), and each weight block is dotted
// with integer arithmetic. Fast paths: Q4_0, Q4_1, Q8_0, through a copy of the weights
// repacked 16 rows at a time (row_tiles.h; made on first use, AVX-512 VNNI or AVX2 or
// scalar kernels); every other supported type goes through dequantize_row + a float dot
// (slower, exact).
//
// Prefill (many tokens): Y = X W^T through BLAS sgemm on weight rows dequantised into a
// float tile, a tile of rows at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "sinkrouter/core/thread_pool.h"
#include "sinkrouter/model/gguf.h"
#include "row_tiles.h"

namespace sinkrouter {

// A weight matrix as stored in GGUF: `rows` rows of `cols` values (ne = {cols, rows}).
struct QMatrix {
  GGMLType type = GGMLType::F32;
  const uint8_t* data = nullptr;
  int64_t rows = 0, cols = 0;
  int64_t row_bytes = 0;
  std::string name;

  static QMatrix from_tensor(const GGUFTensorInfo& t);  // 2-D tensors only
  const uint8_t* row(int64_t r) const { return data + r * row_bytes; }
  // The first 16 * (rows / 16) rows repacked for the decode GEMV, made on the first call
  // (thread-safe; copies of this QMatrix share them). Only for has_row_tiles(type).
  const RowTiles& tiles() const;

 private:
  struct TileCache {
    std::once_flag once;
    RowTiles tiles;
  };
  std::shared_ptr<TileCache> tile_cache_ = std::make_shared<TileCache>();
};

// x quantised into blocks of 32: value ~ d[b] * q[32 b + i]; qsum[b] = sum_i q[32 b + i],
// sum[b] = d[b] * qsum[b].
struct Q8Activation {
  std::vector<int8_t> q;
  std::vector<float> d, sum;
  std::vector<int32_t> qsum;
  std::vector<float> x;  // the float input, for the generic path
  void quantize(const float* x, int64_t n);  // n % 32 == 0
  // Keeps x as floats only: gemv then dots dequantised weight rows in float (exact path).
  void set_float(const float* x, int64_t n);
  bool quantized() const { return !q.empty(); }
};

// y[r] = W[r, :] . x for r in [0, rows), threads over rows. With x quantised
// (Q8Activation::quantize) the integer fast paths run where the weight type has one;
// with x kept in float (set_float) every row is dequantised and dotted in float.
void gemv(const QMatrix& w, const Q8Activation& x, float* y, ThreadPool& pool);
// Float x: the exact path.
void gemv(const QMatrix& w, const float* x, float* y, ThreadPool& pool);

// Several products of one input in a single parallel region (fewer hand-offs between
// threads: Q, K and V, or gate and up): y_i = W_i x.
struct GemvTarget {
  const QMatrix* w;
  float* y;
};
void gemv_many(const std::vector<GemvTarget>& targets, const Q8Activation& x, ThreadPool& pool);

// gemv with a chosen tile kernel (tests and benchmarks; gemv uses best_gemv_kernel()).
void gemv_with_kernel(const QMatrix& w, const Q8Activation& x, float* y, ThreadPool& pool, GemvKernel kernel);

// Y[t, r] = sum_c X[t, c] * W[r, c] for t < n_tokens. X: [n_tokens, cols] row-major,
// Y: [n_tokens, rows] row-major, both float.
void gemm(const QMatrix& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool);

// Row r of W as floats (embedding lookup).
void dequantize_matrix_row(const QMatrix& w, int64_t r, float* out);

// True when gemv(w, Q8Activation) takes an integer fast path for this type.
bool has_q8_fast_path(GGMLType t);

}  // namespace sinkrouter
