// route_bounds' step (decode_cuda_route.cu): which lanes bound which (block, head) pairs, and
// the box bound of a (block, head) from its staged summary.
//
// A step bounds BoundsMap::blocks routable blocks whose min/max summaries (2D elements a
// block, min row then max row) are staged in shared memory, in blocks / per_iteration rounds.
// Four lanes (a quad) bound one (block, head), each a quarter of the dimensions, whose q and
// __byte_perm selectors (derived from q once) it holds in registers for the whole kernel: a lane reads only its
// summary pieces from shared memory (kernel run 12c: with one lane per (block, head) reading
// q, the selectors and the summary for all D dimensions, five 16-byte shared loads per 8
// dimensions held the step at ~4.2 us for 64 blocks). The quad's sums meet in two shuffles.
#pragma once

#include <cstdint>

#include "core/cuda_dtype.cuh"
#include "decode_cuda_kernels.cuh"

namespace sinkrouter::cuda {

constexpr int kBoundsThreads = 256;
constexpr int kBoundsWarps = kBoundsThreads / 32;
constexpr int kQuadsPerWarp = 8;

// The lanes of a step. Up to 8 heads, a warp's 8 quads cover per_warp = 8 / G (rounded down
// to a power of two) blocks of all G heads; beyond 8, warps_per_block = ceil(G / 8) (rounded
// up to a power of two) warps cover the heads of one block, 8 each. A step is 64 blocks,
// fewer where G > 8 so that its per-(block, head) results fit in 512 entries.
struct BoundsMap {
  int per_warp;         // blocks a warp bounds per iteration (G <= 8), else 0
  int warps_per_block;  // G > 8: warps sharing a block's heads, else 1
  int per_iteration;    // blocks the CTA bounds per iteration
  int blocks;           // per step (a power of two dividing 128; small steps halve it)
  static constexpr int kMaxResults = 512;  // blocks * G
  __host__ __device__ static int pow2_floor(int x) {
    int p = 1;
    while (p * 2 <= x) p *= 2;
    return p;
  }
  __host__ __device__ explicit BoundsMap(int G) {
    if (G <= kQuadsPerWarp) {
      per_warp = pow2_floor(kQuadsPerWarp / G);
      warps_per_block = 1;
      per_iteration = kBoundsWarps * per_warp;
      blocks = 64;
    } else {
      per_warp = 0;
      warps_per_block = 1;
      while (warps_per_block * kQuadsPerWarp < G) warps_per_block *= 2;
      per_iteration = kBoundsWarps / warps_per_block;
      blocks = pow2_floor(kMaxResults / G);
    }
  }
};

// A lane's place: its quad's head (active quads only) and the block it bounds in iteration
// it, as an index into the step's blocks.
struct BoundsLane {
  int head, part, first_block, stride;
  bool active;
  __device__ BoundsLane(const BoundsMap& m, int G, int warp, int lane) {
    const int quad = lane / 4;
    part = lane % 4;
    stride = m.per_iteration;
    if (m.per_warp > 0) {
      active = quad < m.per_warp * G;
      head = active ? quad % G : 0;
      first_block = warp * m.per_warp + (active ? quad / G : 0);
    } else {
      head = (warp % m.warps_per_block) * kQuadsPerWarp + quad;
      active = head < G;
      head = active ? head : 0;
      first_block = warp / m.warps_per_block;
    }
  }
  __device__ int block(int it) const { return it * stride + first_block; }
};

// Staged summaries: [blocks][staged_summary_stride] elements, a block's min row then its max
// row, padded to 64 bytes past a multiple of 128 so that the 2 x 4 pieces two quads of a warp
// read at once (two blocks, a quad's 4 adjacent 16-byte pieces each) fall in distinct banks.
__host__ __device__ constexpr int staged_summary_stride(int D) { return 2 * D + 32; }
// The sink set's K rows in shared memory (elements), padded like the staged summaries: where
// one 8-lane phase of a 16-byte load reads two tokens' 64-byte pieces (G = 1 or 3), they fall
// in distinct banks.
__host__ __device__ constexpr int sink_key_stride(int D) { return D + 32; }
// q rows in shared memory (floats), padded by 16 bytes so that the sink scores' and the
// quads' reads of different heads' rows fall in different banks.
__host__ __device__ constexpr int q_stride(int D) { return D + 4; }

// Per head and pair of dimensions (2i, 2i + 1), the __byte_perm selector that picks from a
// word of the min row (bytes 0-3) and the word of the max row (bytes 4-7) each dimension's
// end of the box that maximises q_d x_d: the max row where q_d >= 0, else the min row (with
// the rows swapped, the end that minimises it). Rounding is monotone, so q_d times the
// chosen end is exactly max(q_d hi_d, q_d lo_d) as router.cpp computes it, for one
// __byte_perm a pair instead of a second product and a max per dimension.
__device__ __forceinline__ uint32_t box_end_selector(float q0, float q1) {
  return (q0 >= 0.f ? 0x54u : 0x10u) | (q1 >= 0.f ? 0x7600u : 0x3200u);
}

// A lane's quarter of a head: dimensions c * 32 + part * 8 + [0, 8) for c < D / 32 (the quad's
// 4 lanes read 64 adjacent bytes of a row at once), q pre-scaled, and their selectors.
template <int D>
struct QuarterQuery {
  static constexpr int kChunks = D / 32;
  float q[kChunks * 8];
  uint32_t sel[kChunks * 4];
  __device__ void load(const float* qs, int head, int part) {
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int d = c * 32 + part * 8;
#pragma unroll
      for (int i = 0; i < 8; ++i) q[c * 8 + i] = qs[head * q_stride(D) + d + i];
#pragma unroll
      for (int i = 0; i < 4; ++i) sel[c * 4 + i] = box_end_selector(q[c * 8 + 2 * i], q[c * 8 + 2 * i + 1]);
    }
  }
};

