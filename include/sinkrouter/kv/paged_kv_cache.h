// The host paged KV cache: page pool, one page table per sequence, routing-block key
// summaries kept up to date on every append, and anchors per (sequence, KV head).
#pragma once

#include <cstdint>
#include <vector>

#include "sinkrouter/core/dtype.h"
#include "sinkrouter/core/tensor.h"
#include "sinkrouter/kv/paged_kv.h"

namespace sinkrouter {

struct KVCacheConfig {
  int num_kv_heads = 0;
  int head_dim = 0;
  DType dtype = DType::BF16;  // bf16 or f16
  int page_size = 16;         // 1 to 256
  int block_size = 64;        // routing block R (tokens per key summary), 1 to 4096
  int64_t num_pages = 0;      // capacity of the page pool
  int default_anchors = 4;    // the first tokens of every sequence are anchors
  int max_anchors = 16;       // per (sequence, KV head), detected sinks included

  void validate() const;  // throws Error with what is wrong
};

// Arrays of one batch in the layout of PagedKV; keeps them alive while the view is used.
struct PagedKVBatch {
  std::vector<int32_t> indptr, indices, last_page_len;
  std::vector<int32_t> summary_indptr, summary_indices;
  std::vector<int32_t> anchor_pos, anchor_count;
  PagedKV view;
};

class PagedKVCache {
 public:
  explicit PagedKVCache(const KVCacheConfig& config);

  const KVCacheConfig& config() const { return config_; }

  int create_sequence();             // returns a new sequence id
  void free_sequence(int seq);       // its pages and summary slots return to the pools
  int64_t length(int seq) const;
  int64_t free_pages() const { return int64_t(free_pages_.size()); }

  // Appends n tokens to the end of `seq`. k, v: [n, num_kv_heads, head_dim] in f32, bf16
  // or f16; values are converted to the cache dtype (round to nearest even). Throws when
  // the page pool cannot hold them, leaving the sequence unchanged.
  void append(int seq, const TensorView& k, const TensorView& v);

  // Adds detected sink positions (< length) to the anchors of (seq, kv_head); duplicates
  // are ignored; the total may not exceed max_anchors.
  void register_anchors(int seq, int kv_head, const std::vector<int32_t>& positions);
  const std::vector<int32_t>& anchors(int seq, int kv_head) const;

  // Sets a per-KV-head orthonormal key basis [num_kv_heads, head_dim, head_dim]
  // (kv/key_basis.h) and builds the rotated-key box of every block of every live
  // sequence; later appends keep them up to date. An empty vector removes the basis.
  void set_key_basis(std::vector<float> basis);
  bool has_key_basis() const { return !key_basis_.empty(); }

  // The page tables, summaries and anchors of these sequences, in this order.
  PagedKVBatch batch(const std::vector<int>& seqs) const;

  // Raw storage, for tests and for copying to the device.
  const std::vector<uint16_t>& pages() const { return pages_; }
  const std::vector<uint16_t>& summaries() const { return summaries_; }
  const std::vector<float>& value_norm_max() const { return value_norm_max_; }

 private:
  struct Sequence {
    bool live = false;
    int64_t length = 0;
    std::vector<int32_t> pages;
    std::vector<int32_t> summary_slots;
    std::vector<std::vector<int32_t>> anchors;  // [kv_heads][...], ascending
  };
  Sequence& live_sequence(int seq);
  const Sequence& live_sequence(int seq) const;
  int32_t new_summary_slot();
  void update_basis_summary(int64_t slot, int h, const uint16_t* k, bool first);

  KVCacheConfig config_;
  std::vector<uint16_t> pages_;          // [num_pages, 2, page_size, H, D] raw 16-bit
  std::vector<int32_t> free_pages_;      // a stack: the lowest id is handed out first
  std::vector<uint16_t> summaries_;      // [slots, H, 2, D]
  std::vector<float> value_norm_max_;    // [slots, H]
  std::vector<float> key_basis_;         // [H, D, D] or empty
  double basis_error_ = 0;
  std::vector<uint16_t> basis_summaries_;  // [slots, H, 2, D] when key_basis_ is set
  std::vector<int32_t> free_slots_;
  std::vector<Sequence> sequences_;
};

// Recomputes every summary and value-norm maximum of `kv` from its pages, for a cache
// built elsewhere: `summaries` [num_slots, H, 2, D] and `value_norm_max` [num_slots, H]
// are written for slots listed in kv.summary_indices.
void build_summaries(const PagedKV& kv, void* summaries, float* value_norm_max);

}  // namespace sinkrouter
