// Device-side conversions between float and the 16-bit storage types, on raw bits (the
// cache stores uint16_t patterns, as on the host). Rounding is to nearest even, as the
// host's to_bf16 / to_f16 (core/dtype.h) round; only NaN payloads may differ.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace sinkrouter::cuda {

// Storage tags for templates: Bf16 / F16 keys and values.
struct Bf16Tag {};
struct F16Tag {};

__device__ __forceinline__ float bits_to_float(uint16_t x, Bf16Tag) {
  return __uint_as_float(uint32_t(x) << 16);
}
__device__ __forceinline__ float bits_to_float(uint16_t x, F16Tag) {
  return __half2float(__ushort_as_half(x));
}
__device__ __forceinline__ uint16_t float_to_bits(float f, Bf16Tag) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}
__device__ __forceinline__ uint16_t float_to_bits(float f, F16Tag) {
  return __half_as_ushort(__float2half_rn(f));
}

// The two 16-bit values of one 32-bit word (low half first), widened to float.
template <typename Tag>
__device__ __forceinline__ void unpack2(uint32_t w, float& lo, float& hi, Tag) {
  lo = bits_to_float(uint16_t(w & 0xffffu), Tag{});
  hi = bits_to_float(uint16_t(w >> 16), Tag{});
}

// Eight 16-bit values of one 16-byte load, widened to float.
template <typename Tag>
__device__ __forceinline__ void unpack8(const uint4& raw, float (&x)[8], Tag) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) unpack2(w[i], x[2 * i], x[2 * i + 1], Tag{});
}

// Input element loads for appends and queries: float, or 16-bit bits of either type.
__device__ __forceinline__ float load_as_float(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_as_float(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ float load_as_float(const __half* p, int64_t i) { return __half2float(p[i]); }

__device__ __forceinline__ void store_from_float(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store_from_float(__nv_bfloat16* p, int64_t i, float v) {
  p[i] = __float2bfloat16_rn(v);
}
__device__ __forceinline__ void store_from_float(__half* p, int64_t i, float v) { p[i] = __float2half_rn(v); }

}  // namespace sinkrouter::cuda
