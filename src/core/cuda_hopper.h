// Host-side helpers of the sm_90 kernels that use TMA and wgmma (the prefill attention
// versions 3 and 4, the decode attention's TMA copies): whether a kernel's sm_90a code runs
// on the current device, and the driver's tensor-map encoder.
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime_api.h>

namespace sinkrouter::cuda {

// Whether `kernel` (a __global__ function) has sm_90a code in this build and the current
// device is an sm_90 one; a failed query is "no", not a sticky error.
inline bool sm90a_code_runs_here(const void* kernel) {
  cudaFuncAttributes attr{};
  int dev = 0, major = 0, minor = 0;
  const bool ok = cudaFuncGetAttributes(&attr, kernel) == cudaSuccess && cudaGetDevice(&dev) == cudaSuccess &&
                  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
                  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess;
  (void)cudaGetLastError();
  return ok && major == 9 && minor == 0 && attr.binaryVersion == 90;
}

// The driver's cuTensorMapEncodeTiled, through the runtime (no link against libcuda);
// null where the driver lacks it.
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess)
      fn = nullptr;
    (void)cudaGetLastError();
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encode;
}

}  // namespace sinkrouter::cuda
