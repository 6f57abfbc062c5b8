// Dynamic splits of the tensor-core decode kernel (decode_cuda_attention_mma.cuh's DYN
// instance): how one warp steps through the chunks of its unit that it claims.
#pragma once

#include <cstdint>

namespace sinkrouter::cuda {

// Dynamic splits (AttnArgs::claims): a unit's tokens (routed: the virtual tokens of its
// RoutedMap, anchors, kept blocks and window) are chunks of AttnArgs::claim_stages
// warp stages (16 tokens each), and its CTAs' warps claim them. Why: with equal static splits
// a call waits for its slowest CTA, and CTAs on different SMs stream at different rates
// (kernel run 17e, Llama B=1 512K:
// loops from 318 to 443 us for equal splits; SmolLM2 B=1 512K 72 to 92 us). Warp w of split s
// of S takes chunk w * S + s first (no round trip; interleaved, so that a short unit's chunks
// spread over its CTAs), then claims the next free one, 4 S + atomicAdd(claims[unit], 1), one
// chunk ahead: the claim is issued when the warp's copies enter a chunk and read when they
// leave it, a chunk's stages later (8 by default: 64 KB of one warp's copies at head dim 128,
// several microseconds). A warp stops at the first claim past the unit's chunks; the unit's
// last CTA returns the counter to 0. The sums then depend on which warp took which chunk: the
// result is not bit-reproducible from run to run (within the float tolerance of the merge's
// association). The call's tail is about one chunk of one warp, hence short chunks.

// One warp's claimed chunks: the chunk of its copies' stage (`ahead`, the pipeline's
// look-ahead) and of the stage it reads (`read`), the warp's next claim in flight (lane 0's
// atomic, read only when the copies leave their chunk). Both sides step a stage at a time in
// order; the copies run fewer than `stages` stages ahead (the plan keeps chunks of at least 8
// stages, the ring at most 5), so when the read side enters a chunk the copies are in it too.
// The shortest chunk the plan allows (CudaDecodeOptions::dynamic_chunk_tokens >= 128).
constexpr int kMinClaimStages = 8;
struct ClaimedChunks {
  int32_t* counter;          // claims[unit]
  int stages, base, chunks;  // stages a chunk, first claimable chunk id (4 S), the unit's chunks
  int ahead, ahead_in, read, read_in, claim;
  __device__ __forceinline__ void claim_next(int lane) {
    if (lane == 0) claim = base + atomicAdd(counter, 1);
  }
  // The start of the copies' next stage, or -1 past the warp's last chunk.
  __device__ __forceinline__ int64_t next_ahead(int lane) {
    if (ahead_in == stages) {
      ahead = __shfl_sync(0xffffffffu, claim, 0);
      ahead_in = 0;
      if (ahead < chunks) claim_next(lane);
    }
    const int in = ahead_in++;
    return ahead < chunks ? (int64_t(ahead) * stages + in) * 16 : -1;
  }
  // The start of the read side's next stage (always one the copies have seen).
  __device__ __forceinline__ int64_t next_read() {
    if (read_in == stages) read = ahead, read_in = 0;
    return (int64_t(read) * stages + read_in++) * 16;
  }
};

}  // namespace sinkrouter::cuda
