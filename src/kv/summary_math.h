// Per-token update of a routing block's key summary (outward-rounded per-dimension min
// and max) and value-norm maximum. Shared by the cache's append and build_summaries.
#pragma once

#include <cmath>
#include <cstdint>

#include "sinkrouter/core/dtype.h"

namespace sinkrouter {

inline uint16_t round_to_storage(float x, bool bf) { return bf ? to_bf16(x).bits : to_f16(x).bits; }
inline float storage_to_float(uint16_t x, bool bf) { return bf ? to_float(bf16{x}) : f16_to_float(x); }

// summary: [2, D] raw 16-bit (min row, then max row). k, v: [D] raw 16-bit of one token.
// first: this token opens the block, so the summary is overwritten rather than widened.
inline void update_block_summary(const uint16_t* k, const uint16_t* v, int D, bool bf, bool first,
                                 uint16_t* summary, float* vnorm_max) {
  double norm2 = 0;
  for (int d = 0; d < D; ++d) {
    const float x = storage_to_float(k[d], bf);
    const float lo = storage_to_float(summary[d], bf), hi = storage_to_float(summary[D + d], bf);
    // The key is already in the storage type, so the outward rounding is exact here; it
    // matters when summaries are kept in a narrower type than the keys.
    if (first || x < lo) summary[d] = bf ? to_bf16_down(x).bits : to_f16_down(x).bits;
    if (first || x > hi) summary[D + d] = bf ? to_bf16_up(x).bits : to_f16_up(x).bits;
    const double y = storage_to_float(v[d], bf);
    norm2 += y * y;
  }
  // Round up by a few ulps so that a float comparison against it is conservative.
  const float norm = float(std::sqrt(norm2) * (1.0 + 1e-6));
  if (first || norm > *vnorm_max) *vnorm_max = norm;
}

// summary: [2, D] raw 16-bit min and max rows of a block's rotated keys. rot: [D] one
// rotated key in float64, rounded outward into the storage type (first float, then 16 bits).
inline void update_rotated_summary(const double* rot, int D, bool bf, bool first, uint16_t* summary) {
  for (int d = 0; d < D; ++d) {
    float lo = float(rot[d]), hi = lo;
    if (double(lo) > rot[d]) lo = std::nextafter(lo, -INFINITY);
    if (double(hi) < rot[d]) hi = std::nextafter(hi, INFINITY);
    const uint16_t l = bf ? to_bf16_down(lo).bits : to_f16_down(lo).bits;
    const uint16_t h = bf ? to_bf16_up(hi).bits : to_f16_up(hi).bits;
    if (first || storage_to_float(l, bf) < storage_to_float(summary[d], bf)) summary[d] = l;
    if (first || storage_to_float(h, bf) > storage_to_float(summary[D + d], bf)) summary[D + d] = h;
  }
}

}  // namespace sinkrouter
