// The end of the routing pass, shared by the two kernels that can finish it: route_select
// (decode_cuda_route_select.cu: certified, quest, streaming; one CTA of 512 threads per
// (b, h)) and, for sinkrouter's fast mode, the last route_bounds CTA of each (b, h)
// (decode_cuda_route.cu), which saves fast mode the second launch.
//
// finish_routing, given keep[] (or the certified key threshold T): the kept-block list in
// position order (warp ballots), the certificate over the skipped blocks (delta_g = sum
// b_jg, skipped value bound sum b_jg vmax_j, in double), the anchors read alone (their
// block skipped) or with their block, and the statistics.
#pragma once

#include <cstdint>

#include "decode_cuda_kernels.cuh"

namespace sinkrouter::cuda {

constexpr int kRouteItems = 16;  // blocks per thread per pass of route_select's finish
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

// Exclusive prefix sums, in place, of the n = ITEMS * warps counts of a pass (index
// i * warps + w: item i, warp w, which is block order), by warp 0; the pass's total is
// returned to every lane of warp 0 and left in counts[n].
template <int N>
__device__ __forceinline__ void scan_pass_counts(int* counts) {
  constexpr int E = (N + 31) / 32;  // entries a lane
  const int lane = int(threadIdx.x) % 32;
  int local[E], sum = 0;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int idx = lane * E + e;
    local[e] = idx < N ? counts[idx] : 0;
    sum += local[e];
  }
  int incl = sum;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, incl, off);
    if (lane >= off) incl += y;
  }
  int run = incl - sum;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int idx = lane * E + e;
    if (idx < N) counts[idx] = run;
    run += local[e];
  }
  if (lane == 31) counts[N] = incl;
}

