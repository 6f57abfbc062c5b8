// bench_kernels' clocks: graph replays timed by CUDA events (median over replays), and the
// device's read and copy bandwidth measured in the same run (the floor's denominator).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/cuda_check.h"
#include "core/cuda_graph.h"
#include "core/cuda_launch.cuh"

namespace sinkrouter::bench {

// Pure read of n 16-byte words of p, grid-stride, kUnroll loads in flight a thread before the
// first is used; the write to `sink` never happens (x is a hash of the data) but keeps the loads.
// kPdl: wait for the previous grid first, as a decode call waits for its q (bench_read_probe.cuh).
template <bool kPdl, int kUnroll>
__global__ void __launch_bounds__(512) read_kernel(const uint4* p, int64_t n, uint4* sink) {
  if constexpr (kPdl) {
    cuda::pdl_wait();
    cuda::pdl_launch_dependents();
  }
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  uint32_t x = 0;
  for (; i + (kUnroll - 1) * stride < n; i += kUnroll * stride) {
    uint4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = __ldcs(p + i + u * stride);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) x ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n; i += stride) {
    const uint4 v = __ldcs(p + i);
    x ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (x == 0x9e3779b9u) sink[threadIdx.x] = make_uint4(x, x, x, x);
}

inline int sm_count() {
  int sms = 0;
  SR_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  return sms;
}

inline float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// {p10, p50, p90, max} of v (empty: zeros).
inline std::vector<float> spread(std::vector<float> v) {
  if (v.empty()) return {0.f, 0.f, 0.f, 0.f};
  std::sort(v.begin(), v.end());
  auto at = [&](double f) { return v[std::min(v.size() - 1, size_t(f * double(v.size())))]; };
  return {at(0.1), at(0.5), at(0.9), v.back()};
}

// Median milliseconds of one replay of `graph`, after replays for at least kWarmupMs (two at
// least): with two, the first row timed after the cache's generation ran slow (run 16g).
constexpr float kWarmupMs = 20.f;
inline float time_graph(cudaGraphExec_t exec, cudaStream_t stream, int reps) {
  cudaEvent_t a, b;
  SR_CUDA_CHECK(cudaEventCreate(&a));
  SR_CUDA_CHECK(cudaEventCreate(&b));
  SR_CUDA_CHECK(cudaEventRecord(a, stream));
  for (int i = 0; i < 2; ++i) SR_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  SR_CUDA_CHECK(cudaEventRecord(b, stream));
  SR_CUDA_CHECK(cudaEventSynchronize(b));
  float warm = 0;
  SR_CUDA_CHECK(cudaEventElapsedTime(&warm, a, b));
  for (int i = 0, more = int(kWarmupMs / std::max(warm / 2, 1e-3f)); i < more; ++i)
    SR_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    SR_CUDA_CHECK(cudaEventRecord(a, stream));
    SR_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    SR_CUDA_CHECK(cudaEventRecord(b, stream));
    SR_CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    SR_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  SR_CUDA_CHECK(cudaEventDestroy(a));
  SR_CUDA_CHECK(cudaEventDestroy(b));
  return median(ms);
}

struct Bandwidth {
  double copy_gbps, read_gbps;
};

inline Bandwidth measure_bandwidth(cudaStream_t stream, int reps) {
  const size_t bytes = size_t(2) << 30;  // 2 GiB
  void *src, *dst, *sink;
  SR_CUDA_CHECK(cudaMalloc(&src, bytes));
  SR_CUDA_CHECK(cudaMalloc(&dst, bytes));
  SR_CUDA_CHECK(cudaMalloc(&sink, 4096));
  SR_CUDA_CHECK(cudaMemset(src, 0x5a, bytes));
  cudaGraphExec_t copy = cuda::capture_graph(stream, [&] { SR_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream)); });
  const float copy_ms = time_graph(copy, stream, reps);
  cudaGraphExec_t read = cuda::capture_graph(stream, [&] {
    read_kernel<false, 1><<<sm_count() * 8, 256, 0, stream>>>(static_cast<const uint4*>(src), int64_t(bytes / 16),
                                                               static_cast<uint4*>(sink));
  });
  const float read_ms = time_graph(read, stream, reps);
  cudaGraphExecDestroy(copy);
  cudaGraphExecDestroy(read);
  cudaFree(src);
  cudaFree(dst);
  cudaFree(sink);
  return {2.0 * bytes / (copy_ms * 1e-3) / 1e9, bytes / (read_ms * 1e-3) / 1e9};
}

}  // namespace sinkrouter::bench
