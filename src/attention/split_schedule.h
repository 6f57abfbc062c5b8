// The chunk size of the flat Split-K schedule (AttnArgs in decode_cuda_kernels.cuh): unit u
// of T_u tokens gets splits_of(T_u, chunk) = ceil(T_u / chunk) splits, laid end to end over
// the grid of waves * wave_ctas + units CTAs. find_split (decode_cuda_split.cuh) computes
// it on the device from the units' tokens; this header is the formula it shares with the
// CPU tests (tests/attention/split_schedule_test.cpp).
//
// One wave: chunk = total / (wave_ctas - units), so that every split fits in one wave of
// resident CTAs (sum ceil(T_u / c) <= total / c + units). Several waves (CudaDecodeOptions::
// waves): the CTAs that finish early take the next splits, which evens out a tail of slow
// CTAs (kernel run 13a: with equal tokens a CTA, routed decode's loops at Llama B=8 512K ran
// from 1,430 to 2,056 us), but each split pays a prologue and a partial (~5 us: run 13c's
// dense Llama B=1 512K was 4 % slower in 4 waves of 4K-token splits). So no more waves are
// taken than keep every split at waves_min_chunk tokens or more; shorter calls keep one
// wave, and the later waves' CTAs find no split and return.
#pragma once

#include <cstdint>

#include "sinkrouter/kv/paged_kv.h"  // SR_HOST_DEVICE

namespace sinkrouter::split_schedule {

SR_HOST_DEVICE inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Tokens over `slots` CTAs (at least one), and at least min_split.
SR_HOST_DEVICE inline int64_t chunk_over(int64_t total, int64_t slots, int min_split) {
  const int64_t c = ceil_div(total, slots > 1 ? slots : 1);
  return c > min_split ? c : int64_t(min_split);
}

// The chunk of `total` tokens in `units` units over the most waves, up to `waves`, of
// `wave_ctas` CTAs whose splits keep at least waves_min_chunk tokens; one wave when none
// does. (More waves never make longer splits, so calls whose one-wave split is already
// shorter skip the search.)
SR_HOST_DEVICE inline int64_t chunk_for(int64_t total, int units, int wave_ctas, int waves, int waves_min_chunk,
                                        int min_split) {
  const int64_t one_wave = chunk_over(total, int64_t(wave_ctas) - units, min_split);
  if (waves <= 1 || one_wave < waves_min_chunk) return one_wave;
  for (int w = waves; w >= 2; --w) {
    const int64_t c = chunk_over(total, int64_t(w) * wave_ctas - units, min_split);
    if (c >= waves_min_chunk) return c;
  }
  return one_wave;
}

// Splits of a unit of `tokens` (one for an empty unit: it still writes its output).
SR_HOST_DEVICE inline int splits_of(int64_t tokens, int64_t chunk) {
  return tokens > chunk ? int(ceil_div(tokens, chunk)) : 1;
}

}  // namespace sinkrouter::split_schedule
