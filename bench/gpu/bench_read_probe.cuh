// The read probe: how fast a kernel that does nothing but read could serve one decode call's
// bytes, timed the way bench_kernels times the decode calls. The floor (bytes / the read
// bandwidth of one 2 GiB read) leaves out what every call of a few MB pays whatever it
// computes: the kernel boundary and the ramp up to full bandwidth. The probe measures that
// size-matched ceiling, so a row's distance from the floor splits into what any kernel would
// pay at that size and what ours adds.
//
//   ReadProbe p = time_read_probe(bytes_per_call, copies, stream, reps);
//     a CUDA graph of `copies` launches, launch c reading bytes [c * bytes_per_call,
//     (c + 1) * bytes_per_call) of one buffer (copies x bytes_per_call, >= 256 MB in all, so
//     that no call is served from the L2); the fastest of 8 launch shapes: 1, 2, 4 or 8 CTAs
//     of 256 threads an SM, each with and without programmatic dependent launch (with it, each
//     launch waits for the previous grid before its first load, as a decode call must for its q).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <nlohmann/json.hpp>

#include "bench_timing.cuh"
#include "core/cuda_check.h"
#include "core/cuda_graph.h"
#include "core/cuda_launch.cuh"

namespace sinkrouter::bench {

// Reads n 16-byte words of p; kUnroll loads in flight a thread before the first is used. The
// write to `sink` never happens (x is a hash of the data) but keeps the loads.
template <bool kPdl>
__global__ void __launch_bounds__(256) read_probe_kernel(const uint4* p, int64_t n, uint4* sink) {
  if constexpr (kPdl) {
    cuda::pdl_wait();
    cuda::pdl_launch_dependents();
  }
  constexpr int kUnroll = 4;
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

struct ReadProbe {
  float us;           // per call, the fastest launch shape
  float us_no_pdl;    // per call, the fastest shape without programmatic dependent launch
  int ctas_per_sm;    // the fastest shape's
  bool pdl;           // the fastest shape's
};

inline ReadProbe time_read_probe(int64_t bytes_per_call, int copies, cudaStream_t stream, int reps) {
  const int64_t words = (bytes_per_call + 15) / 16;
  uint4 *buf, *sink;
  SR_CUDA_CHECK(cudaMalloc(&buf, size_t(words) * 16 * size_t(copies)));
  SR_CUDA_CHECK(cudaMalloc(&sink, 256 * sizeof(uint4)));
  SR_CUDA_CHECK(cudaMemsetAsync(buf, 0x5a, size_t(words) * 16 * size_t(copies), stream));
  int sms = 0;
  SR_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  ReadProbe best{1e30f, 1e30f, 0, false};
  for (const bool pdl : {false, true})
    for (const int per_sm : {1, 2, 4, 8}) {
      cudaGraphExec_t exec = cuda::capture_graph(stream, [&] {
        for (int c = 0; c < copies; ++c) {
          cudaLaunchConfig_t cfg = {};
          cfg.gridDim = dim3(unsigned(sms * per_sm));
          cfg.blockDim = dim3(256);
          cfg.stream = stream;
          cudaLaunchAttribute attr;
          attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
          attr.val.programmaticStreamSerializationAllowed = 1;
          cfg.attrs = pdl ? &attr : nullptr;
          cfg.numAttrs = pdl ? 1 : 0;
          const uint4* part = buf + int64_t(c) * words;
          if (pdl)
            SR_CUDA_CHECK(cudaLaunchKernelEx(&cfg, read_probe_kernel<true>, part, words, sink));
          else
            SR_CUDA_CHECK(cudaLaunchKernelEx(&cfg, read_probe_kernel<false>, part, words, sink));
        }
      });
      const float us = time_graph(exec, stream, reps) * 1e3f / float(copies);
      cudaGraphExecDestroy(exec);
      if (!pdl && us < best.us_no_pdl) best.us_no_pdl = us;
      if (us < best.us) best = {us, best.us_no_pdl, per_sm, pdl};
    }
  cudaFree(buf);
  cudaFree(sink);
  return best;
}

// The probe's fields of a bench_kernels row (the caller adds shape, batch and context).
inline nlohmann::json read_probe_row(const ReadProbe& p, int64_t bytes, double read_gbps, int copies) {
  const double floor_us = double(bytes) / (read_gbps * 1e9) * 1e6;
  nlohmann::json row;
  row["kernel"] = "read_probe";
  row["skip_target_pct"] = 0;
  row["time_us"] = p.us;
  row["time_no_pdl_us"] = p.us_no_pdl;
  row["ctas_per_sm"] = p.ctas_per_sm;
  row["pdl"] = p.pdl;
  row["bytes_read"] = bytes;
  row["gbps"] = double(bytes) / (p.us * 1e-6) / 1e9;
  row["floor_us"] = floor_us;
  row["ratio_to_floor"] = p.us / floor_us;
  row["copies"] = copies;
  return row;
}

}  // namespace sinkrouter::bench
