// Fused fast mode's kept-block list, written by the route_bounds CTAs themselves
// (decode_cuda_route.cu), so that the (b, h)'s last CTA no longer compacts every block.
//
// With adaptive chunks each CTA x of a (b, h) bounds one contiguous chunk of routable blocks
// [first, end), and chunk x precedes chunk x + 1, so the (b, h)'s list in position order is
// the chunks' kept blocks one after another. On sequences whose certificate the CTAs sum in
// shares (RouteArgs::share_min_blocks; shorter ones are listed by the finish's passes, which
// sum the certificate anyway), each CTA
//   1. publishes its chunk's count of kept blocks (counted by its bounds loop) in
//      RouteArgs::chunk_counts[bh][x] as count + 1 (0: not yet);
//   2. (after its certificate share, which gives the others time to publish) waits until
//      every CTA before it has published, sums their counts: its place in the list;
//   3. writes its kept block ids there, in order (from keep[], its own stores).
// The last CTA's finish reads the counts for the total and returns them to 0.
//
// Why waiting cannot deadlock: a CTA waits only on CTAs of lower blockIdx.x in its row of the
// grid, and none of those waits on a later one. Those CTAs start, whatever order CUDA
// dispatches CTAs in (it does not document one; in practice it is the linear order, lower
// first): the grid is at most one wave whenever a (b, h) has more than one CTA
// (route_bounds_ctas_per_head), so every CTA becomes resident once the kernels before it have
// left their SMs, and the kernel after it cannot take them (with PDL it is launched only once
// every CTA of this grid is running or done, core/cuda_launch.cuh). What this does assume:
// that no kernel of another stream or process holds SMs for good while this one runs.
//
// Kernel run 28f's trace put the last CTA's kept list at 8.2 of the 36.5 us pass at Llama
// B=1 512K (two passes of 4,096 blocks, one CTA); here the chunks of ~256 blocks are
// compacted in parallel, one pass each (kernel run 35a: the pass 37.5 -> 33.9 us).
#pragma once

#include <cstdint>

#include <cub/block/block_scan.cuh>

#include "decode_cuda_route_tail.cuh"

namespace sinkrouter::cuda {

__device__ __forceinline__ int load_relaxed_gpu(const int32_t* p) {
  int v;
  asm volatile("ld.relaxed.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void store_relaxed_gpu(int32_t* p, int v) {
  asm volatile("st.relaxed.gpu.global.s32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

// One CTA's chunk of routable blocks, [first, end), walked in runs of kFinishRun blocks
// aligned to the (b, h)'s row (so that a run's keep[] bytes are one 16-byte load; what lies
// outside the chunk is masked). Thread t takes runs t, t + THREADS, ... counted from the run
// holding `first`.
template <int THREADS>
struct ChunkRuns {
  int first, end, run0, runs;
  __device__ ChunkRuns(int first_block, int end_block)
      : first(first_block), end(end_block), run0(first_block / kFinishRun),
        runs(end_block > first_block ? (end_block + kFinishRun - 1) / kFinishRun - first_block / kFinishRun : 0) {}
  // Passes of THREADS runs (every thread runs each pass: the scans are CTA-wide).
  __device__ int passes() const { return (runs + THREADS - 1) / THREADS; }
  // The first block of this thread's run in pass p.
  __device__ int run_start(int p) const { return (run0 + p * THREADS + int(threadIdx.x)) * kFinishRun; }
  // Bit i set: block run_start(p) + i is kept and inside the chunk.
  __device__ uint32_t kept(const uint8_t* keep_row, int p) const {
    if (p * THREADS + int(threadIdx.x) >= runs) return 0u;
    const int j0 = run_start(p);
    const int lo = first > j0 ? first - j0 : 0, hi = end - j0 < kFinishRun ? end - j0 : kFinishRun;
    const uint32_t inside = ((1u << hi) - 1u) & ~((1u << lo) - 1u);
    return inside & ~keep_zero_bits(__ldcg(reinterpret_cast<const uint4*>(keep_row + j0)));
  }
};

// Step 1: publishes the chunk's count of kept blocks, the sum of every thread's `mine` (the
// bounds loop counts its decisions: a reload of keep[] here cost 0.7 us at Llama B=1 512K,
// kernel run 35a), in slot (this CTA's entry of RouteArgs::chunk_counts). Every thread calls it.
__device__ __forceinline__ void publish_chunk_count(int mine, int32_t* slot) {
  __shared__ int s_count;
  if (threadIdx.x == 0) s_count = 0;
  __syncthreads();
  if (mine != 0) atomicAdd(&s_count, mine);
  __syncthreads();
  if (threadIdx.x == 0) store_relaxed_gpu(slot, s_count + 1);
}

// Steps 2 and 3: waits for the counts of the CTAs before this one (counts: the (b, h)'s row,
// this CTA is entry x), then writes the chunk's kept block ids to the list from there. The
// first pass's keep[] loads are issued before the wait. Every thread calls it, after a
// __syncthreads that follows the chunk's keep[] stores.
template <int THREADS>
__device__ void write_chunk_list(const uint8_t* keep_row, const ChunkRuns<THREADS>& runs, const int32_t* counts,
                                 int x, int32_t* kept_list) {
  using Scan = cub::BlockScan<int, THREADS, cub::BLOCK_SCAN_WARP_SCANS>;
  __shared__ typename Scan::TempStorage s_scan;
  __shared__ int s_place;
  const int tid = int(threadIdx.x);
  const uint32_t first_pass = runs.kept(keep_row, 0);
  if (tid < 32) {
    int sum = 0;
    for (int i = tid; i < x; i += 32) {
      int v;
      while ((v = load_relaxed_gpu(counts + i)) == 0) __nanosleep(64);
      sum += v - 1;
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (tid == 0) s_place = sum;
  }
  __syncthreads();
  int at = s_place;
  for (int p = 0; p < runs.passes(); ++p) {
    const uint32_t kept = p == 0 ? first_pass : runs.kept(keep_row, p);
    const int j0 = runs.run_start(p);
    int offset, pass_total;
    Scan(s_scan).ExclusiveSum(__popc(kept), offset, pass_total);
    int k = at + offset;
    for (uint32_t m = kept; m != 0; m &= m - 1u) kept_list[k++] = j0 + __ffs(m) - 1;
    at += pass_total;
    __syncthreads();  // s_scan is refilled by the next pass
  }
}

// The finish's side: the (b, h)'s list length (the sum of the ctas counts), with the counts
// returned to 0 for the next launch (every CTA has read what it waited for: each took its
// ticket after). Warp 0 calls it; every lane gets the sum.
__device__ __forceinline__ int take_chunk_counts(int32_t* counts, int ctas) {
  int sum = 0;
  for (int i = int(threadIdx.x); i < ctas; i += 32) {
    sum += __ldcg(counts + i) - 1;
    counts[i] = 0;
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  return sum;
}

}  // namespace sinkrouter::cuda
