// route_bounds' ring of staged summary steps (decode_cuda_route.cu): the shared-memory layout,
// the walk over a CTA's steps, and the copies that fill the ring.
//
// Two kinds of ring (kernel runs 37a-37d, docs/PERF.md "The routing pass's summary reads"):
//   - cp.async, two stages: each of a step's 64 rows (a block's [min | max], 2D elements) is
//     copied by 256 / RP threads in 16-byte pieces; a thread waits for its own groups, then the
//     CTA barrier. Every head dim, both steps (quads and tensor cores).
//   - bulk (BULK: the tensor-core step at head dim 128 on an sm_90 device, where two CTAs an SM
//     still fit three stages): thread r < RP copies row r as one cp.async.bulk, and each stage
//     has an mbarrier that counts the RP rows' arrivals and their bytes. Three stages, so that
//     two steps are in flight. The read alone (bench_summary_probe.cuh, run 37d) took 67.9 us at
//     Llama B=8 512K against 77.6 with the pass's cp.async ring, and 10.0 against 12.2 at B=1;
//     at head dim 64 (256-byte rows) bulk copies were slower, so it keeps cp.async.
#pragma once

#include <cstdint>

#include "core/cuda_bulk_copy.cuh"
#include "core/cuda_dtype.cuh"
#include "core/cuda_tma.cuh"
#include "decode_cuda_kernels.cuh"
#include "decode_cuda_route_bounds.cuh"
#include "decode_cuda_route_mma.cuh"
#include "decode_cuda_route_sink.cuh"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define SR_ROUTE_BULK_ARCH 1
#else
#define SR_ROUTE_BULK_ARCH 0  // (the host pass, and sm_80: the BULK instances copy as cp.async)
#endif

namespace sinkrouter::cuda {

// Dynamic shared memory, in floats (each part a multiple of 4, so that what follows is
// 16-byte aligned): q [G][q_stride] (pre-scaled), the sink scores [sink_capacity][G], the
// step's per-(block, head) results [3][blocks * G] (u, term, keep), then the ring of `stages`
// staged steps [blocks][stride] (stride: tc_staged_stride for the tensor-core step, else
// staged_summary_stride), of which stages 1 .. first hold the sink set's K rows
// [min(sink_capacity, kSinkPass)][sink_key_stride(D)] (the region is the larger of the two),
// before the summaries of step 1.
struct BoundsSmem {
  int q, scores, results, results_per, stage0, stage_floats, bytes;
  static __host__ __device__ int up4(int x) { return (x + 3) / 4 * 4; }
  __host__ __device__ BoundsSmem(int G, int D, int sink_capacity, int stages, bool tc) {
    const BoundsMap map(G);
    stage_floats = up4(map.blocks * (tc ? tc_staged_stride(D) : staged_summary_stride(D)) / 2);
    const int key_tokens = sink_capacity < kSinkPass ? sink_capacity : kSinkPass;
    const int key_floats = up4(key_tokens * sink_key_stride(D) / 2);
    results_per = up4(map.blocks * G);
    q = 0;
    scores = up4(G * q_stride(D));
    results = scores + up4(sink_capacity * G);
    stage0 = results + 3 * results_per;
    const int ring = stages * stage_floats, keys_after_stage0 = stage_floats + key_floats;
    bytes = (stage0 + (ring > keys_after_stage0 ? ring : keys_after_stage0)) * 4;
  }
};

// A CTA's steps in order: step t bounds RP blocks from c0 + k RP, where c0 is the first block of
// its (t / PER)-th chunk (chunks gridDim.x apart) and k = t % PER. Walked, not divided: PER is a
// runtime value in the adaptive instantiation, and two 64-bit divisions a step are not needed.
struct StepCursor {
  int64_t c0, k;
  __device__ int64_t first(int RP) const { return c0 + k * RP; }
  __device__ void next(int64_t PER, int64_t chunk_stride) {
    if (++k == PER) {
      k = 0;
      c0 += chunk_stride;
    }
  }
};

// The slot of block j, -1 past nbr. slots: the sequence's row of the summary table
// (PagedKV::summary_slot's), looked up once: through the kernel's argument it would be two
// dependent loads a step, the row's start reloaded after every store.
__device__ __forceinline__ int32_t summary_slot(const int32_t* slots, int64_t j, int64_t nbr) {
  return j < nbr ? slots[j] : -1;
}

// The ring. Every thread of the CTA calls each member; `slot` is the slot of the step block this
// thread copies (copy_block), -1 for none.
template <int D, bool TC, bool BULK>
struct SummaryRing {
  static constexpr int kStages = BULK ? 3 : 2;
  static constexpr int kStride = TC ? tc_staged_stride(D) : staged_summary_stride(D);  // of the staged rows
  static constexpr bool kBulk = BULK && SR_ROUTE_BULK_ARCH;
  uint16_t* base;  // stage 0; stage s at base + s * stage_elems
  int stage_elems;
  uint64_t* full;  // kBulk: [kStages] mbarriers in shared memory
  int issue_stage = 0, read_stage = 0;
  uint32_t read_phase = 0;

