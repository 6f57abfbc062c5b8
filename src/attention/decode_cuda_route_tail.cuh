// The end of the routing pass, shared by the two kernels that can finish it: route_select
// (decode_cuda_route_select.cu: certified, quest, streaming; one CTA of 512 threads per
// (b, h)) and, for sinkrouter's fast mode, the last route_bounds CTA of each (b, h)
// (decode_cuda_route.cu), which saves fast mode the second launch.
//
// finish_routing, given keep[] (or the certified key threshold T): the kept-block list in
// position order (a CTA scan of each thread's kept count), the certificate over the skipped
// blocks (delta_g = sum b_jg, skipped value bound sum b_jg vmax_j, in double), the anchors
// read alone (their block skipped) or with their block, and the statistics.
#pragma once

#include <cstdint>

#include <cub/block/block_scan.cuh>

#include "decode_cuda_kernels.cuh"

namespace sinkrouter::cuda {

constexpr int kRouteItems = 16;  // blocks per thread per round of route_select's own passes
constexpr int kFinishRun = 16;   // consecutive blocks a thread takes per pass of the finish (one 16-byte keep[] load)
constexpr int kRouteGChunk = 4;  // heads summed per pass (more: another pass; 4 keeps the certificate
                                 // step of kCertBatch blocks in registers)
constexpr int kCertBatch = 8;    // skipped blocks whose certificate loads a thread has in flight together

// The per-(b, h) view of route_bounds' outputs.
struct RouteHead {
  const float* cost;   // [nbr]
  const float* bterm;  // [nbr, G]
  const float* ub;     // [nbr]
  uint8_t* keep;       // [nbr]
  int nbr, G;
};

// Sums v[i] over the block for i < N; out[i] (shared) is valid for every thread after.
template <int THREADS, int N>
__device__ __forceinline__ void route_block_sum(const double (&v)[N], double* out) {
  constexpr int kWarps = THREADS / 32;
  __shared__ double part[kWarps][N];
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    double x = v[i];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
    if (lane == 0) part[warp][i] = x;
  }
  __syncthreads();
  if (threadIdx.x < N) {
    double s = 0;
    for (int w = 0; w < kWarps; ++w) s += part[w][threadIdx.x];
    out[threadIdx.x] = s;
  }
  __syncthreads();
}

// Adds the certificate's terms of kCertBatch blocks to sums ([k]: sum b_jg, [kRouteGChunk + k]:
// sum b_jg vmax_j, heads g0 + k): block j[i] where skip[i], its value norm through its summary
// slot[i] and its b_jg (bterm: the (b, h)'s [nbr, G] row), all loads issued before any is used.
// Blocks kept add exact zeros. Used by the finish and by fused fast mode's per-CTA shares.
__device__ __forceinline__ void add_certificate_batch(const RouteArgs& a, const float* bterm, int G, int g0, int h,
                                                      const int64_t (&j)[kCertBatch], const bool (&skip)[kCertBatch],
                                                      const int32_t (&slot)[kCertBatch],
                                                      double (&sums)[2 * kRouteGChunk]) {
  float vn[kCertBatch], t[kCertBatch][kRouteGChunk];
#pragma unroll
  for (int i = 0; i < kCertBatch; ++i) {
    vn[i] = skip[i] ? a.kv.slot_value_norm(slot[i], h) : 0.f;
#pragma unroll
    for (int k = 0; k < kRouteGChunk; ++k) t[i][k] = skip[i] && g0 + k < G ? __ldcg(bterm + j[i] * G + g0 + k) : 0.f;
  }
#pragma unroll
  for (int i = 0; i < kCertBatch; ++i)
#pragma unroll
    for (int k = 0; k < kRouteGChunk; ++k) {
      sums[k] += t[i][k];
      sums[kRouteGChunk + k] += double(t[i][k]) * double(vn[i]);
    }
}

// Bit i set: block j0 + i of a thread's run exists (is below nbr).
__device__ __forceinline__ uint32_t run_blocks(int j0, int nbr) {
  return j0 >= nbr ? 0u : nbr - j0 >= kFinishRun ? (1u << kFinishRun) - 1u : (1u << (nbr - j0)) - 1u;
}

// Bit i set: byte i of 16 keep[] bytes is 0 (block skipped).
__device__ __forceinline__ uint32_t keep_zero_bits(uint4 k4) {
  const uint32_t w[4] = {k4.x, k4.y, k4.z, k4.w};
  uint32_t bits = 0;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint32_t zero = __vcmpeq4(w[k], 0u);  // 0xff in each byte that is 0
#pragma unroll
    for (int e = 0; e < 4; ++e) bits |= ((zero >> (8 * e)) & 1u) << (4 * k + e);
  }
  return bits;
}

