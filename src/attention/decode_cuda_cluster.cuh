// Cluster mode of the tensor-core dense decode kernel (AttnArgs::cluster, sm_90): the
// schedule (unit u is AttnArgs::cluster_groups clusters; their C CTAs take its CTA stages
// in turn) and the combine through distributed shared memory, then, with several clusters a
// unit, over the clusters slice by slice, that replaces the flat Split-K list's search for the
// split and its last-CTA merge (decode_cuda_split.cuh).
//
// Why: at small contexts a decode call is a chain of round trips, not bytes. Kernel run 5f
// (SmolLM2 B=1 8K, 13.1 us) spent 1.2 us finding the split (a block-wide reduction and scan
// over the units' lengths), 0.8 us on the ticket and 3.2 us in the last CTA's combine (the
// partials' (m, l) and sums through L2, four CTA barriers). Here a CTA knows its split from
// its index, and the combine is pushed: each CTA stores its merged state's elements straight
// into the shared memory of the CTA that owns them (a store does not wait), one cluster
// barrier publishes them, and each CTA merges its own slice from its own shared memory.
// (Run 14a's first version pulled instead: a barrier, a round of remote loads, a second
// barrier to keep every CTA's state alive for its readers.) A cluster has at most 16 CTAs;
// where a unit needs more, it has several clusters, whose merge costs a ticket and a round
// of loads more (~2.9 us against ~1.2 for one cluster's stores, run 15a), so they pay only
// for long loops (CudaDecoder's plan_cluster_mode, decode_cuda_cluster_plan.cu).
#pragma once

#include <cuda_runtime.h>

#include "core/cuda_check.h"
#include "core/cuda_cluster.cuh"
#include "decode_cuda_kernels.cuh"
#include "decode_cuda_split.cuh"

namespace sinkrouter::cuda {

// The largest cluster the combine handles (the hardware's largest, non-portable, size), and
// the most query heads a CTA (the tensor-core kernel's).
constexpr int kMaxClusterCtas = 16;
constexpr int kClusterHeads = 4;

// How many clusters of `cluster` CTAs of `kernel` (block `threads`, dynamic shared memory
// `smem`, already allowed) can be resident at once; allows the kernel clusters past the
// portable 8 first. 0 where none can; an unsupported size is "none", not a sticky error.
inline int resident_clusters(const void* kernel, int threads, int smem, int cluster) {
  SR_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(cluster));
  cfg.blockDim = dim3(unsigned(threads));
  cfg.dynamicSmemBytes = size_t(smem);
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = unsigned(cluster);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int clusters = 0;
  if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return clusters;
}

// Cluster mode's split of CTA `cta`: unit u is clusters [u * groups, (u + 1) * groups) (one
// when AttnArgs::cluster_groups is 1), and the CTA's split is its index among the unit's
// C * groups CTAs (clusters along x: its rank in its cluster is split % C). The splits take
// the unit's CTA stages in turn (attention_mma_kernel), so this needs no load: the
// kernel reads the length and the page list's start itself, the latter before its PDL wait
// where the page tables are fixed. GROUPS: the kernel instance for cluster_groups > 1; the
// other knows it has one cluster a unit (the runtime product cost SmolLM2 B=1 4K-8K ~0.4 us a
// call there: kernel run 16c).
template <bool GROUPS>
__device__ __forceinline__ void cluster_unit(const AttnArgs& a, int cta, int* unit, int* split, int* splits) {
  *splits = GROUPS ? a.cluster * a.cluster_groups : a.cluster;
  *unit = cta / *splits;
  *split = cta % *splits;
}

