// route_bounds' step on the tensor cores (decode_cuda_route.cu, RouteArgs::tc_bounds): the box
// bounds u_jg = sum_d max(q_gd hi_jd, q_gd lo_jd) of a step's blocks j for all G <= 8 heads g
// as products of the staged summaries with q, where the quads' step (decode_cuda_route_bounds.cuh)
// takes ~600 dependent instructions a warp (kernel run 34a: the loop is bound by those chains, not
// by its copies).
//
// The product. A staged block is a row [lo_0 .. lo_{D-1} | hi_0 .. hi_{D-1}] (bf16), and
//   u_jg = sum_d lo_jd min(q_gd, 0) + sum_d hi_jd max(q_gd, 0),
// so with B = [min(q, 0); max(q, 0)] ([2D][8], a column a head, zero past G) u = A B over
// K = 2D. q is float: B takes it as three bf16 parts whose sum is q exactly (split3x2: each
// residual is exact in float; q_d under 2^-110 aside, whose lost part is far below any
// allowance), so every product of A and a part is exact in the tensor core's float sum.
//
// The warps. Warp w takes m-tile w / 2 (16 blocks) and half w % 2 of K (the min rows, or the max
// rows): D / 16 k-steps of three mma.sync.m16n8k16 (one a part of q), whose B fragments it holds
// in registers for the kernel (48 at head dim 128, as the quads' q quarters). A step of 64 blocks
// is then 4 tiles x 2 halves = 8 warps.
//
// The rounding. Each mma starts from zero C and its result is added to the lane's sums in float:
// one mma adds 16 exact products, with an error under 34 u of their magnitudes if it keeps at
// least 24 bits of the largest when it aligns them (kernel run 34j measured at most 3.03 u on the
// H200, bench/gpu/tc_accumulation_probe.py), then 3 D / 16 + 1 float adds. At head dim 128 that is
// <= ~58 u x sum |products| <= ~59 u |q|_1 end_max, inside the (D + 4) u = 132 u of the routers'
// allowance (cpu::box_max_dot, box_end_max); at 64, ~47 u against 68 u. end_max is the largest |x| of the block's
// two rows (head-independent, so one reduction a block, from the A fragments).
//
// Where the results go: each warp writes its tile's partial sums (8 heads) and its half's
// end_max into the rows it read (16 rows x 9 floats at the start of its half), so that no shared
// memory is added; the staged rows are free until the copy of two steps later, issued after the
// next step's first barrier. tc_bounds_result() adds the two halves in a fixed order.
#pragma once

#include <cstdint>

#include "core/cuda_dtype.cuh"
#include "core/cuda_mma.cuh"
#include "decode_cuda_mma_tiles.cuh"
#include "decode_cuda_route_bounds.cuh"

namespace sinkrouter::cuda {

// Staged summary rows for the tensor-core step, in elements: 2D + 8 (16 bytes past a multiple of
// 128), so that ldmatrix's eight rows of a matrix fall in eight distinct 16-byte bank groups (the
// quads' 2D + 32 would put rows r and r + 2 in the same banks). No larger than the quads' stride,
// for which BoundsSmem sizes the stages.
__host__ __device__ constexpr int tc_staged_stride(int D) { return 2 * D + 8; }
static_assert(tc_staged_stride(128) <= staged_summary_stride(128) && tc_staged_stride(64) <= staged_summary_stride(64),
              "the tensor-core stages fit the quads' sizing");

// A lane's B fragments of its warp's half of K: for k-step ks and part p (hi, mid, lo of the
// split), b[ks][p][0] holds k = 16 ks + 2t, +1 and b[ks][p][1] holds k = 16 ks + 2t + 8, +9 of head
// column lane / 4 (t = lane % 4); half 0 takes min(q, 0) of dimension k, half 1 max(q, 0).
template <int D>
struct TcBoundsQuery {
  static constexpr int kSteps = D / 16;  // k-steps of one half
  uint32_t b[kSteps][3][2];
  // qs: q in shared memory, pre-scaled, rows of q_stride(D) floats; G heads.
  __device__ void load(const float* qs, int G, int half, int lane) {
    const int head = lane / 4, t = lane % 4;
    const bool live = head < G;
    const float* row = qs + (live ? head : 0) * q_stride(D);
#pragma unroll
    for (int ks = 0; ks < kSteps; ++ks)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int d = 16 * ks + 2 * t + 8 * j;
        float x0 = live ? row[d] : 0.f, x1 = live ? row[d + 1] : 0.f;
        x0 = half == 0 ? fminf(x0, 0.f) : fmaxf(x0, 0.f);
        x1 = half == 0 ? fminf(x1, 0.f) : fmaxf(x1, 0.f);
        split3x2<Bf16Tag>(x0, x1, b[ks][0][j], b[ks][1][j], b[ks][2][j]);
      }
  }
};

