#include "prefill_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#if defined(SINKROUTER_HAVE_BLAS)
#include <cblas.h>
#endif

#include "sinkrouter/core/dtype.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter {
namespace {

// C[m, n] = alpha * A[m, k] B[n, k]^T (trans_b) or A[m, k] B[k, n]; row-major with leading dims.
void matmul(bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
            const float* b, int64_t ldb, float* c, int64_t ldc) {
#if defined(SINKROUTER_HAVE_BLAS)
  cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, int(m), int(n), int(k), alpha,
              a, int(lda), b, int(ldb), 0.f, c, int(ldc));
#else
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      float s = 0;
      for (int64_t p = 0; p < k; ++p) s += a[i * lda + p] * (trans_b ? b[j * ldb + p] : b[p * ldb + j]);
      c[i * ldc + j] = alpha * s;
    }
#endif
}

}  // namespace

void prefill_attention_cpu(const float* q, int64_t c, int64_t p0, const PagedKV& kv, int n_head,
                           float scale, float* out, ThreadPool& pool, int observe_rows,
                           std::vector<float>* received) {
  SR_CHECK(kv.batch == 1, "prefill attention takes one sequence, got {}", kv.batch);
  const int64_t n = kv.seq_len(0);
  SR_CHECK(n == p0 + c, "prefill attention: cache holds {} tokens, expected {}", n, p0 + c);
  const int H = kv.num_kv_heads, D = kv.head_dim, G = n_head / H;
  const bool bf = kv.dtype == DType::BF16;
  const uint16_t* pages = static_cast<const uint16_t*>(kv.pages);
  const int64_t ld = int64_t(n_head) * D;
  const int64_t rows_seen = std::min<int64_t>(observe_rows, c);
  if (received) received->assign(size_t(H) * size_t(n), 0.f);

  std::vector<float> k(n * D), v(n * D), s(c * n);
  for (int h = 0; h < H; ++h) {
    // Gather this head's keys and values as float rows.
    pool.parallel_for((n + 255) / 256, [&](int64_t blk) {
      for (int64_t t = blk * 256; t < std::min(n, (blk + 1) * 256); ++t) {
        const uint16_t* kr = pages + kv.k_offset(0, t, h);
        const uint16_t* vr = kr + kv.v_stride();
        for (int d = 0; d < D; ++d) {
          k[size_t(t * D + d)] = bf ? to_float(bf16{kr[d]}) : f16_to_float(kr[d]);
          v[size_t(t * D + d)] = bf ? to_float(bf16{vr[d]}) : f16_to_float(vr[d]);
        }
      }
    });
    for (int g = 0; g < G; ++g) {
      const int qh = h * G + g;
      matmul(true, c, n, D, scale, q + int64_t(qh) * D, ld, k.data(), D, s.data(), n);
      // Causal softmax per row: row i sees keys [0, p0 + i].
      pool.parallel_for(c, [&](int64_t i) {
        float* row = &s[size_t(i * n)];
        const int64_t visible = p0 + i + 1;
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < visible; ++j) m = std::max(m, row[j]);
        float sum = 0;
        for (int64_t j = 0; j < visible; ++j) {
          row[j] = std::exp(row[j] - m);
          sum += row[j];
        }
        const float inv = 1.f / sum;
        for (int64_t j = 0; j < visible; ++j) row[j] *= inv;
        for (int64_t j = visible; j < n; ++j) row[j] = 0.f;
      });
      if (received)
        for (int64_t i = c - rows_seen; i < c; ++i)
          for (int64_t j = 0; j < n; ++j)
            (*received)[size_t(h) * size_t(n) + size_t(j)] += s[size_t(i * n + j)] / float(rows_seen * G);
      matmul(false, c, D, n, 1.f, s.data(), n, v.data(), D, out + int64_t(qh) * D, ld);
    }
  }
}

}  // namespace sinkrouter
