// The Split-K decode attention kernel (dense and routed), included by the generated
// per-(head_dim, dtype) instantiation files decode_cuda_attn_*.cu.
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
// and the CTA's partial (m, l, acc) is written for the combine step.
#pragma once

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <type_traits>

#include "core/cuda_check.h"

#include "core/cuda_dtype.cuh"
#include "decode_cuda_kernels.cuh"

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
  static constexpr int kMergeBytes = kRowGroups * GC * (D + 2) * 4;
  static constexpr int kSmemBytes = kPipeBytes > kMergeBytes ? kPipeBytes : kMergeBytes;
};

__device__ __forceinline__ void cp_async16(void* smem_dst, const void* src, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  const int bytes = valid ? 16 : 0;  // 0: zero-fill, nothing is read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Tokens of unit u: the sequence length (dense) or what the router kept.
template <bool ROUTED>
__device__ __forceinline__ int64_t unit_tokens(const AttnArgs& a, int u) {
  const int bh = u / a.head_chunks;
  if (ROUTED) return a.routed_tokens[bh];
  return a.seq_lens[bh / a.kv.num_kv_heads];
}

// Finds which unit and split CTA `cta` takes (see AttnArgs). Returns false when the CTA
// has no work (the grid is sized for the worst case).
template <bool ROUTED>
__device__ bool find_split(const AttnArgs& a, int cta, int* unit, int* split, int* splits, int64_t* chunk_out) {
  using Reduce = cub::BlockReduce<long long, kAttnThreads>;
  using Scan = cub::BlockScan<int, kAttnThreads>;
  __shared__ union {
    typename Reduce::TempStorage reduce;
    typename Scan::TempStorage scan;
  } tmp;
  __shared__ long long s_total;
  __shared__ int s_found[3];
  const int units = a.kv.batch * a.kv.num_kv_heads * a.head_chunks;
  long long part = 0;
  for (int u = int(threadIdx.x); u < units; u += kAttnThreads) part += unit_tokens<ROUTED>(a, u);
  const long long total = Reduce(tmp.reduce).Sum(part);
  if (threadIdx.x == 0) {
    s_total = total;
    s_found[0] = -1;
  }
  __syncthreads();
  const int64_t by_ctas = (s_total + a.target_ctas - 1) / a.target_ctas;
  const int64_t chunk = by_ctas > a.min_split_tokens ? by_ctas : a.min_split_tokens;
  int base = 0;
  for (int u0 = 0; u0 < units; u0 += kAttnThreads) {
    const int u = u0 + int(threadIdx.x);
    int s = 0;
    if (u < units) {
      const int64_t t = unit_tokens<ROUTED>(a, u);
      s = t > 0 ? int((t + chunk - 1) / chunk) : 1;
    }
    int prefix, sum;
    Scan(tmp.scan).ExclusiveSum(s, prefix, sum);
    if (u < units && cta >= base + prefix && cta < base + prefix + s) {
      s_found[0] = u;
      s_found[1] = cta - base - prefix;
      s_found[2] = s;
    }
    base += sum;
    __syncthreads();  // tmp is reused by the next round
    if (base > cta) break;  // uniform: every thread has the same base
  }
  *unit = s_found[0];
  *split = s_found[1];
  *splits = s_found[2];
  *chunk_out = chunk;
  return s_found[0] >= 0;
}

// Position of virtual token v of a routed unit: [extra anchors][kept blocks][window].
struct RoutedMap {
  const int32_t* anchors;
  const int32_t* blocks;
  int num_anchors, block_tokens, window_start;
  FastDiv R;
  __device__ __forceinline__ int operator()(int v) const {
    if (v < num_anchors) return anchors[v];
    const int w = v - num_anchors;
    if (w < block_tokens) {
      const int j = int(R.div(uint32_t(w)));
      return blocks[j] * int(R.d) + (w - j * int(R.d));
    }
    return window_start + (w - block_tokens);
  }
};

template <int D, typename Tag, int GC, bool ROUTED>
__global__ void __launch_bounds__(kAttnThreads) attention_kernel(const AttnArgs a) {
  using S = AttnShape<D, GC>;
  constexpr int LANES = S::kLanes, RP = S::kRowGroups, NR = S::kRows, TILE = S::kTile, NS = S::kStages;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  uint4* ring = reinterpret_cast<uint4*>(smem_raw);  // [NS][2 (K, V)][NR][threads]

  int unit, split, splits;
  int64_t chunk;
  if (!find_split<ROUTED>(a, int(blockIdx.x), &unit, &split, &splits, &chunk)) return;
  const int H = a.kv.num_kv_heads;
  const int bh = unit / a.head_chunks, hc = unit % a.head_chunks;
  const int b = bh / H, h = bh % H;
  const int tid = int(threadIdx.x), lane = tid % LANES, row = tid / LANES;
  if (split == 0 && tid == 0) a.sched[unit] = make_int2(int(blockIdx.x), splits);

  const int64_t T = unit_tokens<ROUTED>(a, unit);
  const int64_t v0 = T * split / splits, v1 = T * (split + 1) / splits;

  RoutedMap map{nullptr, nullptr, 0, 0, 0, FastDiv(a.kv.block_size)};
  if (ROUTED) {
    map.anchors = a.extra_anchors + int64_t(bh) * a.anchor_stride;
    map.blocks = a.kept_blocks + int64_t(bh) * a.max_blocks;
    map.num_anchors = a.extra_count[bh];
    map.block_tokens = a.kept_count[bh] * a.kv.block_size;
    map.window_start = a.window_start[bh];
  }
  // Token rows: page table of sequence b, and offsets in elements (positions < 2^31).
  const int32_t* page_table = a.kv.indices + a.kv.indptr[b];
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
      cp_async16(&ring[((st * 2 + 0) * NR + r) * kAttnThreads + tid], src, valid);
      cp_async16(&ring[((st * 2 + 1) * NR + r) * kAttnThreads + tid], valid ? src + vstride : src, valid);
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
    cp_async_commit();
  }
  for (int t = 0; t < num_tiles; ++t) {
    // The stage refilled here was last read by this thread in iteration t - 1.
    if (t + NS - 1 < num_tiles) issue(t + NS - 1);
    cp_async_commit();
    cp_async_wait<NS - 1>();  // this thread's copies of tile t have landed
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
  cp_async_wait<0>();
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
  constexpr float kLn2 = 0.69314718055994530942f;
  for (int idx = tid; idx < GC * D; idx += kAttnThreads) {
    const int g = idx / D, d = idx % D;
    if (hc * a.heads_per_cta + g >= a.group) continue;
    float M = -INFINITY;
    for (int r = 0; r < RP; ++r) M = fmaxf(M, red_ml[(r * GC + g) * 2]);
    float L = 0.f, A = 0.f;
    if (M != -INFINITY)
      for (int r = 0; r < RP; ++r) {
        const float w = exp2f(red_ml[(r * GC + g) * 2] - M);
        L += red_ml[(r * GC + g) * 2 + 1] * w;
        A += red_acc[(r * GC + g) * D + d] * w;
      }
    const int64_t p = int64_t(blockIdx.x) * a.heads_per_cta + g;
    a.part_acc[p * D + d] = A;
    if (d == 0) a.part_ml[p] = make_float2(M == -INFINITY ? -INFINITY : M * kLn2, L);
  }
}

template <int D, typename Tag, int GC, bool ROUTED>
AttnKernelInfo prepare_one() {
  using S = AttnShape<D, GC>;
  auto kernel = attention_kernel<D, Tag, GC, ROUTED>;
  // Always raised: 48 KB of dynamic ring plus the static shared memory of find_split is
  // past the default 48 KB limit of static + dynamic.
  SR_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, S::kSmemBytes));
  int blocks = 0;
  SR_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kAttnThreads, S::kSmemBytes));
  return {S::kSmemBytes, blocks};
}

