// The decode GEMV: y = W x for a few tokens, bf16 weights, float32 inputs and sums.
//
// Decode is bound by reading the weights (270 MB a step for SmolLM2) and, for the small
// matrices (0.7 to 3.5 MB), by latency. So:
//   - each weight row is read once per launch and dotted with every token of the launch
//     (up to 8);
//   - a row belongs to a group of L lanes (8, 16 or 32: the fewest whose 16-byte chunks of
//     the row fit kPrefetch per lane), so a warp covers 32 / L rows with no idle lanes
//     (576 columns = 72 chunks = 8 lanes x 9) and every load instruction reads whole
//     128-byte lines of 32 / L rows;
//   - the chunks are loaded into registers before pdl_wait() (cuda_launch.cuh): under
//     programmatic dependent launch they stream in while the previous kernel finishes;
//   - the input transform (RMSNorm, SwiGLU) is applied chunk by chunk as the lanes read x,
//     with no shared memory and no barrier: RMSNorm's sum of squares is accumulated in the
//     same pass and applied to the finished dot product, y = (sum_i w_i g_i x_i) *
//     rsqrt(mean(x^2) + eps), since every row group's lanes together read all of x;
//   - the epilogue stores, adds into the residual stream, or rotates (RoPE) and splits
//     q / k / v; RoPE's pair (r, r + 1) sits in neighbouring lane groups of one warp.
// The sums are reduced by a fixed butterfly: results do not depend on scheduling.
// Version 1 (cuda_gemv_v1.cu: inputs transformed into shared memory, a warp per two rows)
// and its chained form (cuda_gemv_chain.cu) measured faster; this version is selected by
// SINKROUTER_GEMV=v2, or gemv(..., GemvVersion::V2). V1 is the default (gemv_default_version).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "core/cuda_check.h"
#include "cuda_device_util.cuh"
#include "cuda_gemv_common.cuh"
#include "core/cuda_launch.cuh"
#include "cuda_ops.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kMaxTokens = 8;
constexpr int kPrefetch = 12;  // 16-byte chunks of its row a lane holds in registers

__device__ __forceinline__ float sum_squares(const float4& a, const float4& b, float acc) {
  acc = fmaf(a.x, a.x, acc);
  acc = fmaf(a.y, a.y, acc);
  acc = fmaf(a.z, a.z, acc);
  acc = fmaf(a.w, a.w, acc);
  acc = fmaf(b.x, b.x, acc);
  acc = fmaf(b.y, b.y, acc);
  acc = fmaf(b.z, b.z, acc);
  return fmaf(b.w, b.w, acc);
}

__device__ __forceinline__ float4 mul4(const float4& a, const float4& b) {
  return make_float4(a.x * b.x, a.y * b.y, a.z * b.z, a.w * b.w);
}

// Chunk c (columns 8c .. 8c + 7) of every token: acc[t] += w . transformed x[t]; for
// RMSNorm also ss[t] += x^2 (the transformed input is x * gain here; the 1 / rms factor
// is applied to the finished sum). Token rows past a.tokens read the last real row (their
// results are discarded), so the loads need no branch.
template <int NT, GemvIn IN>
__device__ __forceinline__ void accumulate_chunk(const GemvArgs& a, int c, const uint4& w, float (&acc)[NT],
                                                 float (&ss)[NT]) {
  float4 ga = {}, gb = {};
  if constexpr (IN == GemvIn::RmsNorm) {
    const float4* g = reinterpret_cast<const float4*>(a.gain) + 2 * c;
    ga = g[0];
    gb = g[1];
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float* xt = a.x + int64_t(min(t, a.tokens - 1)) * a.ldx;
    const float4* xv = reinterpret_cast<const float4*>(xt) + 2 * c;
    float4 xa = xv[0], xb = xv[1];
    if constexpr (IN == GemvIn::RmsNorm) {
      ss[t] = sum_squares(xa, xb, ss[t]);
      xa = mul4(xa, ga);
      xb = mul4(xb, gb);
    } else if constexpr (IN == GemvIn::SwiGlu) {
      const float4* uv = reinterpret_cast<const float4*>(xt + a.in) + 2 * c;
      xa = swiglu4(xa, uv[0]);
      xb = swiglu4(xb, uv[1]);
    }
    acc[t] = dot8(w, xa, xb, acc[t]);
  }
}

// Token t's outputs of rows (r, r + 1) (QkvRope), or of row r alone (Store, Accumulate).
template <GemvOut OUT>
__device__ __forceinline__ void gemv_store_row(const GemvArgs& a, int t, int r, float y0, float y1) {
  if constexpr (OUT == GemvOut::Store) {
    a.y[t * a.ldy + r] = y0;
  } else if constexpr (OUT == GemvOut::Accumulate) {
    a.y[t * a.ldy + r] += y0;
  } else {
    store_qkv_rope(a, t, r, y0, y1);
  }
}

