// Error checking for CUDA runtime calls and kernel launches (internal header, CUDA
// builds only). Every failure becomes a sinkrouter::Error naming the call, the file
// and line, and CUDA's own description, so that a test can print what went wrong.
#pragma once

#include <cuda_runtime_api.h>

#include "sinkrouter/core/error.h"

// SR_CUDA_CHECK(cudaMalloc(&p, n)): throws Error on anything but cudaSuccess.
#define SR_CUDA_CHECK(call)                                                                  \
  do {                                                                                       \
    const cudaError_t sr_cuda_status = (call);                                               \
    if (sr_cuda_status != cudaSuccess)                                                       \
      ::sinkrouter::fail("CUDA error at {}:{}: {} returned {} ({})", __FILE__, __LINE__,     \
                         #call, cudaGetErrorName(sr_cuda_status),                            \
                         cudaGetErrorString(sr_cuda_status));                                \
  } while (0)

// After a kernel launch: reports launch-configuration errors without synchronising
// (cudaGetLastError is legal inside stream capture; it does not wait for the device).
#define SR_CUDA_CHECK_LAUNCH(what)                                                           \
  do {                                                                                       \
    const cudaError_t sr_cuda_status = cudaGetLastError();                                   \
    if (sr_cuda_status != cudaSuccess)                                                       \
      ::sinkrouter::fail("CUDA launch of {} failed at {}:{}: {} ({})", what, __FILE__,       \
                         __LINE__, cudaGetErrorName(sr_cuda_status),                         \
                         cudaGetErrorString(sr_cuda_status));                                \
  } while (0)
