// A raw, non-owning description of a batch's paged KV cache. The same struct describes
// host and device memory, so the CPU reference, the fast CPU path and the CUDA kernels
// read one layout:
//
//   pages           [num_pages, 2 (K, V), page_size, num_kv_heads, head_dim]   (FlashInfer/vLLM "NHD")
//   indptr          [batch + 1]      pages of sequence b are indices[indptr[b] .. indptr[b+1])
//   indices         [indptr[batch]]  page ids
//   last_page_len   [batch]          tokens in the last page, 1..page_size (0 for an empty sequence)
//
// Our additions, indexed the same way (a cache built elsewhere gets them from
// build_summaries()):
//   summaries       [num_slots, num_kv_heads, 2 (min, max), head_dim] in the KV dtype,
//                   per-dimension key bounds of one routing block (block_size tokens),
//                   rounded outward so that they stay true bounds
//   value_norm_max  [num_slots, num_kv_heads] float, max_i ||v_i||_2 over the block (rounded up)
//   summary_indptr  [batch + 1]   slot of logical block j of sequence b is
//   summary_indices               summary_indices[summary_indptr[b] + j]
//   anchor_pos      [batch, num_kv_heads, max_anchors] anchor token positions, ascending
//   anchor_count    [batch, num_kv_heads]
// Optional (null when absent; kernels that do not use them ignore them):
//   key_basis       [num_kv_heads, head_dim, head_dim] float, an orthonormal basis per KV
//                   head (rows; kv/key_basis.h), with basis_error e >= ||I - P^T P||_2
//   basis_summaries [num_slots, num_kv_heads, 2 (min, max), head_dim] in the KV dtype, the
//                   box of each block's rotated keys P k, rounded outward
#pragma once

#include <cstdint>

#include "sinkrouter/core/dtype.h"

#if defined(__CUDACC__)
#define SR_HOST_DEVICE __host__ __device__
#else
#define SR_HOST_DEVICE
#endif

namespace sinkrouter {

struct PagedKV {
  const void* pages = nullptr;
  DType dtype = DType::BF16;
  int page_size = 16;
  int num_kv_heads = 0;
  int head_dim = 0;

  int batch = 0;
  const int32_t* indptr = nullptr;
  const int32_t* indices = nullptr;
  const int32_t* last_page_len = nullptr;

  int block_size = 64;
  const void* summaries = nullptr;
  const float* value_norm_max = nullptr;
  const int32_t* summary_indptr = nullptr;
  const int32_t* summary_indices = nullptr;

  int max_anchors = 0;
  const int32_t* anchor_pos = nullptr;
  const int32_t* anchor_count = nullptr;

  const float* key_basis = nullptr;
  const void* basis_summaries = nullptr;
  double basis_error = 0;

  SR_HOST_DEVICE int64_t seq_len(int b) const {
    const int32_t pages_used = indptr[b + 1] - indptr[b];
    return pages_used == 0 ? 0 : int64_t(pages_used - 1) * page_size + last_page_len[b];
  }
  // Element offset of token t's K row of KV head h in sequence b (V is + page_size*H*D).
  SR_HOST_DEVICE int64_t k_offset(int b, int64_t t, int h) const { return k_offset_from(indptr[b], t, h); }
  // The same, given the sequence's first entry in indices (indptr[b]), loaded ahead.
  SR_HOST_DEVICE int64_t k_offset_from(int32_t first_page, int64_t t, int h) const {
    const int64_t page = indices[first_page + t / page_size];
    return ((page * 2) * page_size + t % page_size) * int64_t(num_kv_heads) * head_dim +
           int64_t(h) * head_dim;
  }
  SR_HOST_DEVICE int64_t v_stride() const { return int64_t(page_size) * num_kv_heads * head_dim; }
  // The summary slot of block j of sequence b. Kernels that load the slot ahead of its use
  // take the slot_* forms below; the block forms are the two steps in one.
  SR_HOST_DEVICE int32_t summary_slot(int b, int64_t j) const { return summary_indices[summary_indptr[b] + j]; }
  // Element offset of the (min) summary row of KV head h in a slot; max is + head_dim.
  SR_HOST_DEVICE int64_t slot_summary_offset(int64_t slot, int h) const {
    return (slot * num_kv_heads + h) * 2 * int64_t(head_dim);
  }
  SR_HOST_DEVICE float slot_value_norm(int64_t slot, int h) const { return value_norm_max[slot * num_kv_heads + h]; }
  // Element offset of the (min) summary row of block j of (b, h); max is + head_dim.
  SR_HOST_DEVICE int64_t summary_offset(int b, int64_t j, int h) const {
    return slot_summary_offset(summary_slot(b, j), h);
  }
  SR_HOST_DEVICE float block_value_norm(int b, int64_t j, int h) const {
    return slot_value_norm(summary_slot(b, j), h);
  }
  SR_HOST_DEVICE bool has_summaries() const { return summaries != nullptr; }
  SR_HOST_DEVICE bool has_key_basis() const { return key_basis != nullptr && basis_summaries != nullptr; }
  // Bytes of K plus V for one token of one KV head.
  SR_HOST_DEVICE int64_t token_bytes() const {
    return 2 * int64_t(head_dim) * (dtype == DType::F32 ? 4 : 2);
  }
  SR_HOST_DEVICE int64_t summary_bytes() const {
    return 2 * int64_t(head_dim) * (dtype == DType::F32 ? 4 : 2) + 4;
  }
};

}  // namespace sinkrouter
