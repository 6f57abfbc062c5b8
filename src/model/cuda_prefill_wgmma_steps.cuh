// The per-tile steps of the wgmma prefill kernels (v3 cuda_prefill_wgmma.cu with key tiles
// of 64, v4 cuda_prefill_tma.cu with 128; head_dim 64): issuing S = Q K^T and O += P V for
// one warpgroup, the causal mask and online softmax of S in place, O's rescale and P's
// move into the A fragments of P V. Layouts: core/cuda_wgmma.cuh.
//
//   s        [NS] f32   one warpgroup's m64nN accumulators, N = 2 NS keys (S, then P in fp32)
//   o        [32] f32   O, m64n64
//   pa       [NS / 2]   P as bf16x2 A fragments: pa[4 kk .. 4 kk + 3] is k-step kk
//   m, l     [2]        this lane's rows g and g + 8: running max (raw scores), partial sums
#pragma once

#include <cuda_runtime_api.h>

#include <cmath>

#include "core/cuda_mma.cuh"
#include "core/cuda_wgmma.cuh"
#include "cuda_prefill_attention.h"
#include "cuda_prefill_rows.cuh"

namespace sinkrouter::wgmma_prefill {

constexpr int kD = 64;                           // head_dim (one 128-byte swizzle row)
constexpr int kKeys = 64;                        // keys per tile of version 3 (version 4's: cuda_prefill_tma.cu)
constexpr uint32_t kTileBytes = kKeys * kD * 2;  // 8 KB, a multiple of the 1024-byte atom

// Keep a row's running max until a tile raises it by more than this (log2 units): P may
// then reach 2^8 (harmless in fp32 and bf16), and O's rescale, 32 multiplies a tile, is
// skipped wherever no row of the warp needs it (most tiles of a long context). The result
// is the same function: O, l and the log-sum-exp all use the max actually kept.
[[maybe_unused]] constexpr float kRescaleThreshold = 8.f;

// A CTA's rows: a 1-D grid of (query tiles x n_head) CTAs, the heaviest (latest rows) first;
// query head qh's rows q0 .. q0 + ROWS - 1 (those before a.c), reading KV head h, and the
// key tiles up to its last row's diagonal.
template <int ROWS, int KEYS = kKeys>
struct CtaRows {
  int qh, h, num_tiles, pos0;  // pos0: the position of row q0 (< 2^31: the launchers check)
  int64_t q0;
  __device__ explicit CtaRows(const PrefillAttentionArgs& a) {
    const int num_qtiles = int((a.c + ROWS - 1) / ROWS);
    qh = int(blockIdx.x % unsigned(a.n_head));
    q0 = int64_t(num_qtiles - 1 - int(blockIdx.x / unsigned(a.n_head))) * ROWS;
    h = qh / (a.n_head / a.kv.num_kv_heads);
    const int64_t last_row = min(q0 + ROWS, a.c) - 1;
    num_tiles = int((a.p0 + last_row) / KEYS) + 1;
    pos0 = int(a.p0 + q0);
  }
};

#if defined(SINKROUTER_WGMMA_ENABLED)

// A descriptor of a 128-byte-swizzled tile (cuda::wgmma_desc_sw128) as its two 32-bit
// halves, so that a k step's offset is one 32-bit add on the low half: the start address
// field (addr >> 4, 14 bits) cannot carry into the LBO above it, shared addresses being
// under 2^18.
struct SwizzledDesc {
  uint32_t lo, hi;
  __device__ SwizzledDesc(uint32_t addr, uint32_t lbo_bytes, uint32_t sbo_bytes) {
    const uint64_t d = cuda::wgmma_desc_sw128(addr, lbo_bytes, sbo_bytes);
    lo = uint32_t(d);
    hi = uint32_t(d >> 32);
  }
  __device__ uint64_t at(uint32_t offset_bytes) const { return (uint64_t(hi) << 32) | (lo + (offset_bytes >> 4)); }
};

// S = Q K^T for this warpgroup: 64 rows x NS / 2 keys (64 or 128); its Q rows (K-major,
// swizzled like a K tile) at shared address qw, the K tile (K-major) at kst.
template <int NS>
__device__ __forceinline__ void issue_scores(float (&s)[NS], uint32_t qw, uint32_t kst) {
  const SwizzledDesc q(qw, 16, 1024), k(kst, 16, 1024);
  cuda::wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < kD / 16; ++ks) {
    if constexpr (NS == 32)
      cuda::wgmma_m64n64k16_bf16_ss(s, q.at(ks * 32), k.at(ks * 32), ks > 0);
    else
      cuda::wgmma_m64n128k16_bf16_ss(s, q.at(ks * 32), k.at(ks * 32), ks > 0);
  }
  cuda::wgmma_commit_group();
}

// O += P V: k-step kk covers keys 16 kk .. 16 kk + 15 (NP / 4 of them); V (MN-major) at
// shared address vst. (No operand fence on o here: S is in flight, and ptxas serialises on
// any read of an accumulator inside that window; the data dependence orders the rescale
// before.)
template <int NP>
__device__ __forceinline__ void issue_pv(float (&o)[32], const uint32_t (&pa)[NP], uint32_t vst) {
  const SwizzledDesc v(vst, kTileBytes, 1024);  // (LBO unused at N = 64)
  cuda::wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < NP / 4; ++kk) {
    const uint32_t(&a)[4] = *reinterpret_cast<const uint32_t(*)[4]>(pa + 4 * kk);
    cuda::wgmma_m64n64k16_bf16_rs<1>(o, a, v.at(kk * 2048), true);
  }
  cuda::wgmma_commit_group();
}

