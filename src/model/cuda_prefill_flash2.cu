// Causal prefill attention, flash-attention-2 on mma.sync, version 2 (the default; see
// cuda_prefill_attention.h for the arguments and docs/PERF.md "Prefill attention v2" for
// the measurements that chose it). What differs from version 1 (cuda_prefill_attention.cu),
// and why:
//   - head_dim 64: a warp owns 32 query rows (two m16 tiles), a CTA 128. Each ldmatrix of
//     K or V then feeds four mma.sync instead of two: with 16 rows a warp spent as many
//     shared-memory cycles on ldmatrix as the tensor cores spent on the products.
//     head_dim 128 keeps 16 rows a warp (its accumulators would not fit in registers).
//   - The K/V tile's page rows are resolved once per copied row and a tile ahead: the page
//     id load of tile t + 1 is in flight while tile t is computed, and the page index is a
//     multiply and a shift (FastDiv). Version 1 called PagedKV::k_offset per 16-byte chunk
//     (a 64-bit division and a dependent page-table load before every cp.async).
//   - The row max and sum of the online softmax are trees, not chains.
//   - A ring of stages with one barrier per tile (3 stages for head_dim 64, 2 for 128):
//     the refill of a stage is issued after the barrier that follows its last reads.
//   - Scores stay unscaled; the scale is folded into the exponent's FFMA
//     (p = 2^(s * scale * log2 e - m * scale * log2 e)), and only the tiles on a warp's
//     diagonal compute a causal mask. A warp whose rows see none of a tile's keys skips it.
//   - The grid is 1-D, heaviest query tiles first across all heads, heads of one KV group
//     adjacent: a shorter tail, and a KV group's tiles shared in L2 by its query heads.
#include <cmath>

#include "core/cuda_check.h"
#include "core/cuda_fast_div.cuh"
#include "core/cuda_mma.cuh"
#include "cuda_prefill_attention.h"
#include "cuda_prefill_rows.cuh"

