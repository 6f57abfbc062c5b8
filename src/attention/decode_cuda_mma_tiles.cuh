// The tensor-core decode kernel's tile geometry (MmaShape: warps, ring stages, shared memory
// of the cp.async and TMA layouts), its 16-bit splitting of float operands (split3x2) and q's
// A fragments (q_fragments);
// the kernel and its layouts are described in decode_cuda_attention_mma.cuh.
#pragma once

#include <cstdint>
#include <type_traits>

#include "core/cuda_dtype.cuh"
#include "decode_cuda_kernels.cuh"
#include "decode_cuda_split.cuh"

namespace sinkrouter::cuda {

// The wide CTA's warps (CudaDecodeOptions::wide_ctas): 8, one CTA an SM (rings of 96 KB at head
// dim 64, 192 KB at 128). 16 at head dim 64 (192 KB) were slower than 8 at SmolLM2 B=1 4K-8K
// (kernel runs 22a-22b: 7.8 / 8.8 us against 7.0 / 8.2): a longer prologue and a merge of 16
// warps' states (the trace's cta_merge 1.6 us against 1.0).
constexpr int kWideWarps = 8;

// W: warps a CTA, each with its own ring (the loop has no CTA barrier): 4, or kWideWarps for
// the wide CTAs of the plans with at most one CTA an SM anyway. Why wide there: a warp's
// iteration is a chain of dependent steps (the copy's wait, ldmatrix, mma, shuffles, exp2, mma)
// of ~800 cycles at the small calls (kernel run 21j's trace: SmolLM2 B=1 8K, 8 iterations in a
// 3.55 us loop) and such a CTA leaves one warp a scheduler; more warps a CTA give each warp
// fewer stages. Not everywhere: at head dim 64 eight warps in each of 2 CTAs an SM were 3-9 %
// slower from 16K (run 22a: SmolLM2 B=8 512K 813 against 749 us).
template <int D, int W = 4>
struct MmaShape {
  static constexpr int kWarps = W;
  static constexpr int kThreads = kWarps * 32;
  static constexpr bool kWide = W > 4;
  static constexpr int kWarpRows = 16;                   // tokens per warp per stage
  static constexpr int kStageRows = kWarps * kWarpRows;  // tokens per CTA stage
  static constexpr int kChunks = D / 8;                  // 16-byte chunks per K or V row
  static constexpr int kRowsPerPass = 32 / kChunks;      // rows a warp copies per cp.async round
  static constexpr int kPasses = kWarpRows / kRowsPerPass;
  // Ring stages per warp (stages - 1 in flight): 3 at both head dims. d64 had 5 (64 KB in
  // flight a CTA; run 4d, with cp.async copies, found 5 stages 10-18 % faster than 3 from 64K at
  // batch 1). With TMA copies, cluster mode and 2 CTAs an SM, 3 stages were faster at every
  // SmolLM2 row of kernel run 21f (B=1 4K 7.33 against 7.59 us, 16K 10.66 / 11.31, 512K 105.1 /
  // 106.8; B=8 4K 11.50 / 12.54, 16K 30.37 / 31.48, 512K 711.8 / 713.0): fewer copies ahead of
  // the length in the prologue, and, the guess, a shorter ring to fill and drain a split.
  static constexpr int kStages = 3;
  static constexpr int kSlot16 = 2 * kWarpRows * kChunks;  // 16-byte units of one warp stage (K, V)
  static constexpr int kRingBytes = kWarps * kStages * kSlot16 * 16;
  static constexpr int kHeads = 4;
  // Warp states [warps][heads][D + 2], the CTA's merged state, the fused combine's scratch.
  static constexpr int kMergeBytes =
      (kWarps * kHeads * (D + 2) + kHeads * (D + 2) + kFinishScratchFloats) * 4;
  static constexpr int kSmemBytes = kRingBytes > kMergeBytes ? kRingBytes : kMergeBytes;
  // __launch_bounds__' CTAs an SM: d64's 48 KB ring would let 4 fit, and the registers are capped
  // to allow it (the build measured in run 21f); the plan still places at most 2 there by default
  // (CudaDecodeOptions::ctas_per_sm). d128: 96 KB rings, 2. Wide: one (up to 255 registers).
  static constexpr int kMinCtasPerSm = kWide ? 1 : D == 64 ? 4 : 2;
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

// Two floats rounded (to nearest even) to the 16-bit type in one instruction, packed in one
// register (the first, the lower column, in the low half; unpack2 undoes it). Why: a conversion of one
// float is a F2F, which issues at a fraction of the FMA rate, and the split below needs three an
// element (q's split alone, 96 a lane at head dim 128, was ~1 us of a small call's prologue in
// run 20b's trace); the paired form is one F2FP for two elements.
__device__ __forceinline__ uint32_t round2(float first, float second, Bf16Tag) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(first, second);
  return uint32_t(__bfloat16_as_ushort(v.x)) | (uint32_t(__bfloat16_as_ushort(v.y)) << 16);
}
__device__ __forceinline__ uint32_t round2(float first, float second, F16Tag) {
  const __half2 v = __floats2half2_rn(first, second);
  return uint32_t(__half_as_ushort(v.x)) | (uint32_t(__half_as_ushort(v.y)) << 16);
}

// x = hi + mid + lo, each part in the 16-bit type (the residuals are exact in float), for two
// floats at once, each part packed as round2 packs (x0's in the low half).
template <typename Tag>
__device__ __forceinline__ void split3x2(float x0, float x1, uint32_t& hi, uint32_t& mid, uint32_t& lo) {
  float h0, h1, m0, m1;
  hi = round2(x0, x1, Tag{});
  unpack2(hi, h0, h1, Tag{});
  const float r0 = x0 - h0, r1 = x1 - h1;
  mid = round2(r0, r1, Tag{});
  unpack2(mid, m0, m1, Tag{});
  lo = round2(r0 - m0, r1 - m1, Tag{});
}

// A lane's A fragments of q for the tensor-core kernel (its layout: decode_cuda_attention_mma.cuh,
// "Precision"): from the raw words of q[g][16kk + 2tq + {0, 1, 8, 9}] (qraw[kk][0..3]: float
// bits, one element a word; 16-bit q: words 0 and 1 hold elements {0, 1} and {8, 9}) of type
// q_dtype, scaled by `scale` (0 where !live: a padding head), split into hi / mid / lo parts,
// the upper lanes holding the low parts. Returns the factor the scores come out multiplied by
// the inverse of (fp16: the parts are scaled near 2^14 first, so that the low parts stay normal).
template <typename Tag, int KT>
__device__ __forceinline__ float q_fragments(const uint32_t (&qraw)[KT][4], DType q_dtype, float scale, bool live,
                                             bool upper, uint32_t (&qa)[KT][4]) {
  constexpr bool kF16 = std::is_same_v<Tag, F16Tag>;
  // One branch on q's type for all elements (a branch an element was 32 at head dim 128).
  float xq[KT][4];
  if (q_dtype == DType::F32) {
#pragma unroll
    for (int kk = 0; kk < KT; ++kk)
#pragma unroll
      for (int e = 0; e < 4; ++e) xq[kk][e] = __uint_as_float(qraw[kk][e]);
  } else if (q_dtype == DType::BF16) {
#pragma unroll
    for (int kk = 0; kk < KT; ++kk) {
      unpack2(qraw[kk][0], xq[kk][0], xq[kk][1], Bf16Tag{});
      unpack2(qraw[kk][1], xq[kk][2], xq[kk][3], Bf16Tag{});
    }
  } else {
#pragma unroll
    for (int kk = 0; kk < KT; ++kk) {
      unpack2(qraw[kk][0], xq[kk][0], xq[kk][1], F16Tag{});
      unpack2(qraw[kk][1], xq[kk][2], xq[kk][3], F16Tag{});
    }
  }
#pragma unroll
  for (int kk = 0; kk < KT; ++kk)
#pragma unroll
    for (int e = 0; e < 4; ++e) xq[kk][e] = live ? xq[kk][e] * scale : 0.f;
  float qs = 1.f, qs_inv = 1.f;
  if (kF16) {  // the largest |q| near 2^14: the high part stays finite, the low parts normal
    float qmax = 0.f;
#pragma unroll
    for (int kk = 0; kk < KT; ++kk)
#pragma unroll
      for (int e = 0; e < 4; ++e) qmax = fmaxf(qmax, fabsf(xq[kk][e]));
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) qmax = fmaxf(qmax, __shfl_xor_sync(0xffffffffu, qmax, off));
    if (qmax > 0.f && qmax < INFINITY) {
      int e2;
      frexpf(qmax, &e2);
      qs = ldexpf(1.f, 14 - e2);
      qs_inv = ldexpf(1.f, e2 - 14);
    }
  }
#pragma unroll
  for (int kk = 0; kk < KT; ++kk) {
    uint32_t hi[2], mid[2], lo[2];
    split3x2<Tag>(xq[kk][0] * qs, xq[kk][1] * qs, hi[0], mid[0], lo[0]);  // elements 2tq, 2tq + 1
    split3x2<Tag>(xq[kk][2] * qs, xq[kk][3] * qs, hi[1], mid[1], lo[1]);  // (+ 8)
    // A registers: {row r, k 2tq..+1}, {row r+8, k 2tq..+1}, {row r, k+8}, {row r+8, k+8}.
    qa[kk][0] = upper ? lo[0] : hi[0];
    qa[kk][1] = upper ? 0u : mid[0];
    qa[kk][2] = upper ? lo[1] : hi[1];
    qa[kk][3] = upper ? 0u : mid[1];
  }
  return qs_inv;
}

}  // namespace sinkrouter::cuda
