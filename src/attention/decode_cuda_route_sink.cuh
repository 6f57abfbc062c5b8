// route_bounds' sink signal (decode_cuda_route.cu, step 2): where the sink set's tokens lie,
// the copy of their K rows into shared memory, and their scores for the G heads, lowered by
// their rounding bound (router.cpp's sink_signal takes m and Z from these).
#pragma once

#include <cstdint>

#include "core/cuda_dtype.cuh"
#include "core/cuda_mma.cuh"
#include "decode_cuda_kernels.cuh"
#include "decode_cuda_route_bounds.cuh"

namespace sinkrouter::cuda {

// Sink-set tokens whose K rows are staged in shared memory at once (a longer sink set is
// scored in passes).
constexpr int kSinkPass = 256;

// Where the sink set's token i lies: the i-th anchor before the window (anchor_i: its
// position, looked up by the caller; streaming: i itself), then the window.
__device__ __forceinline__ int64_t sink_token_pos(const RouteArgs& a, int i, int na, int64_t ws, int32_t anchor_i) {
  return i < na ? (a.streaming ? int64_t(i) : int64_t(anchor_i)) : ws + (i - na);
}

// Copies the K rows of a pass's sink tokens p0 + t (t < n) into `ks`, row t at
// ks + t * sink_key_stride(D); thread t holds token p0 + t's row offset (`row`). Each warp
// copies its 32 tokens' rows, 32 / (D / 8) rows an instruction, each lane a 16-byte piece
// (the row offsets passed by shuffles), so that an instruction reads whole rows: with each
// thread copying its own row, an instruction touched 32 rows' lines (kernel run 27b: the
// pass at Llama B=1 512K 0.7 us slower, its copies queued behind them). Not committed here.
template <int D>
__device__ __forceinline__ void copy_sink_rows(const RouteArgs& a, int64_t row, int n, uint16_t* ks) {
  constexpr int CH = D / 8, kRowsPerCopy = 32 / CH;
  const int tid = int(threadIdx.x), lane = tid % 32, first = tid - lane;
  if (first >= n) return;  // (uniform per warp)
  const uint16_t* pages = static_cast<const uint16_t*>(a.kv.pages);
#pragma unroll 4
  for (int r0 = 0; r0 < 32; r0 += kRowsPerCopy) {
    const int r = r0 + lane / CH, c = lane % CH;
    const int64_t src = __shfl_sync(0xffffffffu, row, r);
    if (first + r < n) cp_async16_to(smem_addr(ks + (first + r) * sink_key_stride(D) + c * 8), pages + src + c * 8, true);
  }
}

// Lowered scores of the sink set (token i: the i-th anchor before the window, then the
// window) for the G heads -> sc[i * G + g]. Per pass of up to kSinkPass tokens, thread t
// looks token p0 + t's K row up and its warp copies the rows into shared memory; the caller
// has issued the first pass's copies (their lookups went with the step's slots, kernel run
// 27a), committed just before the first step's summaries. Then the bounds' lanes (BoundsMap,
// BoundsLane: a quad per (token, head), a quarter of the dimensions each) score them with the
// q quarters they hold in registers. (Kernel run 17a's ncu: with 8 lanes per token reading q
// from shared memory for each head, the scores took 23 % of the pass at Llama B=1 512K,
// nearly all of it short-scoreboard stalls on those loads.)
template <int D, typename Tag>
__device__ void sink_scores(const RouteArgs& a, int h, const int32_t* anchors, int32_t first_page, int na, int64_t ws,
                            int count, const BoundsMap& map, const BoundsLane& me, const QuarterQuery<D>& qq,
                            uint16_t* ks, float* sc) {
  static_assert(kSinkPass <= kBoundsThreads, "one thread a sink token looks its row up");
  const int G = a.group, tid = int(threadIdx.x);
  const float err = dot_error_factor(D);
  for (int p0 = 0; p0 < count; p0 += kSinkPass) {
    const int n = count - p0 < kSinkPass ? count - p0 : kSinkPass;
    if (p0 > 0) {     // (rare: a sink set of more than kSinkPass tokens)
      __syncthreads();  // the previous pass's rows are read
      int64_t row = 0;
      if (tid < n) {
        const int i = p0 + tid;
        row = a.kv.k_offset_from(first_page, sink_token_pos(a, i, na, ws, i < na && !a.streaming ? anchors[i] : 0), h);
      }
      copy_sink_rows<D>(a, row, n, ks);
      cp_async_commit_group();
    }
    // The first pass's rows are the next-to-last group (the first step's summaries follow).
    if (p0 == 0) cp_async_wait_group<1>();
    else cp_async_wait_group<0>();
    __syncthreads();
#pragma unroll 1
    for (int it = 0; it * map.per_iteration < n; ++it) {  // uniform: every lane runs the shuffles
      const int t = me.block(it);
      const uint16_t* row = ks + (t < n ? t : 0) * sink_key_stride(D) + me.part * 8;
      float dot0 = 0.f, dot1 = 0.f, mag = 0.f;  // two sums: half the chain
#pragma unroll
      for (int c = 0; c < QuarterQuery<D>::kChunks; ++c) {
        float x[8];
        unpack8(*reinterpret_cast<const uint4*>(row + c * 32), x, Tag{});
#pragma unroll
        for (int i = 0; i < 8; i += 2) {
          const float p0 = qq.q[c * 8 + i] * x[i], p1 = qq.q[c * 8 + i + 1] * x[i + 1];
          dot0 += p0;
          dot1 += p1;
          mag += fabsf(p0) + fabsf(p1);
        }
      }
      float dot = dot0 + dot1;
#pragma unroll
      for (int off = 1; off < 4; off <<= 1) {  // the quad's four quarters
        dot += __shfl_xor_sync(0xffffffffu, dot, off);
        mag += __shfl_xor_sync(0xffffffffu, mag, off);
      }
      if (me.active && me.part == 0 && t < n) sc[(p0 + t) * G + me.head] = dot - err * mag;
    }
  }
}

}  // namespace sinkrouter::cuda
