// The summary read probe: the routing pass's read of the block summaries alone, in the pass's
// order. It asks what holds the pass's bounds loop (run 37b: 268 MB at Llama B=8 512K in ~86 us,
// ~3.1 TB/s): the layout it reads, the way it stages the rows, or its own per-step work. The
// probe copies the same rows with the same grid and steps and does nothing else with them, in
// eight variants: two table layouts (below) x rings of 2 or 3 staged steps x 16-byte cp.async
// pieces (the pass's) or one bulk copy a row (core/cuda_bulk_copy.cuh). docs/PERF.md, "The
// routing pass's summary reads, probed; bulk copies" (kernel runs 37c-37g).
//
// A summary row is a block's [min | max] for one KV head, 2D bf16 (512 bytes at D = 128).
//   slot-major (the cache's, paged_kv.h): row (slot, h) at (slot * H + h) * 2D, so a (b, h) CTA
//     reads 2D-element rows H of them apart;
//   head-major: row (slot, h) at (h * slots + slot) * 2D, a (b, h) CTA's rows contiguous.
// Slots are b * nbr + j (each sequence's blocks consecutive, as in the benchmark's caches).
//
// Grid (C, B * H), 256 threads, two CTAs an SM as the pass, each CTA a contiguous chunk of whole
// steps of 64 blocks, C as the pass's adaptive chunks choose it (decode_cuda_route.cu).
//
//   SummaryProbe p = time_summary_probe(B, H, D, nbr, stream, reps);
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "attention/decode_cuda_route_mma.cuh"
#include "bench_timing.cuh"
#include "core/cuda_bulk_copy.cuh"
#include "core/cuda_check.h"
#include "core/cuda_graph.h"
#include "core/cuda_mma.cuh"
#include "core/cuda_tma.cuh"

