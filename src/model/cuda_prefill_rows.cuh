// The last step of the flash prefill kernels (cuda_prefill_attention.cu, _flash2.cu,
// _wgmma.cu): one m16 tile's rows g and g + 8 of a warp, normalised and stored with their
// log-sum-exp.
//
//   o       [D / 8][4]  the tile's accumulators, mma.sync C-fragment layout (wgmma's too):
//                       n-tile dt holds c0, c1 of row g and c2, c3 of row g + 8, columns
//                       8 dt + 2 t4, + 1
//   l       [2]         this lane's part of the two rows' sums (the quad adds them here)
//   m_nat   [2]         the two rows' running maxima in natural-log units (the lse is
//                       m_nat + ln(sum))
//   row                 the chunk row of the tile's row g (rows at or past a.c are not stored)
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "cuda_prefill_attention.h"

namespace sinkrouter {

template <int D>
__device__ __forceinline__ void store_prefill_rows(const PrefillAttentionArgs& a, const float (&o)[D / 8][4],
                                                   const float (&l)[2], const float (&m_nat)[2], int64_t row, int qh,
                                                   int t4) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float sum = l[r];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const float inv = 1.f / sum;
    const int64_t qi = row + 8 * r;
    if (qi < a.c) {
      __nv_bfloat16* dst = a.out + (qi * a.n_head + qh) * D;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt)
        *reinterpret_cast<__nv_bfloat162*>(dst + dt * 8 + 2 * t4) =
            __floats2bfloat162_rn(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
      if (a.lse != nullptr && t4 == 0) a.lse[qi * a.n_head + qh] = m_nat[r] + logf(sum);
    }
  }
}

}  // namespace sinkrouter
