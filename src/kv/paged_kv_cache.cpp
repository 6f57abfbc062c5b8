#include "sinkrouter/kv/paged_kv_cache.h"

#include <algorithm>
#include <cmath>

#include "sinkrouter/core/error.h"
#include "sinkrouter/kv/key_basis.h"
#include "summary_math.h"

namespace sinkrouter {

void KVCacheConfig::validate() const {
  SR_CHECK(num_kv_heads >= 1, "KV cache: num_kv_heads is {} (expected at least 1)", num_kv_heads);
  SR_CHECK(head_dim >= 1 && head_dim <= 1024, "KV cache: head_dim {} out of range (expected 1 to 1024)",
           head_dim);
  SR_CHECK(dtype == DType::BF16 || dtype == DType::F16,
           "KV cache: dtype {} is not supported (expected bf16 or f16)", dtype_name(dtype));
  SR_CHECK(page_size >= 1 && page_size <= 256, "KV cache: page_size {} out of range (expected 1 to 256)",
           page_size);
  SR_CHECK(block_size >= 1 && block_size <= 4096,
           "KV cache: block_size {} out of range (expected 1 to 4096)", block_size);
  SR_CHECK(num_pages >= 1, "KV cache: num_pages is {} (expected at least 1)", num_pages);
  SR_CHECK(max_anchors >= 0 && max_anchors <= 64, "KV cache: max_anchors {} out of range (0 to 64)",
           max_anchors);
  SR_CHECK(default_anchors >= 0 && default_anchors <= max_anchors,
           "KV cache: default_anchors {} out of range (expected 0 to max_anchors = {})",
           default_anchors, max_anchors);
}

PagedKVCache::PagedKVCache(const KVCacheConfig& config) : config_(config) {
  config_.validate();
  const int64_t page_elems = 2LL * config_.page_size * config_.num_kv_heads * config_.head_dim;
  pages_.assign(size_t(config_.num_pages * page_elems), 0);
  free_pages_.resize(size_t(config_.num_pages));
  for (int64_t i = 0; i < config_.num_pages; ++i) free_pages_[size_t(i)] = int32_t(config_.num_pages - 1 - i);
}

int PagedKVCache::create_sequence() {
  for (size_t i = 0; i < sequences_.size(); ++i) {
    if (!sequences_[i].live) {
      sequences_[i] = Sequence{};
      sequences_[i].live = true;
      sequences_[i].anchors.resize(size_t(config_.num_kv_heads));
      return int(i);
    }
  }
  Sequence s;
  s.live = true;
  s.anchors.resize(size_t(config_.num_kv_heads));
  sequences_.push_back(std::move(s));
  return int(sequences_.size() - 1);
}

PagedKVCache::Sequence& PagedKVCache::live_sequence(int seq) {
  SR_CHECK(seq >= 0 && size_t(seq) < sequences_.size() && sequences_[size_t(seq)].live,
           "KV cache: sequence {} does not exist", seq);
  return sequences_[size_t(seq)];
}
const PagedKVCache::Sequence& PagedKVCache::live_sequence(int seq) const {
  return const_cast<PagedKVCache*>(this)->live_sequence(seq);
}

void PagedKVCache::free_sequence(int seq) {
  Sequence& s = live_sequence(seq);
  for (auto it = s.pages.rbegin(); it != s.pages.rend(); ++it) free_pages_.push_back(*it);
  for (int32_t slot : s.summary_slots) free_slots_.push_back(slot);
  s = Sequence{};
}

int64_t PagedKVCache::length(int seq) const { return live_sequence(seq).length; }

int32_t PagedKVCache::new_summary_slot() {
  if (!free_slots_.empty()) {
    int32_t s = free_slots_.back();
    free_slots_.pop_back();
    return s;
  }
  const int64_t per_slot = int64_t(config_.num_kv_heads) * 2 * config_.head_dim;
  const int32_t slot = int32_t(summaries_.size() / size_t(per_slot));
  summaries_.resize(summaries_.size() + size_t(per_slot));
  value_norm_max_.resize(value_norm_max_.size() + size_t(config_.num_kv_heads));
  if (!key_basis_.empty()) basis_summaries_.resize(summaries_.size());
  return slot;
}

void PagedKVCache::append(int seq, const TensorView& k, const TensorView& v) {
  Sequence& s = live_sequence(seq);
  const int H = config_.num_kv_heads, D = config_.head_dim, P = config_.page_size,
            R = config_.block_size;
  check_tensor(k, "KV cache append: k", {DType::F32, DType::BF16, DType::F16}, {-1, H, D});
  check_tensor(v, "KV cache append: v", {DType::F32, DType::BF16, DType::F16}, {k.shape[0], H, D});
  const int64_t n = k.shape[0];
  const int64_t pages_needed = (s.length + n + P - 1) / P - int64_t(s.pages.size());
  SR_CHECK(pages_needed <= free_pages(),
           "KV cache is full: appending {} tokens to sequence {} (length {}) needs {} more pages of "
           "{} tokens, but only {} of {} are free",
           n, seq, s.length, pages_needed, P, free_pages(), config_.num_pages);
  for (int64_t i = 0; i < pages_needed; ++i) {
    s.pages.push_back(free_pages_.back());
    free_pages_.pop_back();
  }
  const bool bf = config_.dtype == DType::BF16;
  std::vector<float> row(static_cast<size_t>(D));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = s.length + i;
    const int64_t page = s.pages[size_t(t / P)];
    const int64_t j = t / R;
    if (t % R == 0) s.summary_slots.push_back(new_summary_slot());
    const int64_t slot = s.summary_slots[size_t(j)];
    for (int h = 0; h < H; ++h) {
      uint16_t* kdst = &pages_[size_t(((page * 2) * P + t % P) * H * D + int64_t(h) * D)];
      uint16_t* vdst = kdst + int64_t(P) * H * D;
      for (int d = 0; d < D; ++d) {
        kdst[d] = round_to_storage(k.load(k.offset(i, h, d)), bf);
        vdst[d] = round_to_storage(v.load(v.offset(i, h, d)), bf);
      }
      uint16_t* summary = &summaries_[size_t((slot * H + h) * 2 * D)];
      float& vmax = value_norm_max_[size_t(slot * H + h)];
      update_block_summary(kdst, vdst, D, bf, /*first=*/t % R == 0, summary, &vmax);
      if (!key_basis_.empty()) update_basis_summary(slot, h, kdst, t % R == 0);
    }
  }
  s.length += n;
  for (int h = 0; h < H; ++h) {
    auto& a = s.anchors[size_t(h)];
    for (int64_t p = s.length - n; p < std::min<int64_t>(s.length, config_.default_anchors); ++p)
      if (std::find(a.begin(), a.end(), int32_t(p)) == a.end()) a.push_back(int32_t(p));
    std::sort(a.begin(), a.end());
  }
}

