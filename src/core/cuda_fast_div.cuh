// Division by a value fixed at run time, for device code (page and block lookups).
#pragma once

#include <cstdint>

namespace sinkrouter::cuda {

// Division by a run-time constant d (1 <= d < 2^31) of n in [0, 2^31) by a multiply and a
// shift: with s = ceil(log2 d) and m = floor(2^32 (2^s - d) / d) + 1, n / d equals
// (umulhi(n, m) + n) >> s (Granlund and Montgomery's round-up method). Set up once per
// CTA; page and routing-block lookups then cost no division per token.
struct FastDiv {
  uint32_t d, m, s;
  __device__ explicit FastDiv(int divisor) : d(uint32_t(divisor)), s(0) {
    while ((1u << s) < d) ++s;
    m = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << s) - d)) / d + 1);
  }
  // umulhi(n, m) < n, so the sum stays below 2^32 for n < 2^31.
  __device__ __forceinline__ uint32_t div(uint32_t n) const { return (__umulhi(n, m) + n) >> s; }
};

}  // namespace sinkrouter::cuda
