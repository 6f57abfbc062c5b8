// DeviceKVCache: allocation, upload/download, views, and the launches of the append kernels
// (device_kv_cache_kernels.cuh).
#include "sinkrouter/kv/device_kv_cache.h"

#include <algorithm>
#include <numeric>
#include <random>
#include <utility>

#include "core/cuda_check.h"
#include "core/cuda_dtype.cuh"
#include "device_kv_cache_kernels.cuh"
#include "sinkrouter/core/error.h"

namespace sinkrouter {
namespace {

template <typename T>
T* device_alloc(size_t count) {
  T* p = nullptr;
  SR_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T)));
  return p;
}

template <typename T>
void upload_vec(T* dst, const std::vector<T>& src) {
  if (!src.empty()) SR_CUDA_CHECK(cudaMemcpy(dst, src.data(), src.size() * sizeof(T), cudaMemcpyHostToDevice));
}

template <typename T>
std::vector<T> download_vec(const T* src, size_t count) {
  std::vector<T> v(count);
  if (count) SR_CUDA_CHECK(cudaMemcpy(v.data(), src, count * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

void check_input_dtype(DType t, const char* what) {
  SR_CHECK(t == DType::F32 || t == DType::BF16 || t == DType::F16,
           "DeviceKVCache {}: input dtype {} is not supported (expected f32, bf16 or f16)", what,
           dtype_name(t));
}

// Calls fn(Tag{}, (const In*)nullptr) for the cache storage tag and the input type.
template <typename Fn>
void dispatch_types(DType cache, DType input, Fn&& fn) {
  auto with_tag = [&](auto tag) {
    switch (input) {
      case DType::F32: fn(tag, static_cast<const float*>(nullptr)); break;
      case DType::BF16: fn(tag, static_cast<const __nv_bfloat16*>(nullptr)); break;
      case DType::F16: fn(tag, static_cast<const __half*>(nullptr)); break;
      default: fail("DeviceKVCache: input dtype {} is not supported", dtype_name(input));
    }
  };
  if (cache == DType::BF16)
    with_tag(Bf16Tag{});
  else
    with_tag(F16Tag{});
}

}  // namespace

namespace {
CacheArgs make_args(const KVCacheConfig& cfg, void* pages, void* summaries, float* vnorm,
                    int32_t* page_indptr, int32_t* page_indices, int32_t* summary_indptr,
                    int32_t* summary_indices, int32_t* seq_lens, int32_t* capacity,
                    int32_t* anchor_pos, int32_t* anchor_count, int32_t* error_flag) {
  CacheArgs c{};
  c.pages = static_cast<uint16_t*>(pages);
  c.summaries = static_cast<uint16_t*>(summaries);
  c.value_norm_max = vnorm;
  c.page_indptr = page_indptr;
  c.page_indices = page_indices;
  c.summary_indptr = summary_indptr;
  c.summary_indices = summary_indices;
  c.seq_lens = seq_lens;
  c.capacity = capacity;
  c.anchor_pos = anchor_pos;
  c.anchor_count = anchor_count;
  c.error_flag = error_flag;
  c.H = cfg.num_kv_heads;
  c.D = cfg.head_dim;
  c.P = cfg.page_size;
  c.R = cfg.block_size;
  c.A = std::max(cfg.max_anchors, 1);
  c.default_anchors = cfg.default_anchors;
  return c;
}
}  // namespace

#define SR_CACHE_ARGS()                                                                          \
  make_args(config_, pages_, summaries_, value_norm_max_, page_indptr_, page_indices_,           \
            summary_indptr_, summary_indices_, seq_lens_, capacity_, anchor_pos_, anchor_count_, \
            error_flag_)

DeviceKVCache::DeviceKVCache(const KVCacheConfig& config, const std::vector<int64_t>& capacities,
                             uint64_t page_order_seed) {
  config_ = config;
  config_.num_pages = 1;  // validated below; the pool is sized from the capacities
  config_.validate();
  SR_CHECK(!capacities.empty(), "DeviceKVCache: no sequences (expected at least one capacity)");
  for (int64_t cap : capacities)
    SR_CHECK(cap >= 1 && cap <= (int64_t(1) << 30),
             "DeviceKVCache: capacity {} out of range (expected 1 to 2^30 tokens)", cap);
  capacities_ = capacities;
  int64_t pages = 0, slots = 0;
  for (int64_t cap : capacities) {
    pages += (cap + config_.page_size - 1) / config_.page_size;
    slots += (cap + config_.block_size - 1) / config_.block_size;
  }
  SR_CHECK(pages < (int64_t(1) << 31), "DeviceKVCache: {} pages exceed the int32 page ids", pages);
  std::vector<int32_t> page_ids(static_cast<size_t>(pages)), slot_ids(static_cast<size_t>(slots));
  std::iota(page_ids.begin(), page_ids.end(), 0);
  std::iota(slot_ids.begin(), slot_ids.end(), 0);
  if (page_order_seed != 0) {
    std::mt19937_64 rng(page_order_seed);
    std::shuffle(page_ids.begin(), page_ids.end(), rng);
    std::shuffle(slot_ids.begin(), slot_ids.end(), rng);
  }
  config_.num_pages = pages;
  allocate(page_ids, slot_ids, pages, slots);
}

void DeviceKVCache::allocate(const std::vector<int32_t>& page_ids, const std::vector<int32_t>& slot_ids,
                             int64_t num_pages, int64_t num_slots) {
  const int S = num_sequences(), H = config_.num_kv_heads, D = config_.head_dim;
  const int A = std::max(config_.max_anchors, 1);
  num_pages_ = num_pages;
  num_slots_ = num_slots;
  page_indptr_h_.assign(1, 0);
  summary_indptr_h_.assign(1, 0);
  for (int64_t cap : capacities_) {
    page_indptr_h_.push_back(page_indptr_h_.back() + int32_t((cap + config_.page_size - 1) / config_.page_size));
    summary_indptr_h_.push_back(summary_indptr_h_.back() +
                                int32_t((cap + config_.block_size - 1) / config_.block_size));
  }
  SR_CHECK(size_t(page_indptr_h_.back()) == page_ids.size() && size_t(summary_indptr_h_.back()) == slot_ids.size(),
           "DeviceKVCache: internal table size mismatch");
  try {
    pages_ = device_alloc<uint16_t>(size_t(num_pages) * 2 * config_.page_size * H * D);
    summaries_ = device_alloc<uint16_t>(size_t(num_slots) * H * 2 * D);
    value_norm_max_ = device_alloc<float>(size_t(num_slots) * H);
    page_indptr_ = device_alloc<int32_t>(size_t(S) + 1);
    page_indices_ = device_alloc<int32_t>(page_ids.size());
    summary_indptr_ = device_alloc<int32_t>(size_t(S) + 1);
    summary_indices_ = device_alloc<int32_t>(slot_ids.size());
    seq_lens_ = device_alloc<int32_t>(size_t(S));
    capacity_ = device_alloc<int32_t>(size_t(S));
    anchor_pos_ = device_alloc<int32_t>(size_t(S) * H * A);
    anchor_count_ = device_alloc<int32_t>(size_t(S) * H);
    error_flag_ = device_alloc<int32_t>(1);
  } catch (...) {
    release();
    throw;
  }
  // Unwritten pages and summaries are poisoned (all-ones bits: NaN in bf16 and f16), so a
  // kernel that reads past a length produces NaN rather than plausible numbers.
  SR_CUDA_CHECK(cudaMemset(pages_, 0xff, size_t(num_pages) * 2 * config_.page_size * H * D * 2));
  SR_CUDA_CHECK(cudaMemset(summaries_, 0xff, size_t(num_slots) * H * 2 * D * 2));
  SR_CUDA_CHECK(cudaMemset(value_norm_max_, 0xff, size_t(num_slots) * H * 4));
  upload_vec(page_indptr_, page_indptr_h_);
  upload_vec(page_indices_, page_ids);
  upload_vec(summary_indptr_, summary_indptr_h_);
  upload_vec(summary_indices_, slot_ids);
  SR_CUDA_CHECK(cudaMemset(seq_lens_, 0, size_t(S) * 4));
  std::vector<int32_t> caps(capacities_.begin(), capacities_.end());
  upload_vec(capacity_, caps);
  SR_CUDA_CHECK(cudaMemset(anchor_pos_, 0xff, size_t(S) * H * A * 4));
  SR_CUDA_CHECK(cudaMemset(anchor_count_, 0, size_t(S) * H * 4));
  SR_CUDA_CHECK(cudaMemset(error_flag_, 0, 4));
}

DeviceKVCache DeviceKVCache::upload(const PagedKVCache& host, const std::vector<int>& seqs,
                                    int64_t extra_tokens) {
  SR_CHECK(extra_tokens >= 0, "DeviceKVCache::upload: extra_tokens {} is negative", extra_tokens);
  SR_CHECK(!seqs.empty(), "DeviceKVCache::upload: no sequences given");
  const KVCacheConfig& cfg = host.config();
  const int H = cfg.num_kv_heads, D = cfg.head_dim, P = cfg.page_size, R = cfg.block_size;
  const int A = std::max(cfg.max_anchors, 1);
  const PagedKVBatch batch = host.batch(seqs);
  const int64_t host_pages = cfg.num_pages;
  const int64_t host_slots = int64_t(host.summaries().size()) / (int64_t(H) * 2 * D);

  DeviceKVCache c;
  c.config_ = cfg;
  std::vector<int32_t> page_ids, slot_ids;
  int64_t next_page = host_pages, next_slot = host_slots;
  std::vector<int64_t> lengths;
  for (size_t b = 0; b < seqs.size(); ++b) {
    const int64_t n = host.length(seqs[b]);
    lengths.push_back(n);
    const int64_t cap = std::max<int64_t>(1, n + extra_tokens);
    c.capacities_.push_back(cap);
    for (int32_t i = batch.indptr[b]; i < batch.indptr[b + 1]; ++i) page_ids.push_back(batch.indices[size_t(i)]);
    for (int64_t i = batch.indptr[b + 1] - batch.indptr[b]; i < (cap + P - 1) / P; ++i)
      page_ids.push_back(int32_t(next_page++));
    for (int32_t i = batch.summary_indptr[b]; i < batch.summary_indptr[b + 1]; ++i)
      slot_ids.push_back(batch.summary_indices[size_t(i)]);
    for (int64_t i = batch.summary_indptr[b + 1] - batch.summary_indptr[b]; i < (cap + R - 1) / R; ++i)
      slot_ids.push_back(int32_t(next_slot++));
  }
  SR_CHECK(next_page < (int64_t(1) << 31), "DeviceKVCache::upload: {} pages exceed int32 ids", next_page);
  c.config_.num_pages = next_page;
  c.allocate(page_ids, slot_ids, next_page, next_slot);
  // The host pool and summaries go over verbatim (pages of other sequences too: simpler
  // than remapping, and tests are small).
  SR_CUDA_CHECK(cudaMemcpy(c.pages_, host.pages().data(), host.pages().size() * 2, cudaMemcpyHostToDevice));
  if (!host.summaries().empty()) {
    SR_CUDA_CHECK(cudaMemcpy(c.summaries_, host.summaries().data(), host.summaries().size() * 2,
                             cudaMemcpyHostToDevice));
    SR_CUDA_CHECK(cudaMemcpy(c.value_norm_max_, host.value_norm_max().data(),
                             host.value_norm_max().size() * 4, cudaMemcpyHostToDevice));
  }
  std::vector<int32_t> lens(lengths.begin(), lengths.end());
  upload_vec(c.seq_lens_, lens);
  std::vector<int32_t> apos(seqs.size() * size_t(H) * A, -1), acount(seqs.size() * size_t(H), 0);
  for (size_t b = 0; b < seqs.size(); ++b)
    for (int h = 0; h < H; ++h) {
      const auto& a = host.anchors(seqs[b], h);
      acount[b * H + size_t(h)] = int32_t(a.size());
      std::copy(a.begin(), a.end(), apos.begin() + long((b * H + size_t(h)) * A));
    }
  upload_vec(c.anchor_pos_, apos);
  upload_vec(c.anchor_count_, acount);
  return c;
}

DeviceKVCache::DeviceKVCache(DeviceKVCache&& o) noexcept { *this = std::move(o); }

DeviceKVCache& DeviceKVCache::operator=(DeviceKVCache&& o) noexcept {
  if (this == &o) return *this;
  release();
  config_ = o.config_;
  capacities_ = std::move(o.capacities_);
  page_indptr_h_ = std::move(o.page_indptr_h_);
  summary_indptr_h_ = std::move(o.summary_indptr_h_);
  num_pages_ = o.num_pages_;
  num_slots_ = o.num_slots_;
  pages_ = std::exchange(o.pages_, nullptr);
  summaries_ = std::exchange(o.summaries_, nullptr);
  value_norm_max_ = std::exchange(o.value_norm_max_, nullptr);
  page_indptr_ = std::exchange(o.page_indptr_, nullptr);
  page_indices_ = std::exchange(o.page_indices_, nullptr);
  summary_indptr_ = std::exchange(o.summary_indptr_, nullptr);
  summary_indices_ = std::exchange(o.summary_indices_, nullptr);
  seq_lens_ = std::exchange(o.seq_lens_, nullptr);
  capacity_ = std::exchange(o.capacity_, nullptr);
  anchor_pos_ = std::exchange(o.anchor_pos_, nullptr);
  anchor_count_ = std::exchange(o.anchor_count_, nullptr);
  error_flag_ = std::exchange(o.error_flag_, nullptr);
  return *this;
}

DeviceKVCache::~DeviceKVCache() { release(); }

void DeviceKVCache::release() noexcept {
  for (void* p : {pages_, summaries_, static_cast<void*>(value_norm_max_), static_cast<void*>(page_indptr_),
                  static_cast<void*>(page_indices_), static_cast<void*>(summary_indptr_),
                  static_cast<void*>(summary_indices_), static_cast<void*>(seq_lens_),
                  static_cast<void*>(capacity_), static_cast<void*>(anchor_pos_),
                  static_cast<void*>(anchor_count_), static_cast<void*>(error_flag_)})
    if (p) cudaFree(p);
  pages_ = summaries_ = nullptr;
  value_norm_max_ = nullptr;
  page_indptr_ = page_indices_ = summary_indptr_ = summary_indices_ = nullptr;
  seq_lens_ = capacity_ = anchor_pos_ = anchor_count_ = error_flag_ = nullptr;
}

size_t DeviceKVCache::page_pool_bytes() const {
  return size_t(num_pages_) * 2 * config_.page_size * config_.num_kv_heads * config_.head_dim * 2;
}

DeviceKV DeviceKVCache::view(int first, int count) const {
  if (count < 0) count = num_sequences() - first;
  SR_CHECK(first >= 0 && count >= 1 && first + count <= num_sequences(),
           "DeviceKVCache::view: sequences [{}, {}) out of range (cache holds {})", first, first + count,
           num_sequences());
  const int H = config_.num_kv_heads, A = std::max(config_.max_anchors, 1);
  DeviceKV v;
  PagedKV& kv = v.kv;
  kv.pages = pages_;
  kv.dtype = config_.dtype;
  kv.page_size = config_.page_size;
  kv.num_kv_heads = H;
  kv.head_dim = config_.head_dim;
  kv.batch = count;
  kv.indptr = page_indptr_ + first;
  kv.indices = page_indices_;
  kv.last_page_len = nullptr;
  kv.block_size = config_.block_size;
  kv.summaries = summaries_;
  kv.value_norm_max = value_norm_max_;
  kv.summary_indptr = summary_indptr_ + first;
  kv.summary_indices = summary_indices_;
  kv.max_anchors = A;  // the stride of anchor_pos (at least 1)
  kv.anchor_pos = anchor_pos_ + int64_t(first) * H * A;
  kv.anchor_count = anchor_count_ + int64_t(first) * H;
  v.seq_lens = seq_lens_ + first;
  v.tables_fixed = true;  // (the constructor uploads them once; appends never change a page table)
  v.max_capacity = *std::max_element(capacities_.begin() + first, capacities_.begin() + first + count);
  return v;
}

void DeviceKVCache::append_step(const void* k, const void* v, DType dtype, cudaStream_t stream, int first,
                                int count) {
  check_input_dtype(dtype, "append_step");
  if (count < 0) count = num_sequences() - first;
  SR_CHECK(first >= 0 && count >= 1 && first + count <= num_sequences(),
           "DeviceKVCache::append_step: sequences [{}, {}) out of range (cache holds {})", first,
           first + count, num_sequences());
  const CacheArgs args = SR_CACHE_ARGS();
  // Four elements of the new rows per thread (append_step_kernel), at least two warps.
  const int HD = config_.num_kv_heads * config_.head_dim;
  SR_CHECK(HD <= 4 * 1024, "DeviceKVCache::append_step: {} KV heads x {} dims exceed one CTA's 4 x 1024 elements",
           config_.num_kv_heads, config_.head_dim);
  const int threads = std::max(64, ((HD + 3) / 4 + 31) / 32 * 32);
  dispatch_types(config_.dtype, dtype, [&](auto tag, auto in) {
    using Tag = decltype(tag);
    using In = std::remove_const_t<std::remove_pointer_t<decltype(in)>>;
    cuda::launch_pdl(append_step_kernel<Tag, In>, dim3(unsigned(count)), dim3(unsigned(threads)),
                     size_t(config_.num_kv_heads) * config_.head_dim * 2, stream, args, static_cast<const In*>(k),
                     static_cast<const In*>(v), first);
  });
}

void DeviceKVCache::append(int seq, const void* k, const void* v, int64_t n, DType dtype, cudaStream_t stream) {
  check_input_dtype(dtype, "append");
  SR_CHECK(seq >= 0 && seq < num_sequences(), "DeviceKVCache::append: sequence {} out of range (cache holds {})",
           seq, num_sequences());
  SR_CHECK(n >= 1 && n <= capacities_[size_t(seq)],
           "DeviceKVCache::append: {} tokens do not fit sequence {} of capacity {}", n, seq,
           capacities_[size_t(seq)]);
  const CacheArgs args = SR_CACHE_ARGS();
  const int64_t total = n * config_.num_kv_heads * config_.head_dim;
  const int write_blocks = int(std::min<int64_t>((total + 255) / 256, 65536));
  const int touched = int((n + config_.block_size - 1) / config_.block_size + 1);
  dispatch_types(config_.dtype, dtype, [&](auto tag, auto in) {
    using Tag = decltype(tag);
    using In = std::remove_const_t<std::remove_pointer_t<decltype(in)>>;
    append_chunk_write_kernel<Tag, In><<<write_blocks, 256, 0, stream>>>(
        args, seq, static_cast<const In*>(k), static_cast<const In*>(v), n);
    SR_CUDA_CHECK_LAUNCH("append_chunk_write_kernel");
    summary_kernel<Tag><<<dim3(unsigned(touched), unsigned(config_.num_kv_heads), 1), 128, 0, stream>>>(args, seq, n);
    SR_CUDA_CHECK_LAUNCH("summary_kernel");
  });
  append_chunk_finish_kernel<<<1, 64, 0, stream>>>(args, seq, n);
  SR_CUDA_CHECK_LAUNCH("append_chunk_finish_kernel");
}

void DeviceKVCache::rebuild_summaries(cudaStream_t stream) {
  const CacheArgs args = SR_CACHE_ARGS();
  int64_t max_blocks = 0;
  for (int64_t cap : capacities_) max_blocks = std::max(max_blocks, (cap + config_.block_size - 1) / config_.block_size);
  SR_CHECK(max_blocks < (int64_t(1) << 31) && num_sequences() <= 65535,
           "DeviceKVCache::rebuild_summaries: grid too large");
  const dim3 grid(unsigned(max_blocks), unsigned(config_.num_kv_heads), unsigned(num_sequences()));
  if (config_.dtype == DType::BF16)
    summary_kernel<Bf16Tag><<<grid, 128, 0, stream>>>(args, 0, 0);
  else
    summary_kernel<F16Tag><<<grid, 128, 0, stream>>>(args, 0, 0);
  SR_CUDA_CHECK_LAUNCH("summary_kernel (rebuild)");
}

void DeviceKVCache::register_anchors(int seq, int kv_head, const std::vector<int32_t>& positions) {
  const int H = config_.num_kv_heads;
  SR_CHECK(kv_head >= 0 && kv_head < H, "register_anchors: KV head {} out of range (expected 0 to {})", kv_head,
           H - 1);
  std::vector<std::vector<int32_t>> per_head(static_cast<size_t>(H));
  per_head[size_t(kv_head)] = positions;
  register_anchors(seq, per_head);
}

void DeviceKVCache::register_anchors(int seq, const std::vector<std::vector<int32_t>>& per_head) {
  const int H = config_.num_kv_heads, A = std::max(config_.max_anchors, 1);
  SR_CHECK(seq >= 0 && seq < num_sequences(), "register_anchors: sequence {} does not exist", seq);
  SR_CHECK(int(per_head.size()) == H, "register_anchors: positions for {} KV heads, the cache has {}",
           per_head.size(), H);
  const int64_t len = lengths()[size_t(seq)];
  const int64_t base = int64_t(seq) * H;
  std::vector<int32_t> counts = download_vec(anchor_count_ + base, size_t(H));
  std::vector<int32_t> pos = download_vec(anchor_pos_ + base * A, size_t(H) * size_t(A));
  for (int h = 0; h < H; ++h) {
    std::vector<int32_t> merged(pos.begin() + int64_t(h) * A, pos.begin() + int64_t(h) * A + counts[size_t(h)]);
    for (int32_t p : per_head[size_t(h)]) {
      SR_CHECK(p >= 0 && p < len, "register_anchors: position {} is outside sequence {} (length {})", p, seq, len);
      if (std::find(merged.begin(), merged.end(), p) == merged.end()) merged.push_back(p);
    }
    SR_CHECK(int(merged.size()) <= config_.max_anchors,
             "register_anchors: {} anchors for sequence {} head {} exceed max_anchors = {}", merged.size(), seq, h,
             config_.max_anchors);
    std::sort(merged.begin(), merged.end());
    std::copy(merged.begin(), merged.end(), pos.begin() + int64_t(h) * A);
    counts[size_t(h)] = int32_t(merged.size());
  }
  upload_vec(anchor_pos_ + base * A, pos);
  upload_vec(anchor_count_ + base, counts);
}

void DeviceKVCache::set_lengths(const std::vector<int64_t>& lengths) {
  const int S = num_sequences(), H = config_.num_kv_heads, A = std::max(config_.max_anchors, 1);
  SR_CHECK(int(lengths.size()) == S, "set_lengths: {} lengths for {} sequences", lengths.size(), S);
  std::vector<int32_t> lens(static_cast<size_t>(S)), apos(size_t(S) * H * A, -1), acount(size_t(S) * H, 0);
  for (int s = 0; s < S; ++s) {
    SR_CHECK(lengths[size_t(s)] >= 0 && lengths[size_t(s)] <= capacities_[size_t(s)],
             "set_lengths: length {} of sequence {} out of range (capacity {})", lengths[size_t(s)], s,
             capacities_[size_t(s)]);
    lens[size_t(s)] = int32_t(lengths[size_t(s)]);
    const int n = int(std::min<int64_t>(lengths[size_t(s)], config_.default_anchors));
    for (int h = 0; h < H; ++h) {
      acount[size_t(s) * H + size_t(h)] = n;
      for (int i = 0; i < n; ++i) apos[(size_t(s) * H + size_t(h)) * A + size_t(i)] = i;
    }
  }
  upload_vec(seq_lens_, lens);
  upload_vec(anchor_pos_, apos);
  upload_vec(anchor_count_, acount);
}

void DeviceKVCache::check_errors() {
  SR_CUDA_CHECK(cudaDeviceSynchronize());
  int32_t flag = 0;
  SR_CUDA_CHECK(cudaMemcpy(&flag, error_flag_, 4, cudaMemcpyDeviceToHost));
  if (flag) {
    SR_CUDA_CHECK(cudaMemset(error_flag_, 0, 4));
    fail("DeviceKVCache: an append exceeded a sequence's capacity; that sequence was left unchanged "
         "(capacities are fixed when the cache is made)");
  }
}

std::vector<int64_t> DeviceKVCache::lengths() const {
  SR_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<int32_t> l = download_vec(seq_lens_, size_t(num_sequences()));
  return std::vector<int64_t>(l.begin(), l.end());
}

HostKVSnapshot DeviceKVCache::download() const {
  const int S = num_sequences(), H = config_.num_kv_heads, D = config_.head_dim, A = std::max(config_.max_anchors, 1);
  HostKVSnapshot s;
  s.lengths = lengths();
  s.pages = download_vec(static_cast<const uint16_t*>(pages_), page_pool_bytes() / 2);
  s.summaries = download_vec(static_cast<const uint16_t*>(summaries_), size_t(num_slots_) * H * 2 * D);
  s.value_norm_max = download_vec(value_norm_max_, size_t(num_slots_) * H);
  const std::vector<int32_t> pages_all = download_vec(page_indices_, size_t(page_indptr_h_.back()));
  const std::vector<int32_t> slots_all = download_vec(summary_indices_, size_t(summary_indptr_h_.back()));
  s.anchor_pos = download_vec(anchor_pos_, size_t(S) * H * A);
  s.anchor_count = download_vec(anchor_count_, size_t(S) * H);
  s.indptr.push_back(0);
  s.summary_indptr.push_back(0);
  const int P = config_.page_size, R = config_.block_size;
  for (int b = 0; b < S; ++b) {
    const int64_t n = s.lengths[size_t(b)];
    const int64_t used_pages = (n + P - 1) / P, used_blocks = (n + R - 1) / R;
    for (int64_t i = 0; i < used_pages; ++i) s.indices.push_back(pages_all[size_t(page_indptr_h_[size_t(b)] + i)]);
    s.indptr.push_back(int32_t(s.indices.size()));
    s.last_page_len.push_back(n == 0 ? 0 : int32_t((n - 1) % P + 1));
    for (int64_t i = 0; i < used_blocks; ++i)
      s.summary_indices.push_back(slots_all[size_t(summary_indptr_h_[size_t(b)] + i)]);
    s.summary_indptr.push_back(int32_t(s.summary_indices.size()));
  }
  PagedKV& v = s.view;
  v.pages = s.pages.data();
  v.dtype = config_.dtype;
  v.page_size = P;
  v.num_kv_heads = H;
  v.head_dim = D;
  v.batch = S;
  v.indptr = s.indptr.data();
  v.indices = s.indices.data();
  v.last_page_len = s.last_page_len.data();
  v.block_size = R;
  v.summaries = s.summaries.data();
  v.value_norm_max = s.value_norm_max.data();
  v.summary_indptr = s.summary_indptr.data();
  v.summary_indices = s.summary_indices.data();
  v.max_anchors = A;
  v.anchor_pos = s.anchor_pos.data();
  v.anchor_count = s.anchor_count.data();
  return s;
}

}  // namespace sinkrouter
