// Thread-block clusters (sm_90): the cluster-wide barrier (in halves) and stores into another
// CTA's shared memory (distributed shared memory) counted on the receiver's mbarrier. Internal
// header, CUDA builds only. Below sm_90 there are no clusters: the functions trap, and the host
// side never launches a clustered kernel there (CudaDecoder checks that the sm_90a code runs).
#pragma once

#include <cstdint>

#include "core/cuda_tma.cuh"

namespace sinkrouter::cuda {

// The cluster-wide barrier in two halves, called by all threads of every CTA (the .aligned
// forms), for a barrier whose wait comes long after its arrival. arrive_relaxed orders nothing
// beyond fences before it (e.g. "this CTA has started", after readying its mbarriers: a CTA
// must not touch a peer's shared memory before the peer has started); wait_acquire makes what
// the peers released before their arrival visible.
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

// Asynchronous stores into the shared memory of the cluster's CTA `rank` that count their
// bytes on that CTA's mbarrier at `bar`'s offset (st.async ... mbarrier::complete_tx): the
// receiver learns that they landed by waiting on its own barrier (cluster_barrier_wait), with
// no cluster-wide barrier, and the writer does not wait for them. float, float2 and float4
// (8- and 16-byte aligned).
__device__ __forceinline__ void store_cluster_async(float* local, unsigned rank, float v, const uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];\n" ::"r"(
                   cluster_address(local, rank)),
               "r"(__float_as_uint(v)), "r"(cluster_address(bar, rank))
               : "memory");
#else
  (void)local, (void)rank, (void)v, (void)bar;
  __trap();
#endif
}
__device__ __forceinline__ void store_cluster_async(float2* local, unsigned rank, float2 v, const uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.b32 [%0], {%1, %2}, [%3];\n" ::"r"(
                   cluster_address(local, rank)),
               "r"(__float_as_uint(v.x)), "r"(__float_as_uint(v.y)), "r"(cluster_address(bar, rank))
               : "memory");
#else
  (void)local, (void)rank, (void)v, (void)bar;
  __trap();
#endif
}
__device__ __forceinline__ void store_cluster_async(float4* local, unsigned rank, float4 v, const uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, [%5];\n" ::"r"(
                   cluster_address(local, rank)),
               "r"(__float_as_uint(v.x)), "r"(__float_as_uint(v.y)), "r"(__float_as_uint(v.z)),
               "r"(__float_as_uint(v.w)), "r"(cluster_address(bar, rank))
               : "memory");
#else
  (void)local, (void)rank, (void)v, (void)bar;
  __trap();
#endif
}

// This CTA's barrier `bar` for the bytes of store_cluster_async: init for one arrival (thread
// 0's, which also announces `bytes`), made visible to the cluster by the release fence; the
// peers may store only after a cluster barrier phase that follows this (cluster_arrive_relaxed
// after it, cluster_wait in the peer before its first store).
__device__ __forceinline__ void cluster_barrier_expect(uint64_t* bar, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(bar));
  mbarrier_init(addr, 1);  // (core/cuda_tma.cuh)
  mbarrier_arrive_expect_tx(addr, bytes);
  fence_mbarrier_init();
#else
  (void)bar, (void)bytes;
  __trap();
#endif
}
// Blocks until every byte announced on `bar` (cluster_barrier_expect) has landed; acquires the
// peers' stores (cluster scope). Its first phase only: the barrier serves one exchange.
__device__ __forceinline__ void cluster_barrier_wait(uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(bar));
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 done, [%0], 0;\n"
      "@!done bra WAIT_%=;\n"
      "}\n" ::"r"(addr)
      : "memory");
#else
  (void)bar;
  __trap();
#endif
}

}  // namespace sinkrouter::cuda
