// Bulk copies (sm_90): one contiguous range from global into shared memory by the tensor
// memory accelerator, without a tensor map, its bytes counted on an mbarrier (cuda_tma.cuh's
// mbarrier_* wrappers). One instruction copies what cp.async needs a lane a 16-byte piece for,
// and its completion is the barrier's, not the issuing threads' wait groups.
//
// Only usable in device code for sm_90 and later (guard with __CUDA_ARCH__ >= 900).
#pragma once

#include <cstdint>

namespace sinkrouter::cuda {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900

// `bytes` (a multiple of 16; both addresses 16-byte aligned) from global src into shared memory
// at dst, signalled on the mbarrier at bar.
__device__ __forceinline__ void bulk_load(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}

// Orders this thread's earlier generic-proxy accesses of shared memory before its later
// async-proxy ones: a bulk copy into bytes that threads read or wrote before a barrier.
__device__ __forceinline__ void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

#endif  // __CUDA_ARCH__ >= 900

}  // namespace sinkrouter::cuda
