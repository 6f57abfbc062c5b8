// Host side of the tensor-core decode attention kernel (decode_cuda_attention_mma.cuh):
// its shared-memory limit and occupancy, cluster residency and launch, and the entry points
// declared in decode_cuda_kernels.cuh, included by the generated instantiation files.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "decode_cuda_attention_mma.cuh"

namespace sinkrouter::cuda {

// The kernel instances a plan may launch: routed, with static or dynamic splits (DYN); dense,
// with and without the second merge over clusters (attention_mma_kernel's GROUPS), each with
// static or dynamic splits.
template <int D, typename Tag, bool ROUTED, bool TMA>
std::vector<const void*> mma_kernels() {
  std::vector<const void*> k{reinterpret_cast<const void*>(attention_mma_kernel<D, Tag, ROUTED, TMA>)};
  if constexpr (ROUTED) {
    k.push_back(reinterpret_cast<const void*>(attention_mma_kernel<D, Tag, true, TMA, false, true>));
  } else {
    k.push_back(reinterpret_cast<const void*>(attention_mma_kernel<D, Tag, false, TMA, true>));
    k.push_back(reinterpret_cast<const void*>(attention_mma_kernel<D, Tag, false, TMA, false, true>));
    k.push_back(reinterpret_cast<const void*>(attention_mma_kernel<D, Tag, false, TMA, true, true>));
  }
  return k;
}

// The instances of the wide CTAs (AttnArgs::wide): dense, with and without the second merge,
// each with static or dynamic splits; routed, in cluster mode (static splits, one cluster a unit).
template <int D, typename Tag, bool TMA>
std::vector<const void*> mma_wide_kernels(bool routed) {
  constexpr int W = kWideWarps;
  if (routed) return {reinterpret_cast<const void*>(attention_mma_kernel<D, Tag, true, TMA, false, false, W>)};
  return {reinterpret_cast<const void*>(attention_mma_kernel<D, Tag, false, TMA, false, false, W>),
          reinterpret_cast<const void*>(attention_mma_kernel<D, Tag, false, TMA, true, false, W>),
          reinterpret_cast<const void*>(attention_mma_kernel<D, Tag, false, TMA, false, true, W>),
          reinterpret_cast<const void*>(attention_mma_kernel<D, Tag, false, TMA, true, true, W>)};
}

// A CTA's dynamic shared memory: the shape's, or min_smem where that is more.
template <int D, bool TMA, int W = 4>
int mma_smem(int min_smem) {
  return std::max(TMA ? MmaShape<D, W>::kTmaSmemBytes : MmaShape<D, W>::kSmemBytes, min_smem);
}

// The least of count(kernel) over the instances, each allowed `smem` first.
template <typename Count>
int fewest_over(const std::vector<const void*>& kernels, int smem, Count count) {
  int fewest = INT32_MAX;
  for (const void* kernel : kernels) {
    raise_smem_limit(kernel, smem);
    fewest = std::min(fewest, count(kernel));
  }
  return fewest;
}

// {0, 0} for the TMA kernel where its sm_90a code cannot run (the plan then says so or
// falls back to cp.async). The fewest CTAs an SM over the instances a plan may launch.
template <int D, typename Tag, bool ROUTED, bool TMA>
AttnKernelInfo mma_prepare_one(int min_smem) {
  const std::vector<const void*> kernels = mma_kernels<D, Tag, ROUTED, TMA>();
  if (TMA && !sm90a_code_runs_here(kernels[0])) return {0, 0};
  const int smem = mma_smem<D, TMA>(min_smem);
  return {smem, fewest_over(kernels, smem, [&](const void* kernel) {
            int blocks = 0;
            SR_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, MmaShape<D>::kThreads, smem));
            return blocks;
          })};
}

// Clusters of `cluster` CTAs of the dense (routed: routed) kernel (cluster mode,
// decode_cuda_cluster.cuh; wide: its wide CTAs) that can be resident at once, the fewest over
// its instances; 0 where none can (no sm_90a code here, or too little room).
template <int D, typename Tag, bool TMA>
int mma_cluster_capacity(int cluster, int min_smem, bool wide, bool routed) {
  constexpr int W = kWideWarps;
  const std::vector<const void*> kernels = wide     ? mma_wide_kernels<D, Tag, TMA>(routed)
                                           : routed ? mma_kernels<D, Tag, true, TMA>()
                                                    : mma_kernels<D, Tag, false, TMA>();
  if (!sm90a_code_runs_here(kernels[0])) return 0;
  const int smem = wide ? mma_smem<D, TMA, W>(min_smem) : mma_smem<D, TMA>(min_smem);
  const int threads = wide ? MmaShape<D, W>::kThreads : MmaShape<D>::kThreads;
  return fewest_over(kernels, smem, [&](const void* kernel) { return resident_clusters(kernel, threads, smem, cluster); });
}