template <int D, typename Tag, int GC, bool ROUTED>
void launch_one(const AttnArgs& a, int grid, cudaStream_t stream) {
  using S = AttnShape<D, GC>;
  attention_kernel<D, Tag, GC, ROUTED><<<grid, kAttnThreads, S::kSmemBytes, stream>>>(a);
  SR_CUDA_CHECK_LAUNCH("attention_kernel");
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
  AttnKernelInfo attention_prepare_##SUFFIX(int gc, bool routed) {                           \
    return with_heads_per_cta(gc, [&](auto c) {                                              \
      return routed ? prepare_one<D, TAG, decltype(c)::value, true>()                        \
                    : prepare_one<D, TAG, decltype(c)::value, false>();                      \
    });                                                                                      \
  }                                                                                          \
  void attention_launch_##SUFFIX(const AttnArgs& a, bool routed, int grid, cudaStream_t s) { \
    with_heads_per_cta(a.heads_per_cta, [&](auto c) {                                        \
      if (routed)                                                                            \
        launch_one<D, TAG, decltype(c)::value, true>(a, grid, s);                            \
      else                                                                                   \
        launch_one<D, TAG, decltype(c)::value, false>(a, grid, s);                           \
    });                                                                                      \
  }

}  // namespace sinkrouter::cuda