// Decisions of a thread's run of kFinishRun consecutive blocks j0 .. j0 + 15 (bit i: block j0 + i
// skipped; only the blocks of `valid`, run_blocks(j0, nbr), are reported). by_key: certified, skipped iff c_j <= eps_f
// and (bits(c_j) << 32 | j) < T, from four 16-byte loads of cost[]; otherwise skipped iff keep[j]
// == 0 (every block for streaming), from one 16-byte load of keep[]. The rows are 16-block
// aligned (block_stride is a multiple of 16), so the loads stay inside the (b, h)'s row; what
// lies past nbr is masked. Read with __ldcg (through L2): in fused fast mode other CTAs of this
// launch wrote them.
__device__ __forceinline__ uint32_t skipped_run(const RouteArgs& a, const RouteHead& hd, int j0, uint32_t valid,
                                                bool by_key, uint64_t T, float eps_f) {
  if (valid == 0 || a.streaming) return valid;
  uint32_t skip = 0;
  if (by_key) {
    const float4* c4 = reinterpret_cast<const float4*>(hd.cost + j0);
    float4 c[kFinishRun / 4];
#pragma unroll
    for (int k = 0; k < kFinishRun / 4; ++k) c[k] = __ldcg(c4 + k);
#pragma unroll
    for (int k = 0; k < kFinishRun / 4; ++k) {
      const float v[4] = {c[k].x, c[k].y, c[k].z, c[k].w};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = 4 * k + e;
        const bool s = v[e] <= eps_f && ((uint64_t(__float_as_uint(v[e])) << 32) | uint32_t(j0 + i)) < T;
        skip |= uint32_t(s) << i;
      }
    }
  } else {
    skip = keep_zero_bits(__ldcg(reinterpret_cast<const uint4*>(hd.keep + j0)));
  }
  return skip & valid;
}

// keep[] of a run as 0 / 1 bytes (bit i of kept: block j0 + i): one 16-byte store where the
// run is whole (a warp's stores are then 512 neighbouring bytes), else byte by byte.
__device__ __forceinline__ void store_run_keep(uint8_t* keep, int j0, int nbr, uint32_t kept) {
  if (j0 >= nbr) return;
  if (nbr - j0 < kFinishRun) {
    for (int i = 0; j0 + i < nbr; ++i) keep[j0 + i] = uint8_t((kept >> i) & 1u);
    return;
  }
  uint32_t w[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint32_t m = (kept >> (4 * k)) & 0xfu;
    w[k] = (m & 1u) | ((m & 2u) << 7) | ((m & 4u) << 14) | ((m & 8u) << 21);
  }
  *reinterpret_cast<uint4*>(keep + j0) = make_uint4(w[0], w[1], w[2], w[3]);
}

// The summary slots of a certificate batch's blocks first, first + THREADS, ... (kCertBatch of
// them; 0 past nbr or where !wanted), loaded together; the slots of kept blocks too, since
// the decisions are not known yet.
template <int THREADS>
__device__ __forceinline__ void certificate_slots(const int32_t* slots, int first, int nbr, bool wanted,
                                                  int32_t (&slot)[kCertBatch]) {
#pragma unroll
  for (int i = 0; i < kCertBatch; ++i) {
    const int j = first + i * THREADS;
    slot[i] = wanted && j < nbr ? __ldg(slots + j) : 0;
  }
}

// What the caller may already hold of the (b, h), so that the finish need not look it up
// again, a round trip or two each (route_bounds' prologue loaded them, kernel run 27b): the
// sequence's row of the summary-slot table, the count of anchors before the window, and
// anchor `tid` in each of warp 0's lanes below max_anchors. Left default, looked up here.
struct FinishKnown {
  const int32_t* slots = nullptr;
  int na = -1;
  int32_t lane_anchor = 0;
  // The kept-block list is written already, with this many blocks (the route_bounds CTAs'
  // own lists, decode_cuda_route_chunk_list.cuh; fast mode only, where keep[] is final
  // already); -1: the finish writes it. The same in every thread.
  int listed = -1;
};

