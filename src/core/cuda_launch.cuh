// Programmatic dependent launch (PDL, compute capability 9.0+) for the decode step's
// kernels: the GEMVs, the KV append, the routing and the attention (internal header, CUDA
// builds only).
//
// A decode step is a chain of ~180 small dependent kernels; without PDL each one starts
// only after its predecessor has drained, and then waits for its first DRAM reads. With
// PDL a kernel is launched while its predecessor still runs, reads what does not depend on
// it (the weights: constant) into registers, and only then waits (pdl_wait) for the
// predecessor's completion and memory flush; a kernel with nothing constant to read (the
// append, the routing) waits first thing and gains the launch itself. (The decode attention
// reads its fixed page tables before the wait: it calls the three steps of pdl_begin itself.)
// Rules every PDL kernel here follows:
//   - before pdl_wait(): read only constant data (weights; the decode attention's fixed page
//     tables, DeviceKV::tables_fixed), write nothing;
//   - every thread calls pdl_wait() before it exits (so that the kernel cannot complete
//     before its predecessor has: later kernels rely on completion being transitive);
//   - pdl_launch_dependents() right after the wait: the next kernel may then be launched
//     to prefetch its own weights (it starts only once every CTA of this grid is running
//     or done, so it can never starve this one). One exception: fused fast mode's routing
//     pass leaves it to its CTAs' exit, so that the attention clusters after it are placed
//     on an idle GPU (decode_cuda_route.cu, CudaDecodeOptions::route_trigger).
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

// Reads one word of every 64 bytes of a kernel's by-value parameter struct. Why: a
// kernel's parameters live in a constant bank that each launch brings in anew, and an
// instruction whose operand misses the constant cache stalls its warp until the line
// arrives (ncu, run 5e: "imc_miss" was ~14 % of the attention kernel's stalls at SmolLM2
// 8K), one miss after another as the code reaches new fields. Called before pdl_wait()
// (parameters are constant), the misses overlap the kernel before instead.
// The words are folded into the condition of a store to a dummy variable that no one
// reads (it happens only if the fold equals a value that depends on the thread: in effect
// never, and harmless if it does), so that the reads are neither removed as dead nor sunk
// into a branch.
static __device__ unsigned g_warm_params_sink;
template <typename Params>
__device__ __forceinline__ void warm_params(const Params& p) {
  const unsigned* w = reinterpret_cast<const unsigned*>(&p);
  unsigned fold = 0;
#pragma unroll
  for (int i = 0; i < int(sizeof(Params) / 4); i += 16) fold ^= w[i];
  fold ^= w[sizeof(Params) / 4 - 1];  // the last line, wherever the struct starts in it
  if ((fold ^ threadIdx.x) == 0x7fffd1c3u) g_warm_params_sink = fold;
}

// What every PDL kernel here does before it reads its predecessor's output: its parameter
// lines into the constant cache, the wait, and the go-ahead for its own dependents
// (launch_dependents false: none here, so each CTA gives it at its exit; the routing pass's
// exception above).
template <typename Params>
__device__ __forceinline__ void pdl_begin(const Params& p, bool launch_dependents = true) {
  warm_params(p);
  pdl_wait();
  if (launch_dependents) pdl_launch_dependents();
}

// A ticket on a counter shared by the CTAs of a grid: returns the count before this CTA's
// arrival. Called by one thread after a __syncthreads that follows the CTA's stores: the
// acquire-release add publishes those stores (release is cumulative over what the barrier
// ordered before it) and, for the CTA that sees the last count, makes every other CTA's
// published stores visible (acquire; a __syncthreads after it extends that to the CTA).
// One instruction instead of a fence, an atomic add and a second fence (v6, docs/PERF.md).
__device__ __forceinline__ unsigned grid_ticket(unsigned* counter) {
  unsigned old;
  asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;" : "=r"(old) : "l"(counter) : "memory");
  return old;
}

// Whether launches get the programmatic-serialization attribute: the current device is
// 9.0 or newer and SINKROUTER_PDL is not "0" (decided once per process).
bool pdl_enabled();

// kernel<<<grid, block, smem, stream>>>(args...), with the PDL attribute when enabled, in
// clusters of `cluster_x` CTAs along x when that is more than 1 (grid.x a multiple of it;
// sm_90, and a kernel allowed clusters that large: cudaFuncAttributeNonPortableClusterSizeAllowed
// past 8).
template <typename... Params, typename... Args>
void launch_pdl_clustered(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                          int cluster_x, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (pdl_enabled()) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  if (cluster_x > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = unsigned(cluster_x);
    attr[n].val.clusterDim.y = 1;
    attr[n].val.clusterDim.z = 1;
    ++n;
  }
  cfg.attrs = n > 0 ? attr : nullptr;
  cfg.numAttrs = n;
  SR_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

// kernel<<<grid, block, smem, stream>>>(args...), with the PDL attribute when enabled.
template <typename... Params, typename... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                Args&&... args) {
  launch_pdl_clustered(kernel, grid, block, smem, stream, 1, std::forward<Args>(args)...);
}

}  // namespace sinkrouter::cuda
