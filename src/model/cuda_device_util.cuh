// Device helpers shared by the forward-pass kernels (internal header, CUDA builds only):
// RoPE's rotation, used by the prefill split kernel and the decode GEMV epilogue, SwiGLU's
// product (the prefill kernel and the GEMV prologues), warp- and block-wide sums, and an L2
// prefetch of a byte range.
#pragma once

#include <cstdint>

namespace sinkrouter::cuda {

// Rotates the adjacent pair (x0, x1) by pos * inv_freq, as Rope::apply does on the CPU.
// The angle is formed and reduced to [-pi, pi] in double (2^19 radians in float would be off
// by ~0.03), then sin and cos run in float on the small reduced angle (error ~1e-7).
__device__ __forceinline__ void rope_rotate(float& x0, float& x1, int64_t pos, double inv_freq) {
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  double angle = double(pos) * inv_freq;
  angle -= rint(angle * (1.0 / kTwoPi)) * kTwoPi;
  float s, c;
  sincosf(float(angle), &s, &c);
  const float y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
  x0 = y0;
  x1 = y1;
}

// SwiGLU's product for one element: silu(g) * u = g / (1 + e^-g) * u (the CPU's formula).
__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.f + expf(-g)) * u; }
__device__ __forceinline__ float4 swiglu4(const float4& g, const float4& u) {
  return make_float4(silu_times(g.x, u.x), silu_times(g.y, u.y), silu_times(g.z, u.z), silu_times(g.w, u.w));
}

// Sum over the warp's 32 lanes (a butterfly: every lane gets the total, in a fixed order).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Asks L2 to prefetch [p, p + bytes), one 128-byte line per request, the requests spread
// over `threads` threads of which this is `thread` (constant data: allowed before pdl_wait).
__device__ __forceinline__ void prefetch_l2(const void* p, int64_t bytes, int thread, int threads) {
  const char* c = static_cast<const char*>(p);
  for (int64_t off = int64_t(thread) * 128; off < bytes; off += int64_t(threads) * 128)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(c + off));
}

// Sum over the block of one float per thread; every thread gets the total. All threads of
// the block must call it (it holds two barriers).
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float warp_sums[32];
  __shared__ float total;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.f;
    for (int w = 0; w < int(blockDim.x + 31) / 32; ++w) s += warp_sums[w];
    total = s;
  }
  __syncthreads();
  return total;
}

}  // namespace sinkrouter::cuda
