// The routing pass of the CUDA decoder (DESIGN.md sections 2 and 5), first kernel:
// route_bounds, mirroring router.cpp's plan_decode up to the per-block bound terms.
//
// grid (RouteArgs::bounds_ctas_per_head, B*H), 256 threads, about one wave: CTA x of a
// (b, h) takes its chunks of kBlocksPerCta routable blocks x, x + gridDim.x, ... Every CTA
//   1. copies its first step's min/max summaries into shared memory (cp.async, before the
//      sink signal, whose work hides their latency);
//   2. computes the sink signal of its (b, h): the scores of the anchors before the window
//      and of the window, each lowered by its rounding bound, for the G heads (the bounds'
//      quads, a (token, head) each); m_A = max, Z_A = sum exp(s - m_A) in double
//      (router.cpp's sink_signal). The sink set is at most anchors + window + R - 1 tokens,
//      read from L2: recomputing it in every CTA of the (b, h) costs less than a launch of
//      its own;
//   3. bounds its blocks, a step of BoundsMap(G).blocks at a time: four lanes per (block,
//      head) (decode_cuda_route_bounds.cuh), or the step as tensor-core products (TC:
//      decode_cuda_route_mma.cuh): u_jg from the summary plus its rounding margin, then
//      b_jg = R exp(u_jg - m_g) / Z_g in double, stored rounded up to float;
//      cost_j = max_g b_jg, ubound_j = max_g u_jg; fast mode decides here (keep if any
//      b_jg > tau, or with an estimate (RouteArgs) any e_jg > tau). The next step's
//      summaries are copied while this one is bounded;
//   4. fast mode (RouteArgs::fused_finish): on long sequences each CTA sums the certificate's
//      terms of its own skipped blocks (RouteArgs::cert_partials) and, with adaptive chunks,
//      writes its chunk's part of the kept list (decode_cuda_route_chunk_list.cuh); the last
//      CTA of the (b, h) finishes the pass (decode_cuda_route_tail.cuh), so that fast mode is
//      one launch.
// Otherwise the second kernel (decode_cuda_route_select.cu) chooses, compacts and certifies.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "core/cuda_check.h"
#include "core/cuda_dtype.cuh"
#include "core/cuda_launch.cuh"
#include "decode_cuda_kernels.cuh"
#include "decode_cuda_route_bounds.cuh"
#include "decode_cuda_route_chunk_list.cuh"
#include "decode_cuda_route_mma.cuh"
#include "decode_cuda_route_sink.cuh"
#include "decode_cuda_route_tail.cuh"

