// Causal prefill attention on Hopper's warpgroup MMA (wgmma, sm_90a), head_dim 64 (see
// cuda_prefill_attention.h for the arguments; docs/PERF.md "Prefill attention v3: wgmma"
// for the measurements). The same function as version 2 (cuda_prefill_flash2.cu, mma.sync);
// what differs, and why:
//   - A CTA is two warpgroups of 64 query rows (128 rows, one query head). Each product is
//     one warpgroup-wide wgmma.m64n64k16 (S = Q K^T: 4 k-steps over the dims; O += P V: 4
//     k-steps over the keys) reading K and V straight from shared memory: no ldmatrix, and
//     the tensor cores run at the rate mma.sync cannot reach on Hopper (version 2 ran at
//     ~280 TFLOP/s; transformers' SDPA at 128K at ~420).
//   - Q, K and V tiles are stored with the 128-byte swizzle wgmma reads
//     (core/cuda_wgmma.cuh): the cp.async copies write each 16-byte chunk to its swizzled
//     place. Q is A of Q K^T and K its B, both K-major; V is B of P V, MN-major
//     (imm-trans-b), so nothing is transposed in memory. P goes from the S accumulators
//     into A fragments in registers, as in version 2: wgmma's accumulator layout is
//     mma.sync's, warp by warp. (Q from shared memory, not registers: the 16 registers it
//     frees keep the pipelined loop below 128 without touching P V's operands.)
//   - Software-pipelined as flash-attention 3 within a warpgroup (see the loop): the
//     softmax of tile kt + 1 runs while P V of tile kt is on the tensor cores.
//   - The running max is kept until a tile raises it by more than 2^8, so O's rescale is
//     skipped on most tiles (kRescaleThreshold).
//   - Page lookups, the ring of stages (4 here), the heaviest-first 1-D grid and the online
//     softmax are version 2's.
// Two CTAs per SM (122 registers a thread, 81 KB of shared memory each): one CTA's work
// overlaps the other's barrier and waits.
#include <cmath>

#include "core/cuda_check.h"
#include "core/cuda_hopper.h"
#include "core/cuda_mma.cuh"
#include "core/cuda_wgmma.cuh"
#include "cuda_prefill_attention.h"
#include "cuda_prefill_gather.cuh"
#include "cuda_prefill_wgmma_steps.cuh"
#include "sinkrouter/core/error.h"