// Where a unit has several clusters (AttnArgs::cluster_groups = k > 1), the CTAs of rank r
// hold the same slice [e0, e1) of the unit's output in each of its k clusters. Each stores
// its cluster's slice as (o, lse) per element (o normalised, lse = m + log2 l; -inf when the
// cluster's splits were empty) at part[((unit * C + r) * k + cluster) * w + e - e0]
// (AttnArgs::part_acc read as float2) and takes a ticket on tickets[unit * C + r]; the last
// of the k merges the slice's k partials and writes the output. So the second level is
// spread over the unit's C slices, each a ticket and one round of loads (the partials
// spread over the CTA's threads, kGroupMergeRound at most a round; more take more rounds),
// where the flat list's last CTA merges every split of its unit alone (kernel run 14f's
// trace: ~4.5 us at batch 1 from 16K, SmolLM2 and Llama alike).
// s_part: kGroupMergeRound float2 of shared memory no one else uses now.
template <int D, int THREADS>
__device__ void merge_cluster_groups(const AttnArgs& a, int unit, int rank, int e0, int e1, int w, float2* s_part) {
  constexpr int kE = 2;  // elements a thread at most: a slice has w <= 4 heads * D / 2 (C >= 2)
  static_assert(4 * D / 2 <= kE * THREADS, "a slice's elements fit kE a thread");
  __shared__ int s_last;
  const int C = a.cluster, k = a.cluster_groups, tid = int(threadIdx.x), we = e1 - e0;
  const int bh = unit / a.head_chunks, hc = unit % a.head_chunks;
  const int H = a.kv.num_kv_heads, b = bh / H, h = bh % H;
  unsigned* ticket = reinterpret_cast<unsigned*>(&a.tickets[unit * C + rank]);
  __syncthreads();  // every thread's partial stores precede thread 0's (release) ticket
  if (tid == 0) s_last = grid_ticket(ticket) == unsigned(k - 1);
  __syncthreads();  // (acquire, for the last: the other clusters' partials are visible)
  trace_phase(a, kPhaseMergeWeights);  // the ticket
  if (!s_last) {
    trace_end(a, 1);
    return;
  }
  if (tid == 0) *ticket = 0;  // every other cluster of the unit has taken its ticket
  // ... so every warp of the unit is past its last claim (dynamic splits).
  if (rank == 0 && tid == 0 && a.claims != nullptr) a.claims[unit] = 0;
  const float2* part = reinterpret_cast<const float2*>(a.part_acc) + int64_t(unit * C + rank) * k * w;
  // Element tid + j * threads of the slice: running max of the lse, sum of weights, weighted sum.
  float M[kE], W[kE], A[kE];
#pragma unroll
  for (int j = 0; j < kE; ++j) M[j] = -INFINITY, W[j] = A[j] = 0.f;
  const int per_round = we < kGroupMergeRound ? kGroupMergeRound / we : 1;  // clusters a round
  for (int c0 = 0; c0 < k; c0 += per_round) {
    const int n = (k - c0 < per_round ? k - c0 : per_round) * we;  // partials this round
    float2 p[kGroupMergeRound / THREADS];  // all issued before any is used
#pragma unroll
    for (int j = 0; j < kGroupMergeRound / THREADS; ++j) {
      const int i = tid + j * THREADS;
      if (i < n) p[j] = __ldcg(&part[int64_t(c0 + i / we) * w + i % we]);
    }
#pragma unroll
    for (int j = 0; j < kGroupMergeRound / THREADS; ++j) {
      const int i = tid + j * THREADS;
      if (i < n) s_part[i] = p[j];
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kE; ++j) {
      const int e = tid + j * THREADS;
      if (e >= we) continue;
      float m = M[j];
      for (int i = e; i < n; i += we) m = fmaxf(m, s_part[i].y);
      if (m == -INFINITY) continue;  // every cluster so far was empty
      const float f = exp2f(M[j] - m);  // 0 while the running max is -inf
      W[j] *= f;
      A[j] *= f;
      for (int i = e; i < n; i += we) {
        const float wt = exp2f(s_part[i].y - m);  // 0 for an empty cluster
        W[j] += wt;
        A[j] += wt * s_part[i].x;
      }
      M[j] = m;
    }
    __syncthreads();  // s_part is refilled by the next round
  }
  trace_phase(a, kPhaseMergeSums);
#pragma unroll
  for (int j = 0; j < kE; ++j) {
    const int e = tid + j * THREADS, idx = e0 + e, gg = hc * a.heads_per_cta + idx / D;
    if (e < we && gg < a.group)
      store_out(a.out, a.out_dtype, (int64_t(b) * a.num_q_heads + int64_t(h) * a.group + gg) * D + idx % D,
                W[j] > 0.f ? A[j] / W[j] : 0.f);
  }
  trace_phase(a, kPhaseEnd);
  trace_end(a, rank == 0 ? 2 : 1);
  if (rank == 0 && tid == 0 && hc == 0) write_dense_stats(a, bh);
}

