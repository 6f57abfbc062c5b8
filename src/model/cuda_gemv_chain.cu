// A chain of decode GEMVs in one launch (GemvVersion::Chain, cuda_ops.h): the stages run
// one after another inside one persistent grid, separated by a grid-wide barrier instead
// of a kernel boundary.
//
// Measured (docs/PERF.md, GPU engine v6): 2-3 % faster than V1 end to end at one sequence;
// each stage still costs about what a separate kernel did (~4 us). Since V1's input prologue
// issues its loads first (run v7f), V1 is 7 % faster again and the default; the chain's stage
// trace (v7e, v7f) puts a stage's time in the grid barrier and the input prologue, 1-2 us each. Two further changes that
// took a dependent L2 round trip off each stage (RMSNorm's gain copied to shared memory ahead
// of the barrier, v6d; the epilogue's residual and RoPE operands loaded ahead, v6e) measured
// no change and were taken out again.
//
// Why: a decode step of SmolLM2 is ~180 small launches, each reading 0.7-3.5 MB of weights
// (well under a microsecond at the read bandwidth) yet costing ~5 us (docs/PERF.md, GPU
// engine v5): the end of one kernel, the release of the next and the first round trips of
// its CTAs, one after another. Inside one grid a stage's weights are asked of L2 at the
// start (every stage's rows, before the wait of programmatic dependent launch) and the
// first row pair of every warp is loaded into registers before the barrier that the
// stage's input waits for, so only the input transform and the dot products remain on the
// path from one stage to the next.
//
// The grid is one CTA of 12 warps per SM, all resident at once (the barrier needs every CTA
// running: the kernel asks for one CTA per SM, and dependents of a PDL launch start only
// after every CTA of this grid has started). Row pair p of a stage goes to global warp
// p mod (warps in the grid); the lanes of a warp take the 16-byte chunks of its two rows in
// the same order as version 1, so a stage's outputs equal version 1's but for the RMSNorm's
// sum of squares (added by 12 warps instead of 4: float32 rounding).
#include <algorithm>

#include "core/cuda_check.h"
#include "core/cuda_launch.cuh"
#include "cuda_device_util.cuh"
#include "cuda_gemv_common.cuh"
#include "cuda_ops.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter::cuda {
namespace {

constexpr int kWarps = 12;
constexpr int kThreads = 32 * kWarps;
constexpr int kMaxTokens = 8;
constexpr int kPreloadChunks = 6;  // 16-byte chunks per lane held in registers: rows of up to 1536

struct ChainParams {
  GemvStage stages[kMaxChainStages];
  int count;
  unsigned* barrier;  // zero at launch; left zero
  long long* trace;   // null, or [grid][kMaxChainStages][kChainStamps] (see gemv_chain)
};

__device__ __forceinline__ void chain_stamp(const ChainParams& p, int stage, int point) {
  if (p.trace != nullptr && threadIdx.x == 0)
    p.trace[(int64_t(blockIdx.x) * kMaxChainStages + stage) * kChainStamps + point] = clock64();
}

// Every CTA of the grid has arrived `target / gridDim.x` times. The CTA's writes before the
// call are visible to every CTA after it: bar.sync orders the CTA's threads before thread
// 0, whose release-add publishes them (cumulativity), and the acquire load that sees the
// count orders what follows; the closing bar.sync extends that to the CTA's threads. No
// separate fences: a fence.sc per CTA and barrier cost more than the release / acquire pair.
__device__ __forceinline__ void grid_barrier(unsigned* counter, unsigned target) {
  __syncthreads();
  if (threadIdx.x == 0) {
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counter) : "memory");
    unsigned seen;
    do {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(counter) : "memory");
    } while (seen < target);
  }
  __syncthreads();
}

// Two weight rows' first chunks in registers: chunk lane + 32 i of each row, i < kPreloadChunks.
struct RowPair {
  uint4 a[kPreloadChunks], b[kPreloadChunks];
};