namespace sinkrouter {
namespace {

using cuda::Bf16Tag;


template <int D>
struct Flash2 {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kMTiles = D == 64 ? 2 : 1;     // m16 tiles (16 query rows) per warp
  static constexpr int kWarpRows = 16 * kMTiles;
  static constexpr int kRows = kWarps * kWarpRows;    // query rows per CTA
  static constexpr int kKeys = 64;                    // keys per tile
  static constexpr int kStages = D == 64 ? 3 : 2;     // K/V ring
  static constexpr int kStride = D + 8;               // shared row: D + 8 elements (conflict-free ldmatrix)
  static constexpr int kChunks = D / 8;               // 16-byte chunks per row
  static constexpr int kRowsPerPass = kThreads / kChunks;
  static constexpr int kCopyRows = kKeys / kRowsPerPass;  // K/V rows each thread copies per tile
  static constexpr int kQElems = kRows * kStride;
  static constexpr int kTileElems = kKeys * kStride;
  static constexpr size_t kBytes = size_t(kQElems + kStages * 2 * kTileElems) * sizeof(__nv_bfloat16);
  static_assert(kThreads % kChunks == 0 && kKeys % kRowsPerPass == 0, "copy layout");
};

// grid: (query tiles x n_head), 1-D; block: 128 threads.
template <int D>
__global__ void __launch_bounds__(Flash2<D>::kThreads, 2) flash2_prefill_kernel(PrefillAttentionArgs a) {
  using S = Flash2<D>;
  constexpr int MT = S::kMTiles, NS = S::kStages, CR = S::kCopyRows;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* const qs = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* const kv0 = qs + S::kQElems;  // stage s: K at kv0 + 2 s kTile, V one tile on

  // Block b: query tile (heaviest first) b / n_head, query head b % n_head.
  const int num_qtiles = int((a.c + S::kRows - 1) / S::kRows);
  const int qh = int(blockIdx.x % unsigned(a.n_head));
  const int64_t q0 = int64_t(num_qtiles - 1 - int(blockIdx.x / unsigned(a.n_head))) * S::kRows;
  const int h = qh / (a.n_head / a.kv.num_kv_heads);
  const int64_t n = a.p0 + a.c;  // keys in the cache
  const int64_t last_row = min(q0 + S::kRows, a.c) - 1;
  const int num_tiles = int((a.p0 + last_row) / S::kKeys) + 1;  // up to the last row's diagonal
  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t4 = lane % 4;

  // Copy layout: thread tid copies chunk tid % kChunks of rows tid / kChunks + i * kRowsPerPass.
  const int copy_row = tid / S::kChunks, copy_col = (tid % S::kChunks) * 8;
  const uint16_t* const pages = static_cast<const uint16_t*>(a.kv.pages);
  const int32_t* const page_ids = a.kv.indices + a.kv.indptr[0];
  const int page_size = a.kv.page_size;
  const cuda::FastDiv page_div(page_size);  // a multiply and a shift, not a division, per row
  const int n32 = int(n);                   // < 2^31 (checked by the launcher)
  const int64_t row_elems = int64_t(a.kv.num_kv_heads) * D;  // one token of one page
  const int64_t vstride = a.kv.v_stride();
  const int64_t head_off = int64_t(h) * D + copy_col;

  // The page ids of a tile's copied rows (-1: past the cache, zero-filled).
  auto load_page_ids = [&](int tile, int (&ids)[CR]) {
#pragma unroll
    for (int i = 0; i < CR; ++i) {
      const int key = tile * S::kKeys + copy_row + i * S::kRowsPerPass;
      ids[i] = key < n32 ? page_ids[page_div.div(uint32_t(key))] : -1;
    }
  };
  auto issue_tile = [&](int tile, const int (&ids)[CR]) {
    const int st = tile % NS;
    __nv_bfloat16* ks = kv0 + 2 * st * S::kTileElems;
#pragma unroll
    for (int i = 0; i < CR; ++i) {
      const int r = copy_row + i * S::kRowsPerPass;
      const int key = tile * S::kKeys + r;
      const bool valid = ids[i] >= 0;
      const int in_page = key - int(page_div.div(uint32_t(key))) * page_size;
      const int64_t off = valid ? (int64_t(ids[i]) * 2 * page_size + in_page) * row_elems + head_off : 0;
      const uint32_t dst = cuda::smem_addr(ks + r * S::kStride + copy_col);
      cuda::cp_async16_to(dst, pages + off, valid);
      cuda::cp_async16_to(dst + S::kTileElems * 2, pages + off + (valid ? vstride : 0), valid);
    }
  };

  // Prologue: Q (rows past the chunk zero-filled) with tile 0, then tiles 1 .. NS - 2; the
  // page ids of tile NS - 1 are loaded for the first iteration.
  for (int i = tid; i < S::kRows * S::kChunks; i += S::kThreads) {
    const int row = i / S::kChunks, col = (i % S::kChunks) * 8;
    const int64_t qi = q0 + row;
    const bool valid = qi < a.c;
    cuda::cp_async16_to(cuda::smem_addr(qs + row * S::kStride + col),
                        a.q + (valid ? (qi * a.n_head + qh) * D : 0) + col, valid);
  }
  int ids[CR];
#pragma unroll
  for (int t = 0; t < NS - 1; ++t) {
    load_page_ids(t, ids);
    if (t < num_tiles) issue_tile(t, ids);
    cuda::cp_async_commit_group();
  }
  load_page_ids(NS - 1, ids);

  uint32_t qf[MT][D / 16][4];  // this warp's query rows as A fragments, one per 16-dim k-step
  float o[MT][D / 8][4];       // output accumulators, 8 dims per n-tile
  float m[MT][2], l[MT][2];    // running max (raw scores) and this lane's part of the sums
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) o[mt][dt][0] = o[mt][dt][1] = o[mt][dt][2] = o[mt][dt][3] = 0.f;
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.f;
  }
  const float scale_log2 = a.scale * cuda::kLog2e;
  const int warp_row0 = warp * S::kWarpRows;
  // Positions relative to the first key of tile 0: row r of this warp sits at
  // pos0 + r. int: contexts stay below 2^31 tokens.
  const int pos0 = int(a.p0 + q0) + warp_row0;
  const int warp_last_pos = pos0 + S::kWarpRows - 1;

  for (int kt = 0; kt < num_tiles; ++kt) {
    cuda::cp_async_wait_group<NS - 2>();  // tile kt has landed (for this thread)
    __syncthreads();                      // ... for every thread; stage (kt - 1) % NS is free
    if (kt + NS - 1 < num_tiles) issue_tile(kt + NS - 1, ids);
    cuda::cp_async_commit_group();  // possibly empty: keeps the group count per tile
    load_page_ids(kt + NS, ids);    // consumed by the next iteration's issue
    if (kt == 0) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int ks = 0; ks < D / 16; ++ks)
          cuda::ldmatrix_x4(qf[mt][ks],
                            cuda::smem_addr(qs + (warp_row0 + mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * S::kStride +
                                            ks * 16 + (lane >> 4) * 8));
    }
    const int key0 = kt * S::kKeys;
    if (key0 > warp_last_pos) continue;  // every key of this tile is in this warp's future
    const __nv_bfloat16* kst = kv0 + 2 * (kt % NS) * S::kTileElems;
    const __nv_bfloat16* vst = kst + S::kTileElems;

