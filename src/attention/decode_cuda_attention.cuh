// The CUDA-core Split-K decode attention kernel (dense and routed), included by the
// generated per-(head_dim, dtype) instantiation files decode_cuda_attn_*.cu. It serves
// every GQA group (chunks of up to 8 query heads); groups of up to 4 heads normally take
// the tensor-core kernel (decode_cuda_attention_mma.cuh) instead.
//
// One CTA of 128 threads takes one split: a contiguous range of one unit's tokens (unit =
// sequence, KV head, chunk of up to GC query heads). Threads form row groups of D/8 lanes;
// a lane owns 8 consecutive dimensions of a K or V row (one 16-byte load). Each tile of
// RP * NR tokens (RP row groups, NR rows each) is fetched with cp.async into a ring of NS
// shared-memory stages, so NS-1 tiles are in flight while one is computed. A thread reads
// back only the 16-byte slots it copied itself, so the ring needs no barrier: shared
// memory here is a landing buffer that keeps many loads in flight without registers.
//
// Per tile: scores of the GC heads (partial dot over 8 dims, butterfly over the row
// group's lanes), an online softmax in base 2 per row group, then P*V into the row
// group's accumulators. At the end the RP row groups are merged through shared memory
// and finish_split (decode_cuda_split.cuh) writes the output or the CTA's partial.
#pragma once

#include <algorithm>
#include <type_traits>

#include "core/cuda_check.h"
#include "core/cuda_dtype.cuh"
#include "core/cuda_launch.cuh"
#include "decode_cuda_kernels.cuh"
#include "decode_cuda_split.cuh"