__device__ __forceinline__ void load_pair(const GemvArgs& g, int r, int lane, RowPair& w) {
  const int chunks = g.in / 8;
  const uint4* w0 = reinterpret_cast<const uint4*>(g.w + int64_t(r) * g.in);
  const uint4* w1 = w0 + chunks;
#pragma unroll
  for (int i = 0; i < kPreloadChunks; ++i) {
    const int c = lane + 32 * i;
    if (c < chunks) {
      w.a[i] = __ldg(w0 + c);
      w.b[i] = __ldg(w1 + c);
    }
  }
}

// Rows (r, r + 1) of stage g for every token, from the preloaded chunks and the rest of
// the rows (past kPreloadChunks per lane: only for inputs wider than 1536), then stored.
template <int NT>
__device__ __forceinline__ void finish_pair(const GemvStage& st, int r, int lane, const RowPair& w, const float* xs) {
  const GemvArgs& g = st.args;
  const int in = g.in, chunks = in / 8;
  float acc0[NT], acc1[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc0[t] = acc1[t] = 0.f;
#pragma unroll
  for (int i = 0; i < kPreloadChunks; ++i) {
    const int c = lane + 32 * i;
    if (c < chunks) {
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        const float4* xv = reinterpret_cast<const float4*>(xs + t * in + c * 8);
        acc0[t] = dot8(w.a[i], xv[0], xv[1], acc0[t]);
        acc1[t] = dot8(w.b[i], xv[0], xv[1], acc1[t]);
      }
    }
  }
  const uint4* w0 = reinterpret_cast<const uint4*>(g.w + int64_t(r) * in);
  const uint4* w1 = w0 + chunks;
  for (int c = lane + 32 * kPreloadChunks; c < chunks; c += 32) {
    const uint4 wa = __ldg(w0 + c), wb = __ldg(w1 + c);
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const float4* xv = reinterpret_cast<const float4*>(xs + t * in + c * 8);
      acc0[t] = dot8(wa, xv[0], xv[1], acc0[t]);
      acc1[t] = dot8(wb, xv[0], xv[1], acc1[t]);
    }
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float y0 = warp_sum(acc0[t]), y1 = warp_sum(acc1[t]);
    if (lane == t && t < g.tokens) gemv_store(g, st.out, t, r, y0, y1);
  }
}

// grid: one CTA per SM (all resident), kThreads; dynamic shared memory NT * (widest in) floats.
template <int NT>
__global__ void __launch_bounds__(kThreads, 1) gemv_chain_kernel(ChainParams p) {
  extern __shared__ __align__(16) float xs[];  // [NT][in] of the running stage
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int gwarp = int(blockIdx.x) * kWarps + warp, nwarps = int(gridDim.x) * kWarps;
  // Every stage's rows of this warp into L2 (constant: allowed before the wait).
#pragma unroll
  for (int s = 0; s < kMaxChainStages; ++s) {
    if (s >= p.count) break;
    const GemvArgs& g = p.stages[s].args;
    for (int pair = gwarp; 2 * pair < g.out; pair += nwarps)  // a row pair, contiguous
      prefetch_l2(g.w + int64_t(2 * pair) * g.in, int64_t(2 * g.in) * 2, lane, 32);
  }
  RowPair w;
  if (2 * gwarp < p.stages[0].args.out) load_pair(p.stages[0].args, 2 * gwarp, lane, w);
  chain_stamp(p, 0, kStampBeforeWait);
  pdl_begin(p);  // stage 0's input is the kernel before's output
  chain_stamp(p, 0, kStampReleased);
#pragma unroll
  for (int s = 0; s < kMaxChainStages; ++s) {
    if (s >= p.count) break;
    const GemvStage& st = p.stages[s];
    if (s > 0) {
      if (2 * gwarp < st.args.out) load_pair(st.args, 2 * gwarp, lane, w);  // before the wait: constant
      chain_stamp(p, s, kStampBeforeWait);
      grid_barrier(p.barrier, unsigned(s) * gridDim.x);  // stage s - 1 is complete everywhere
      chain_stamp(p, s, kStampReleased);
    }
    gemv_input_to_shared<NT>(st.args, st.in, xs, kThreads);
    __syncthreads();
    chain_stamp(p, s, kStampInputReady);
    for (int pair = gwarp; 2 * pair < st.args.out; pair += nwarps) {
      if (pair != gwarp) load_pair(st.args, 2 * pair, lane, w);
      finish_pair<NT>(st, 2 * pair, lane, w, xs);
    }
    if (p.trace != nullptr) __syncthreads();  // tracing only: every warp's rows, not thread 0's
    chain_stamp(p, s, kStampRowsDone);
  }
  // The last CTA out resets the counter for the next launch: every CTA has passed every
  // barrier by the time it arrives here, so no one reads the counter any more.
  if (p.count > 1) {
    __syncthreads();
    if (threadIdx.x == 0) {
      const unsigned total = unsigned(p.count) * gridDim.x;
      if (atomicAdd(p.barrier, 1u) == total - 1) atomicExch(p.barrier, 0u);
    }
  }
}

