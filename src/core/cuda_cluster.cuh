// Thread-block clusters (sm_90): the cluster-wide barrier (whole or in halves) and stores
// into another CTA's shared memory (distributed shared memory). Internal header,
// CUDA builds only. Below sm_90 there are no clusters: the functions trap, and the host
// side never launches a clustered kernel there (CudaDecoder checks that the sm_90a code
// runs).
#pragma once

#include <cstdint>

namespace sinkrouter::cuda {

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

// The two halves of cluster_sync(), for a barrier whose wait comes long after its arrival.
// arrive_relaxed orders nothing (e.g. "this CTA has started": a CTA must not touch a peer's
// shared memory before the peer has started); wait_acquire is cluster_sync's wait.
__device__ __forceinline__ void cluster_arrive_relaxed() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
__device__ __forceinline__ void cluster_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}

// The address of `local` (this CTA's shared memory) in the shared memory of the cluster's
// CTA `rank`: the same offset in that CTA's window.
__device__ __forceinline__ unsigned cluster_address(const void* local, unsigned rank) {
  unsigned remote = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(local));
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(addr), "r"(rank));
#else
  (void)local;
  (void)rank;
  __trap();
#endif
  return remote;
}

// Stores v at `local`'s offset in the shared memory of the cluster's CTA `rank` (fire and
// forget: the writer does not wait; a cluster barrier's release publishes it). float, float2
// and float4 (8- and 16-byte aligned).
__device__ __forceinline__ void store_cluster_shared(float* local, unsigned rank, float v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("st.shared::cluster.f32 [%0], %1;\n" ::"r"(cluster_address(local, rank)), "f"(v) : "memory");
#else
  __trap();
#endif
}
__device__ __forceinline__ void store_cluster_shared(float2* local, unsigned rank, float2 v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("st.shared::cluster.v2.f32 [%0], {%1, %2};\n" ::"r"(cluster_address(local, rank)), "f"(v.x), "f"(v.y)
               : "memory");
#else
  __trap();
#endif
}
__device__ __forceinline__ void store_cluster_shared(float4* local, unsigned rank, float4 v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("st.shared::cluster.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"r"(cluster_address(local, rank)), "f"(v.x),
               "f"(v.y), "f"(v.z), "f"(v.w)
               : "memory");
#else
  __trap();
#endif
}

}  // namespace sinkrouter::cuda