namespace sinkrouter::cuda {

template <int D, int GC>
struct AttnShape {
  static constexpr int kThreads = kAttnThreads;
  static constexpr int kLanes = D / 8;                 // lanes per token row
  static constexpr int kRowGroups = kThreads / kLanes;  // RP
  static constexpr int kRows = GC >= 8 ? 2 : 4;          // NR: rows per thread per tile
  static constexpr int kTile = kRowGroups * kRows;
  static constexpr int kStages = 3;
  static constexpr int kPipeBytes = kStages * 2 * kRows * kThreads * 16;
  // Row-group states, the CTA's merged state, the fused combine's scratch.
  static constexpr int kMergeBytes = (kRowGroups * GC * (D + 2) + GC * (D + 2) + kFinishScratchFloats) * 4;
  static constexpr int kSmemBytes = kPipeBytes > kMergeBytes ? kPipeBytes : kMergeBytes;
};

template <int D, typename Tag, int GC, bool ROUTED>
__global__ void __launch_bounds__(kAttnThreads) attention_kernel(const AttnArgs a) {
  using S = AttnShape<D, GC>;
  constexpr int LANES = S::kLanes, RP = S::kRowGroups, NR = S::kRows, TILE = S::kTile, NS = S::kStages;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  uint4* ring = reinterpret_cast<uint4*>(smem_raw);  // [NS][2 (K, V)][NR][threads]

  pdl_begin(a);  // every input (q, the cache, the lengths) is the kernels before's output
  int unit, split, splits;
  int64_t T;          // the unit's tokens
  int32_t page_start;  // kv.indptr of its sequence
  const int cta = flat_cta(a);
  if (!find_split<ROUTED, kAttnThreads>(a, cta, &unit, &split, &splits, &T, &page_start)) return;
  const int H = a.kv.num_kv_heads;
  const int bh = unit / a.head_chunks, hc = unit % a.head_chunks;
  const int b = bh / H, h = bh % H;
  const int tid = int(threadIdx.x), lane = tid % LANES, row = tid / LANES;

  const int64_t v0 = T * split / splits, v1 = T * (split + 1) / splits;

  RoutedMap map{nullptr, nullptr, 0, 0, 0, 0, FastDiv(a.kv.block_size)};
  if (ROUTED) map = RoutedMap::make<false>(a, bh);
  // Token rows: page table of sequence b, and offsets in elements (positions < 2^31).
  const int32_t* page_table = a.kv.indices + page_start;
  const FastDiv page_div(a.kv.page_size);
  const int64_t row_elems = int64_t(a.kv.num_kv_heads) * D;
  const int P = a.kv.page_size;

  // This lane's 8 dimensions of the GC query heads, pre-scaled by scale * log2(e).
  float qr[GC][8];
#pragma unroll
  for (int g = 0; g < GC; ++g) {
    const int gg = hc * a.heads_per_cta + g;
    const int64_t base = (int64_t(b) * a.num_q_heads + int64_t(h) * a.group + gg) * D + lane * 8;
#pragma unroll
    for (int i = 0; i < 8; ++i) qr[g][i] = gg < a.group ? load_q(a.q, a.q_dtype, base + i) * a.q_scale : 0.f;
  }

  const uint16_t* pages = static_cast<const uint16_t*>(a.kv.pages);
  const int64_t vstride = a.kv.v_stride();
  const int num_tiles = int((v1 - v0 + TILE - 1) / TILE);

  auto issue = [&](int t) {
    const int st = t % NS;
#pragma unroll
    for (int r = 0; r < NR; ++r) {
      const int64_t v = v0 + int64_t(t) * TILE + r * RP + row;
      const bool valid = v < v1;
      const uint16_t* src = pages;
      if (valid) {
        const int pos = ROUTED ? map(int(v)) : int(v);
        const int pg = int(page_div.div(uint32_t(pos)));
        const int64_t page = page_table[pg];
        src = pages + ((page * 2) * P + (pos - pg * P)) * row_elems + h * D + lane * 8;
      }
      cp_async16_to(smem_addr(&ring[((st * 2 + 0) * NR + r) * kAttnThreads + tid]), src, valid);
      cp_async16_to(smem_addr(&ring[((st * 2 + 1) * NR + r) * kAttnThreads + tid]), valid ? src + vstride : src,
                    valid);
    }
  };

  float m[GC], l[GC], acc[GC][8];
#pragma unroll
  for (int g = 0; g < GC; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[g][i] = 0.f;
  }

#pragma unroll
  for (int t = 0; t < NS - 1; ++t) {
    if (t < num_tiles) issue(t);
    cp_async_commit_group();
  }
  for (int t = 0; t < num_tiles; ++t) {
    // The stage refilled here was last read by this thread in iteration t - 1.
    if (t + NS - 1 < num_tiles) issue(t + NS - 1);
    cp_async_commit_group();
    cp_async_wait_group<NS - 1>();  // this thread's copies of tile t have landed
    const int st = t % NS;

    float s[NR][GC];
#pragma unroll
    for (int r = 0; r < NR; ++r) {
      float k[8];
      unpack8(ring[((st * 2 + 0) * NR + r) * kAttnThreads + tid], k, Tag{});
#pragma unroll
      for (int g = 0; g < GC; ++g) {
        float p = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) p = fmaf(qr[g][i], k[i], p);
        s[r][g] = p;
      }
    }
    // Butterfly over the row group's lanes: every lane ends with the full scores.
#pragma unroll
    for (int off = LANES / 2; off > 0; off >>= 1)
#pragma unroll
      for (int r = 0; r < NR; ++r)
#pragma unroll
        for (int g = 0; g < GC; ++g) s[r][g] += __shfl_xor_sync(0xffffffffu, s[r][g], off);
#pragma unroll
    for (int r = 0; r < NR; ++r) {
      const bool valid = v0 + int64_t(t) * TILE + r * RP + row < v1;
#pragma unroll
      for (int g = 0; g < GC; ++g)
        if (!valid) s[r][g] = -INFINITY;
    }
    // Online softmax per head (base 2).
#pragma unroll
    for (int g = 0; g < GC; ++g) {
      float mt = s[0][g];
#pragma unroll
      for (int r = 1; r < NR; ++r) mt = fmaxf(mt, s[r][g]);
      const float mn = fmaxf(m[g], mt);
      if (mn == -INFINITY) {  // nothing valid yet in this row group
#pragma unroll
        for (int r = 0; r < NR; ++r) s[r][g] = 0.f;
        continue;
      }
      const float alpha = exp2f(m[g] - mn);
      float ls = 0.f;
#pragma unroll
      for (int r = 0; r < NR; ++r) {
        s[r][g] = exp2f(s[r][g] - mn);
        ls += s[r][g];
      }
      l[g] = l[g] * alpha + ls;
      m[g] = mn;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[g][i] *= alpha;
    }
#pragma unroll
    for (int r = 0; r < NR; ++r) {
      float v[8];
      unpack8(ring[((st * 2 + 1) * NR + r) * kAttnThreads + tid], v, Tag{});
#pragma unroll
      for (int g = 0; g < GC; ++g)
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[g][i] = fmaf(s[r][g], v[i], acc[g][i]);
    }
  }
  cp_async_wait_group<0>();
  __syncthreads();  // the ring is reused for the merge below