struct ChainDevice {
  int sms = 0;
  size_t smem_optin = 0;
};

const ChainDevice& chain_device() {
  static const ChainDevice d = [] {
    ChainDevice r;
    int device = 0, optin = 0;
    SR_CUDA_CHECK(cudaGetDevice(&device));
    SR_CUDA_CHECK(cudaDeviceGetAttribute(&r.sms, cudaDevAttrMultiProcessorCount, device));
    SR_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    r.smem_optin = size_t(optin);
    return r;
  }();
  return d;
}

template <int NT>
void launch_chain(const ChainParams& p, int max_in, cudaStream_t stream) {
  const ChainDevice& d = chain_device();
  const size_t smem = size_t(NT) * size_t(max_in) * sizeof(float);
  SR_CUDA_CHECK(cudaFuncSetAttribute(gemv_chain_kernel<NT>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  int per_sm = 0;
  SR_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_chain_kernel<NT>, kThreads, smem));
  SR_CHECK(per_sm >= 1, "gemv chain: a CTA of {} threads with {} bytes of shared memory does not fit an SM", kThreads,
           smem);
  launch_pdl(gemv_chain_kernel<NT>, dim3(unsigned(d.sms)), dim3(kThreads), smem, stream, p);
}

}  // namespace

int64_t gemv_chain_trace_words() { return int64_t(chain_device().sms) * kMaxChainStages * kChainStamps; }

void gemv_chain(const GemvStage* stages, int count, unsigned* barrier, cudaStream_t stream, long long* trace) {
  SR_CHECK(count >= 1 && count <= kMaxChainStages, "gemv chain: {} stages (1 to {} per launch)", count,
           kMaxChainStages);
  SR_CHECK(count == 1 || barrier != nullptr, "gemv chain: {} stages need a barrier counter", count);
  const int tokens = stages[0].args.tokens;
  int max_in = 0;
  for (int s = 0; s < count; ++s) {
    const GemvArgs& a = stages[s].args;
    gemv_check_shape(a, stages[s].in, stages[s].out);
    SR_CHECK(a.tokens == tokens, "gemv chain: stage {} has {} tokens, stage 0 {} (one token count per chain)", s,
             a.tokens, tokens);
    max_in = std::max(max_in, a.in);
  }
  // Tokens per launch: as many as the shared memory holds (8 at most). Tokens are
  // independent, so a chain over more tokens runs as chains over slices of them.
  const size_t row_bytes = size_t(max_in) * sizeof(float);
  const int fit = int(std::min<size_t>(kMaxTokens, chain_device().smem_optin / row_bytes));
  SR_CHECK(fit >= 1, "gemv chain: an input row of {} floats does not fit in shared memory", max_in);
  const int per_launch = fit >= 8 ? 8 : fit >= 4 ? 4 : fit >= 2 ? 2 : 1;
  for (int t0 = 0; t0 < tokens; t0 += per_launch) {
    const int n = std::min(per_launch, tokens - t0);
    ChainParams p{};
    for (int s = 0; s < count; ++s) p.stages[s] = {gemv_token_slice(stages[s].args, t0, n), stages[s].in, stages[s].out};
    p.count = count;
    p.barrier = barrier;
    p.trace = t0 == 0 ? trace : nullptr;
    if (n == 1)
      launch_chain<1>(p, max_in, stream);
    else if (n == 2)
      launch_chain<2>(p, max_in, stream);
    else if (n <= 4)
      launch_chain<4>(p, max_in, stream);
    else
      launch_chain<8>(p, max_in, stream);
  }
}

}  // namespace sinkrouter::cuda