// The last tile's P V (V at vst), then the warp's rows normalised and stored with their
// log-sum-exp (m in raw-score units, as online_softmax keeps it).
template <int NP>
__device__ __forceinline__ void finish_rows(const PrefillAttentionArgs& a, float (&o)[32], uint32_t (&pa)[NP],
                                            uint32_t vst, const float (&l)[2], const float (&m)[2], int64_t q0,
                                            int warp, int qh, int lane) {
  issue_pv(o, pa, vst);
  cuda::wgmma_wait_group<0>();
  cuda::wgmma_fence_operands(o);
  cuda::wgmma_fence_operands(pa);
  const float m_nat[2] = {m[0] * a.scale, m[1] * a.scale};
  store_prefill_rows<kD>(a, *reinterpret_cast<const float(*)[kD / 8][4]>(o), l, m_nat, q0 + warp * 16 + lane / 4, qh,
                         lane % 4);
}

// The causal mask (if `diagonal`: the tile reaches past the CTA's first row; a uniform
// condition, see the loop), then the online softmax of rows g (r = 0) and g + 8 (r = 1) in
// place: s = 2^(s scale log2 e - m scale log2 e), l (this lane's part of the row sums) and
// m updated (m only past kRescaleThreshold), alpha the factor O must be rescaled by.
// s[4 nt + e]: key key0 + 8 nt + 2 t4 + (e & 1), row pos0 + g + 8 (e >> 1).
// kMayMask = false: a tile known to lie wholly before the CTA's first row, with no mask code
// at all (with the runtime test alone, ptxas turns the mask into 64 selects and compares run
// on every tile).
// v[0] op v[1] op ... op v[N - 1] as a balanced tree (short dependence chains), unrolled at
// compile time (a loop halving its bound is not, and the array went to local memory).
template <int W = 0, int N, class Op>
__device__ __forceinline__ float tree_reduce(float (&v)[N], Op op) {
  constexpr int kW = W == 0 ? N / 2 : W;
#pragma unroll
  for (int i = 0; i < kW; ++i) v[i] = op(v[i], v[i + kW]);
  if constexpr (kW > 1) return tree_reduce<kW / 2>(v, op);
  return v[0];
}

// NS: S's accumulators a thread (32: 64-key tiles, 64: 128-key tiles; NS / 4 n8 blocks).
template <bool kMayMask = true, int NS>
__device__ __forceinline__ void online_softmax(float (&s)[NS], float (&m)[2], float (&l)[2], float (&alpha)[2],
                                               bool diagonal, int key0, int pos0, int g, int t4, float scale_log2) {
  constexpr int kBlocks = NS / 4;  // n8 blocks
  if (kMayMask && diagonal) {
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      const int key = key0 + (i / 4) * 8 + 2 * t4 + (i & 1);
      const int pos = pos0 + g + ((i >> 1) & 1) * 8;
      if (key > pos) s[i] = -INFINITY;
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float v[kBlocks];
#pragma unroll
    for (int nt = 0; nt < kBlocks; ++nt) v[nt] = fmaxf(s[4 * nt + 2 * r], s[4 * nt + 2 * r + 1]);
    float mx = tree_reduce(v, [](float x, float y) { return fmaxf(x, y); });
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    // (-inf + threshold is -inf: the first visible key always sets m.)
    const bool raise = mx * scale_log2 > fmaf(m[r], scale_log2, kRescaleThreshold);
    const float m_new = raise ? mx : m[r];
    const float m_use = m_new == -INFINITY ? 0.f : m_new;  // nothing visible yet: no NaN
    const float neg_m = -m_use * scale_log2;
    alpha[r] = raise ? cuda::fast_exp2(fmaf(m[r], scale_log2, neg_m)) : 1.f;  // 0 while m was -inf
    m[r] = m_new;
#pragma unroll
    for (int nt = 0; nt < kBlocks; ++nt) {
      s[4 * nt + 2 * r] = cuda::fast_exp2(fmaf(s[4 * nt + 2 * r], scale_log2, neg_m));
      s[4 * nt + 2 * r + 1] = cuda::fast_exp2(fmaf(s[4 * nt + 2 * r + 1], scale_log2, neg_m));
      v[nt] = s[4 * nt + 2 * r] + s[4 * nt + 2 * r + 1];
    }
    l[r] = fmaf(l[r], alpha[r], tree_reduce(v, [](float x, float y) { return x + y; }));
  }
}

// O's rows g (alpha[0]) and g + 8 (alpha[1]) times their softmax rescale, skipped where no
// row of the warp changed its max (a warp-uniform branch, taken after every wgmma is done).
__device__ __forceinline__ void rescale_o(float (&o)[32], const float (&alpha)[2]) {
  if (!__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) return;
#pragma unroll
  for (int i = 0; i < 32; ++i) o[i] *= alpha[(i >> 1) & 1];
}

// P as the A fragments of P V: k-step kk (keys 16 kk .. 16 kk + 15) = n8 blocks 2 kk and
// 2 kk + 1 of S, i.e. pa[4 kk .. 4 kk + 3].
template <int NS>
__device__ __forceinline__ void to_p_fragments(const float (&s)[NS], uint32_t (&pa)[NS / 2]) {
#pragma unroll
  for (int i = 0; i < NS / 2; ++i) pa[i] = cuda::pack_bf16x2(s[2 * i], s[2 * i + 1]);
}

#endif  // SINKROUTER_WGMMA_ENABLED

}  // namespace sinkrouter::wgmma_prefill