// by_key: certified, block j skipped iff c_j <= eps_f and (bits(c_j) << 32 | j) < T;
// otherwise skipped iff keep[j] == 0 (every block for streaming). keep[] ends as the
// final decision. Every thread of the CTA calls this.
// A pass covers THREADS * kFinishRun blocks: thread t takes the run of 16 consecutive blocks
// base + 16 t .. base + 16 t + 15, whose keep[] bytes are one 16-byte load (a warp reads 512
// neighbouring bytes). Per pass:
//   1. the run's decisions (skipped_run);
//   2. the kept list: the run's kept count, a CTA-wide exclusive scan of the counts (CUB), then
//      the run's kept block ids from the thread's offset, in a rolled loop (run 26c: stored by
//      the warp 32 at a time, contiguous, measured no faster);
//   3. the certificate: striped, thread t taking blocks base + t + k THREADS (k < 16), kCertBatch
//      at a time: their slots, then their value norms and b_jg together; or, given `partials`
//      (fused fast mode: each route_bounds CTA summed its own skipped blocks,
//      RouteArgs::cert_partials), the sum of the partial_ctas shares [cta][G].
// Compact on purpose: the finish runs once per (b, h) on one SM, so its code is fetched cold.
// The version before (sixteen strided items a thread, each step unrolled over them: ~3,200
// instructions between the ticket and the list's end) took 14 us at 512K for two passes whose
// loads are a few L2 round trips; runs of 16 took it to 6.5 (kernel runs 26a-26c, docs/PERF.md).
// traced: stamp the finish's steps (fused fast mode); known: what the caller loaded already.
template <int THREADS>
__device__ void finish_routing(const RouteArgs& a, const RouteHead& hd, int bh, int64_t n, int64_t ws, bool by_key,
                               uint64_t T, float eps_f, const double2* partials = nullptr, int partial_ctas = 0,
                               bool traced = false, const FinishKnown& known = FinishKnown{}) {
  using Scan = cub::BlockScan<int, THREADS, cub::BLOCK_SCAN_WARP_SCANS>;
  constexpr int kPass = THREADS * kFinishRun;
  __shared__ double s_sum[2 * kRouteGChunk];
  __shared__ typename Scan::TempStorage s_scan;
  __shared__ uint32_t s_skip[THREADS];  // each run's skipped bits
  const int H = a.kv.num_kv_heads, b = bh / H, h = bh % H;
  const int G = hd.G, R = a.kv.block_size, tid = int(threadIdx.x), nbr = hd.nbr;
  int32_t* kept_list = a.kept_blocks + int64_t(bh) * a.block_stride;
  // The blocks' summary slots (for their value norms): the sequence's row of the table.
  const int32_t* slots = known.slots != nullptr ? known.slots : a.kv.summary_indices + a.kv.summary_indptr[b];
  // keep[] holds the final decision already unless it is by key or streaming.
  const bool store_keep = by_key || a.streaming;
  const bool write_list = known.listed < 0;
  int total = write_list ? 0 : known.listed;
  float dmax = 0.f;
  for (int g0 = 0; g0 < G; g0 += kRouteGChunk) {
    double sums[2 * kRouteGChunk];  // [k]: sum b_jg, [kRouteGChunk + k]: sum b_jg vmax_j, g = g0 + k
#pragma unroll
    for (int k = 0; k < 2 * kRouteGChunk; ++k) sums[k] = 0;
    // With partials the passes only compact (once); the certificate is the shares' sum.
    const int pass_end = partials == nullptr || (g0 == 0 && write_list) ? nbr : 0;
    for (int base = 0; base < pass_end; base += kPass) {
      const int j0 = base + tid * kFinishRun;  // this thread's run
      // The certificate's first batch, striped (below): its slots load with the decisions.
      int32_t slot[kCertBatch];
      certificate_slots<THREADS>(slots, base + tid, nbr, partials == nullptr, slot);
      // 1. Decisions.
      const uint32_t in_run = run_blocks(j0, nbr);
      const uint32_t skip = skipped_run(a, hd, j0, in_run, by_key, T, eps_f);
      if (partials == nullptr) {  // (uniform) the certificate's striped blocks read the runs' bits
        s_skip[tid] = skip;
        __syncthreads();
      }
      // 2. The kept list (and keep[] final), once.
      if (g0 == 0 && write_list) {
        const uint32_t kept = in_run & ~skip;
        if (store_keep) store_run_keep(hd.keep, j0, nbr, kept);
        int offset, pass_total;
        Scan(s_scan).ExclusiveSum(__popc(kept), offset, pass_total);
        int at = total + offset;
        for (uint32_t m = kept; m != 0; m &= m - 1u) kept_list[at++] = j0 + __ffs(m) - 1;
        total += pass_total;
      }
      // 3. The certificate's terms of the skipped blocks (kept blocks add nothing), striped:
      // thread t takes blocks base + t + k THREADS, so that short sequences spread theirs over
      // every thread (runs of 16 left a 4K sequence's 64 blocks to 4 threads, one batch after
      // another: +1 us in kernel run 26a). Block base + t + k THREADS is bit t % 16 of run
      // t / 16 + k THREADS / 16. The next batch's slots load while this one's terms do.
      if (partials == nullptr) {
#pragma unroll 1
        for (int k0 = 0; k0 < kFinishRun && base + k0 * THREADS < nbr; k0 += kCertBatch) {
          int64_t jb[kCertBatch];
          bool sb[kCertBatch];
#pragma unroll
          for (int i = 0; i < kCertBatch; ++i) {
            const int k = k0 + i;
            jb[i] = base + tid + k * THREADS;
            sb[i] = (s_skip[tid / kFinishRun + k * (THREADS / kFinishRun)] >> (tid % kFinishRun)) & 1u;
          }
          int32_t next[kCertBatch];
          certificate_slots<THREADS>(slots, base + tid + (k0 + kCertBatch) * THREADS, nbr, k0 + kCertBatch < kFinishRun,
                                     next);
          bool any = false;
#pragma unroll
          for (int i = 0; i < kCertBatch; ++i) any = any || sb[i];
          if (any) add_certificate_batch(a, hd.bterm, G, g0, h, jb, sb, slot, sums);
#pragma unroll
          for (int i = 0; i < kCertBatch; ++i) slot[i] = next[i];
        }
      }
      __syncthreads();  // s_skip and s_scan are refilled by the next pass
    }
    if (partials != nullptr)
      for (int c = tid; c < partial_ctas; c += THREADS)
#pragma unroll
        for (int k = 0; k < kRouteGChunk; ++k)
          if (g0 + k < G) {
            const double2 p = __ldcg(partials + int64_t(c) * G + g0 + k);
            sums[k] += p.x;
            sums[kRouteGChunk + k] += p.y;
          }
    route_block_sum<THREADS>(sums, s_sum);
    if (tid < kRouteGChunk && g0 + tid < G) {
      const int64_t qi = int64_t(b) * a.num_q_heads + int64_t(h) * G + g0 + tid;
      // Rounded up to float, as router.cpp does: a tiny bound must not underflow to 0.
      a.delta[qi] = __double2float_ru(s_sum[tid] * (1 + 1e-6));
      a.skipped_v_bound[qi] = __double2float_ru(s_sum[kRouteGChunk + tid] * (1 + 1e-6));
    }
    if (tid == 0)
      for (int k = 0; k < kRouteGChunk && g0 + k < G; ++k)
        dmax = fmaxf(dmax, __double2float_ru(s_sum[k] * (1 + 1e-6)));
  }
  __syncthreads();  // keep[] final for the anchors below
  if (traced) trace_route(a, kRouteFinishList);  // (route_bounds' stamps; route_select has none)

  // Anchors before the window: read alone when their block is skipped, else with it. Warp
  // 0, 32 anchors per step; a ballot keeps the extra anchors in ascending order (every
  // lane ends with the same counts).
  if (tid >= 32) return;
  const int na = known.na >= 0 ? known.na : anchors_before(a, bh, ws);
  const int32_t* apos = a.kv.anchor_pos + int64_t(bh) * a.kv.max_anchors;
  int32_t* extra = a.extra_anchors + int64_t(bh) * a.anchor_stride;
  int extra_n = 0;
  for (int i0 = 0; i0 < na; i0 += 32) {
    const int i = i0 + tid;
    const int32_t p = i >= na ? 0 : a.streaming ? i : i0 == 0 && known.na >= 0 ? known.lane_anchor : apos[i];
    const bool alone = i < na && !__ldcg(hd.keep + p / R);
    const unsigned ballot = __ballot_sync(0xffffffffu, alone);
    if (alone) extra[extra_n + __popc(ballot & ((1u << tid) - 1u))] = p;
    extra_n += __popc(ballot);
  }
  const int in_kept = na - extra_n;
  if (tid != 0) return;
  if (traced) trace_route(a, kRouteFinishAnchors);
  a.window_start[bh] = int32_t(ws);
  a.kept_count[bh] = total;
  a.extra_count[bh] = extra_n;
  a.routed_tokens[bh] = int32_t(anchor_rows(extra_n, a.pad_anchors) + int64_t(total) * R + (n - ws));

  const int64_t tb = a.kv.token_bytes();
  HeadStats& st = a.stats[bh];
  st.bytes_summary = a.streaming ? 0 : int64_t(nbr) * a.kv.summary_bytes();
  st.bytes_anchor_window = (int64_t(na) + (n - ws)) * tb;
  st.bytes_blocks = (int64_t(total) * R - in_kept) * tb;
  st.bytes_dense = n * tb;
  st.blocks_total = nbr;
  st.blocks_skipped = nbr - total;
  st.delta = dmax;
  st.output_error_bound = 0.f;  // the attention kernel adds delta * ||o||
  st.sink_route = !a.streaming && !a.quest && nbr > 0 && total == 0;
}

}  // namespace sinkrouter::cuda
