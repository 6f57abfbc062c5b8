// The tensor-core decode kernel's tile geometry (MmaShape: warps, ring stages, shared memory
// of the cp.async and TMA layouts) and its 16-bit splitting of float operands (split3, pack2);
// the kernel and its layouts are described in decode_cuda_attention_mma.cuh.
#pragma once

#include <cstdint>

#include "core/cuda_dtype.cuh"
#include "decode_cuda_kernels.cuh"
#include "decode_cuda_split.cuh"

namespace sinkrouter::cuda {

template <int D>
struct MmaShape {
  static constexpr int kWarps = kAttnThreads / 32;
  static constexpr int kWarpRows = 16;                   // tokens per warp per stage
  static constexpr int kStageRows = kWarps * kWarpRows;  // tokens per CTA stage
  static constexpr int kChunks = D / 8;                  // 16-byte chunks per K or V row
  static constexpr int kRowsPerPass = 32 / kChunks;      // rows a warp copies per cp.async round
  static constexpr int kPasses = kWarpRows / kRowsPerPass;
  // Ring stages per warp (stages - 1 in flight). d64: 5, 64 KB in flight a CTA, 128 KB an SM
  // at 2 CTAs an SM: from 64K at batch 1, where 3 KV heads give few CTAs, 5 stages read
  // 10-18 % faster than 3 (run 4d). The small calls' loops are not bound by these bytes:
  // 6 stages (the most that leave 2 CTAs an SM) left the SmolLM2 8K loop at 3.71 us and made
  // the calls slower, the prologue having a page id and a copy more (run 19a).
  static constexpr int kStages = D == 64 ? 5 : 3;
  static constexpr int kSlot16 = 2 * kWarpRows * kChunks;  // 16-byte units of one warp stage (K, V)
  static constexpr int kRingBytes = kWarps * kStages * kSlot16 * 16;
  static constexpr int kHeads = 4;
  // Warp states [warps][heads][D + 2], the CTA's merged state, the fused combine's scratch.
  static constexpr int kMergeBytes =
      (kWarps * kHeads * (D + 2) + kHeads * (D + 2) + kFinishScratchFloats) * 4;
  static constexpr int kSmemBytes = kRingBytes > kMergeBytes ? kRingBytes : kMergeBytes;
  static constexpr int kMinCtasPerSm = 2;  // 96 KB (d128) / 80 KB (d64) rings
  // TMA layout: a stage is [D / 64 parts][K, V][16 rows][128 B]. Row and part pitches of a
  // stage's K (V starts kTmaVOffset further) in bytes; the cp.async layout's are D * 2 and 128.
  static constexpr int kTmaPartBytes = 2 * kWarpRows * 128;
  static constexpr int kTmaVOffset = kWarpRows * 128;
  static constexpr uint32_t kStageBytes = kSlot16 * 16;
  // The TMA ring starts at the first 1024-byte boundary (the swizzle's atom) of the window,
  // and its mbarriers (one a warp stage) after it, where the merge never writes.
  static constexpr int kTmaBarrierOffset = kRingBytes + 1024;
  static constexpr int kTmaSmemBytes = kTmaBarrierOffset + kWarps * kStages * 8;
  static_assert(kMergeBytes <= kRingBytes, "the warps' states overlay the ring, not the barriers");
  static_assert(kStageBytes % 1024 == 0, "every TMA stage starts on a swizzle atom");
};

// x = hi + mid + lo, each part in the 16-bit type (the residuals are exact in float).
template <typename Tag>
__device__ __forceinline__ void split3(float x, uint16_t& hi, uint16_t& mid, uint16_t& lo) {
  hi = float_to_bits(x, Tag{});
  const float r1 = x - bits_to_float(hi, Tag{});
  mid = float_to_bits(r1, Tag{});
  lo = float_to_bits(r1 - bits_to_float(mid, Tag{}), Tag{});
}

// Two 16-bit values in one register, the lower column in the low half.
__device__ __forceinline__ uint32_t pack2(uint16_t first, uint16_t second) {
  return uint32_t(first) | (uint32_t(second) << 16);
}

}  // namespace sinkrouter::cuda