void PagedKVCache::register_anchors(int seq, int kv_head, const std::vector<int32_t>& positions) {
  Sequence& s = live_sequence(seq);
  SR_CHECK(kv_head >= 0 && kv_head < config_.num_kv_heads,
           "register_anchors: KV head {} out of range (expected 0 to {})", kv_head,
           config_.num_kv_heads - 1);
  std::vector<int32_t> merged = s.anchors[size_t(kv_head)];
  for (int32_t p : positions) {
    SR_CHECK(p >= 0 && p < s.length,
             "register_anchors: position {} is outside sequence {} (length {})", p, seq, s.length);
    if (std::find(merged.begin(), merged.end(), p) == merged.end()) merged.push_back(p);
  }
  SR_CHECK(int(merged.size()) <= config_.max_anchors,
           "register_anchors: {} anchors for sequence {} head {} exceed max_anchors = {}",
           merged.size(), seq, kv_head, config_.max_anchors);
  std::sort(merged.begin(), merged.end());
  s.anchors[size_t(kv_head)] = std::move(merged);
}

const std::vector<int32_t>& PagedKVCache::anchors(int seq, int kv_head) const {
  const Sequence& s = live_sequence(seq);
  SR_CHECK(kv_head >= 0 && kv_head < config_.num_kv_heads, "anchors: KV head {} out of range",
           kv_head);
  return s.anchors[size_t(kv_head)];
}

void PagedKVCache::update_basis_summary(int64_t slot, int h, const uint16_t* k, bool first) {
  const int H = config_.num_kv_heads, D = config_.head_dim;
  const bool bf = config_.dtype == DType::BF16;
  float key[1024];
  double rot[1024];
  for (int d = 0; d < D; ++d) key[d] = storage_to_float(k[d], bf);
  rotate(&key_basis_[size_t(h) * D * D], key, D, rot);
  update_rotated_summary(rot, D, bf, first, &basis_summaries_[size_t((slot * H + h) * 2 * D)]);
}