  // The step block whose row thread tid copies (-1: none): bulk, row tid; cp.async, 256 / RP
  // threads a row.
  static __device__ int copy_block(int tid, int RP) {
    return kBulk ? (tid < RP ? tid : -1) : tid / (kBoundsThreads / RP);
  }
  __device__ uint16_t* stage(int s) const { return base + s * stage_elems; }
  // Before the CTA barrier that precedes the first copy: the stages' barriers, RP arrivals each.
  __device__ void init(int RP) const {
#if SR_ROUTE_BULK_ARCH
    if constexpr (kBulk) {
      if (threadIdx.x < kStages) mbarrier_init(smem_addr(full + threadIdx.x), uint32_t(RP));
      fence_mbarrier_init();
    }
#endif
  }
  // The copies of one step (head h; zeros for cp.async rows of slot -1, nothing for bulk ones)
  // into the next stage, then a cp.async group (empty for bulk copies, so that the sink rows'
  // group keeps its place for sink_scores' wait). in_range: the step is one of the CTA's.
  __device__ void issue(const RouteArgs& a, int h, int32_t slot, int RP, bool in_range) {
    uint16_t* dst = stage(issue_stage);
    const int tid = int(threadIdx.x);
    if (in_range) {
      const uint16_t* src =
          static_cast<const uint16_t*>(a.kv.summaries) + (slot >= 0 ? a.kv.slot_summary_offset(slot, h) : 0);
      if constexpr (kBulk) {
#if SR_ROUTE_BULK_ARCH
        if (tid < RP) {
          const uint32_t bar = smem_addr(full + issue_stage);
          // The stage was read (and the tensor-core partials written) through the generic
          // proxy before the step's barrier; the bulk copy writes it through the async one.
          fence_proxy_async_shared();
          mbarrier_arrive_expect_tx(bar, slot >= 0 ? uint32_t(4 * D) : 0u);
          if (slot >= 0) bulk_load(smem_addr(dst + tid * kStride), src, uint32_t(4 * D), bar);
        }
#endif
      } else {
        constexpr int kPieces = 2 * D / 8;
        const int per_block = kBoundsThreads / RP;
        uint16_t* row = dst + (tid / per_block) * kStride;
#pragma unroll 1
        for (int c = tid % per_block; c < kPieces; c += per_block)
          cp_async16_to(smem_addr(row + c * 8), src + c * 8, slot >= 0);
      }
    }
    cp_async_commit_group();
    issue_stage = issue_stage + 1 == kStages ? 0 : issue_stage + 1;
  }
  // This thread's view of step t's rows: landed (the caller then passes a CTA barrier, after
  // which every thread's are). Returns the step's stage.
  __device__ uint16_t* wait() {
    if constexpr (kBulk) {
#if SR_ROUTE_BULK_ARCH
      mbarrier_wait(smem_addr(full + read_stage), read_phase);
#endif
    } else if constexpr (kStages == 3) {
      cp_async_wait_group<1>();
    } else {
      cp_async_wait_group<0>();
    }
    uint16_t* s = stage(read_stage);
    if (++read_stage == kStages) {
      read_stage = 0;
      read_phase ^= 1u;
    }
    return s;
  }
};

}  // namespace sinkrouter::cuda