// grid: ceil(out / (kWarps * 32 / L)) CTAs of kThreads; L = lanes per row (8, 16 or 32).
template <int NT, GemvIn IN, GemvOut OUT>
__global__ void __launch_bounds__(kThreads) gemv_kernel(GemvArgs a, int L) {
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  const int j = lane % L;  // lane within the row's group
  const int row = (int(blockIdx.x) * kWarps + warp) * (32 / L) + lane / L;
  const bool live = row < a.out;
  const int chunks = a.in / 8;
  const uint4* wrow = reinterpret_cast<const uint4*>(a.w) + int64_t(live ? row : 0) * chunks;

  // The weights first: they do not depend on the previous kernel.
  uint4 w[kPrefetch];
#pragma unroll
  for (int i = 0; i < kPrefetch; ++i) {
    const int c = j + i * L;
    w[i] = live && c < chunks ? __ldg(wrow + c) : make_uint4(0u, 0u, 0u, 0u);
  }
  pdl_wait();
  pdl_launch_dependents();

  float acc[NT], ss[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = ss[t] = 0.f;
#pragma unroll
  for (int i = 0; i < kPrefetch; ++i) {
    const int c = j + i * L;
    if (c < chunks) accumulate_chunk<NT, IN>(a, c, w[i], acc, ss);
  }
  // Rows longer than the registers hold (in > 8 * L * kPrefetch): the rest as it comes.
  for (int c = j + kPrefetch * L; c < chunks; c += L)
    accumulate_chunk<NT, IN>(a, c, live ? __ldg(wrow + c) : make_uint4(0u, 0u, 0u, 0u), acc, ss);

  // Butterfly over the group's L lanes: every lane of the group ends with the totals.
  for (int o = L / 2; o > 0; o >>= 1) {
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], o);
      if constexpr (IN == GemvIn::RmsNorm) ss[t] += __shfl_xor_sync(0xffffffffu, ss[t], o);
    }
  }
  float y[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t)
    y[t] = IN == GemvIn::RmsNorm ? acc[t] * rsqrtf(ss[t] / float(a.in) + a.eps) : acc[t];

  if constexpr (OUT == GemvOut::QkvRope) {
    // Row r + 1 is the next lane group (lane + L); the even row's group writes the pair.
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const float other = __shfl_xor_sync(0xffffffffu, y[t], L);
      if (j == t && t < a.tokens && live && row % 2 == 0) gemv_store_row<OUT>(a, t, row, y[t], other);
    }
  } else {
#pragma unroll
    for (int t = 0; t < NT; ++t)
      if (j == t && t < a.tokens && live) gemv_store_row<OUT>(a, t, row, y[t], 0.f);
  }
}

// Lanes per row: the fewest of 8, 16, 32 whose share of the row fits the registers
// (QkvRope: at most 16, so that a warp holds RoPE's pairs of rows).
int lanes_per_row(int in, GemvOut out) {
  const int chunks = in / 8;
  const int most = out == GemvOut::QkvRope ? 16 : 32;
  for (int l = 8; l < most; l *= 2)
    if ((chunks + l - 1) / l <= kPrefetch) return l;
  return most;
}

// One launch of an instantiated width (gemv_launch_group, cuda_gemv_common.cuh).
struct Launcher {
  template <int NT, GemvIn IN, GemvOut OUT>
  static void run(const GemvArgs& a, cudaStream_t stream) {
    const int L = lanes_per_row(a.in, OUT);
    const int rows_per_cta = kWarps * (32 / L);
    launch_pdl(gemv_kernel<NT, IN, OUT>, dim3(unsigned((a.out + rows_per_cta - 1) / rows_per_cta)), dim3(kThreads), 0,
               stream, a, L);
  }
};

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void gemv_v2(const GemvArgs& a, GemvIn in, GemvOut out, cudaStream_t stream) {
  gemv_check_shape(a, in, out);
  SR_CHECK(aligned16(a.w) && aligned16(a.x) && a.ldx % 4 == 0 && (in != GemvIn::RmsNorm || aligned16(a.gain)),
           "gemv: weights, inputs and gains must start at 16-byte boundaries with a row stride that is a multiple "
           "of 4 floats (got ldx {})",
           a.ldx);
  gemv_launch_sliced<Launcher>(a, in, out, kMaxTokens, stream);
}

GemvVersion gemv_default_version() {
  static const GemvVersion version = [] {
    const char* env = std::getenv("SINKROUTER_GEMV");
    // V1 by default again since run v7f: once the input prologue issued all its loads first
    // (cuda_gemv_common.cuh), V1 decoded 7 % faster than the chain at 8K and 32K and 24 % at
    // batch 8 in the same run (1,017 / 945 and 819 / 768 tok/s, 2,735 / 2,198 seq-steps/s),
    // while the chain, whose stages wait on grid barriers, did not move. The chain was the
    // default in runs v6d-v7e (3 % faster than V1 then). V2: slower than V1 in every engine
    // run (its unrolled register prefetch makes kernels 2-3x larger, fetched cold on every SM;
    // docs/PERF.md, v4).
    if (env == nullptr || *env == 0 || std::strcmp(env, "v1") == 0) return GemvVersion::V1;
    if (std::strcmp(env, "chain") == 0) return GemvVersion::Chain;
    if (std::strcmp(env, "v2") == 0) return GemvVersion::V2;
    fail("SINKROUTER_GEMV={}: expected v1, v2 or chain", env);
  }();
  return version;
}

const char* gemv_version_name(GemvVersion version) {
  return version == GemvVersion::V1 ? "v1" : version == GemvVersion::V2 ? "v2" : "chain";
}

void gemv(const GemvArgs& a, GemvIn in, GemvOut out, cudaStream_t stream, GemvVersion version) {
  if (version == GemvVersion::V1) {
    gemv_v1(a, in, out, stream);
  } else if (version == GemvVersion::V2) {
    gemv_v2(a, in, out, stream);
  } else {
    const GemvStage stage{a, in, out};
    gemv_chain(&stage, 1, nullptr, stream);
  }
}

void gemv(const GemvArgs& a, GemvIn in, GemvOut out, cudaStream_t stream) {
  gemv(a, in, out, stream, gemv_default_version());
}

}  // namespace sinkrouter::cuda