namespace sinkrouter::cuda {
namespace {

// Routable blocks per chunk (a multiple of every step, BoundsMap::blocks). Chunks of one
// step of the then row groups (16 / 32 blocks) were measured in kernel run 8j: the small
// calls' pass -5 to -12 us (one CTA per (b, h) no longer takes 4-8 steps in series), but +10 to +11 us where that makes 512+ CTAs each recompute the sink
// signal (Llama B=1 64K, B=8 8K; docs/PERF.md "The routing pass's steps, traced"), so 128
// is the chunk wherever the grid is full. The adaptive chunks (RouteArgs::adaptive_chunks,
// the default since kernel run 9a) size a (b, h)'s chunk from its length: CTAs wanted =
// clamp(max(bounds_min_ctas, ceil(steps / kMaxStepsPerCta)), 1, grid), chunk = steps per CTA
// * RP (run 9a: the small calls' routed time -2 to -24 us; Llama B=8 512K 3-4 % slower, not
// explained: runs 9g-9i gave the adaptive kernel the fixed chunks there and it stayed slower).
constexpr int kBlocksPerCta = 128;
constexpr int kMaxStepsPerCta = 4;
constexpr int kMaxGroup = 64;

// Why the code is written compactly (rolled loops, the double-precision terms in one
// out-of-line function): a routing CTA runs once per SM per step, so every instruction it
// executes is fetched cold. Run 4's ncu showed the unrolled version (11,000 instructions)
// spending its time in instruction-fetch stalls, not on its loads.

// R exp(u - m) / Z in double, rounded as router.cpp does (the caller rounds up to float).
__device__ __noinline__ double block_term(float u, double m, double z, int R) {
  return double(R) * exp(double(u) - m) / z;
}
__device__ __noinline__ double exp_double(double x) { return exp(x); }

// The slot of block j, -1 past nbr. slots: the sequence's row of the summary table
// (PagedKV::summary_slot's), looked up once: through the kernel's argument it would be two
// dependent loads a step, the row's start reloaded after every store.
__device__ __forceinline__ int32_t summary_slot(const int32_t* slots, int64_t j, int64_t nbr) {
  return j < nbr ? slots[j] : -1;
}
// Copies one step's summaries (head h; min row then max row, 2D elements a block) into
// `stage` [RP][S] (S: staged_summary_stride, or tc_staged_stride for the tensor-core step):
// thread tid copies 16-byte pieces of step block tid / (256 / RP), whose slot it holds (zeros
// for slot -1). Not committed here.
template <int D, int S>
__device__ __forceinline__ void copy_step_summaries(const RouteArgs& a, int h, int32_t slot, int RP, uint16_t* stage) {
  constexpr int kPieces = 2 * D / 8;
  const int tid = int(threadIdx.x), per_block = kBoundsThreads / RP;
  const uint16_t* src = static_cast<const uint16_t*>(a.kv.summaries) + (slot >= 0 ? a.kv.slot_summary_offset(slot, h) : 0);
  uint16_t* dst = stage + (tid / per_block) * S;
#pragma unroll 1
  for (int c = tid % per_block; c < kPieces; c += per_block) cp_async16_to(smem_addr(dst + c * 8), src + c * 8, slot >= 0);
}

// Dynamic shared memory, in floats (each part a multiple of 4, so that what follows is
// 16-byte aligned): q [G][q_stride] (pre-scaled), the sink scores [sink_capacity][G], the step's per-(block, head) results
// [3][BoundsMap::kMaxResults] (u, term, keep), the summaries of the even steps
// [blocks][staged_summary_stride], then one region that first holds the sink set's K rows
// [min(sink_capacity, kSinkPass)][sink_key_stride(D)] and then the odd steps' summaries.
struct BoundsSmem {
  int q, scores, results, stage0, stage1, bytes;
  static __host__ __device__ int up4(int x) { return (x + 3) / 4 * 4; }
  __host__ __device__ BoundsSmem(int G, int D, int sink_capacity) {
    const int stage_floats = BoundsMap(G).blocks * staged_summary_stride(D) / 2;
    const int key_tokens = sink_capacity < kSinkPass ? sink_capacity : kSinkPass;
    const int key_floats = up4(key_tokens * sink_key_stride(D) / 2);
    q = 0;
    scores = up4(G * q_stride(D));
    results = scores + up4(sink_capacity * G);
    stage0 = results + 3 * BoundsMap::kMaxResults;
    stage1 = stage0 + stage_floats;
    bytes = (stage1 + (stage_floats > key_floats ? stage_floats : key_floats)) * 4;
  }
};

// Two CTAs an SM (what the shared memory and registers allowed anyway): left to itself, ptxas
// gave some instantiations 80 registers and a few bytes of spill. TC: the bounds step on the
// tensor cores (decode_cuda_route_mma.cuh; bf16, G <= 8, no estimate: RouteArgs::tc_bounds).
template <int D, typename Tag, bool ADAPTIVE, bool TC>
__global__ void __launch_bounds__(kBoundsThreads, 2) route_bounds_kernel(const RouteArgs a) {
  static_assert(!TC || std::is_same_v<Tag, Bf16Tag>, "the tensor-core step splits q into bf16 parts");
  constexpr int kStride = TC ? tc_staged_stride(D) : staged_summary_stride(D);  // of the staged rows
  extern __shared__ __align__(16) float dsm[];
  __shared__ double s_m[kMaxGroup], s_z[kMaxGroup];
  __shared__ float s_l1[kMaxGroup];  // |q_g|_1 (pre-scaled), for the bounds' rounding allowance
  __shared__ int s_last;
  // q, the cache and the lengths are the kernels before's output. Fused fast mode may let the
  // attention kernel launch only as each CTA exits (RouteArgs::trigger_at_exit): launched at
  // the start, its clusters were placed wherever a GPC first freed 8 SMs while this grid still
  // held them all, and read ~46 % slower a token (kernel runs 38a-38e, docs/PERF.md "Where the
  // routed attention is placed").
  pdl_begin(a, !a.trigger_at_exit);
  trace_route(a, kRouteStartNs);
  trace_route(a, kRouteEntry);
  const int bh = int(blockIdx.y), H = a.kv.num_kv_heads, b = bh / H, h = bh % H;
  const int G = a.group, R = a.kv.block_size, tid = int(threadIdx.x);
  const BoundsMap map(G);
  int RP = map.blocks;  // blocks a step (fewer with small steps, below)
  const BoundsSmem lay(G, D, a.sink_capacity);
  float* qs = dsm + lay.q;
  float* sc = dsm + lay.scores;
  uint16_t* const even_stage = reinterpret_cast<uint16_t*>(dsm + lay.stage0);
  uint16_t* const odd_stage = reinterpret_cast<uint16_t*>(dsm + lay.stage1);
  uint16_t* ks = odd_stage;  // the sink set's K rows, before the first odd step

  // Round trip 1: every load that depends on (b, h) alone, issued before any is used: the
  // length, the summary and page lists' starts, the anchors (thread t loads anchor t) and q.
  // (Until kernel run 27a they went one after another, with the sink rows' lookups after
  // them: ~6 round trips before q was in shared memory, ~3.3 us at 4K, run 26e's trace.)
  const int64_t n = a.seq_lens[b];
  const int32_t* slots = a.kv.summary_indices + a.kv.summary_indptr[b];
  const int32_t first_page = a.kv.indptr[b];
  const bool listed_anchors = !a.streaming && !a.quest;
  const int32_t* anchors = a.kv.anchor_pos + int64_t(bh) * a.kv.max_anchors;
  const int anchor_total = listed_anchors ? a.kv.anchor_count[bh] : 0;
  const int32_t my_anchor = listed_anchors && tid < a.kv.max_anchors ? anchors[tid] : 0;
  // q, pre-scaled: a pair of elements a thread and round (D is even, so a pair shares its
  // head's row). One element a thread and round took two round trips at the Llama shape.
  const int64_t q_first = (int64_t(b) * a.num_q_heads + int64_t(h) * G) * D;
#pragma unroll 1
  for (int i = 2 * tid; i < G * D; i += 2 * kBoundsThreads) {
    const float2 v = load_q_pair(a.q, a.q_dtype, q_first + i);
    float* row = qs + i / D * q_stride(D) + i % D;
    row[0] = v.x * a.scale;
    row[1] = v.y * a.scale;
  }
  const int64_t ws = window_start_of(n, a.window, R);
  const int64_t nbr = ws / R;
  // Chunks of `chunk` blocks (PER steps): CTA x takes chunks x, x + gridDim.x, ... (a grid
  // of about one wave, so that the sink signal below is paid once per CTA and SM).
  int64_t chunk = kBlocksPerCta;
  if constexpr (ADAPTIVE) {
    // Small steps (RouteArgs::small_steps): where the (b, h) has fewer steps than CTAs wanted,
    // halve the step (down to one iteration of the lanes) while the steps still fit them, so
    // that more CTAs bound it, each in fewer iterations (a 4K sequence: four CTAs of 16
    // blocks, not one of 64).
    const int64_t most = a.bounds_min_ctas < int(gridDim.x) ? a.bounds_min_ctas : int(gridDim.x);
    if (a.small_steps)
      while (RP > map.per_iteration && (nbr + RP / 2 - 1) / (RP / 2) <= most) RP /= 2;
    const int64_t nsteps = (nbr + RP - 1) / RP;
    int64_t want = (nsteps + kMaxStepsPerCta - 1) / kMaxStepsPerCta;
    want = want > a.bounds_min_ctas ? want : a.bounds_min_ctas;
    // (Clamped to the grid, not "fixed chunks beyond it": the grid can be smaller than the
    // CTAs wanted because the sequence is short, kernel run 9i.)
    want = want < int64_t(gridDim.x) ? want : int64_t(gridDim.x);
    want = want > 1 ? want : 1;
    const int64_t per_cta = (nsteps + want - 1) / want;
    chunk = RP * (per_cta > 1 ? per_cta : 1);
  }
  const int64_t PER = chunk / RP;
  const int64_t chunks = (nbr + chunk - 1) / chunk;
  if (blockIdx.x > 0 && blockIdx.x >= chunks) {  // CTA 0 always writes the sink signal
    trace_route_end(a, 0);
    return;
  }

  // Steps of this CTA: step t bounds blocks chunk x + (t / PER) * gridDim.x, k = t % PER,
  // RP of them. Thread tid copies step block tid / (256 / RP), whose slot it loads two
  // steps ahead (its round trip, then the copy's, each hidden by a step).
  const int copy_block = tid / (kBoundsThreads / RP);
  const int64_t my_chunks = chunks > blockIdx.x ? (chunks - blockIdx.x + gridDim.x - 1) / gridDim.x : 0;
  const int64_t steps = my_chunks * PER;
  // Walked with a cursor, not t / PER and t % PER: PER is a runtime value in the adaptive
  // instantiation, and two 64-bit divisions a step are not needed. (c0, k): the current
  // chunk's first block and the step in it.
  // (c0n, kn): the cursor one step further, for the slot loaded two steps ahead.
  const int64_t chunk_stride = int64_t(gridDim.x) * chunk;
  int64_t c0 = int64_t(blockIdx.x) * chunk, k = 0;
  int64_t c0n = c0, kn = 1;
  if (kn == PER) {
    kn = 0;
    c0n += chunk_stride;
  }

  // 1. Sink signal. The sink set: the anchors before the window (ascending, so counted in
  // one barrier where thread t holds anchor t), then the window. The barrier also publishes q.
  int na;
  if (listed_anchors && a.kv.max_anchors <= kBoundsThreads) {
    na = __syncthreads_count(tid < anchor_total && my_anchor < ws);
  } else {
    na = anchors_before(a, bh, ws);
    __syncthreads();
  }
  const int count = na + int(n - ws);
  // Round trip 2: the first step's slots and the sink tokens' pages, both loaded before
  // either is used; then the two copies (the summaries' latency overlaps the sink signal).
  const int32_t slot0 = summary_slot(slots, steps > 0 ? c0 + copy_block : nbr, nbr);
  const bool sinker = tid < count && tid < kSinkPass;  // thread t looks sink token t's K row up
  const int64_t sink_row = sinker ? a.kv.k_offset_from(first_page, sink_token_pos(a, tid, na, ws, my_anchor), h) : 0;
  // (The sink rows' group first: the scores wait for it alone, not for the summaries queued
  // behind it, run 27a.)
  copy_sink_rows<D>(a, sink_row, count < kSinkPass ? count : kSinkPass, ks);
  cp_async_commit_group();
  copy_step_summaries<D, kStride>(a, h, slot0, RP, even_stage);
  cp_async_commit_group();
  int32_t slot_next = summary_slot(slots, steps > 1 ? c0n + kn * RP + copy_block : nbr, nbr);  // step 1's
  trace_route(a, kRouteQ);
  const int warp = tid / 32, wl = tid % 32;
  const BoundsLane me(map, G, warp, wl);
  QuarterQuery<D> qq;  // this lane's quarter of its head's q: the sink scores' and the bounds'
  qq.load(qs, me.head, me.part);
  // |q_g|_1 in index order, one thread a head, as cpu::l1_norm_in_order sums it (the same
  // value, so the two routers' allowances are equal); its ~D dependent adds overlap the
  // copies that sink_scores waits for, and its barrier publishes the sums.
  for (int g = tid; g < G; g += kBoundsThreads) {
    float l1 = 0.f;
#pragma unroll 8
    for (int d = 0; d < D; ++d) l1 += fabsf(qs[g * q_stride(D) + d]);
    s_l1[g] = l1;
  }
  sink_scores<D, Tag>(a, h, anchors, first_page, na, ws, count, map, me, qq, ks, sc);
  __syncthreads();
  trace_route(a, kRouteSinkScores);
  for (int g = warp; g < G; g += kBoundsThreads / 32) {
    float mx = -INFINITY;
    for (int i = wl; i < count; i += 32) mx = fmaxf(mx, sc[i * G + g]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    double z = 0;
#pragma unroll 1
    for (int i = wl; i < count; i += 32) z += exp_double(double(sc[i * G + g]) - double(mx));
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) z += __shfl_xor_sync(0xffffffffu, z, off);
    if (wl == 0) {
      s_m[g] = mx;
      s_z[g] = z * (1.0 - 1e-12);
    }
  }
  __syncthreads();
  trace_route(a, kRouteSinkSignal);
  if (blockIdx.x == 0 && tid < G) {
    const int64_t qi = int64_t(b) * a.num_q_heads + int64_t(h) * G + tid;
    a.sink_max[qi] = float(s_m[tid]);
    a.sink_sum[qi] = float(s_z[tid]);
  }

  // 2. Bounds, a step of RP blocks at a time (decode_cuda_route_bounds.cuh): the quads sum
  // their (block, head)'s quarters, in rounds of 4 iterations after which lane `part` of
  // each quad turns iteration part's sums into the term (32 terms a warp side by side), and
  // keeps u, the term and keep in the step's results, from which thread i takes block i's
  // maxima over the heads.
  const float err = dot_error_factor(D);
  const double sink_m = s_m[me.head], sink_z = s_z[me.head];
  const float q_l1 = s_l1[me.head];
  float* bterm = a.bterm + int64_t(bh) * a.block_stride * G;
  const int iterations = RP / map.per_iteration;  // of the lanes a step
  TcBoundsQuery<TC ? D : 16> bq;  // the tensor-core step's q (TC only; qq is dead there from here)
  if constexpr (TC) bq.load(qs, G, warp % 2, wl);
  float* res_u = dsm + lay.results;  // [RP][G]
  float* res_term = res_u + BoundsMap::kMaxResults;
  float* res_keep = res_term + BoundsMap::kMaxResults;
  int kept_here = 0;  // blocks this thread decided to keep (the count of this CTA's chunk list)
#pragma unroll 1
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t j0 = c0 + k * RP;  // the step's first block
    if (++k == PER) {  // (c0, k) moves on to step t + 1
      k = 0;
      c0 += chunk_stride;
    }
    if (++kn == PER) {  // (c0n, kn) moves on to step t + 2
      kn = 0;
      c0n += chunk_stride;
    }
    cp_async_wait_group<0>();  // this thread's copies of step t
    __syncthreads();           // everyone's; step t - 1's reads of the other buffer and of the results are done
    if (t + 1 < steps) copy_step_summaries<D, kStride>(a, h, slot_next, RP, (t & 1) ? even_stage : odd_stage);
    cp_async_commit_group();
    slot_next = summary_slot(slots, t + 2 < steps ? c0n + kn * RP + copy_block : nbr, nbr);
    uint16_t* const staged = (t & 1) ? odd_stage : even_stage;
    if constexpr (TC) {
      // The tensor cores' partials, then block sb's bound for head g, one (sb, g) a thread.
      const int valid = j0 + RP <= nbr ? RP : int(nbr - j0);
      tc_bounds_step<D>(bq, staged, RP, valid, warp, wl);
      __syncthreads();
      for (int idx = tid; idx < RP * G; idx += kBoundsThreads) {
        const int sb = idx / G, g = idx % G;
        const int64_t j = j0 + sb;
        float ub = 0.f, up = 0.f;
        bool keep = false;
        if (sb < valid) {
          const TcBound tb = tc_bounds_result<D>(staged, sb, g);
          ub = tb.u + err * (s_l1[g] * tb.end_max);  // cpu::box_max_dot's allowance
          const double term = block_term(ub, s_m[g], s_z[g], R);
          up = __double2float_ru(term);
          keep = term > a.tau;
          bterm[j * G + g] = up;
        }
        res_u[sb * G + g] = ub;
        res_term[sb * G + g] = up;
        res_keep[sb * G + g] = keep ? 1.f : 0.f;
      }
    } else {
#pragma unroll 1
    for (int r0 = 0; r0 < iterations; r0 += 4) {
      float my_u = 0.f, my_e = 0.f;  // iteration r0 + part's bound and estimate
#pragma unroll 1
      for (int i = 0; i < 4 && r0 + i < iterations; ++i) {
        const int sb = me.block(r0 + i);
        if (!__any_sync(0xffffffffu, j0 + sb < nbr)) continue;  // uniform per warp: the shuffles stay full
        const uint16_t* summary = staged + sb * staged_summary_stride(D);
        const BoxSums bs = a.estimate ? box_sums<D, Tag, true>(qq, summary, me.part, a.gauss)
                                      : box_sums<D, Tag, false>(qq, summary, me.part, a.gauss);
        const float ub = bs.u + err * (q_l1 * bs.end_max);  // cpu::box_max_dot's allowance
        if (me.part == i) {
          my_u = ub;
          // router.cpp's BlockBounds::box_estimate, in float
          if (a.estimate)
            my_e = fminf(ub, 0.5f * (bs.u + bs.n) + a.spread * (a.gauss ? 0.5f * sqrtf(bs.l2) : 0.5f * (bs.u - bs.n)));
        }
      }
      const int it = r0 + me.part;
      if (me.active && it < iterations) {
        const int sb = me.block(it);
        const int64_t j = j0 + sb;
        const double term = block_term(my_u, sink_m, sink_z, R);
        const float up = __double2float_ru(term);
        const bool keep = (a.estimate ? block_term(my_e, sink_m, sink_z, R) : term) > a.tau;
        if (j < nbr) bterm[j * G + me.head] = up;
        res_u[sb * G + me.head] = my_u;
        res_term[sb * G + me.head] = up;
        res_keep[sb * G + me.head] = keep ? 1.f : 0.f;
      }
    }
    }
    __syncthreads();
    if (tid < RP && j0 + tid < nbr) {
      float umax = -INFINITY, cost = 0.f;
      bool keep = false;
#pragma unroll 1
      for (int g = 0; g < G; ++g) {
        umax = fmaxf(umax, res_u[tid * G + g]);
        cost = fmaxf(cost, res_term[tid * G + g]);
        keep = keep || res_keep[tid * G + g] != 0.f;
      }
      const int64_t at = int64_t(bh) * a.block_stride + j0 + tid;
      a.ubound[at] = umax;
      a.cost[at] = cost;
      a.keep[at] = keep ? 1 : 0;
      kept_here += keep ? 1 : 0;
    }
  }
  cp_async_wait_group<0>();  // (the last, empty group)
  if (!a.fused_finish) {
    trace_route(a, kRouteBounds);
    trace_route_end(a, 1);
    return;
  }
  // 3. Fused fast mode on long sequences (RouteArgs::share_min_blocks, the same in every CTA
  // of the (b, h)), adaptive chunks (one contiguous chunk a CTA): this CTA's count of kept
  // blocks, published for the CTAs after it (decode_cuda_route_chunk_list.cuh); it writes
  // its part of the kept list after its certificate share, which gives the CTAs before it
  // time to publish theirs. (Shorter sequences: the finish sums the certificate in passes
  // over every block, and lists them in the same passes; CTAs' own lists only added their
  // step there, 1-2 us at Llama B=1 4K-64K in kernel run 35a.)
  const bool shares = nbr >= a.share_min_blocks;
  const bool own_lists = ADAPTIVE && a.chunk_lists && shares;
  int32_t* const counts = a.chunk_counts + int64_t(bh) * gridDim.x;
  if (own_lists) publish_chunk_count(kept_here, counts + blockIdx.x);
  // 4. Fused fast mode, long sequences (RouteArgs::share_min_blocks): this CTA's share of the
  // certificate, over its own skipped blocks (their keep[] and bterm are this CTA's stores,
  // ordered by the barrier), kCertBatch blocks a thread at a time, their loads together.
  // Summed here, in parallel over the (b, h)'s CTAs, the finishing CTA only adds the shares
  // (it summed every block's terms itself: 23-28 us of the pass at 512K, run 13b).
  if (shares) {
    __syncthreads();  // the last step's keep[] and bterm stores
    const uint32_t my_blocks = uint32_t(my_chunks * chunk), ch = uint32_t(chunk);
    const uint8_t* keep_row = a.keep + int64_t(bh) * a.block_stride;
    __shared__ double s_cert[2 * kRouteGChunk];
    for (int g0 = 0; g0 < G; g0 += kRouteGChunk) {
      double sums[2 * kRouteGChunk];
#pragma unroll
      for (int k = 0; k < 2 * kRouteGChunk; ++k) sums[k] = 0;
#pragma unroll 1
      for (uint32_t i0 = 0; i0 < my_blocks; i0 += kBoundsThreads * kCertBatch) {
        int64_t j[kCertBatch];
        bool skip[kCertBatch];
        int32_t slot[kCertBatch];
        uint8_t keep[kCertBatch];
        // keep[] and the slots of every block together (the slots of kept blocks too), then
        // the tests: a slot loaded only once its block was known skipped was a second round
        // trip before the value norms' (as in finish_routing's step 1).
#pragma unroll
        for (int i = 0; i < kCertBatch; ++i) {
          const uint32_t idx = i0 + uint32_t(i * kBoundsThreads + tid), m = idx / ch;
          j[i] = (int64_t(blockIdx.x) + int64_t(m) * gridDim.x) * chunk + (idx - m * ch);
          const bool in = idx < my_blocks && j[i] < nbr;
          keep[i] = in ? __ldcg(keep_row + j[i]) : uint8_t(1);
          slot[i] = in ? slots[j[i]] : 0;
        }
#pragma unroll
        for (int i = 0; i < kCertBatch; ++i) skip[i] = keep[i] == 0;
        add_certificate_batch(a, bterm, G, g0, h, j, skip, slot, sums);
      }
      route_block_sum<kBoundsThreads>(sums, s_cert);
      if (tid < kRouteGChunk && g0 + tid < G)
        a.cert_partials[(int64_t(bh) * gridDim.x + blockIdx.x) * G + g0 + tid] =
            make_double2(s_cert[tid], s_cert[kRouteGChunk + tid]);
    }
  }
  trace_route(a, kRouteBounds);
  // (3, continued) This CTA's part of the kept list, once the CTAs before it have counted.
  if (own_lists) {
    const int64_t first = int64_t(blockIdx.x) * chunk, end = first + chunk < nbr ? first + chunk : nbr;
    const ChunkRuns<kBoundsThreads> runs{int(first), int(end)};
    write_chunk_list<kBoundsThreads>(a.keep + int64_t(bh) * a.block_stride, runs, counts, int(blockIdx.x),
                                     a.kept_blocks + int64_t(bh) * a.block_stride);
  }
  trace_route(a, kRouteChunkList);

