// The chunk size of the flat Split-K schedule (AttnArgs in decode_cuda_kernels.cuh): unit u
// of T_u tokens gets splits_of(T_u, chunk) = ceil(T_u / chunk) splits, and the splits of all
// units must fit in the wave of `target` CTAs. The kernels compute it in parallel
// (find_split in decode_cuda_split.cuh: a CTA's threads sum over the units); this header is
// the formula they share with the CPU, and choose_chunk below is its plain reference
// (tests/attention/split_schedule_test.cpp).
//
// Why candidates. chunk = total / (target - units) always fits, since
// sum ceil(T_u / c) <= total / c + units; but with units of unequal length it can leave up
// to `units` slots of the wave idle, each remaining CTA taking up to target / (target -
// units) times its share (kernel run 12g's trace: 204 of 264 CTAs at work in routed decode at
// Llama B=8 512K, whose kept tokens differ by head). Smaller chunks, down to total / target,
// often fit too: the smallest candidate that fits is taken.
#pragma once

#include <cstdint>
#include <vector>

#include "sinkrouter/kv/paged_kv.h"  // SR_HOST_DEVICE

namespace sinkrouter::split_schedule {

constexpr int kCandidates = 8;  // chunks tried; the last one, total / (target - units), always fits

SR_HOST_DEVICE inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Candidate k in [0, kCandidates): the tokens over target - units * k / (kCandidates - 1)
// slots (at least one), and at least min_split tokens.
SR_HOST_DEVICE inline int64_t candidate_chunk(int64_t total, int target, int units, int min_split, int k) {
  const int64_t slots = int64_t(target) - int64_t(units) * k / (kCandidates - 1);
  const int64_t c = ceil_div(total, slots > 1 ? slots : 1);
  return c > min_split ? c : int64_t(min_split);
}

// Splits of a unit of `tokens` (one for an empty unit: it still writes its output).
SR_HOST_DEVICE inline int splits_of(int64_t tokens, int64_t chunk) {
  if (tokens <= chunk) return 1;
  // Both under 2^31 in practice (a unit's tokens): 32-bit division, several times cheaper
  // on the GPU, where every CTA counts the candidates on its critical path.
  if (tokens < (int64_t(1) << 31)) return int((uint32_t(tokens) + uint32_t(chunk) - 1) / uint32_t(chunk));
  return int(ceil_div(tokens, chunk));
}

// Whether the candidates are worth counting: when the always-fitting chunk is min_split
// (small calls) they are all min_split, and with one unit or a target of at most units + 1
// the last candidate is the only one known to fit.
SR_HOST_DEVICE inline bool refine(int64_t safe_chunk, int target, int units, int min_split) {
  return safe_chunk > min_split && units > 1 && target > units + 1;
}

// The plain reference: the chunk find_split chooses for units of these token counts.
inline int64_t choose_chunk(const std::vector<int64_t>& tokens, int target, int min_split) {
  const int units = int(tokens.size());
  int64_t total = 0;
  for (int64_t t : tokens) total += t;
  const int64_t safe = candidate_chunk(total, target, units, min_split, kCandidates - 1);
  if (!refine(safe, target, units, min_split)) return safe;
  for (int k = 0; k < kCandidates - 1; ++k) {
    const int64_t c = candidate_chunk(total, target, units, min_split, k);
    int64_t n = 0;
    for (int64_t t : tokens) n += splits_of(t, c);
    if (n <= target) return c;
  }
  return safe;
}

}  // namespace sinkrouter::split_schedule