void PagedKVCache::set_key_basis(std::vector<float> basis) {
  const int H = config_.num_kv_heads, D = config_.head_dim, P = config_.page_size, R = config_.block_size;
  if (basis.empty()) {
    key_basis_.clear();
    basis_summaries_.clear();
    basis_error_ = 0;
    return;
  }
  SR_CHECK(basis.size() == size_t(H) * D * D,
           "set_key_basis: basis has {} floats, expected num_kv_heads * head_dim^2 = {} * {}^2 = {}", basis.size(), H,
           D, size_t(H) * D * D);
  const double e = basis_error(basis.data(), H, D);
  SR_CHECK(e < 1e-3, "set_key_basis: the basis is not orthonormal (||I - P^T P||_F = {:g}, expected < 1e-3)", e);
  key_basis_ = std::move(basis);
  basis_error_ = e;
  basis_summaries_.assign(summaries_.size(), 0);
  for (const Sequence& s : sequences_) {
    if (!s.live) continue;
    for (int64_t t = 0; t < s.length; ++t) {
      const int64_t page = s.pages[size_t(t / P)];
      for (int h = 0; h < H; ++h)
        update_basis_summary(s.summary_slots[size_t(t / R)], h,
                             &pages_[size_t(((page * 2) * P + t % P) * H * D + int64_t(h) * D)], t % R == 0);
    }
  }
}

PagedKVBatch PagedKVCache::batch(const std::vector<int>& seqs) const {
  PagedKVBatch out;
  const int H = config_.num_kv_heads, A = config_.max_anchors;
  out.indptr.push_back(0);
  out.summary_indptr.push_back(0);
  out.anchor_pos.assign(seqs.size() * size_t(H) * size_t(std::max(A, 1)), -1);
  out.anchor_count.assign(seqs.size() * size_t(H), 0);
  for (size_t b = 0; b < seqs.size(); ++b) {
    const Sequence& s = live_sequence(seqs[b]);
    out.indices.insert(out.indices.end(), s.pages.begin(), s.pages.end());
    out.indptr.push_back(int32_t(out.indices.size()));
    out.last_page_len.push_back(s.length == 0 ? 0 : int32_t((s.length - 1) % config_.page_size + 1));
    out.summary_indices.insert(out.summary_indices.end(), s.summary_slots.begin(),
                               s.summary_slots.end());
    out.summary_indptr.push_back(int32_t(out.summary_indices.size()));
    for (int h = 0; h < H; ++h) {
      const auto& a = s.anchors[size_t(h)];
      out.anchor_count[b * size_t(H) + size_t(h)] = int32_t(a.size());
      std::copy(a.begin(), a.end(), out.anchor_pos.begin() + long((b * size_t(H) + size_t(h)) * size_t(A)));
    }
  }
  PagedKV& v = out.view;
  v.pages = pages_.data();
  v.dtype = config_.dtype;
  v.page_size = config_.page_size;
  v.num_kv_heads = H;
  v.head_dim = config_.head_dim;
  v.batch = int(seqs.size());
  v.indptr = out.indptr.data();
  v.indices = out.indices.data();
  v.last_page_len = out.last_page_len.data();
  v.block_size = config_.block_size;
  v.summaries = summaries_.data();
  v.value_norm_max = value_norm_max_.data();
  v.summary_indptr = out.summary_indptr.data();
  v.summary_indices = out.summary_indices.data();
  v.max_anchors = A;
  v.anchor_pos = out.anchor_pos.data();
  v.anchor_count = out.anchor_count.data();
  if (!key_basis_.empty()) {
    v.key_basis = key_basis_.data();
    v.basis_summaries = basis_summaries_.data();
    v.basis_error = basis_error_;
  }
  return out;
}

void build_summaries(const PagedKV& kv, void* summaries, float* value_norm_max) {
  const bool bf = kv.dtype == DType::BF16;
  SR_CHECK(kv.dtype == DType::BF16 || kv.dtype == DType::F16,
           "build_summaries: dtype {} is not supported (expected bf16 or f16)", dtype_name(kv.dtype));
  const int H = kv.num_kv_heads, D = kv.head_dim, R = kv.block_size;
  const uint16_t* pages = static_cast<const uint16_t*>(kv.pages);
  uint16_t* out = static_cast<uint16_t*>(summaries);
  for (int b = 0; b < kv.batch; ++b) {
    const int64_t n = kv.seq_len(b);
    const int64_t blocks = (n + R - 1) / R;
    SR_CHECK(kv.summary_indptr[b + 1] - kv.summary_indptr[b] >= blocks,
             "build_summaries: sequence {} has {} tokens = {} blocks but only {} summary slots", b, n,
             blocks, kv.summary_indptr[b + 1] - kv.summary_indptr[b]);
    for (int64_t t = 0; t < n; ++t)
      for (int h = 0; h < H; ++h) {
        const uint16_t* k = pages + kv.k_offset(b, t, h);
        const int64_t j = t / R;
        update_block_summary(k, k + kv.v_stride(), D, bf, t % R == 0, out + kv.summary_offset(b, j, h),
                             value_norm_max + int64_t(kv.summary_indices[kv.summary_indptr[b] + j]) * H + h);
      }
  }
}

}  // namespace sinkrouter