// The quad's sums for one (block, head): u = sum of max(q hi, q lo) (router.cpp's box_max_dot,
// in another order: the rounding allowance covers any), end_max = the largest |x| of the
// block's two rows, from which the allowance is dot_error_factor(D) * (|q|_1 * end_max), as
// cpu::box_max_dot defines it (absolute values and maxima on packed pairs, where a sum of
// absolute products took two more adds a pair: kernel run 28i; of both ends, not the chosen
// one, since the tensor-core step, decode_cuda_route_mma.cuh, takes it once a block); with EST, also n = sum of
// min(q hi, q lo) and l2 = sum of (max - min)^2, from which the box estimate follows:
// q_d (hi_d + lo_d) / 2 = (max + min) / 2 and |q_d| (hi_d - lo_d) / 2 = (max - min) / 2.
struct BoxSums {
  float u, end_max, n, l2;
};
// The larger of the two 16-bit floats (bf16 or f16) packed in a word, as one float.
__device__ __forceinline__ float packed_end_max(uint32_t m, Bf16Tag) {
  const __nv_bfloat162 v = *reinterpret_cast<const __nv_bfloat162*>(&m);
  return fmaxf(__low2float(v), __high2float(v));
}
__device__ __forceinline__ float packed_end_max(uint32_t m, F16Tag) {
  const __half2 v = *reinterpret_cast<const __half2*>(&m);
  return fmaxf(__low2float(v), __high2float(v));
}
__device__ __forceinline__ uint32_t packed_max(uint32_t a, uint32_t b, Bf16Tag) {
  const __nv_bfloat162 r = __hmax2(*reinterpret_cast<const __nv_bfloat162*>(&a), *reinterpret_cast<const __nv_bfloat162*>(&b));
  return *reinterpret_cast<const uint32_t*>(&r);
}
__device__ __forceinline__ uint32_t packed_max(uint32_t a, uint32_t b, F16Tag) {
  const __half2 r = __hmax2(*reinterpret_cast<const __half2*>(&a), *reinterpret_cast<const __half2*>(&b));
  return *reinterpret_cast<const uint32_t*>(&r);
}
template <int D, typename Tag, bool EST>
__device__ __forceinline__ BoxSums box_sums(const QuarterQuery<D>& qq, const uint16_t* s, int part, bool gauss) {
  float u0 = 0.f, u1 = 0.f, n = 0.f, l2 = 0.f;  // two sums: half the chain
  uint32_t ends = 0u;                         // packed |end| maxima
#pragma unroll
  for (int c = 0; c < QuarterQuery<D>::kChunks; ++c) {
    const uint4 lo = *reinterpret_cast<const uint4*>(s + c * 32 + part * 8);
    const uint4 hi = *reinterpret_cast<const uint4*>(s + D + c * 32 + part * 8);
    const uint32_t lw[4] = {lo.x, lo.y, lo.z, lo.w}, hw[4] = {hi.x, hi.y, hi.z, hi.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float q0 = qq.q[c * 8 + 2 * i], q1 = qq.q[c * 8 + 2 * i + 1];
      const uint32_t chosen = __byte_perm(lw[i], hw[i], qq.sel[c * 4 + i]);
      ends = packed_max(ends, packed_max(lw[i] & 0x7fff7fffu, hw[i] & 0x7fff7fffu, Tag{}), Tag{});
      float x0, x1;
      unpack2(chosen, x0, x1, Tag{});
      const float p0 = q0 * x0, p1 = q1 * x1;
      u0 += p0;
      u1 += p1;
      if constexpr (EST) {
        float y0, y1;
        unpack2(__byte_perm(hw[i], lw[i], qq.sel[c * 4 + i]), y0, y1, Tag{});
        const float r0 = q0 * y0, r1 = q1 * y1;
        n += r0 + r1;
        if (gauss) {  // uniform
          l2 = fmaf(p0 - r0, p0 - r0, l2);
          l2 = fmaf(p1 - r1, p1 - r1, l2);
        }
      }
    }
  }
  BoxSums r{u0 + u1, packed_end_max(ends, Tag{}), n, l2};
  // The quad's four quarters (lanes 4k .. 4k + 3).
#pragma unroll
  for (int off = 1; off < 4; off <<= 1) {
    r.u += __shfl_xor_sync(0xffffffffu, r.u, off);
    r.end_max = fmaxf(r.end_max, __shfl_xor_sync(0xffffffffu, r.end_max, off));
    if constexpr (EST) {
      r.n += __shfl_xor_sync(0xffffffffu, r.n, off);
      r.l2 += __shfl_xor_sync(0xffffffffu, r.l2, off);
    }
  }
  return r;
}

}  // namespace sinkrouter::cuda
