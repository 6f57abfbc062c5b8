// Thread-block clusters (sm_90): the CTA's rank in its cluster, the cluster-wide barrier,
// and loads from another CTA's shared memory (distributed shared memory). Internal header,
// CUDA builds only. Below sm_90 there are no clusters: the functions trap, and the host
// side never launches a clustered kernel there (CudaDecoder checks that the sm_90a code
// runs).
#pragma once

#include <cstdint>

namespace sinkrouter::cuda {

// The CTA's rank in its cluster (0 .. cluster size - 1; blockIdx.x % size for clusters
// along x).
__device__ __forceinline__ unsigned cluster_rank() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
#else
  __trap();
  return 0;
#endif
}

// Every thread of every CTA of the cluster arrives and waits: shared-memory stores before
// the barrier (release) are visible to loads after it in any CTA of the cluster (acquire).
// Called by all threads of the CTA (the .aligned forms).
__device__ __forceinline__ void cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "barrier.cluster.arrive.release.aligned;\n"
      "barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}

// The float at `local` (a shared-memory address of this CTA) in the shared memory of the
// cluster's CTA `rank`: the same offset in that CTA's window.
__device__ __forceinline__ float load_cluster_shared(const float* local, unsigned rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(local));
  unsigned remote;
  float v;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(addr), "r"(rank));
  asm volatile("ld.shared::cluster.f32 %0, [%1];\n" : "=f"(v) : "r"(remote) : "memory");
  return v;
#else
  (void)local;
  (void)rank;
  __trap();
  return 0.f;
#endif
}

}  // namespace sinkrouter::cuda
