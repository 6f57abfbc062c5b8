// The paged KV cache on a CUDA device: the same page pool, summaries, value-norm maxima
// and anchors as PagedKVCache (kv/paged_kv_cache.h), in the same layouts, with appends
// done by kernels so that a whole decode step can be captured in a CUDA graph.
//
// Graph-friendly by construction:
//   - every sequence gets the pages and summary slots of its whole capacity up front, so
//     its page table and summary table never change while tokens are appended;
//   - the sequence lengths live on the device (seq_lens) and the append kernels advance
//     them; nothing in an append or a decode step reads a length on the host.
//
// Device arrays (S sequences, H KV heads, D head dim, P page size, R routing block, A anchors):
//   pages            [num_pages, 2 (K, V), P, H, D]   bf16 or f16 bits ("NHD", as on the host)
//   page_indptr      [S + 1]   sequence s owns page_indices[page_indptr[s] .. page_indptr[s+1]),
//   page_indices               ceil(capacity_s / P) pages, in token order
//   seq_lens         [S]       tokens appended so far (<= capacity_s)
//   summaries        [num_slots, H, 2 (min, max), D], value_norm_max [num_slots, H]
//   summary_indptr   [S + 1]   slots of sequence s: ceil(capacity_s / R), in block order
//   summary_indices
//   anchor_pos       [S, H, A] ascending positions, anchor_count [S, H]
//
// The view handed to the kernels is a PagedKV whose indptr / summary_indptr give each
// sequence's first table entry (capacity-based, so indptr[s+1] - indptr[s] is NOT the
// used page count) plus seq_lens for the lengths; last_page_len is null.
#pragma once

#if defined(SINKROUTER_HAVE_CUDA)

#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "sinkrouter/core/dtype.h"
#include "sinkrouter/kv/paged_kv.h"
#include "sinkrouter/kv/paged_kv_cache.h"

namespace sinkrouter {

// What the CUDA kernels read: a device PagedKV (see above) and the lengths on the device.
struct DeviceKV {
  PagedKV kv;                       // device pointers; last_page_len is null
  const int32_t* seq_lens = nullptr;  // [kv.batch] device
  int64_t max_capacity = 0;         // longest capacity of the batch: sizes worst-case grids
  // The page tables (kv.indptr, kv.indices) are written only when the cache is built, by
  // synchronous uploads, never by a kernel: so the attention kernel may read them before it
  // waits for the kernel before it (programmatic dependent launch). DeviceKVCache's views set
  // it; a view whose tables a kernel writes must not.
  bool tables_fixed = false;
};

// A host copy of a device cache in the FlashInfer layout (indptr trimmed to the pages in
// use, last_page_len set), for comparing against the CPU paths.
struct HostKVSnapshot {
  std::vector<uint16_t> pages, summaries;
  std::vector<float> value_norm_max;
  std::vector<int32_t> indptr, indices, last_page_len;
  std::vector<int32_t> summary_indptr, summary_indices;
  std::vector<int32_t> anchor_pos, anchor_count;
  std::vector<int64_t> lengths;
  PagedKV view;  // host pointers into the vectors above
};

class DeviceKVCache {
 public:
  // Empty sequences with these capacities (tokens each, >= 1). config.num_pages is
  // ignored: the pool holds exactly the capacities. page_order_seed != 0 hands out the
  // pages in a random order (as a long-running server's pool would), 0 in order.
  DeviceKVCache(const KVCacheConfig& config, const std::vector<int64_t>& capacities,
                uint64_t page_order_seed = 0);
  // A copy of the host sequences `seqs` (pages, summaries, anchors, lengths), each with
  // room for `extra_tokens` more. Page ids of the copied pages are the host's.
  static DeviceKVCache upload(const PagedKVCache& host, const std::vector<int>& seqs,
                              int64_t extra_tokens);

  DeviceKVCache(DeviceKVCache&& other) noexcept;
  DeviceKVCache& operator=(DeviceKVCache&& other) noexcept;
  DeviceKVCache(const DeviceKVCache&) = delete;
  DeviceKVCache& operator=(const DeviceKVCache&) = delete;
  ~DeviceKVCache();

  const KVCacheConfig& config() const { return config_; }
  int num_sequences() const { return int(capacities_.size()); }
  const std::vector<int64_t>& capacities() const { return capacities_; }
  int64_t num_pages() const { return num_pages_; }
  size_t page_pool_bytes() const;

  // Sequences [first, first + count) as one batch (count -1: to the end).
  DeviceKV view(int first = 0, int count = -1) const;

  // One decode step's append: token k[s], v[s] (each [H, D]) goes to the end of sequence
  // first + s for s in [0, count). k, v: [count, H, D] device, f32, bf16 or f16 (rounded
  // to the cache dtype, nearest even). Updates the touched blocks' summaries and value-norm
  // maxima, the default anchors and seq_lens, all on the device. A sequence already at
  // capacity is left unchanged and raises the overflow flag (see check_errors()).
  void append_step(const void* k, const void* v, DType dtype, cudaStream_t stream,
                   int first = 0, int count = -1);
  // n tokens to the end of sequence `seq` (a prefill chunk). k, v: [n, H, D] device.
  void append(int seq, const void* k, const void* v, int64_t n, DType dtype,
              cudaStream_t stream);

  // Adds anchor positions of (seq, kv_head), as PagedKVCache::register_anchors does.
  // Synchronous (reads the anchors and the length back); not for use inside a step.
  void register_anchors(int seq, int kv_head, const std::vector<int32_t>& positions);
  // The same for every KV head of `seq` at once: per_head[h] are head h's new positions
  // (empty: none). Two reads and two writes of device memory whatever the head count.
  void register_anchors(int seq, const std::vector<std::vector<int32_t>>& per_head);

  // Sets every sequence's length (<= capacity) without writing pages, and its default
  // anchors; for generators that write the pages themselves (the benchmark). Synchronous.
  void set_lengths(const std::vector<int64_t>& lengths);
  // Recomputes every summary and value-norm maximum from the pages (after a generator
  // wrote them), on the device.
  void rebuild_summaries(cudaStream_t stream);

  void* mutable_pages() const { return pages_; }

  // Throws Error when an append overflowed a sequence's capacity since the last check;
  // synchronises the device. Call outside of steps (after a replay, in tests).
  void check_errors();

  // Synchronous copies back to the host.
  std::vector<int64_t> lengths() const;
  HostKVSnapshot download() const;

 private:
  DeviceKVCache() = default;
  void allocate(const std::vector<int32_t>& page_ids, const std::vector<int32_t>& slot_ids,
                int64_t num_pages, int64_t num_slots);
  void release() noexcept;

  KVCacheConfig config_{};
  std::vector<int64_t> capacities_;
  std::vector<int32_t> page_indptr_h_, summary_indptr_h_;
  int64_t num_pages_ = 0, num_slots_ = 0;
  void* pages_ = nullptr;
  void* summaries_ = nullptr;
  float* value_norm_max_ = nullptr;
  int32_t* page_indptr_ = nullptr;
  int32_t* page_indices_ = nullptr;
  int32_t* summary_indptr_ = nullptr;
  int32_t* summary_indices_ = nullptr;
  int32_t* seq_lens_ = nullptr;
  int32_t* capacity_ = nullptr;  // [S] device
  int32_t* anchor_pos_ = nullptr;
  int32_t* anchor_count_ = nullptr;
  int32_t* error_flag_ = nullptr;  // bit 0: an append overflowed a capacity
};

}  // namespace sinkrouter

#endif  // SINKROUTER_HAVE_CUDA