    // S = Q K^T: MT x 16 rows x 64 keys (8 n-tiles of 8 keys). One ldmatrix.x4 gives the B
    // fragments of two 16-dim k-steps of one n-tile, used by every m-tile.
    float s[MT][8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 32; ++kk) {
        uint32_t b[4];
        cuda::ldmatrix_x4(b, cuda::smem_addr(kst + (nt * 8 + (lane & 7)) * S::kStride + kk * 32 + (lane >> 3) * 8));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          cuda::mma16816(s[mt][nt], qf[mt][2 * kk], b[0], b[1], Bf16Tag{});
          cuda::mma16816(s[mt][nt], qf[mt][2 * kk + 1], b[2], b[3], Bf16Tag{});
        }
      }
    }

    // Causal mask, only where the tile reaches past this warp's first row (keys past the
    // sequence are past every valid row too).
    if (key0 + S::kKeys - 1 > pos0) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = key0 + nt * 8 + 2 * t4 + (e & 1);
            const int pos = pos0 + mt * 16 + g + (e >> 1) * 8;
            if (key > pos) s[mt][nt][e] = -INFINITY;
          }
    }

    // Online softmax per row (r = 0: row g, r = 1: row g + 8 of each m-tile). The 4 lanes
    // of a quad hold a row between them: the max is shared by shuffles; the sums stay per
    // lane (every lane rescales by the same factor) and are added up once at the end.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        // Max and sum as trees, not chains: 4 dependent steps instead of 16.
        float v[8];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) v[nt] = fmaxf(s[mt][nt][2 * r], s[mt][nt][2 * r + 1]);
        float mx = fmaxf(fmaxf(fmaxf(v[0], v[1]), fmaxf(v[2], v[3])), fmaxf(fmaxf(v[4], v[5]), fmaxf(v[6], v[7])));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m[mt][r], mx);
        const float m_use = m_new == -INFINITY ? 0.f : m_new;  // nothing visible yet: no NaN
        const float neg_m = -m_use * scale_log2;
        const float alpha = cuda::fast_exp2(fmaf(m[mt][r], scale_log2, neg_m));  // 0 while m is -inf
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
          s[mt][nt][2 * r] = cuda::fast_exp2(fmaf(s[mt][nt][2 * r], scale_log2, neg_m));
          s[mt][nt][2 * r + 1] = cuda::fast_exp2(fmaf(s[mt][nt][2 * r + 1], scale_log2, neg_m));
          v[nt] = s[mt][nt][2 * r] + s[mt][nt][2 * r + 1];
        }
        const float sum = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
        l[mt][r] = l[mt][r] * alpha + sum;
        m[mt][r] = m_new;
#pragma unroll
        for (int dt = 0; dt < D / 8; ++dt) {
          o[mt][dt][2 * r] *= alpha;
          o[mt][dt][2 * r + 1] *= alpha;
        }
      }

    // O += P V: k-step kk covers keys 16 kk .. 16 kk + 15 = n-tiles 2 kk and 2 kk + 1 of S
    // (their C fragments are the A fragment of P). One ldmatrix.x4.trans gives the B
    // fragments of two 8-dim n-tiles of V, used by every m-tile.
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t pa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        pa[mt][0] = cuda::pack_bf16x2(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pa[mt][1] = cuda::pack_bf16x2(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pa[mt][2] = cuda::pack_bf16x2(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pa[mt][3] = cuda::pack_bf16x2(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t b[4];
        cuda::ldmatrix_x4_trans(b, cuda::smem_addr(vst + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * S::kStride +
                                                   dp * 16 + (lane >> 4) * 8));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          cuda::mma16816(o[mt][2 * dp], pa[mt], b[0], b[1], Bf16Tag{});
          cuda::mma16816(o[mt][2 * dp + 1], pa[mt], b[2], b[3], Bf16Tag{});
        }
      }
    }
  }
  cuda::cp_async_wait_group<0>();  // no copy may outlive the CTA (empty groups only, by now)

  // Normalise and store rows g and g + 8 of each m-tile.
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const float m_nat[2] = {m[mt][0] * a.scale, m[mt][1] * a.scale};
    store_prefill_rows<D>(a, o[mt], l[mt], m_nat, q0 + warp_row0 + mt * 16 + g, qh, t4);
  }
}

template <int D>
void launch(const PrefillAttentionArgs& a, cudaStream_t stream) {
  using S = Flash2<D>;
  // Raising the dynamic shared-memory limit is a host-side attribute, not a stream
  // operation: cheap, and legal while a stream is being captured.
  SR_CUDA_CHECK(cudaFuncSetAttribute(flash2_prefill_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     int(S::kBytes)));
  const int64_t blocks = (a.c + S::kRows - 1) / S::kRows * a.n_head;
  SR_CHECK(blocks < (int64_t(1) << 31), "prefill attention (CUDA): chunk of {} rows is too long", a.c);
  SR_CHECK(a.p0 + a.c + S::kKeys < (int64_t(1) << 31), "prefill attention (CUDA): {} tokens exceed 2^31", a.p0 + a.c);
  flash2_prefill_kernel<D><<<unsigned(blocks), S::kThreads, S::kBytes, stream>>>(a);
  SR_CUDA_CHECK_LAUNCH("flash2_prefill_kernel");
}

}  // namespace

namespace detail {
void prefill_attention_flash2(const PrefillAttentionArgs& a, cudaStream_t stream) {
  if (a.kv.head_dim == 64)
    launch<64>(a, stream);
  else
    launch<128>(a, stream);
}
}  // namespace detail

}  // namespace sinkrouter