// One step's products: warp `warp` of the CTA bounds m-tile warp / 2 of the RP staged blocks
// (if it holds any of them, and any is below `valid`, the step's blocks before nbr) over half
// warp % 2 of K, and writes its partials into the rows it read (see the top). stage: the step's
// staged rows, tc_staged_stride(D) elements apart.
template <int D>
__device__ __forceinline__ void tc_bounds_step(const TcBoundsQuery<D>& bq, uint16_t* stage, int RP, int valid,
                                               int warp, int lane) {
  constexpr int S = tc_staged_stride(D);
  const int tile = warp / 2, half = warp % 2;
  if (tile * 16 >= RP || tile * 16 >= valid) return;  // (uniform per warp)
  uint16_t* rows = stage + tile * 16 * S + half * D;
  // ldmatrix.x4: lane l gives row (l % 8) + 8 ((l / 8) % 2), columns 8 (l / 16) of the 16 x 16 tile,
  // so that the four matrices are a0 .. a3 of the A fragment (cuda_mma.cuh).
  const unsigned a_addr = smem_addr(rows + ((lane % 8) + 8 * ((lane / 8) % 2)) * S + 8 * (lane / 16));
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  uint32_t ends_lo = 0u, ends_hi = 0u;  // packed |x| maxima of rows g and g + 8
#pragma unroll
  for (int ks = 0; ks < TcBoundsQuery<D>::kSteps; ++ks) {
    uint32_t a[4];
    ldmatrix_x4(a, a_addr + unsigned(ks * 16 * 2));
#pragma unroll
    for (int p = 0; p < 3; ++p) {
      float c[4] = {0.f, 0.f, 0.f, 0.f};  // from zero: see the top
      mma16816(c, a, bq.b[ks][p][0], bq.b[ks][p][1], Bf16Tag{});
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[i] += c[i];
    }
    ends_lo = packed_max(ends_lo, packed_max(a[0] & 0x7fff7fffu, a[2] & 0x7fff7fffu, Bf16Tag{}), Bf16Tag{});
    ends_hi = packed_max(ends_hi, packed_max(a[1] & 0x7fff7fffu, a[3] & 0x7fff7fffu, Bf16Tag{}), Bf16Tag{});
  }
  float e_lo = packed_end_max(ends_lo, Bf16Tag{}), e_hi = packed_end_max(ends_hi, Bf16Tag{});
#pragma unroll
  for (int off = 1; off < 4; off <<= 1) {  // the four lanes of a row
    e_lo = fmaxf(e_lo, __shfl_xor_sync(0xffffffffu, e_lo, off));
    e_hi = fmaxf(e_hi, __shfl_xor_sync(0xffffffffu, e_hi, off));
  }
  __syncwarp();  // every lane's ldmatrix has read the rows before any lane overwrites them
  const int g = lane / 4, t = lane % 4;
  float* r0 = reinterpret_cast<float*>(rows + g * S);
  float* r8 = reinterpret_cast<float*>(rows + (g + 8) * S);
  r0[2 * t] = acc[0];
  r0[2 * t + 1] = acc[1];
  r8[2 * t] = acc[2];
  r8[2 * t + 1] = acc[3];
  if (t == 0) {
    r0[kTcMaxGroup] = e_lo;
    r8[kTcMaxGroup] = e_hi;
  }
}

// Block sb's bound for head g from the two halves' partials (after a barrier): u (min half, then
// max half) and end_max, the inputs of the allowance.
struct TcBound {
  float u, end_max;
};
template <int D>
__device__ __forceinline__ TcBound tc_bounds_result(const uint16_t* stage, int sb, int g) {
  constexpr int S = tc_staged_stride(D);
  const float* lo = reinterpret_cast<const float*>(stage + sb * S);
  const float* hi = reinterpret_cast<const float*>(stage + sb * S + D);
  return TcBound{lo[g] + hi[g], fmaxf(lo[kTcMaxGroup], hi[kTcMaxGroup])};
}

}  // namespace sinkrouter::cuda
