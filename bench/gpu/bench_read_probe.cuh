// The read probe: how fast a kernel that does nothing but read could serve one decode call's
// bytes, timed the way bench_kernels times the decode calls. The floor (bytes / the read
// bandwidth of one 2 GiB read) leaves out what every call of a few MB pays whatever it
// computes: the kernel boundary and the ramp up to full bandwidth. The probe measures that
// size-matched ceiling, so a row's distance from the floor splits into what any kernel would
// pay at that size and what ours adds.
//
//   ReadProbe p = time_read_probe(bytes_per_call, copies, stream, reps);
//   float us = time_read_probe_ctas(bytes_per_call, copies, stream, reps, ctas);
//     a CUDA graph of `copies` launches, launch c reading bytes [c * bytes_per_call,
//     (c + 1) * bytes_per_call) of one buffer (copies x bytes_per_call, >= 256 MB in all, so
//     that no call is served from the L2); the fastest of 8 launch shapes: 1, 2, 4 or 8 CTAs
//     of 256 threads an SM, each with and without programmatic dependent launch (with it, each
//     launch waits for the previous grid before its first load, as a decode call must for its q).
// The kernel is bench_timing.cuh's read_kernel, the one whose 2 GiB read sets the floor.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench_timing.cuh"
#include "core/cuda_check.h"
#include "core/cuda_graph.h"

namespace sinkrouter::bench {

// One call's bytes (words 16-byte words) at each of `copies` consecutive places of a buffer,
// read by a graph of `copies` launches of `ctas` x `threads`: microseconds a call.
class ReadProbeBuffer {
 public:
  ReadProbeBuffer(int64_t bytes_per_call, int copies, cudaStream_t stream)
      : words_((bytes_per_call + 15) / 16), copies_(copies), stream_(stream) {
    SR_CUDA_CHECK(cudaMalloc(&buf_, size_t(words_) * 16 * size_t(copies)));
    SR_CUDA_CHECK(cudaMalloc(&sink_, 512 * sizeof(uint4)));
    SR_CUDA_CHECK(cudaMemsetAsync(buf_, 0x5a, size_t(words_) * 16 * size_t(copies), stream));
  }
  ~ReadProbeBuffer() {
    cudaFree(buf_);
    cudaFree(sink_);
  }
  ReadProbeBuffer(const ReadProbeBuffer&) = delete;
  ReadProbeBuffer& operator=(const ReadProbeBuffer&) = delete;

  template <int kUnroll>
  float time_us(int ctas, int threads, bool pdl, int reps) {
    cudaGraphExec_t exec = cuda::capture_graph(stream_, [&] {
      for (int c = 0; c < copies_; ++c) {
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = dim3(unsigned(ctas));
        cfg.blockDim = dim3(unsigned(threads));
        cfg.stream = stream_;
        cudaLaunchAttribute attr;
        attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr.val.programmaticStreamSerializationAllowed = 1;
        cfg.attrs = pdl ? &attr : nullptr;
        cfg.numAttrs = pdl ? 1 : 0;
        const uint4* part = buf_ + int64_t(c) * words_;
        if (pdl)
          SR_CUDA_CHECK(cudaLaunchKernelEx(&cfg, read_kernel<true, kUnroll>, part, words_, sink_));
        else
          SR_CUDA_CHECK(cudaLaunchKernelEx(&cfg, read_kernel<false, kUnroll>, part, words_, sink_));
      }
    });
    const float us = time_graph(exec, stream_, reps) * 1e3f / float(copies_);
    cudaGraphExecDestroy(exec);
    return us;
  }

 private:
  uint4 *buf_ = nullptr, *sink_ = nullptr;
  int64_t words_;
  int copies_;
  cudaStream_t stream_;
};

struct ReadProbe {
  float us;           // per call, the fastest launch shape
  float us_no_pdl;    // per call, the fastest shape without programmatic dependent launch
  int ctas_per_sm;    // the fastest shape's
  bool pdl;           // the fastest shape's
};

// The fastest of 8 shapes: 1, 2, 4 or 8 CTAs of 256 threads an SM, with and without PDL.
inline ReadProbe time_read_probe(int64_t bytes_per_call, int copies, cudaStream_t stream, int reps) {
  ReadProbeBuffer buf(bytes_per_call, copies, stream);
  const int sms = sm_count();
  ReadProbe best{1e30f, 1e30f, 0, false};
  for (const bool pdl : {false, true})
    for (const int per_sm : {1, 2, 4, 8}) {
      const float us = buf.time_us<4>(sms * per_sm, 256, pdl, reps);
      if (!pdl && us < best.us_no_pdl) best.us_no_pdl = us;
      if (us < best.us) best = {us, best.us_no_pdl, per_sm, pdl};
    }
  return best;
}

// The same read by exactly `ctas` CTAs of 512 threads (16 warps; 8 loads in flight a thread),
// with PDL: what a plan that leaves some SMs idle could read at best (--probe-ctas).
inline float time_read_probe_ctas(int64_t bytes_per_call, int copies, cudaStream_t stream, int reps, int ctas) {
  ReadProbeBuffer buf(bytes_per_call, copies, stream);
  return buf.time_us<8>(ctas, 512, true, reps);
}

// "smollm2-135m  B=1 ctx=  65536", as bench_kernels prints its rows.
inline std::string fmt_key(const nlohmann::json& key) {
  char s[96];
  std::snprintf(s, sizeof s, "%-13s B=%lld ctx=%7lld", key["shape"].get<std::string>().c_str(),
                (long long)key["batch"].get<int64_t>(), (long long)key["context"].get<int64_t>());
  return s;
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

// Appends to `rows` the read_probe row of one (shape, batch, context) (`key` holds those three
// fields) and a read_probe_ctas row for each CTA count of `ctas_list`, each printed.
inline void add_read_probe_rows(nlohmann::json& rows, const nlohmann::json& key, int64_t bytes, int copies,
                                double read_gbps, const std::vector<int64_t>& ctas_list, cudaStream_t stream, int reps) {
  const std::string where = fmt_key(key);
  const ReadProbe p = time_read_probe(bytes, copies, stream, reps);
  nlohmann::json row = read_probe_row(p, bytes, read_gbps, copies);
  row.update(key);
  rows.push_back(row);
  std::printf("%s read_probe   %9.2f us (no PDL %.2f; %d CTAs/SM%s)  %6.0f GB/s  floor %9.2f us  x%.2f\n",
              where.c_str(), p.us, p.us_no_pdl, p.ctas_per_sm, p.pdl ? ", PDL" : "", row["gbps"].get<double>(),
              row["floor_us"].get<double>(), row["ratio_to_floor"].get<double>());
  for (const int64_t n : ctas_list) {
    const float us = time_read_probe_ctas(bytes, copies, stream, reps, int(n));
    nlohmann::json r = read_probe_row({us, us, 0, true}, bytes, read_gbps, copies);
    r["kernel"] = "read_probe_ctas";
    r["ctas"] = n;
    r.update(key);
    rows.push_back(r);
    std::printf("%s read_probe on %lld CTAs x 512: %9.2f us  x%.2f floor\n", where.c_str(), (long long)n, us,
                r["ratio_to_floor"].get<double>());
  }
  std::fflush(stdout);
}

}  // namespace sinkrouter::bench