namespace sinkrouter {
namespace {

using namespace wgmma_prefill;  // kD, kKeys, kTileBytes and the per-tile steps

constexpr int kWarpgroups = 2;               // 64 query rows each
constexpr int kThreads = kWarpgroups * 128;
constexpr int kRows = kWarpgroups * 64;      // query rows per CTA
constexpr int kStages = 4;                   // K/V ring: tile kt + 1 is read while tile kt is in use
constexpr uint32_t kQBytes = kRows * kD * 2;  // Q in the swizzled layout, 64 rows a warpgroup
// + 1024: the dynamic shared window is only 16-byte aligned; the tiles start at the next
// 1024-byte boundary.
constexpr size_t kSmemBytes = size_t(kQBytes) + size_t(kStages) * 2 * kTileBytes + 1024;

// grid: (query tiles x n_head), 1-D, heaviest first; block: 256 threads (two warpgroups).
//
// Software-pipelined (the order flash-attention 3 uses within a warpgroup): iteration kt
// issues S of tile kt + 1 and P V of tile kt back to back, then runs the softmax of tile
// kt + 1 on the CUDA cores while P V is on the tensor cores; O's rescale and P's move into
// the A fragments wait until P V is done. Inside an in-flight window the only registers
// written are those of the S already retired (wait_group 1): anything else makes ptxas
// serialise the wgmma (its C7514 / C7515 notes). For the same reason every warpgroup takes
// every tile of the CTA (a tile in a warpgroup's future is fully masked: P = 0, m and O
// unchanged) and masks wherever the tile reaches the CTA's first row: a branch ptxas cannot
// prove warpgroup-uniform (anything from the warp index) serialises the wgmma too (C7518).
// That costs one masked tile a CTA at most. (A first version with a per-warpgroup skip and
// no pipelining computed wrong rows past the first tile on the H200, run 9c; not kept.)
__global__ void __launch_bounds__(kThreads, 2) wgmma_prefill_kernel(PrefillAttentionArgs a) {
#if defined(SINKROUTER_WGMMA_ENABLED)
  constexpr int NS = kStages;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t base = (cuda::smem_addr(smem_raw) + 1023u) & ~1023u;
  const uint32_t qs = base;                                   // Q: [kRows][kD] bf16, swizzled
  const uint32_t kv0 = base + kQBytes;                        // stage s: K at kv0 + 2 s kTileBytes, V one tile on
  auto k_stage = [&](int tile) { return kv0 + uint32_t(tile % NS) * 2 * kTileBytes; };

  const CtaRows<kRows> cta(a);
  const int qh = cta.qh, h = cta.h, num_tiles = cta.num_tiles, cta_pos0 = cta.pos0;
  const int64_t q0 = cta.q0;
  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t4 = lane % 4;
  const int pos0 = cta_pos0 + warp * 16;     // this warp's row r sits at pos0 + r

  // Query rows with tile 0, then tiles 1 .. NS - 2, one commit group each
  // (cuda_prefill_gather.cuh); every chunk to its 128-byte-swizzled place.
  PagedKVGather<kD, kKeys, kThreads> gather(a, h, tid);
  const auto kv_dst = [&](int tile, int r, int chunk) { return k_stage(tile) + cuda::swizzle128_offset(r, chunk); };
  copy_query_rows<kD, kRows, kThreads>(a, q0, qh, tid,
                                       [&](int row, int chunk) { return qs + cuda::swizzle128_offset(row, chunk); });
  gather.start<NS>(num_tiles, kv_dst, kTileBytes);

  uint32_t pa[16];          // P as A fragments: pa[4 kk .. 4 kk + 3] is k-step kk
  float o[32];              // O accumulator (m64n64 f32 layout)
  float s[32];              // S accumulator, then P in fp32
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, alpha[2];
#pragma unroll
  for (int i = 0; i < 32; ++i) o[i] = 0.f;
  const float scale_log2 = a.scale * cuda::kLog2e;
  auto diagonal = [&](int kt) { return kt * kKeys + kKeys - 1 > cta_pos0; };
  // The ring's barrier: the tiles waited for are visible to every thread and to wgmma; the
  // stage the refill overwrites (tile kt - 1's) was last read before this barrier.
  auto ring_step = [&](int kt) {
    cuda::fence_proxy_async_shared();
    __syncthreads();
    gather.refill<NS>(kt, num_tiles, kv_dst, kTileBytes);
  };

  cuda::cp_async_wait_group<NS - 2>();  // Q and tile 0
  cuda::fence_proxy_async_shared();
  __syncthreads();
  const uint32_t qw = qs + uint32_t(warp / 4) * 64 * kD * 2;  // this warpgroup's Q rows
  issue_scores(s, qw, k_stage(0));
  cuda::wgmma_wait_group<0>();
  cuda::wgmma_fence_operands(s);
  online_softmax(s, m, l, alpha, diagonal(0), 0, pos0, g, t4, scale_log2);
  to_p_fragments(s, pa);
  // Iteration kt: S of tile kt + 1 and P V of tile kt go out back to back; the softmax of
  // tile kt + 1 runs in place on s while P V is on the tensor cores. Live registers then
  // stay within the 128 of two CTAs an SM: were any of pa's (P V's A operand) needed for
  // something else, ptxas would wait for P V first (it did, with P of the next tile built
  // into a second array: no overlap at all). The last tile is peeled off: a wait_group
  // inside a branch makes ptxas serialise.
  for (int kt = 0; kt + 1 < num_tiles; ++kt) {
    cuda::cp_async_wait_group<NS - 3>();  // tiles up to kt + 1 have landed
    ring_step(kt);
    issue_scores(s, qw, k_stage(kt + 1));
    issue_pv(o, pa, k_stage(kt) + kTileBytes);
    cuda::wgmma_wait_group<1>();  // S of tile kt + 1 is done; P V runs on
    cuda::wgmma_fence_operands(s);
    online_softmax(s, m, l, alpha, diagonal(kt + 1), (kt + 1) * kKeys, pos0, g, t4, scale_log2);
    cuda::wgmma_wait_group<0>();
    cuda::wgmma_fence_operands(o);
    cuda::wgmma_fence_operands(pa);
    rescale_o(o, alpha);
    to_p_fragments(s, pa);
  }
  cuda::cp_async_wait_group<0>();
  ring_step(num_tiles - 1);
  finish_rows(a, o, pa, k_stage(num_tiles - 1) + kTileBytes, l, m, q0, warp, qh, lane);
#else
  __trap();  // never launched: prefill_attention_wgmma_supported() checks the build's arch
#endif
}

// Whether this build holds the kernel's sm_90a code and the current device runs it (per
// process: one device kind per engine).
bool wgmma_kernel_runs_here() {
  static const bool runs = cuda::sm90a_code_runs_here(reinterpret_cast<const void*>(wgmma_prefill_kernel));
  return runs;
}

}  // namespace

namespace detail {

bool prefill_attention_wgmma_supported(const PrefillAttentionArgs& a) {
  return a.kv.head_dim == kD && wgmma_kernel_runs_here();
}

void prefill_attention_wgmma(const PrefillAttentionArgs& a, cudaStream_t stream) {
  SR_CHECK(a.kv.head_dim == kD, "prefill attention (CUDA): the wgmma kernel takes head_dim 64, not {} (use flash2)",
           a.kv.head_dim);
  SR_CHECK(wgmma_kernel_runs_here(),
           "prefill attention (CUDA): the wgmma kernel needs an sm_90 device and a build with sm_90a (use flash2)");
  SR_CHECK(a.p0 + a.c + kKeys < (int64_t(1) << 31), "prefill attention (CUDA): {} tokens exceed 2^31", a.p0 + a.c);
  SR_CUDA_CHECK(cudaFuncSetAttribute(wgmma_prefill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSmemBytes)));
  const int64_t blocks = (a.c + kRows - 1) / kRows * a.n_head;
  SR_CHECK(blocks < (int64_t(1) << 31), "prefill attention (CUDA): chunk of {} rows is too long", a.c);
  wgmma_prefill_kernel<<<unsigned(blocks), kThreads, kSmemBytes, stream>>>(a);
  SR_CUDA_CHECK_LAUNCH("wgmma_prefill_kernel");
}

}  // namespace detail

}  // namespace sinkrouter
