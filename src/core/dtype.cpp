#include "sinkrouter/core/dtype.h"

#include <cmath>
#include <limits>

#include "sinkrouter/core/error.h"

namespace sinkrouter {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::F64: return "f64";
  }
  return "?";
}

DType parse_dtype(const std::string& name) {
  if (name == "f32" || name == "float32" || name == "fp32") return DType::F32;
  if (name == "f16" || name == "fp16" || name == "float16") return DType::F16;
  if (name == "bf16" || name == "bfloat16") return DType::BF16;
  if (name == "f64" || name == "float64") return DType::F64;
  fail("unknown dtype '{}' (expected f32, f16, bf16 or f64)", name);
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::F64: return 8;
  }
  return 0;
}

double dtype_epsilon(DType t) {
  switch (t) {
    case DType::F32: return std::ldexp(1.0, -24);
    case DType::F16: return std::ldexp(1.0, -11);
    case DType::BF16: return std::ldexp(1.0, -8);
    case DType::F64: return std::ldexp(1.0, -53);
  }
  return 0;
}

float f16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  if (exp == 0) {
    if (mant == 0) return bits_float(sign);
    // Subnormal: value = mant * 2^-24, exact in float.
    float v = std::ldexp(float(mant), -24);
    return sign ? -v : v;
  }
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t float_to_f16(float f) {
  const uint32_t u = float_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));  // NaN
  if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (abs >= 0x38800000u) {                                 // normal half (>= 2^-14)
    uint32_t v = abs - (112u << 23);                        // rebias exponent
    v += 0xfffu + ((v >> 13) & 1u);                         // round to nearest even
    return uint16_t(sign | (v >> 13));
  }
  // Subnormal half or zero: value / 2^-24 rounded to nearest even integer.
  float scaled = bits_float(abs) * 16777216.0f;  // exact (power of two)
  float r = std::nearbyint(scaled);               // default mode: ties to even
  return uint16_t(sign | uint16_t(r));
}

namespace {

template <typename T, typename Round>
T round_outward(float f, Round round, bool up) {
  T r = round(f);
  float back = to_float(r);
  if (std::isnan(f) || std::isinf(back) || back == f) return r;
  if (up ? back > f : back < f) return r;
  // Step one unit in the last place away from zero or toward it.
  const bool positive = !(r.bits & 0x8000u);
  uint16_t mag = r.bits & 0x7fffu;
  if (mag == 0) {
    // r is +-0 and f is a tiny nonzero: the smallest subnormal in the needed direction.
    return T{uint16_t(up ? 0x0001u : 0x8001u)};
  }
  const bool away = (up == positive);
  r.bits = away ? uint16_t(r.bits + 1) : uint16_t(r.bits - 1);
  return r;
}

}  // namespace

bf16 to_bf16_up(float f) { return round_outward<bf16>(f, to_bf16, true); }
bf16 to_bf16_down(float f) { return round_outward<bf16>(f, to_bf16, false); }
f16 to_f16_up(float f) { return round_outward<f16>(f, to_f16, true); }
f16 to_f16_down(float f) { return round_outward<f16>(f, to_f16, false); }

}  // namespace sinkrouter