namespace sinkrouter::bench {

constexpr int kProbeThreads = 256;
constexpr int kProbeStep = 64;  // blocks a step, as the pass's (BoundsMap::blocks at G <= 8)

// One call: CTA (x, bh) copies its chunk's rows into a ring of NS staged steps (NS - 1 of them
// in flight), and folds one 16-byte word a thread of each step into x (the write to `sink`
// never happens). The copies: BULK, one bulk copy a row (threads 0 .. 63, an mbarrier a stage,
// sm_90); otherwise cp.async, 16 bytes a piece, four threads a row (the pass's).
template <int D, bool HEAD_MAJOR, int NS, bool BULK>
__global__ void __launch_bounds__(kProbeThreads, 2)
    summary_read_kernel(const uint16_t* table, int H, int64_t nbr, int64_t slots, int64_t chunk, uint4* sink) {
  constexpr int kRow = cuda::tc_staged_stride(D);   // staged row, elements (the tensor-core step's)
  constexpr int kPieces = 2 * D / 8;                // 16-byte pieces a row
  constexpr int kPer = kProbeThreads / kProbeStep;  // threads a row
  extern __shared__ __align__(16) uint16_t probe_stage[];  // [NS][kProbeStep * kRow]
  __shared__ __align__(8) uint64_t full[NS];                // BULK: a stage's bytes landed
  (void)full;                                               // (unused by the cp.async instances)
  const int bh = int(blockIdx.y), b = bh / H, h = bh % H, tid = int(threadIdx.x);
  const int64_t first = int64_t(blockIdx.x) * chunk, end = std::min(first + chunk, nbr);
  const int64_t steps = end > first ? (end - first + kProbeStep - 1) / kProbeStep : 0;
  const int row = tid / kPer;
  // Block j's row of head h in the table.
  const auto row_src = [&](int64_t j) {
    const int64_t slot = int64_t(b) * nbr + j;
    return table + (HEAD_MAJOR ? int64_t(h) * slots + slot : slot * H + h) * 2 * D;
  };
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (BULK) {
    if (tid < NS) cuda::mbarrier_init(cuda::smem_addr(&full[tid]), 1);
    cuda::fence_mbarrier_init();
    __syncthreads();
  }
#endif
  auto copy_step = [&](int64_t t) {
    uint16_t* stage = probe_stage + int(t % NS) * kProbeStep * kRow;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if constexpr (BULK) {
      if (t >= steps || tid >= kProbeStep) return;
      const uint32_t bar = cuda::smem_addr(&full[t % NS]);
      const int64_t j0 = first + t * kProbeStep, rows = std::min<int64_t>(kProbeStep, end - j0);
      if (tid == 0) cuda::mbarrier_arrive_expect_tx(bar, uint32_t(rows * 4 * D));
      if (tid < rows) {
        cuda::fence_proxy_async_shared();
        cuda::bulk_load(cuda::smem_addr(stage + tid * kRow), row_src(j0 + tid), 4 * D, bar);
      }
      return;
    }
#endif
    const int64_t j = first + t * kProbeStep + row;
    if (t < steps && j < end) {
      const uint16_t* src = row_src(j);
      for (int c = tid % kPer; c < kPieces; c += kPer)
        cuda::cp_async16_to(cuda::smem_addr(stage + row * kRow + c * 8), src + c * 8, true);
    }
    cuda::cp_async_commit_group();
  };
  uint32_t x = 0;
  for (int s = 0; s < NS - 1; ++s) copy_step(s);  // (empty groups past the last step)
  for (int64_t t = 0; t < steps; ++t) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if constexpr (BULK) cuda::mbarrier_wait(cuda::smem_addr(&full[t % NS]), uint32_t(t / NS) & 1u);
#endif
    if constexpr (!BULK) cuda::cp_async_wait_group<NS - 2>();
    __syncthreads();
    copy_step(t + NS - 1);
    const uint16_t* stage = probe_stage + int(t % NS) * kProbeStep * kRow;
    const uint4 v = *reinterpret_cast<const uint4*>(stage + row * kRow + (tid % kPer) * 8);
    x ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (x == 0x9e3779b9u) sink[tid] = make_uint4(x, x, x, x);
}

struct SummaryProbe {
  float us[2][2][2];  // per call: [head-major][three stages][bulk copies]
  int64_t bytes;   // the rows read by one call
  int ctas_per_head, copies;
};

// B sequences of nbr routable blocks, H KV heads, head dim D (64 or 128): both layouts, each a
// CUDA graph of `copies` calls over distinct tables (>= 256 MB in all, so that no call is served
// from the L2), the median of `reps` replays.
inline SummaryProbe time_summary_probe(int B, int H, int D, int64_t nbr, cudaStream_t stream, int reps) {
  SummaryProbe p{};
  const int64_t slots = int64_t(B) * nbr, row_bytes = 2 * int64_t(D) * 2;
  p.bytes = slots * H * row_bytes;
  p.copies = int(std::max<int64_t>(1, ((int64_t(256) << 20) + p.bytes - 1) / p.bytes));
  const int64_t steps = (nbr + kProbeStep - 1) / kProbeStep;
  // The pass's adaptive chunks: a grid of one wave over the (b, h), of which a (b, h) wants
  // enough CTAs for 4 steps each, and at least one an SM over the batch's heads.
  const int64_t bh = int64_t(B) * H;
  const int64_t grid = std::clamp<int64_t>(2 * sm_count() / bh, 1, std::max<int64_t>(1, steps));
  const int64_t want = std::clamp<int64_t>(std::max<int64_t>((steps + 3) / 4, sm_count() / bh), 1, grid);
  const int64_t chunk = (steps + want - 1) / want * kProbeStep;
  p.ctas_per_head = int((nbr + chunk - 1) / chunk);
  uint16_t* table = nullptr;
  uint4* sink = nullptr;
  SR_CUDA_CHECK(cudaMalloc(&table, size_t(p.bytes) * size_t(p.copies)));
  SR_CUDA_CHECK(cudaMalloc(&sink, kProbeThreads * sizeof(uint4)));
  SR_CUDA_CHECK(cudaMemsetAsync(table, 0x3c, size_t(p.bytes) * size_t(p.copies), stream));
  using Kernel = void (*)(const uint16_t*, int, int64_t, int64_t, int64_t, uint4*);
  const Kernel kernels[2][2][2][2] = {  // [D == 128][head-major][three stages][bulk]
      {{{summary_read_kernel<64, false, 2, false>, summary_read_kernel<64, false, 2, true>},
        {summary_read_kernel<64, false, 3, false>, summary_read_kernel<64, false, 3, true>}},
       {{summary_read_kernel<64, true, 2, false>, summary_read_kernel<64, true, 2, true>},
        {summary_read_kernel<64, true, 3, false>, summary_read_kernel<64, true, 3, true>}}},
      {{{summary_read_kernel<128, false, 2, false>, summary_read_kernel<128, false, 2, true>},
        {summary_read_kernel<128, false, 3, false>, summary_read_kernel<128, false, 3, true>}},
       {{summary_read_kernel<128, true, 2, false>, summary_read_kernel<128, true, 2, true>},
        {summary_read_kernel<128, true, 3, false>, summary_read_kernel<128, true, 3, true>}}}};
  for (const int head_major : {0, 1})
    for (const int three : {0, 1})
      for (const int bulk : {0, 1}) {
        const Kernel kernel = kernels[D == 128][head_major][three][bulk];
        const int smem = (2 + three) * kProbeStep * cuda::tc_staged_stride(D) * 2;
        SR_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        const dim3 grid(unsigned(p.ctas_per_head), unsigned(B * H));
        cudaGraphExec_t exec = cuda::capture_graph(stream, [&] {
          for (int c = 0; c < p.copies; ++c)
            kernel<<<grid, kProbeThreads, smem, stream>>>(table + int64_t(c) * (p.bytes / 2), H, nbr, slots, chunk, sink);
        });
        const float us = time_graph(exec, stream, reps) * 1e3f / float(p.copies);
        cudaGraphExecDestroy(exec);
        p.us[head_major][three][bulk] = us;
      }
  SR_CUDA_CHECK(cudaFree(table));
  SR_CUDA_CHECK(cudaFree(sink));
  return p;
}

// Appends to `rows` the summary_probe rows of one (shape, batch, context) (`key` holds those
// three fields): each layout, ring depth and copy kind, each printed.
inline void add_summary_probe_rows(nlohmann::json& rows, const nlohmann::json& key, int B, int H, int D, int64_t nbr,
                                   double read_gbps, cudaStream_t stream, int reps) {
  const SummaryProbe p = time_summary_probe(B, H, D, nbr, stream, reps);
  const double floor_us = double(p.bytes) / (read_gbps * 1e9) * 1e6;
  for (const int head_major : {0, 1})
    for (const int three : {0, 1})
      for (const int bulk : {0, 1}) {
        const float us = p.us[head_major][three][bulk];
        nlohmann::json row = {{"kernel", "summary_probe"}, {"skip_target_pct", 0},
                              {"layout", head_major ? "head_major" : "slot_major"}, {"stages", 2 + three},
                              {"copies_by", bulk ? "bulk" : "cp.async"}, {"time_us", us}, {"bytes_read", p.bytes},
                              {"gbps", double(p.bytes) / (us * 1e-6) / 1e9}, {"floor_us", floor_us},
                              {"ratio_to_floor", us / floor_us}, {"ctas", p.ctas_per_head * B * H},
                              {"copies", p.copies}};
        row.update(key);
        rows.push_back(row);
        std::printf("%-13s B=%d ctx=%7lld summary_probe %-10s %d stages %-8s: %8.2f us  %6.0f GB/s  x%.2f floor\n",
                    key["shape"].get<std::string>().c_str(), B, (long long)key["context"].get<int64_t>(),
                    head_major ? "head-major" : "slot-major", 2 + three, bulk ? "bulk" : "cp.async", us,
                    row["gbps"].get<double>(), us / floor_us);
      }
  std::fflush(stdout);
}

}  // namespace sinkrouter::bench
