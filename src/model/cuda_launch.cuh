// Programmatic dependent launch (PDL, compute capability 9.0+) for the forward pass's
// kernels (internal header, CUDA builds only).
//
// A decode step is a chain of ~180 small dependent kernels; without PDL each one starts
// only after its predecessor has drained, and then waits for its first DRAM reads. With
// PDL a kernel is launched while its predecessor still runs, reads what does not depend on
// it (the weights: constant) into registers, and only then waits (pdl_wait) for the
// predecessor's completion and memory flush. Rules every PDL kernel here follows:
//   - before pdl_wait(): read only constant data (weights), write nothing;
//   - every thread calls pdl_wait() before it exits (so that the kernel cannot complete
//     before its predecessor has: later kernels rely on completion being transitive);
//   - pdl_launch_dependents() right after the wait: the next kernel may then be launched
//     to prefetch its own weights (it starts only once every CTA of this grid is running
//     or done, so it can never starve this one).
// On devices below 9.0, or with SINKROUTER_PDL=0, launches are plain and the two device
// calls are no-ops (they are also no-ops in a kernel launched without the attribute).
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "core/cuda_check.h"

namespace sinkrouter::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Whether launches get the programmatic-serialization attribute: the current device is
// 9.0 or newer and SINKROUTER_PDL is not "0" (decided once per process).
bool pdl_enabled();

// kernel<<<grid, block, smem, stream>>>(args...), with the PDL attribute when enabled.
template <typename... Params, typename... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  if (pdl_enabled()) {
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  SR_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

}  // namespace sinkrouter::cuda