// The barrier on which the peers' pushes into this CTA land (cluster_combine): static shared
// memory, at the same offset in every CTA of the cluster.
__device__ __forceinline__ uint64_t* combine_barrier() {
  __shared__ __align__(8) uint64_t bar;
  return &bar;
}

// The unit's n = heads_per_cta * D outputs in slices of w elements, one a rank of the cluster of
// C CTAs: rank r owns [begin(r), end(r)), the last slices shorter or empty. Dense: w = ceil(n /
// C). Routed (ROUTED): whole heads, w = ceil(heads_per_cta / C) * D, so that each head's output
// norm, which the error bound needs, is summed in the CTA that owns the head (ranks past the
// heads own nothing; with one atomic-free exchange of the norms instead, run 25b, rank 0 waited
// 1.3-2.4 us for its peers' norms).
struct OutputSlices {
  int n, w;
  __device__ __forceinline__ int begin(int rank) const { return min(rank * w, n); }
  __device__ __forceinline__ int end(int rank) const { return min(rank * w + w, n); }
};
template <int D, bool ROUTED>
__device__ __forceinline__ OutputSlices output_slices(const AttnArgs& a) {
  const int n = a.heads_per_cta * D;
  return OutputSlices{n, ROUTED ? (a.heads_per_cta + a.cluster - 1) / a.cluster * D : (n + a.cluster - 1) / a.cluster};
}
// Floats a CTA receives: C * w (<= n + C - 1 for dense; routed <= max(C, heads_per_cta + C - 1) * D).
template <int D, bool ROUTED>
constexpr int kReceivedFloats = ROUTED ? (kMaxClusterCtas + kClusterHeads) * D : kClusterHeads * D + kMaxClusterCtas;

// Before the CTA's "started" arrival (cluster_arrive_relaxed): thread 0 readies
// combine_barrier() for the bytes the C peers (itself included) will push into this CTA's
// slice: from each, its elements of the slice (4 bytes each) and each head's (m, l) (8 bytes).
template <int D, bool ROUTED>
__device__ __forceinline__ void combine_barrier_init(const AttnArgs& a, int split) {
  if (threadIdx.x != 0) return;
  const int rank = split % a.cluster;
  const OutputSlices slices = output_slices<D, ROUTED>(a);
  const int elements = slices.end(rank) - slices.begin(rank);
  cluster_barrier_expect(combine_barrier(), unsigned(a.cluster * (elements * 4 + a.heads_per_cta * 8)));
}

// What a CTA received from its cluster's peers (cluster_combine): acc elements
// recv_acc[p * w + idx - e0] and (m, l) of head g recv_ml[p * kClusterHeads + g] from peer p < C.
template <int D>
struct ReceivedSlice {
  const float* recv_acc;
  const float2* recv_ml;
  int C, w, e0;
  // Element idx of the unit's output merged over the peers: (m, l, acc) as merge_partials
  // computes them (max, exp2-weighted sums); m = -inf, l = acc = 0 where every split was empty.
  __device__ __forceinline__ float3 merge(int idx) const {
    const int g = idx / D;
    float2 ml[kMaxClusterCtas];
    float x[kMaxClusterCtas];
    float M = -INFINITY;
#pragma unroll
    for (int p = 0; p < kMaxClusterCtas; ++p)
      if (p < C) {
        ml[p] = recv_ml[p * kClusterHeads + g];
        x[p] = recv_acc[p * w + idx - e0];
        M = fmaxf(M, ml[p].x);
      }
    float L = 0.f, A = 0.f;
    if (M != -INFINITY)
#pragma unroll
      for (int p = 0; p < kMaxClusterCtas; ++p)
        if (p < C) {
          const float wt = exp2f(ml[p].x - M);  // 0 for an empty split (m = -inf)
          L += ml[p].y * wt;
          A += x[p] * wt;
        }
    return make_float3(M, L, A);
  }
};

