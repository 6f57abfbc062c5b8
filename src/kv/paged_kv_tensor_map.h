// The paged KV cache as a TMA tensor (sm_90), for kernels that copy K/V boxes straight
// from the pages into shared memory (the prefill attention v4, the decode attention's TMA
// copies).
//
//   pages  [num_pages, 2 (K, V), page_size, num_kv_heads, head_dim]   bf16 or f16
//
// seen as a 5-D tensor, dims innermost first:
//   (64 elements, num_kv_heads * head_dim / 64, page_size, 2, 2^31 pages)
// so that a head of head_dim 128 is two 64-element (128-byte) rows, each one 128-byte
// swizzle line. A box is {64, 1, box_rows, box_kv, 1}: box_rows tokens of one 64-element
// part of one head, of K alone (box_kv 1, coordinate 3 picks K or V) or K then V (box_kv 2);
// in shared memory [box_kv][box_rows][128 bytes], in the 128-byte swizzle (chunk c of row r
// at r * 128 + 16 (c ^ r % 8) from a 1024-byte-aligned start).
#pragma once

#include <cuda.h>

#include "sinkrouter/kv/paged_kv.h"

namespace sinkrouter::cuda {

// Encodes the map (host only; needs tensor_map_encoder() non-null). l2_promotion: 0, 128 or
// 256 (bytes the L2 fetches at a miss). Errors name `who`.
CUtensorMap paged_kv_tensor_map(const PagedKV& kv, int box_rows, int box_kv, int l2_promotion, const char* who);

}  // namespace sinkrouter::cuda
