// The mergeable state of Split-K attention. A partial result over a subset S of tokens,
// for one query head:
//   m   = max_{i in S} s_i                    (-inf when S is empty)
//   l   = sum_{i in S} exp(s_i - m)
//   acc = sum_{i in S} exp(s_i - m) * v_i     (unnormalised, head_dim floats)
// Partials over disjoint sets merge exactly (up to rounding), in any order; the final
// output is acc / l. The same functions serve the CPU paths and the CUDA combine step.
#pragma once

#include <cmath>

#include "sinkrouter/kv/paged_kv.h"

namespace sinkrouter {

// Merges (m2, l2, acc2) into (m, l, acc). NaN-safe: an empty partial (m = -inf, l = 0)
// changes nothing, and merging into an empty state copies the other.
template <typename Acc>
SR_HOST_DEVICE inline void merge_state(float& m, float& l, Acc* acc, float m2, float l2,
                                       const Acc* acc2, int head_dim) {
  if (!(l2 > 0.0f)) return;
  if (!(l > 0.0f)) {
    m = m2;
    l = l2;
    for (int d = 0; d < head_dim; ++d) acc[d] = acc2[d];
    return;
  }
  const float m_new = m > m2 ? m : m2;
  const float a = expf(m - m_new), b = expf(m2 - m_new);
  l = l * a + l2 * b;
  for (int d = 0; d < head_dim; ++d) acc[d] = acc[d] * a + acc2[d] * b;
  m = m_new;
}

}  // namespace sinkrouter