  // 5. Fast mode: the last CTA of the (b, h) to finish its blocks (a ticket, as the
  // attention kernel's combine) writes the certificate and statistics (and the kept-block
  // list, where the CTAs did not write theirs), instead of a route_select launch. The CTAs
  // with chunks are 0 .. min(grid, chunks) - 1. This CTA's keep[], list and certificate
  // share are published by the acquire-release ticket, which also acquires the other CTAs'
  // for the last one (grid_ticket).
  __syncthreads();
  const int ctas = chunks < 1 ? 1 : int(chunks < int64_t(gridDim.x) ? chunks : int64_t(gridDim.x));
  if (tid == 0) s_last = grid_ticket(reinterpret_cast<unsigned*>(&a.route_tickets[bh])) == unsigned(ctas - 1);
  __syncthreads();
  trace_route(a, kRouteTicket);
  if (!s_last) {
    trace_route_end(a, 1);
    return;
  }
  if (tid == 0) a.route_tickets[bh] = 0;  // every other CTA has taken its ticket
  FinishKnown known{slots, na, my_anchor};
  if (own_lists) {
    __shared__ int s_listed;
    if (tid < 32) {
      const int listed = take_chunk_counts(counts, ctas);
      if (tid == 0) s_listed = listed;
    }
    __syncthreads();
    known.listed = s_listed;
  }
  const int64_t at = int64_t(bh) * a.block_stride;
  const RouteHead hd{a.cost + at, a.bterm + at * G, a.ubound + at, a.keep + at, int(nbr), G};
  finish_routing<kBoundsThreads>(a, hd, bh, n, ws, false, 0, 0.f,
                                 shares ? a.cert_partials + int64_t(bh) * gridDim.x * G : nullptr, ctas, true, known);
  trace_route(a, kRouteEnd);
  trace_route_end(a, 2);
}

using BoundsKernel = void (*)(RouteArgs);
// The instantiation for the cache's head_dim and dtype and the chunk mode.
template <int D>
BoundsKernel bounds_kernel_for_dim(const RouteArgs& a) {
  const bool ad = a.adaptive_chunks;
  if (a.kv.dtype != DType::BF16)
    return ad ? route_bounds_kernel<D, F16Tag, true, false> : route_bounds_kernel<D, F16Tag, false, false>;
  if (a.tc_bounds)
    return ad ? route_bounds_kernel<D, Bf16Tag, true, true> : route_bounds_kernel<D, Bf16Tag, false, true>;
  return ad ? route_bounds_kernel<D, Bf16Tag, true, false> : route_bounds_kernel<D, Bf16Tag, false, false>;
}
BoundsKernel bounds_kernel_for(const RouteArgs& a) {
  return a.kv.head_dim == 64 ? bounds_kernel_for_dim<64>(a) : bounds_kernel_for_dim<128>(a);
}

}  // namespace