// by_key: certified, block j skipped iff c_j <= eps_f and (bits(c_j) << 32 | j) < T;
// otherwise skipped iff keep[j] == 0 (every block for streaming). keep[] ends as the
// final decision. Every thread of the CTA calls this.
// A pass covers THREADS * ITEMS blocks: item i of thread t is block base + i * THREADS + t,
// so that each load instruction of a warp reads 32 neighbouring entries (kernel run 13a:
// with each thread's blocks consecutive, every warp load touched 32 sectors, and the finish
// took 30-37 us at 512K). Per pass:
//   1. the decisions (keep[] or cost) and the summary slots of all ITEMS items, together;
//   2. the kept list: per item a warp ballot, and the (item, warp) counts scanned by warp 0;
//   3. the certificate: kCertBatch items at a time, their value norms and b_jg together;
//      or, given `partials` (fused fast mode: each route_bounds CTA summed its own skipped
//      blocks, RouteArgs::cert_partials), the sum of the partial_ctas shares [cta][G].
// The per-block arrays are read with __ldcg (through L2): in the fused fast path other
// CTAs of this launch wrote them. traced: stamp the finish's steps (fused fast mode).
template <int THREADS, int ITEMS = kRouteItems>
__device__ void finish_routing(const RouteArgs& a, const RouteHead& hd, int bh, int64_t n, int64_t ws, bool by_key,
                               uint64_t T, float eps_f, const double2* partials = nullptr, int partial_ctas = 0,
                               bool traced = false) {
  static_assert(ITEMS <= 32 && ITEMS % kCertBatch == 0, "ITEMS: a 32-bit mask, whole certificate batches");
  constexpr int kWarps = THREADS / 32, kPass = THREADS * ITEMS, kCounts = ITEMS * kWarps;
  __shared__ double s_sum[2 * kRouteGChunk];
  __shared__ int s_counts[kCounts + 1];
  const int H = a.kv.num_kv_heads, b = bh / H, h = bh % H;
  const int G = hd.G, R = a.kv.block_size, tid = int(threadIdx.x), nbr = hd.nbr;
  const int warp = tid / 32, lane = tid % 32;
  const unsigned lanes_below = (1u << lane) - 1u;
  int32_t* kept_list = a.kept_blocks + int64_t(bh) * a.block_stride;
  // The blocks' summary slots (for their value norms): the sequence's row of the table.
  const int32_t* slots = a.kv.summary_indices + a.kv.summary_indptr[b];
  int total = 0;
  float dmax = 0.f;
  for (int g0 = 0; g0 < G; g0 += kRouteGChunk) {
    double sums[2 * kRouteGChunk];  // [k]: sum b_jg, [kRouteGChunk + k]: sum b_jg vmax_j, g = g0 + k
#pragma unroll
    for (int k = 0; k < 2 * kRouteGChunk; ++k) sums[k] = 0;
    // With partials the passes only compact (once); the certificate is the shares' sum.
    const int pass_end = partials == nullptr || g0 == 0 ? nbr : 0;
    for (int base = 0; base < pass_end; base += kPass) {
      // Items with a block anywhere in the CTA (the same for every thread).
      const int items = (nbr - base + THREADS - 1) / THREADS;
      // 1. Decisions (skip: bit i for item i) and slots. Every item's loads are issued
      // before any is tested, into registers of their own: written as one loop, the
      // compiler loaded each item's keep[] into the register the previous item's test had
      // just read, so the loads went one L2 round trip at a time (kernel run 17a's SASS).
      // Issued together they took the kept list at 512K from 16.9 to 12.9 us (runs 17c, 17d).
      uint32_t skip = 0;
      int32_t slot[ITEMS];
      uint32_t raw[ITEMS];  // keep[j], or the bits of cost[j] (by_key)
#pragma unroll
      for (int i = 0; i < ITEMS; ++i) {
        slot[i] = 0;
        raw[i] = 0;
      }
#pragma unroll
      for (int i = 0; i < ITEMS; ++i) {
        if (i >= items) break;  // (run 17d: predicated loads of all 16 items cost a short sequence ~1 us)
        const int j = base + i * THREADS + tid;
        const bool in = j < nbr;
        // (the slots: for the value norms of step 3)
        slot[i] = in && partials == nullptr ? __ldg(slots + j) : 0;
        raw[i] = !in ? 0u : by_key ? __float_as_uint(__ldcg(hd.cost + j)) : uint32_t(__ldcg(hd.keep + j));
      }
#pragma unroll
      for (int i = 0; i < ITEMS; ++i) {
        const int j = base + i * THREADS + tid;
        if (i >= items || j >= nbr) continue;
        const bool s = by_key ? __uint_as_float(raw[i]) <= eps_f && ((uint64_t(raw[i]) << 32) | uint32_t(j)) < T
                              : a.streaming || raw[i] == 0;
        skip |= uint32_t(s) << i;
      }
      // 2. The kept list (and keep[] final), once.
      if (g0 == 0) {
        // Short sequences skip the ballots of the items past theirs (a one-pass finish at
        // 4K-16K took ~1 us longer than the round-based one of run 12g); their counts are 0.
        for (int k = items * kWarps + tid; k < kCounts; k += THREADS) s_counts[k] = 0;
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) {
          if (i >= items) break;
          const bool kept = base + i * THREADS + tid < nbr && !((skip >> i) & 1u);
          const unsigned ballot = __ballot_sync(0xffffffffu, kept);
          if (lane == 0) s_counts[i * kWarps + warp] = __popc(ballot);
        }
        __syncthreads();
        if (warp == 0) scan_pass_counts<kCounts>(s_counts);
        __syncthreads();
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) {
          if (i >= items) break;
          const int j = base + i * THREADS + tid;
          const bool kept = j < nbr && !((skip >> i) & 1u);
          const unsigned ballot = __ballot_sync(0xffffffffu, kept);
          if (j < nbr) hd.keep[j] = uint8_t(kept);
          if (kept) kept_list[total + s_counts[i * kWarps + warp] + __popc(ballot & lanes_below)] = j;
        }
        total += s_counts[kCounts];
        __syncthreads();  // s_counts is refilled by the next pass
      }
      // 3. The certificate's terms of the skipped blocks (kept blocks add nothing).
      if (partials != nullptr) continue;
#pragma unroll
      for (int i0 = 0; i0 < ITEMS; i0 += kCertBatch) {
        if (i0 >= items) break;
        if (((skip >> i0) & ((1u << kCertBatch) - 1u)) == 0) continue;
        int64_t jb[kCertBatch];
        bool sb[kCertBatch];
        int32_t slb[kCertBatch];
#pragma unroll
        for (int i = 0; i < kCertBatch; ++i) {
          jb[i] = base + (i0 + i) * THREADS + tid;
          sb[i] = (skip >> (i0 + i)) & 1u;
          slb[i] = slot[i0 + i];
        }
        add_certificate_batch(a, hd.bterm, G, g0, h, jb, sb, slb, sums);
      }
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
  const int na = anchors_before(a, bh, ws);
  const int32_t* apos = a.kv.anchor_pos + int64_t(bh) * a.kv.max_anchors;
  int32_t* extra = a.extra_anchors + int64_t(bh) * a.anchor_stride;
  int extra_n = 0;
  for (int i0 = 0; i0 < na; i0 += 32) {
    const int i = i0 + tid;
    const int32_t p = i < na ? (a.streaming ? i : apos[i]) : 0;
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
