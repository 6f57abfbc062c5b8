// Element types and conversions. bf16 and fp16 are stored as raw 16-bit patterns;
// float -> 16-bit conversion rounds to nearest, ties to even (as CUDA's __float2bfloat16
// and __float2half do), and the *_up / *_down variants round outward, which the block
// summaries need so that a rounded bound is still a bound.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace sinkrouter {

enum class DType : uint8_t { F32, F16, BF16, F64 };

const char* dtype_name(DType t);
// Parses "f32", "f16"/"fp16", "bf16", "f64"; throws Error on anything else.
DType parse_dtype(const std::string& name);
size_t dtype_size(DType t);

struct bf16 {
  uint16_t bits;
};
struct f16 {
  uint16_t bits;
};

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---- bf16 ----
inline float to_float(bf16 h) { return bits_float(uint32_t(h.bits) << 16); }

inline bf16 to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x40)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return bf16{uint16_t(u >> 16)};
}

// ---- fp16 (IEEE binary16) ----
float f16_to_float(uint16_t h);
uint16_t float_to_f16(float f);  // round to nearest even, overflow -> inf
inline float to_float(f16 h) { return f16_to_float(h.bits); }
inline f16 to_f16(float f) { return f16{float_to_f16(f)}; }

// Outward rounding: the returned value v satisfies to_float(v) >= f (_up) or <= f (_down).
bf16 to_bf16_up(float f);
bf16 to_bf16_down(float f);
f16 to_f16_up(float f);
f16 to_f16_down(float f);

inline float to_float(float f) { return f; }

// Convert float -> storage type T (T in float, bf16, f16), rounding to nearest even.
template <typename T>
inline T from_float(float f);
template <>
inline float from_float<float>(float f) { return f; }
template <>
inline bf16 from_float<bf16>(float f) { return to_bf16(f); }
template <>
inline f16 from_float<f16>(float f) { return to_f16(f); }

template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::F32; }
template <>
constexpr DType dtype_of<bf16>() { return DType::BF16; }
template <>
constexpr DType dtype_of<f16>() { return DType::F16; }
template <>
constexpr DType dtype_of<double>() { return DType::F64; }

// Unit roundoff of a storage type (half the distance from 1 to the next value).
double dtype_epsilon(DType t);

}  // namespace sinkrouter