int route_bounds_prepare(const RouteArgs& a) {
  SR_CHECK(a.group <= kMaxGroup, "routing (CUDA): group {} exceeds {}", a.group, kMaxGroup);
  const int64_t smem = BoundsSmem(a.group, a.kv.head_dim, a.sink_capacity).bytes;
  SR_CHECK(smem <= 160 * 1024,
           "routing (CUDA): the sink set ({} tokens: anchors + window {} + block {} - 1) of {} heads needs {} KB of "
           "shared memory, more than the 160 KB the CUDA router uses; lower the window or the block size",
           a.sink_capacity, a.window, a.kv.block_size, a.group, smem / 1024);
  raise_smem_limit(reinterpret_cast<const void*>(bounds_kernel_for(a)), int(smem));
  return int(smem);
}

int route_bounds_ctas_per_head(const RouteArgs& a, int batch, int num_kv_heads, int smem) {
  int per_sm = 0, dev = 0, sms = 0;
  SR_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, bounds_kernel_for(a), kBoundsThreads, smem));
  SR_CUDA_CHECK(cudaGetDevice(&dev));
  SR_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  // Most chunks of any sequence (adaptive: chunks can be as small as one step). Small steps
  // add CTAs only up to the CTAs wanted (kernel run 27d: a grid sized by the smallest step
  // left idle CTAs sharing SMs with working ones, Llama B=1 64K's pass 3 us slower).
  const BoundsMap map(a.group);
  const int step = a.adaptive_chunks ? map.blocks : kBlocksPerCta;
  int chunks = std::max(1, (a.block_stride + step - 1) / step);
  if (a.adaptive_chunks && a.small_steps)
    chunks = std::max(chunks, std::min(a.bounds_min_ctas, (a.block_stride + map.per_iteration - 1) / map.per_iteration));
  // One wave: a second (kernel runs 4-12d) paid the sink signal twice an SM at Llama B=8 512K
  // (~16 us of a 200 us pass, run 12d's trace).
  const int one_wave = std::max(1, per_sm) * sms;
  return std::clamp(one_wave / std::max(1, batch * num_kv_heads), 1, chunks);
}

void route_bounds_launch(const RouteArgs& a, int batch, int num_kv_heads, int smem, cudaStream_t stream) {
  const dim3 grid(unsigned(std::max(1, a.bounds_ctas_per_head)), unsigned(batch * num_kv_heads));
  launch_pdl(bounds_kernel_for(a), grid, dim3(kBoundsThreads), size_t(smem), stream, a);
}

}  // namespace sinkrouter::cuda