  // Merge the row groups: [RP][GC] (m, l) then [RP][GC][D] acc.
  float* red_ml = reinterpret_cast<float*>(smem_raw);
  float* red_acc = red_ml + RP * GC * 2;
#pragma unroll
  for (int g = 0; g < GC; ++g) {
    if (lane == 0) {
      red_ml[(row * GC + g) * 2] = m[g];
      red_ml[(row * GC + g) * 2 + 1] = l[g];
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) red_acc[(row * GC + g) * D + lane * 8 + i] = acc[g][i];
  }
  __syncthreads();
  float* s_m = red_acc + RP * GC * D;  // the CTA's merged state: [GC] m, [GC] l, [GC][D] acc
  float* s_l = s_m + GC;
  float* s_acc = s_l + GC;
  float* scratch = s_acc + GC * D;
  for (int idx = tid; idx < GC * D; idx += kAttnThreads) {
    const int g = idx / D, d = idx % D;
    float M = -INFINITY;
    for (int r = 0; r < RP; ++r) M = fmaxf(M, red_ml[(r * GC + g) * 2]);
    float L = 0.f, A = 0.f;
    if (M != -INFINITY)
      for (int r = 0; r < RP; ++r) {
        const float w = exp2f(red_ml[(r * GC + g) * 2] - M);
        L += red_ml[(r * GC + g) * 2 + 1] * w;
        A += red_acc[(r * GC + g) * D + d] * w;
      }
    s_acc[idx] = A;
    if (d == 0) {
      s_m[g] = M;
      s_l[g] = L;
    }
  }
  __syncthreads();
  finish_split<D, ROUTED, kAttnThreads>(a, cta, unit, split, splits, s_m, s_l, s_acc, scratch);
}

template <int D, typename Tag, int GC, bool ROUTED>
AttnKernelInfo prepare_one(int min_smem) {
  using S = AttnShape<D, GC>;
  auto kernel = attention_kernel<D, Tag, GC, ROUTED>;
  const int smem = std::max(S::kSmemBytes, min_smem);
  // Always raised: 48 KB of dynamic ring plus the static shared memory of find_split is
  // past the default 48 KB limit of static + dynamic.
  raise_smem_limit(reinterpret_cast<const void*>(kernel), smem);
  int blocks = 0;
  SR_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kAttnThreads, smem));
  return {smem, blocks};
}

template <int D, typename Tag, int GC, bool ROUTED>
void launch_one(const AttnArgs& a, int grid, int smem, cudaStream_t stream) {
  launch_pdl(attention_kernel<D, Tag, GC, ROUTED>, dim3(unsigned(grid)), dim3(kAttnThreads), smem, stream, a);
}

// Calls fn(std::integral_constant<int, GC>) for the supported heads-per-CTA values.
template <typename Fn>
auto with_heads_per_cta(int gc, Fn&& fn) {
  switch (gc) {
    case 1: return fn(std::integral_constant<int, 1>{});
    case 2: return fn(std::integral_constant<int, 2>{});
    case 3: return fn(std::integral_constant<int, 3>{});
    case 4: return fn(std::integral_constant<int, 4>{});
    case 8: return fn(std::integral_constant<int, 8>{});
  }
  fail("decode (CUDA): {} query heads per CTA has no kernel (expected 1, 2, 3, 4 or 8)", gc);
}

// Bodies of the per-(D, dtype) entry points declared in decode_cuda_kernels.cuh.
#define SR_DEFINE_ATTENTION_INSTANCES(D, TAG, SUFFIX)                                        \
  AttnKernelInfo attention_prepare_##SUFFIX(int gc, bool routed, int min_smem) {             \
    return with_heads_per_cta(gc, [&](auto c) {                                              \
      return routed ? prepare_one<D, TAG, decltype(c)::value, true>(min_smem)                \
                    : prepare_one<D, TAG, decltype(c)::value, false>(min_smem);              \
    });                                                                                      \
  }                                                                                          \
  void attention_launch_##SUFFIX(const AttnArgs& a, bool routed, int grid, int smem, cudaStream_t s) { \
    with_heads_per_cta(a.heads_per_cta, [&](auto c) {                                        \
      if (routed)                                                                            \
        launch_one<D, TAG, decltype(c)::value, true>(a, grid, smem, s);                      \
      else                                                                                   \
        launch_one<D, TAG, decltype(c)::value, false>(a, grid, smem, s);                     \
    });                                                                                      \
  }

}  // namespace sinkrouter::cuda
