// Global loads that ask the L2 to keep their lines (evict_last), for small data that every
// call reads again while much larger data streams through the L2 between two reads: the
// decode kernels' lengths, page-list starts and page ids, read before any K/V byte, while the
// K/V a call streams (hundreds of MB at long contexts, the other layers' K/V in the engine)
// would otherwise evict them, so that each call found them in DRAM (a round trip more).
#pragma once

#include <cstdint>

namespace sinkrouter::cuda {

// The cache policy to pass to ld_keep (one instruction; make it once a thread).
__device__ __forceinline__ uint64_t l2_keep_policy() {
  uint64_t policy = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;\n" : "=l"(policy));
#endif
  return policy;
}

// *p, its line marked evict_last in the L2 under `policy` (l2_keep_policy).
__device__ __forceinline__ int32_t ld_keep(const int32_t* p, uint64_t policy) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  int32_t v;
  asm volatile("ld.global.L2::cache_hint.b32 %0, [%1], %2;\n" : "=r"(v) : "l"(p), "l"(policy));
  return v;
#else
  (void)policy;
  return *p;
#endif
}

}  // namespace sinkrouter::cuda
