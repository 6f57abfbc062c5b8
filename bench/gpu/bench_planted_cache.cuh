// The benchmark's planted caches, generated on the device: pseudo-normal q, keys and values from
// a hash of their index, a sink at position 0 that every query of its group scores exactly 20 on
// (after scaling), and routing blocks made quiet (keys scaled by 0.02) by a fixed pattern, so
// that the fast routed rows skip exactly the planted fraction.
//
//   fill_q<<<...>>>(q, elements, seed);
//   fill_kv<<<(chunks, kv_heads, sequences), 256>>>(kv, lens, q, q_heads, quiet_pct,
//                                                  shared_heads, 20 / scale, seed);
//   then the cache's summaries rebuilt (DeviceKVCache::rebuild_summaries).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "sinkrouter/kv/paged_kv.h"

namespace sinkrouter::bench {

__device__ __forceinline__ uint32_t mix(uint64_t x) {
  x ^= x >> 31;
  x *= 0x7fb5d329728ea185ull;
  x ^= x >> 27;
  x *= 0x81dadef4bc2dd44dull;
  x ^= x >> 33;
  return uint32_t(x);
}

// Roughly N(0, 1): the sum of four uniforms, centred and scaled to unit variance.
__device__ __forceinline__ float pseudo_normal(uint64_t key) {
  const uint32_t a = mix(key), b = mix(key ^ 0x9e3779b97f4a7c15ull);
  const float s = float(a & 0xffff) + float(a >> 16) + float(b & 0xffff) + float(b >> 16);
  return (s / 65536.f - 2.f) * 1.7320508f;
}

__global__ void fill_q(__nv_bfloat16* q, int64_t n, uint64_t seed) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    q[i] = __float2bfloat16_rn(pseudo_normal(seed * 0x100000001b3ull + uint64_t(i)));
}

constexpr int kMaxPlantGroup = 8;  // the benchmark's shapes: G = 4 (Llama) and 3 (SmolLM2)

// The weights a_g of the planted sink's key k0 = sum_g a_g q_g such that every query of the
// group scores q_g . k0 = target on it: the group's Gram system (Q Q^T) a = target 1, solved by
// Gaussian elimination with partial pivoting (G <= kMaxPlantGroup; random rows of 64-128
// dimensions are far from dependent). Until run 28f the key was c sum_g q_g, whose score
// q_g . sum q varies with the draw: a head scoring ~10 on it kept its quiet blocks (Llama B=1
// 128K at 90 % planted skipped 67.5 %; the CPU rule on the same cache agreed, so the routers
// were right and the planting was not).
__device__ void sink_weights(const __nv_bfloat16* qs, int G, int D, float target, float* a) {
  float m[kMaxPlantGroup][kMaxPlantGroup + 1];
  for (int g = 0; g < G; ++g) {
    for (int e = 0; e <= g; ++e) {
      float dot = 0.f;
      for (int d = 0; d < D; ++d) dot += __bfloat162float(qs[g * D + d]) * __bfloat162float(qs[e * D + d]);
      m[g][e] = m[e][g] = dot;
    }
    m[g][G] = target;
  }
  for (int c = 0; c < G; ++c) {
    int p = c;
    for (int r = c + 1; r < G; ++r)
      if (fabsf(m[r][c]) > fabsf(m[p][c])) p = r;
    for (int e = 0; e <= G; ++e) {
      const float x = m[c][e];
      m[c][e] = m[p][e];
      m[p][e] = x;
    }
    for (int r = c + 1; r < G; ++r) {
      const float f = m[r][c] / m[c][c];
      for (int e = c; e <= G; ++e) m[r][e] -= f * m[c][e];
    }
  }
  for (int c = G - 1; c >= 0; --c) {
    float x = m[c][G];
    for (int e = c + 1; e < G; ++e) x -= m[c][e] * a[e];
    a[c] = x / m[c][c];
  }
}

// Writes K and V of every token of every sequence of the view. Block j of (s, h) is quiet
// (keys scaled by 0.02) when (37 j + 11 (s H + h')) mod 100 < quiet_pct, h' = h (distinct
// patterns) or 0 (shared_heads: the heads of a sequence skip the same blocks). Token 0's key is
// sum_g a_g q_g over its group (query row s, sink_weights), so that every query of the group
// scores exactly sink_dot (before scaling and bf16 rounding) on it.
__global__ void fill_kv(PagedKV kv, const int32_t* lens, const __nv_bfloat16* q, int q_heads,
                        int quiet_pct, bool shared_heads, float sink_dot, uint64_t seed) {
  const int s = int(blockIdx.z), h = int(blockIdx.y), H = kv.num_kv_heads, D = kv.head_dim, G = q_heads / H;
  const int64_t n = lens[s];
  __nv_bfloat16* pages = static_cast<__nv_bfloat16*>(const_cast<void*>(kv.pages));
  const __nv_bfloat16* qs = q + int64_t(s) * q_heads * D + int64_t(h) * G * D;  // q row s: copy s / batch, entry s % batch
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n * D; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / D;
    const int d = int(i % D);
    const int64_t j = t / kv.block_size;
    const bool quiet = (37 * j + 11 * (int64_t(s) * H + (shared_heads ? 0 : h))) % 100 < quiet_pct;
    const uint64_t key = (seed * 1000003ull + uint64_t(s) * H + h) * 0x100000001b3ull + uint64_t(i) * 2;
    float k = pseudo_normal(key) * (quiet ? 0.02f : 1.f);
    if (t == 0) {
      float a[kMaxPlantGroup];
      sink_weights(qs, G, D, sink_dot, a);
      k = 0.f;
      for (int g = 0; g < G; ++g) k += a[g] * __bfloat162float(qs[g * D + d]);
    }
    const int64_t off = kv.k_offset(s, t, h) + d;
    pages[off] = __float2bfloat16_rn(k);
    pages[off + kv.v_stride()] = __float2bfloat16_rn(pseudo_normal(key + 1));
  }
}

}  // namespace sinkrouter::bench
