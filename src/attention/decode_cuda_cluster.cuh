// Cluster mode of the tensor-core dense decode kernel (AttnArgs::cluster, sm_90): the
// schedule (unit u is cluster u; its C CTAs split its tokens evenly) and the combine
// through distributed shared memory that replaces the flat Split-K list's partials, tickets
// and last-CTA merge (decode_cuda_split.cuh).
//
// Why: at small contexts a decode call is a chain of round trips, not bytes. Kernel run 5f
// (SmolLM2 B=1 8K, 13.1 us) spent 1.2 us finding the split (a block-wide reduction and scan
// over the units' lengths), 0.8 us on the ticket and 3.2 us in the last CTA's combine (the
// partials' (m, l) and sums through L2, four CTA barriers). Here a CTA knows its split from
// its index, and the combine is one cluster barrier, one batch of loads from the peers'
// shared memory (all in flight together, no CTA barrier) and a second cluster barrier that
// keeps every CTA's state alive until its peers have read it. The cost: a unit's tokens
// are spread over at most 16 CTAs (the largest cluster), so this mode suits short contexts
// only (CudaDecodeOptions::cluster_max_tokens).
#pragma once

#include "core/cuda_cluster.cuh"
#include "decode_cuda_kernels.cuh"
#include "decode_cuda_split.cuh"

namespace sinkrouter::cuda {

// The largest cluster the combine handles (the hardware's largest, non-portable, size).
constexpr int kMaxClusterCtas = 16;

// Cluster mode's split of CTA `cta`: the unit is its cluster, the split its rank, and the
// unit's sequence length and page-list start are its tokens (two independent loads).
__device__ __forceinline__ void cluster_split(const AttnArgs& a, int cta, int* unit, int* split, int* splits,
                                              int64_t* tokens, int32_t* page_start) {
  *unit = cta / a.cluster;
  *split = cta % a.cluster;  // = cluster_rank() for clusters along x
  *splits = a.cluster;
  const int b = *unit / a.head_chunks / a.kv.num_kv_heads;
  *tokens = a.seq_lens[b];
  *page_start = a.kv.indptr[b];
}

// The combine. On entry this CTA's merged state over its split, for heads g < heads_per_cta,
// is in shared memory (s_m[g] in base 2, -inf when the split is empty; s_l[g]; s_acc[g * D
// + d]), written before a CTA barrier; every CTA of the cluster holds its own at the same
// offsets. CTA `rank` writes output elements [rank * n / C, (rank + 1) * n / C) of the
// unit's n = heads_per_cta * D: each thread loads, for each of its elements, every peer's
// m and l of the element's head and its acc (3 C loads in flight at once), and merges
// them as merge_partials does (max, then exp2-weighted sums, then 1 / L).
template <int D>
__device__ void finish_cluster(const AttnArgs& a, int unit, int rank, int C, const float* s_m, const float* s_l,
                               const float* s_acc) {
  const int gc = a.heads_per_cta, tid = int(threadIdx.x);
  const int bh = unit / a.head_chunks, hc = unit % a.head_chunks;
  const int H = a.kv.num_kv_heads, b = bh / H, h = bh % H;
  const int n = gc * D, e0 = rank * n / C, e1 = (rank + 1) * n / C;
  cluster_sync();  // every CTA's state is in its shared memory
  trace_phase(a, kPhaseTicket);
  trace_phase(a, kPhaseMergeWeights);  // (no weights step of its own: the loads carry them)
  for (int idx = e0 + tid; idx < e1; idx += kAttnThreads) {
    const int g = idx / D;
    float m[kMaxClusterCtas], l[kMaxClusterCtas], x[kMaxClusterCtas];
#pragma unroll
    for (int p = 0; p < kMaxClusterCtas; ++p)
      if (p < C) {
        m[p] = load_cluster_shared(&s_m[g], unsigned(p));
        l[p] = load_cluster_shared(&s_l[g], unsigned(p));
        x[p] = load_cluster_shared(&s_acc[idx], unsigned(p));
      }
    float M = -INFINITY;
#pragma unroll
    for (int p = 0; p < kMaxClusterCtas; ++p)
      if (p < C) M = fmaxf(M, m[p]);
    float L = 0.f, A = 0.f;
    if (M != -INFINITY)
#pragma unroll
      for (int p = 0; p < kMaxClusterCtas; ++p)
        if (p < C) {
          const float wt = exp2f(m[p] - M);  // 0 for an empty split (m = -inf)
          L += l[p] * wt;
          A += x[p] * wt;
        }
    const int gg = hc * gc + g;
    if (gg < a.group)
      store_out(a.out, a.out_dtype, (int64_t(b) * a.num_q_heads + int64_t(h) * a.group + gg) * D + idx % D,
                L > 0.f ? A / L : 0.f);
  }
  trace_phase(a, kPhaseMergeSums);
  cluster_sync();  // no CTA leaves (freeing its shared memory) while a peer may still read it
  trace_phase(a, kPhaseEnd);
  trace_end(a, rank == 0 ? 2 : 1);
  if (rank == 0 && tid == 0 && hc == 0) write_dense_stats(a, bh);
}

}  // namespace sinkrouter::cuda
