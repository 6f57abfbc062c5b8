// Thin wrappers over Hopper's tensor memory accelerator (TMA) and shared-memory mbarriers
// (sm_90), for the prefill attention kernel version 4 (model/cuda_prefill_tma.cu):
//
//   - an mbarrier (8 bytes of shared memory) counts arrivals and, for TMA, bytes: a phase
//     completes when `count` threads have arrived and every byte announced with
//     arrive_expect_tx has landed; waiters name the phase by its parity (0, 1, 0, ...);
//   - tma_load_5d copies one box of a tensor described by a CUtensorMap (built on the host,
//     passed as a __grid_constant__ kernel parameter) into shared memory, in the map's
//     swizzle, and signals the bytes on an mbarrier.
//
// Only usable in device code for sm_90 and later: callers guard with SINKROUTER_WGMMA_ENABLED
// (the kernels that use them are sm_90a ones).
#pragma once

#include <cstdint>

namespace sinkrouter::cuda {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900

__device__ __forceinline__ void mbarrier_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// Makes mbarrier inits visible to the async proxy (TMA's completions); then a CTA barrier.
__device__ __forceinline__ void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// One arrival by the threads where `signal` holds, as a single predicated instruction (a
// lane-dependent branch in a wgmma loop would make ptxas serialise the wgmma).
__device__ __forceinline__ void mbarrier_arrive_if(uint32_t bar, bool signal) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %1, 0;\n"
      "@p mbarrier.arrive.shared::cta.b64 _, [%0];\n"
      "}\n" ::"r"(bar),
      "r"(int(signal))
      : "memory");
}
// One arrival that also announces `bytes` still to land in this phase.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// Blocks until the phase of parity `parity` has completed.
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

// The box at coordinates (c0 .. c4; c0 the innermost) of the 5-D tensor `map` into shared
// memory at dst (1024-byte aligned for the 128-byte swizzle), its bytes signalled on bar.
__device__ __forceinline__ void tma_load_5d(uint32_t dst, const void* map, uint32_t bar, int c0, int c1, int c2,
                                            int c3, int c4) {
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4, %5, %6}], [%7];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4), "r"(bar)
      : "memory");
}

#endif  // __CUDA_ARCH__ >= 900

}  // namespace sinkrouter::cuda