template <int D, typename Tag, bool ROUTED, bool GROUPS, bool DYN, int W>
void mma_launch_warps(const AttnArgs& a, const CUtensorMap* kv_map, int grid, int smem, cudaStream_t stream) {
  const int cluster = a.cluster > 0 ? a.cluster : 1;
  if (kv_map != nullptr) {
    launch_pdl_clustered(attention_mma_kernel<D, Tag, ROUTED, true, GROUPS, DYN, W>, dim3(unsigned(grid)),
                         dim3(MmaShape<D, W>::kThreads), smem, stream, cluster, a, *kv_map);
    return;
  }
  static const CUtensorMap blank{};
  launch_pdl_clustered(attention_mma_kernel<D, Tag, ROUTED, false, GROUPS, DYN, W>, dim3(unsigned(grid)),
                       dim3(MmaShape<D, W>::kThreads), smem, stream, cluster, a, blank);
}

// The wide CTAs where the plan took them (cluster mode; routed: static splits), their shared
// memory the larger of theirs and `smem` (as mma_cluster_capacity raised their limit); else 4 warps.
template <int D, typename Tag, bool ROUTED, bool GROUPS, bool DYN>
void mma_launch_instance(const AttnArgs& a, const CUtensorMap* kv_map, int grid, int smem, cudaStream_t stream) {
  constexpr int W = kWideWarps;
  if constexpr (!(ROUTED && DYN)) {
    if (a.cluster > 0 && a.wide) {
      const int wide_smem = std::max(smem, kv_map != nullptr ? mma_smem<D, true, W>(0) : mma_smem<D, false, W>(0));
      mma_launch_warps<D, Tag, ROUTED, GROUPS, DYN, W>(a, kv_map, grid, wide_smem, stream);
      return;
    }
  }
  mma_launch_warps<D, Tag, ROUTED, GROUPS, DYN, 4>(a, kv_map, grid, smem, stream);
}

// kv_map null: the cp.async kernel (it is passed a blank map it never reads). With a.cluster
// > 0: in clusters of that many CTAs, dense with the GROUPS instance where a unit has several;
// with a.claims (dense or routed): the DYN instance. smem: mma_prepare_one's smem_bytes.
template <int D, typename Tag, bool ROUTED, bool DYN>
void mma_launch_splits(const AttnArgs& a, const CUtensorMap* kv_map, int grid, int smem, cudaStream_t stream) {
  if (!ROUTED && a.cluster > 0 && a.cluster_groups > 1)
    mma_launch_instance<D, Tag, false, true, DYN>(a, kv_map, grid, smem, stream);
  else
    mma_launch_instance<D, Tag, ROUTED, false, DYN>(a, kv_map, grid, smem, stream);
}
template <int D, typename Tag, bool ROUTED>
void mma_launch_one(const AttnArgs& a, const CUtensorMap* kv_map, int grid, int smem, cudaStream_t stream) {
  if (a.claims != nullptr)
    mma_launch_splits<D, Tag, ROUTED, true>(a, kv_map, grid, smem, stream);
  else
    mma_launch_splits<D, Tag, ROUTED, false>(a, kv_map, grid, smem, stream);
}

#define SR_DEFINE_ATTENTION_MMA_INSTANCES(D, TAG, SUFFIX)                                              \
  AttnKernelInfo attention_mma_prepare_##SUFFIX(bool routed, bool tma, int min_smem) {                 \
    if (routed)                                                                                        \
      return tma ? mma_prepare_one<D, TAG, true, true>(min_smem) : mma_prepare_one<D, TAG, true, false>(min_smem); \
    return tma ? mma_prepare_one<D, TAG, false, true>(min_smem) : mma_prepare_one<D, TAG, false, false>(min_smem); \
  }                                                                                                    \
  int attention_mma_clusters_##SUFFIX(bool tma, int cluster, int min_smem, bool wide, bool routed) {   \
    return tma ? mma_cluster_capacity<D, TAG, true>(cluster, min_smem, wide, routed)                   \
               : mma_cluster_capacity<D, TAG, false>(cluster, min_smem, wide, routed);                 \
  }                                                                                                    \
  void attention_mma_launch_##SUFFIX(const AttnArgs& a, bool routed, const CUtensorMap* kv_map, int grid, \
                                     int smem, cudaStream_t s) {                                       \
    if (routed)                                                                                        \
      mma_launch_one<D, TAG, true>(a, kv_map, grid, smem, s);                                          \
    else                                                                                               \
      mma_launch_one<D, TAG, false>(a, kv_map, grid, smem, s);                                         \
  }

}  // namespace sinkrouter::cuda