// Several clusters a unit: this cluster's partial of the CTA's slice [e0, e1), then the
// second merge (merge_cluster_groups). (Out of line it made every dense call 5-40 % slower,
// run 15e: a call in the kernel changes its whole register allocation.)
template <int D, int THREADS>
__device__ __forceinline__ void cluster_partials_and_merge(const AttnArgs& a, int unit, int split,
                                                       const ReceivedSlice<D> slice, int e1, float2* scratch) {
  const int C = a.cluster, rank = split % C, k = a.cluster_groups, e0 = slice.e0, w = slice.w;
  float2* part = reinterpret_cast<float2*>(a.part_acc) + (int64_t(unit * C + rank) * k + split / C) * w - e0;
  for (int idx = e0 + int(threadIdx.x); idx < e1; idx += THREADS) {
    const float3 r = slice.merge(idx);
    part[idx] = r.y > 0.f ? make_float2(r.z / r.y, r.x + log2f(r.y)) : make_float2(0.f, -INFINITY);
  }
  if (e0 < e1) merge_cluster_groups<D, THREADS>(a, unit, rank, e0, e1, w, scratch);  // (every cluster's rank r alike)
  else trace_end(a, 1);
}

// The combine, for the CTA of split `split` of its unit (rank split % C in its cluster of C,
// cluster split / C of the unit's AttnArgs::cluster_groups). `states` holds this CTA's warps'
// states (WarpStates: m(g), l(g, m) and acc(g, d, m) merge them; the caller has synchronised
// them). Output element idx of the unit's n = heads_per_cta * D belongs to rank idx / w
// (output_slices); the owner receives, from every peer p, acc in recv_acc[p * w + idx - owner
// * w] and each head's (m, l) in recv_ml[p][g], then merges them as merge_partials does (max,
// exp2-weighted sums, 1 / L) and writes the output, or with several clusters a unit its
// cluster's partial (merge_cluster_groups). A thread pushes 4 consecutive elements (one
// 16-byte store where w is a multiple of 4), and the (m, l) stores are spread over the
// threads, one a (peer, head). Every CTA arrived on the cluster barrier when it started
// (cluster_arrive_relaxed), after readying its combine_barrier(): the wait here comes before
// the first remote store, so no CTA writes into a peer that has not started. The pushes are
// asynchronous stores counted on the owner's combine_barrier(), and each CTA waits there for
// the bytes of its own slice only: no second cluster barrier, whose arrival would first wait
// for every remote store's acknowledgement (kernel run 24c). scratch: kGroupMergeRound float2 of
// shared memory that is free once the states are pushed (the peers write only recv_acc and
// recv_ml; merge_cluster_groups synchronises the CTA before it writes scratch).
// GROUPS: the kernel instance for cluster_groups > 1 (the second merge's code is only there).
// ROUTED: routed decode (one cluster a unit): the statistics are the routing pass's, but for
// the bound on the output's error, max over the heads g of skipped_v_g + delta_g ||o_g|| (as
// finish_split): each CTA owns whole heads (output_slices) and takes its heads' bound.
template <int D, bool ROUTED, bool GROUPS, int THREADS, typename States>
__device__ void cluster_combine(const AttnArgs& a, int unit, int split, const States& states, float2* scratch) {
  static_assert(!(ROUTED && GROUPS), "routed decode has one cluster a unit");
  __shared__ __align__(16) float recv_acc[kReceivedFloats<D, ROUTED>];
  __shared__ float2 recv_ml[kMaxClusterCtas * kClusterHeads];
  __shared__ float s_norm2[kClusterHeads];  // routed: the squared norm of each head this CTA owns
  const int C = a.cluster, rank = split % C;
  const int gc = a.heads_per_cta, tid = int(threadIdx.x);
  const int bh = unit / a.head_chunks, hc = unit % a.head_chunks;
  const int H = a.kv.num_kv_heads, b = bh / H, h = bh % H;
  const OutputSlices slices = output_slices<D, ROUTED>(a);
  const int n = slices.n, w = slices.w;
  const int e0 = slices.begin(rank), e1 = slices.end(rank);
  // Routed: the certificate's terms of head tid where this CTA owns it, loaded now.
  const HeadCertificate cert =
      ROUTED ? HeadCertificate::load(a, b, h, hc, tid, tid * D >= e0 && tid * D < e1) : HeadCertificate{};
  if (ROUTED && tid < kClusterHeads) s_norm2[tid] = 0.f;
  static_assert(D % 4 == 0, "a thread's 4 elements lie in one head");
  uint64_t* const bar = combine_barrier();  // (each store counts on its owner's)
  cluster_wait();  // every peer has started (phase 0 of the cluster barrier)
  for (int q = tid; q < n / 4; q += THREADS) {
    const int idx = 4 * q, g = idx / D, d = idx % D;
    const float4 v = states.acc4(g, d, states.m(g));
    if (w % 4 == 0) {  // the 4 elements have one owner, and the slot is 16-byte aligned
      const int owner = idx / w;
      store_cluster_async(reinterpret_cast<float4*>(&recv_acc[rank * w + idx - owner * w]), unsigned(owner), v, bar);
    } else {
      const float e[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int owner = (idx + j) / w;
        store_cluster_async(&recv_acc[rank * w + idx + j - owner * w], unsigned(owner), e[j], bar);
      }
    }
  }
  for (int t = tid; t < C * gc; t += THREADS) {  // (m, l) of head t % gc to peer t / gc
    const int g = t % gc;
    const float M = states.m(g);
    store_cluster_async(&recv_ml[rank * kClusterHeads + g], unsigned(t / gc), make_float2(M, states.l(g, M)), bar);
  }
  trace_phase(a, kPhaseCtaMerged);
  cluster_barrier_wait(bar);  // every peer's stores into this CTA have landed
  trace_phase(a, kPhaseTicket);
  const ReceivedSlice<D> slice{recv_acc, recv_ml, C, w, e0};
  // Every warp of the cluster is past its last claim (dynamic splits); with several clusters
  // a unit, merge_cluster_groups' last rank-0 CTA returns the counter instead.
  if (!GROUPS && rank == 0 && tid == 0 && a.claims != nullptr) a.claims[unit] = 0;
  // No CTA reads a peer's shared memory, and no peer writes into this one any more: each
  // may leave when done.
  if constexpr (GROUPS) {  // (its own loop: the one-cluster loop stays that of run 14f)
    cluster_partials_and_merge<D, THREADS>(a, unit, split, slice, e1, scratch);
    return;
  }
  trace_phase(a, kPhaseMergeWeights);  // (no weights step of its own)
  float sq[kClusterHeads] = {};  // routed: this thread's squared outputs, by head
  for (int idx = e0 + tid; idx < e1; idx += THREADS) {
    const float3 r = slice.merge(idx);
    const int gg = hc * gc + idx / D;
    const float o = r.y > 0.f ? r.z / r.y : 0.f;
    if (gg < a.group) {
      store_out(a.out, a.out_dtype, (int64_t(b) * a.num_q_heads + int64_t(h) * a.group + gg) * D + idx % D, o);
      if (ROUTED)
#pragma unroll
        for (int g = 0; g < kClusterHeads; ++g) sq[g] += g == idx / D ? o * o : 0.f;  // (registers, not a local array)
    }
  }
  trace_phase(a, kPhaseMergeSums);
  if constexpr (ROUTED) {
    __syncthreads();  // s_norm2 zeroed
#pragma unroll
    for (int g = 0; g < kClusterHeads; ++g)
      if (__any_sync(0xffffffffu, sq[g] != 0.f)) warp_sum_into(sq[g], &s_norm2[g]);  // (uniform in the warp)
    __syncthreads();
    if (e0 < e1 && tid < 32) cert.publish(a, bh, s_norm2);  // the bound over the heads this CTA owns
  }
  trace_phase(a, kPhaseEnd);
  trace_end(a, rank == 0 ? 2 : 1);
  if (!ROUTED && rank == 0 && tid == 0 && hc == 0) write_dense_stats(a, bh);
}

}  // namespace sinkrouter::cuda
