// CudaDecoder: the plan (checks, grid sizing, workspaces) and the run (kernel launches
// only) of CUDA decode attention. The kernels live in decode_cuda_route.cu and
// decode_cuda_route_select.cu (routing), decode_cuda_attention.cuh (CUDA cores) and
// decode_cuda_attention_mma.cuh (tensor cores), instantiated by decode_cuda_attn_*.cu,
// with the fused combine in decode_cuda_split.cuh; cluster mode's plan is in
// decode_cuda_cluster_plan.cu.
#include "sinkrouter/attention/decode_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <mutex>
#include <numeric>
#include <string>
#include <utility>

#include "core/cuda_check.h"
#include "core/cuda_hopper.h"
#include "decode_cuda_env.h"
#include "decode_cuda_kernels.cuh"
#include "kv/paged_kv_tensor_map.h"

namespace sinkrouter {

using cuda::AttnArgs;
using cuda::RouteArgs;
using decode_env::int_option_from_env;
using decode_env::option_from_env;

namespace cuda {

void raise_smem_limit(const void* kernel, int smem) {
  static std::mutex mu;
  static std::map<std::pair<int, const void*>, int> limits;  // (device, kernel) -> bytes set
  int device = 0;
  SR_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mu);
  int& limit = limits[{device, kernel}];
  if (smem <= limit) return;
  SR_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  limit = smem;
}

AttnKernelInfo attention_prepare(int head_dim, DType kv_dtype, int heads_per_cta, bool routed, bool mma, bool tma,
                                 int min_smem) {
  const bool bf = kv_dtype == DType::BF16;
  const int gc = heads_per_cta, ms = min_smem;
  if (mma) {
    if (head_dim == 64)
      return bf ? attention_mma_prepare_d64_bf16(routed, tma, ms) : attention_mma_prepare_d64_f16(routed, tma, ms);
    return bf ? attention_mma_prepare_d128_bf16(routed, tma, ms) : attention_mma_prepare_d128_f16(routed, tma, ms);
  }
  if (head_dim == 64)
    return bf ? attention_prepare_d64_bf16(gc, routed, ms) : attention_prepare_d64_f16(gc, routed, ms);
  return bf ? attention_prepare_d128_bf16(gc, routed, ms) : attention_prepare_d128_f16(gc, routed, ms);
}

void attention_launch(const AttnArgs& args, int head_dim, DType kv_dtype, bool routed, bool mma,
                      const CUtensorMap* kv_map, int grid, int smem, cudaStream_t stream) {
  const bool bf = kv_dtype == DType::BF16;
  if (mma) {
    if (head_dim == 64)
      bf ? attention_mma_launch_d64_bf16(args, routed, kv_map, grid, smem, stream)
         : attention_mma_launch_d64_f16(args, routed, kv_map, grid, smem, stream);
    else
      bf ? attention_mma_launch_d128_bf16(args, routed, kv_map, grid, smem, stream)
         : attention_mma_launch_d128_f16(args, routed, kv_map, grid, smem, stream);
    return;
  }
  if (head_dim == 64)
    bf ? attention_launch_d64_bf16(args, routed, grid, smem, stream)
       : attention_launch_d64_f16(args, routed, grid, smem, stream);
  else
    bf ? attention_launch_d128_bf16(args, routed, grid, smem, stream)
       : attention_launch_d128_f16(args, routed, grid, smem, stream);
}

int attention_cluster_capacity(int head_dim, DType kv_dtype, bool tma, int cluster, int min_smem, bool wide,
                               bool routed) {
  const bool bf = kv_dtype == DType::BF16;
  if (head_dim == 64)
    return bf ? attention_mma_clusters_d64_bf16(tma, cluster, min_smem, wide, routed)
              : attention_mma_clusters_d64_f16(tma, cluster, min_smem, wide, routed);
  return bf ? attention_mma_clusters_d128_bf16(tma, cluster, min_smem, wide, routed)
            : attention_mma_clusters_d128_f16(tma, cluster, min_smem, wide, routed);
}

}  // namespace cuda

namespace {

template <typename T>
T* alloc(size_t count) {
  T* p = nullptr;
  SR_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T)));
  return p;
}

template <typename T>
std::vector<T> fetch(const T* p, size_t count) {
  std::vector<T> v(count);
  if (count) SR_CUDA_CHECK(cudaMemcpy(v.data(), p, count * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

// Query heads one CUDA-core attention CTA handles: the whole group when a kernel exists
// for it, else chunks of 8 (the last one masked). The tensor-core kernel takes whole
// groups of up to 4.
int heads_per_cta_for(int group) { return group <= 4 ? group : 8; }

// Sort capacity of the routing select kernel: 8192 candidate blocks when a sequence can
// have more than 1024 routable blocks (more than that falls back to a bisection).
int sort_capacity_for(int max_blocks) { return max_blocks > 1024 ? 8192 : 1024; }

}  // namespace

struct CudaDecoder::Workspace {
  std::vector<void*> owned;
  template <typename T>
  T* make(size_t count) {
    T* p = alloc<T>(count);
    owned.push_back(p);
    return p;
  }
  ~Workspace() {
    for (void* p : owned) cudaFree(p);
  }
  float* part_acc = nullptr;
  float2* part_ml = nullptr;
  int32_t* tickets = nullptr;
  int32_t* claims = nullptr;  // [units] dynamic splits' chunk counters; null without them
  HeadStats* stats = nullptr;
  // Routing.
  float *sink_max = nullptr, *sink_sum = nullptr, *delta = nullptr, *vbound = nullptr;
  float *bterm = nullptr, *cost = nullptr, *ubound = nullptr;
  uint8_t* keep = nullptr;
  int32_t *kept_blocks = nullptr, *kept_count = nullptr;
  int32_t *extra_anchors = nullptr, *extra_count = nullptr, *window_start = nullptr, *routed_tokens = nullptr;
  int32_t* route_tickets = nullptr;
  double2* cert_partials = nullptr;
  int32_t* chunk_counts = nullptr;
  // TMA copies: the cache's pages as a tensor map, encoded for kv_map_pages (run() encodes
  // it again when a view with other pages comes).
  CUtensorMap kv_map{};
  const void* kv_map_pages = nullptr;
  int anchor_stride = 1, block_stride = 16;
  int bounds_smem = 0, select_smem = 0, sink_capacity = 0, sort_capacity = 0, bounds_ctas_per_head = 1;

  // The routing kernels' arguments for one run (a member: it reads the decoder's plan).
  RouteArgs route_args(const CudaDecoder& d, const PagedKV& kv, const int32_t* seq_lens, const void* q,
                       DType q_dtype) const;
};

CudaDecoder::CudaDecoder(const DeviceKV& dkv, int num_q_heads, const AttentionPolicy& policy, float scale,
                         const CudaDecodeOptions& options)
    : policy_(policy), scale_(scale) {
  const PagedKV& kv = dkv.kv;
  policy.validate();
  SR_CHECK(policy.kind != PolicyKind::Blasst,
           "decode (CUDA): policy {} is not implemented on the GPU yet (dense, sinkrouter, streaming and quest "
           "are; use decode_cpu for {})",
           policy_name(policy.kind), policy_name(policy.kind));
  SR_CHECK(policy.kind != PolicyKind::SinkRouter || policy.bound == BoundKind::Box,
           "decode (CUDA): sinkrouter with bound '{}' is not implemented on the GPU yet (the box bound is; use the "
           "CPU for the others)",
           bound_name(policy.bound));
  SR_CHECK(kv.dtype == DType::BF16 || kv.dtype == DType::F16,
           "decode (CUDA): KV dtype {} is not supported (expected bf16 or f16)", dtype_name(kv.dtype));
  SR_CHECK(kv.head_dim == 64 || kv.head_dim == 128,
           "decode (CUDA): head_dim {} is not supported (expected 64 or 128)", kv.head_dim);
  SR_CHECK(kv.num_kv_heads >= 1, "decode (CUDA): num_kv_heads is {} (expected at least 1)", kv.num_kv_heads);
  SR_CHECK(kv.page_size >= 1 && kv.page_size <= 256,
           "decode (CUDA): page_size {} out of range (expected 1 to 256)", kv.page_size);
  SR_CHECK(kv.block_size >= 1 && kv.block_size <= 4096,
           "decode (CUDA): block_size {} out of range (expected 1 to 4096)", kv.block_size);
  SR_CHECK(kv.batch >= 1 && dkv.seq_lens != nullptr && dkv.max_capacity >= 1,
           "decode (CUDA): the KV view has no sequences or no device lengths");
  SR_CHECK(num_q_heads >= kv.num_kv_heads && num_q_heads % kv.num_kv_heads == 0,
           "decode (CUDA): {} query heads are not a multiple of {} KV heads", num_q_heads, kv.num_kv_heads);
  SR_CHECK(num_q_heads / kv.num_kv_heads <= 64, "decode (CUDA): GQA group size {} exceeds 64",
           num_q_heads / kv.num_kv_heads);
  SR_CHECK(options.min_split_tokens >= 1, "decode (CUDA): min_split_tokens {} must be at least 1",
           options.min_split_tokens);
  SR_CHECK(std::isfinite(scale) && scale > 0, "decode (CUDA): scale {} must be a positive finite number", scale);

  batch_ = kv.batch;
  num_kv_heads_ = kv.num_kv_heads;
  num_q_heads_ = num_q_heads;
  group_ = num_q_heads / kv.num_kv_heads;
  head_dim_ = kv.head_dim;
  page_size_ = kv.page_size;
  block_size_ = kv.block_size;
  kv_dtype_ = kv.dtype;
  max_capacity_ = dkv.max_capacity;
  const int64_t max_blocks = (max_capacity_ + block_size_ - 1) / block_size_;
  SR_CHECK(max_blocks < (int64_t(1) << 31) / 64, "decode (CUDA): capacity {} too large", max_capacity_);
  max_blocks_ = int(max_blocks);
  tensor_cores_ = options.tensor_cores && group_ <= 4;
  heads_per_cta_ = tensor_cores_ ? group_ : heads_per_cta_for(group_);
  head_chunks_ = (group_ + heads_per_cta_ - 1) / heads_per_cta_;
  min_split_tokens_ = options.min_split_tokens;
  kv_l2_prefetch_ = options.kv_l2_prefetch >= 0
                        ? options.kv_l2_prefetch
                        : option_from_env("SINKROUTER_KV_L2_PREFETCH", "128", {{"0", 0}, {"128", 128}, {"256", 256}},
                                          "0, 128 or 256");
  SR_CHECK(kv_l2_prefetch_ == 0 || kv_l2_prefetch_ == 128 || kv_l2_prefetch_ == 256,
           "decode (CUDA): kv_l2_prefetch must be 0, 128 or 256, not {}", kv_l2_prefetch_);
  early_page_ids_ = options.early_page_ids >= 0
                        ? options.early_page_ids
                        : option_from_env("SINKROUTER_EARLY_PAGE_IDS", "copies", {{"off", 0}, {"ids", 1}, {"copies", 2}},
                                          "off, ids or copies");
  SR_CHECK(early_page_ids_ >= 0 && early_page_ids_ <= 2, "decode (CUDA): early_page_ids must be 0, 1 or 2, not {}",
           early_page_ids_);
  const int chunks = options.adaptive_route_chunks >= 0
                         ? options.adaptive_route_chunks
                         : option_from_env("SINKROUTER_ROUTE_CHUNKS", "adaptive",
                                           {{"fixed", 0}, {"adaptive", 1}, {"small", 2}}, "fixed, adaptive or small");
  SR_CHECK(chunks >= 0 && chunks <= 2, "decode (CUDA): adaptive_route_chunks must be 0, 1 or 2, not {}", chunks);
  adaptive_route_chunks_ = chunks >= 1;
  small_route_steps_ = chunks == 2;
  const int chunk_lists = options.route_chunk_lists >= 0
                              ? options.route_chunk_lists
                              : option_from_env("SINKROUTER_ROUTE_CHUNK_LISTS", "on", {{"off", 0}, {"on", 1}}, "off or on");
  SR_CHECK(chunk_lists <= 1, "decode (CUDA): route_chunk_lists must be 0 or 1, not {}", chunk_lists);
  route_chunk_lists_ = chunk_lists == 1;
  const int route_tc = options.route_tensor_cores >= 0
                           ? options.route_tensor_cores
                           : option_from_env("SINKROUTER_ROUTE_TENSOR_CORES", "on", {{"off", 0}, {"on", 1}}, "off or on");
  SR_CHECK(route_tc <= 1, "decode (CUDA): route_tensor_cores must be 0 or 1, not {}", route_tc);
  route_tensor_cores_ = route_tc == 1;
  route_trigger_ = options.route_trigger >= 0
                       ? options.route_trigger
                       : option_from_env("SINKROUTER_ROUTE_TRIGGER", "auto", {{"start", 0}, {"exit", 1}, {"auto", 2}},
                                         "start, exit or auto");
  SR_CHECK(route_trigger_ <= 2, "decode (CUDA): route_trigger must be 0 (start), 1 (exit) or 2 (auto), not {}",
           route_trigger_);
  fused_routing_ = options.fused_fast_routing && policy.kind == PolicyKind::SinkRouter &&
                   policy.mode == RouterMode::Fast;

  const bool routed = policy.kind != PolicyKind::Dense;
  const int kv_copy = options.kv_copy >= 0
                          ? options.kv_copy
                          : option_from_env("SINKROUTER_KV_COPY", "auto", {{"cp.async", 0}, {"tma", 1}, {"auto", 2}},
                                            "cp.async, tma or auto");
  SR_CHECK(kv_copy >= 0 && kv_copy <= 2, "decode (CUDA): kv_copy must be 0 (cp.async), 1 (tma) or 2 (auto), not {}",
           kv_copy);
  int device = 0, sms = 0;
  SR_CUDA_CHECK(cudaGetDevice(&device));
  SR_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  // Unset (-1, and no SINKROUTER_DECODE_CTAS_PER_SM): at most 2 CTAs an SM for the tensor-core
  // kernel at head dim 64, whose 48 KB ring would let 4 fit: with 4, the plan took clusters of
  // more CTAs, which ran slower from 64K (kernel runs 21e-21f: SmolLM2 B=8 512K 796.8 us in 384
  // CTAs against 711.8 in 192); otherwise as many as fit.
  const int ctas_unset = tensor_cores_ && head_dim_ == 64 ? 2 : 0;
  const int ctas_per_sm =
      options.ctas_per_sm >= 0 ? options.ctas_per_sm : int_option_from_env("SINKROUTER_DECODE_CTAS_PER_SM", ctas_unset);
  SR_CHECK(ctas_per_sm >= 0 && ctas_per_sm <= 32, "decode (CUDA): ctas_per_sm must be 0 (as many as fit) to 32, not {}",
           ctas_per_sm);
  min_smem_ = 0;
  if (ctas_per_sm > 0) {  // a CTA's shared memory such that ctas_per_sm + 1 of them do not fit an SM
    int per_sm = 0, reserved = 0;
    SR_CUDA_CHECK(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device));
    SR_CUDA_CHECK(cudaDeviceGetAttribute(&reserved, cudaDevAttrReservedSharedMemoryPerBlock, device));
    min_smem_ = std::max(0, per_sm / (ctas_per_sm + 1) - reserved + 1);
  }
  cuda::AttnKernelInfo info{0, 0};
  if (kv_copy != 0) {  // TMA copies: tensor cores, pages and routing blocks of whole 16-token stages, sm_90a code
    const char* why = !tensor_cores_              ? "they need the tensor-core kernel (GQA group <= 4, tensor_cores on)"
                      : page_size_ % 16           ? "the page size is not a multiple of 16"
                      : routed && block_size_ % 16 ? "the routing block size is not a multiple of 16"
                      : cuda::tensor_map_encoder() == nullptr ? "the driver has no cuTensorMapEncodeTiled"
                                                              : nullptr;
    if (why == nullptr) {
      info = cuda::attention_prepare(head_dim_, kv_dtype_, heads_per_cta_, routed, true, true, min_smem_);
      if (info.ctas_per_sm < 1) why = "they need an sm_90 device and a build with sm_90a";
    }
    SR_CHECK(why == nullptr || kv_copy == 2, "decode (CUDA): TMA copies (kv_copy tma) cannot run here: {}", why);
    tma_copies_ = why == nullptr;
  }
  if (!tma_copies_)
    info = cuda::attention_prepare(head_dim_, kv_dtype_, heads_per_cta_, routed, tensor_cores_, false, min_smem_);
  SR_CHECK(info.ctas_per_sm >= 1, "decode (CUDA): the attention kernel does not fit on this device");
  SR_CHECK(ctas_per_sm == 0 || info.ctas_per_sm <= ctas_per_sm,
           "decode (CUDA): ctas_per_sm {}: {} CTAs still fit an SM (internal error)", ctas_per_sm, info.ctas_per_sm);
  launch_smem_ = info.smem_bytes;
  SR_CHECK(options.route_min_ctas >= 0, "decode (CUDA): route_min_ctas {} is negative", options.route_min_ctas);
  SR_CHECK(options.certificate_share_min_blocks >= 0, "decode (CUDA): certificate_share_min_blocks {} is negative",
           options.certificate_share_min_blocks);
  // For sweeps: SINKROUTER_CERT_SHARE_MIN_BLOCKS (an integer >= 0) replaces the default
  // threshold; an option set to anything else wins (and was checked above).
  certificate_share_min_blocks_ =
      options.certificate_share_min_blocks == CudaDecodeOptions{}.certificate_share_min_blocks
          ? int_option_from_env("SINKROUTER_CERT_SHARE_MIN_BLOCKS", options.certificate_share_min_blocks)
          : options.certificate_share_min_blocks;
  SR_CHECK(certificate_share_min_blocks_ >= 0, "decode (CUDA): SINKROUTER_CERT_SHARE_MIN_BLOCKS {} is negative",
           certificate_share_min_blocks_);
  route_min_ctas_ = options.route_min_ctas > 0 ? options.route_min_ctas
                                                 : std::max(1, sms / std::max(1, batch_ * num_kv_heads_));
  const int waves = options.waves >= 0 ? options.waves
                                       : option_from_env("SINKROUTER_DECODE_WAVES", "4",
                                                         {{"1", 1}, {"2", 2}, {"3", 3}, {"4", 4}, {"6", 6}, {"8", 8}},
                                                         "1, 2, 3, 4, 6 or 8");
  SR_CHECK(waves >= 1 && waves <= 8, "decode (CUDA): waves must be 1 to 8, not {}", waves);
  // An explicit target_ctas is one wave of that many CTAs (the tests' grids).
  wave_ctas_ = options.target_ctas > 0 ? options.target_ctas : info.ctas_per_sm * sms;
  waves_ = options.target_ctas > 0 ? 1 : waves;
  waves_min_split_tokens_ = options.waves_min_split_tokens != -1
                                ? options.waves_min_split_tokens
                                : int_option_from_env("SINKROUTER_DECODE_WAVES_MIN_SPLIT", 8192);
  SR_CHECK(waves_min_split_tokens_ >= 1,
           "decode (CUDA): waves_min_split_tokens {} must be at least 1 (CudaDecodeOptions, or "
           "SINKROUTER_DECODE_WAVES_MIN_SPLIT where the option is -1)",
           waves_min_split_tokens_);
  const int spread = options.spread_ctas >= 0
                         ? options.spread_ctas
                         : option_from_env("SINKROUTER_DECODE_SPREAD", "on", {{"off", 0}, {"on", 1}}, "off or on");
  SR_CHECK(spread == 0 || spread == 1, "decode (CUDA): spread_ctas must be 0 (off) or 1 (on), not {}", spread);
  // The stride: the first number from 0.618 of the wave that is coprime to it (a bijection).
  cta_stride_ = 0;
  if (spread == 1 && wave_ctas_ > 2) {
    cta_stride_ = int(0.618 * wave_ctas_);
    while (std::gcd(cta_stride_, wave_ctas_) != 1) ++cta_stride_;
  }
  const int units = batch_ * num_kv_heads_ * head_chunks_;
  plan_cluster_mode(options, routed, units, sms);
  plan_wide_ctas(options, routed, units, sms);
  plan_dynamic_splits(options, routed, units);
  // Cluster mode: cluster_groups clusters a unit. Otherwise the flat list: sum over units of
  // ceil(tokens / chunk) <= waves * wave_ctas + units (split_schedule.h).
  grid_ctas_ = cluster_ctas_ > 0 ? units * cluster_ctas_ * cluster_groups_ : waves_ * wave_ctas_ + units;
  // Cluster mode's second merge keeps (o, lse) float2s [units, C, groups, ceil(n / C)] in
  // part_acc and a ticket a (unit, rank).
  const size_t part_floats =
      std::max(size_t(grid_ctas_) * heads_per_cta_ * head_dim_,
               cluster_ctas_ > 0 ? 2 * size_t(units) * cluster_groups_ *
                                       (heads_per_cta_ * head_dim_ + cluster_ctas_ - 1)
                                 : size_t(0));
  const size_t tickets = size_t(units) * std::max(1, cluster_ctas_);

  ws_ = new Workspace();
  try {
    Workspace& w = *ws_;
    const size_t bh = size_t(batch_) * num_kv_heads_, qh = size_t(batch_) * num_q_heads_;
    w.part_acc = w.make<float>(part_floats);
    w.part_ml = w.make<float2>(size_t(grid_ctas_) * heads_per_cta_);
    w.tickets = w.make<int32_t>(tickets);
    SR_CUDA_CHECK(cudaMemset(w.tickets, 0, tickets * 4));  // the kernels return them to 0
    if (dynamic_splits_) {
      w.claims = w.make<int32_t>(size_t(units));
      SR_CUDA_CHECK(cudaMemset(w.claims, 0, size_t(units) * 4));  // the kernel returns them to 0
    }
    w.stats = w.make<HeadStats>(bh);
    SR_CUDA_CHECK(cudaMemset(w.stats, 0, bh * sizeof(HeadStats)));
    if (routed) {
      w.anchor_stride = std::max(kv.max_anchors, std::max(policy.sink_tokens, 1));
      w.block_stride = (max_blocks_ + 15) / 16 * 16;
      const size_t nb = bh * size_t(w.block_stride);
      w.sink_max = w.make<float>(qh);
      w.sink_sum = w.make<float>(qh);
      w.delta = w.make<float>(qh);
      w.vbound = w.make<float>(qh);
      w.bterm = w.make<float>(nb * group_);
      w.cost = w.make<float>(nb);
      w.ubound = w.make<float>(nb);
      w.keep = w.make<uint8_t>(nb);
      w.kept_blocks = w.make<int32_t>(nb);
      w.kept_count = w.make<int32_t>(bh);
      w.extra_anchors = w.make<int32_t>(bh * w.anchor_stride);
      w.extra_count = w.make<int32_t>(bh);
      w.window_start = w.make<int32_t>(bh);
      w.routed_tokens = w.make<int32_t>(bh);
      SR_CUDA_CHECK(cudaMemset(w.kept_count, 0, bh * 4));
      SR_CUDA_CHECK(cudaMemset(w.extra_count, 0, bh * 4));
      w.route_tickets = w.make<int32_t>(bh);
      SR_CUDA_CHECK(cudaMemset(w.route_tickets, 0, bh * 4));  // the kernel returns them to 0
      w.sink_capacity = w.anchor_stride + policy.window + block_size_ - 1;
      w.sort_capacity = sort_capacity_for(max_blocks_);
      const RouteArgs r = w.route_args(*this, kv, dkv.seq_lens, nullptr, DType::F32);
      w.bounds_smem = cuda::route_bounds_prepare(r);
      w.bounds_ctas_per_head = cuda::route_bounds_ctas_per_head(r, batch_, num_kv_heads_, w.bounds_smem);
      w.cert_partials = w.make<double2>(bh * size_t(w.bounds_ctas_per_head) * size_t(group_));
      w.chunk_counts = w.make<int32_t>(bh * size_t(w.bounds_ctas_per_head));
      SR_CUDA_CHECK(cudaMemset(w.chunk_counts, 0, bh * size_t(w.bounds_ctas_per_head) * 4));  // returned to 0 by the kernel
      w.select_smem = cuda::route_select_prepare(r);
    }
  } catch (...) {
    delete ws_;
    throw;
  }
}

CudaDecoder::~CudaDecoder() { delete ws_; }

void CudaDecoder::check_run_args(const DeviceKV& dkv, DType q_dtype, DType out_dtype) const {
  const PagedKV& kv = dkv.kv;
  SR_CHECK(kv.batch == batch_ && kv.num_kv_heads == num_kv_heads_ && kv.head_dim == head_dim_ &&
               kv.dtype == kv_dtype_ && kv.page_size == page_size_ && kv.block_size == block_size_,
           "decode (CUDA): the KV view (batch {}, {} KV heads, head_dim {}, {}, page {}, block {}) is not the "
           "shape this decoder was planned for (batch {}, {} KV heads, head_dim {}, {}, page {}, block {})",
           kv.batch, kv.num_kv_heads, kv.head_dim, dtype_name(kv.dtype), kv.page_size, kv.block_size, batch_,
           num_kv_heads_, head_dim_, dtype_name(kv_dtype_), page_size_, block_size_);
  SR_CHECK(dkv.max_capacity <= max_capacity_,
           "decode (CUDA): capacity {} exceeds the {} tokens this decoder was planned for", dkv.max_capacity,
           max_capacity_);
  SR_CHECK(dkv.seq_lens != nullptr, "decode (CUDA): the KV view has no device lengths");
  for (DType t : {q_dtype, out_dtype})
    SR_CHECK(t == DType::F32 || t == DType::BF16 || t == DType::F16,
             "decode (CUDA): q/out dtype {} is not supported (expected f32, bf16 or f16)", dtype_name(t));
  if (policy_.kind != PolicyKind::Dense) {
    SR_CHECK(kv.summaries != nullptr && kv.value_norm_max != nullptr && kv.anchor_pos != nullptr,
             "decode (CUDA): policy {} needs block summaries and anchors, but the KV view has none",
             policy_name(policy_.kind));
    SR_CHECK(kv.max_anchors <= ws_->anchor_stride,
             "decode (CUDA): the KV view has {} anchor slots, more than planned ({})", kv.max_anchors,
             ws_->anchor_stride);
  }
}

RouteArgs CudaDecoder::Workspace::route_args(const CudaDecoder& d, const PagedKV& kv, const int32_t* seq_lens,
                                             const void* q, DType q_dtype) const {
  const Workspace& w = *this;
  const AttentionPolicy& policy = d.policy_;
  RouteArgs r{};
  r.kv = kv;
  r.seq_lens = seq_lens;
  r.q = q;
  r.q_dtype = q_dtype;
  r.group = d.group_;
  r.num_q_heads = d.num_q_heads_;
  r.scale = d.scale_;
  r.streaming = policy.kind == PolicyKind::Streaming;
  r.quest = policy.kind == PolicyKind::Quest;
  r.quest_budget = policy.quest_budget;
  r.certified = policy.mode == RouterMode::Certified;
  r.epsilon = policy.epsilon;
  r.tau = policy.tau;
  r.estimate = policy.fast_estimates();
  r.gauss = policy.estimate == EstimateKind::Gauss;
  r.spread = float(policy.spread);
  r.window = policy.window;
  r.sink_tokens = policy.sink_tokens;
  r.block_stride = w.block_stride;
  r.anchor_stride = w.anchor_stride;
  r.sink_capacity = w.sink_capacity;
  r.sort_capacity = w.sort_capacity;
  r.bounds_ctas_per_head = w.bounds_ctas_per_head;
  r.adaptive_chunks = d.adaptive_route_chunks_;
  r.chunk_lists = d.route_chunk_lists_;
  r.trigger_at_exit = d.route_trigger_at_exit();
  r.tc_bounds = d.routes_on_tensor_cores();
  r.small_steps = d.small_route_steps_;
  r.bounds_min_ctas = d.route_min_ctas_;
  r.route_trace = d.route_trace_;
  r.fused_finish = d.fused_routing_;
  r.pad_anchors = d.tma_copies_;  // only routed decoders route
  r.route_tickets = w.route_tickets;
  r.cert_partials = w.cert_partials;
  r.chunk_counts = w.chunk_counts;
  r.share_min_blocks = d.certificate_share_min_blocks_;
  r.sink_max = w.sink_max;
  r.sink_sum = w.sink_sum;
  r.bterm = w.bterm;
  r.cost = w.cost;
  r.ubound = w.ubound;
  r.keep = w.keep;
  r.kept_blocks = w.kept_blocks;
  r.kept_count = w.kept_count;
  r.extra_anchors = w.extra_anchors;
  r.extra_count = w.extra_count;
  r.window_start = w.window_start;
  r.routed_tokens = w.routed_tokens;
  r.delta = w.delta;
  r.skipped_v_bound = w.vbound;
  r.stats = w.stats;
  return r;
}

void CudaDecoder::run_routing(const DeviceKV& dkv, const void* q, DType q_dtype, cudaStream_t stream) {
  check_run_args(dkv, q_dtype, DType::F32);
  SR_CHECK(policy_.kind != PolicyKind::Dense, "decode (CUDA): run_routing needs a routed policy, not dense");
  enqueue_routing(dkv, q, q_dtype, stream);
}

void CudaDecoder::enqueue_routing(const DeviceKV& dkv, const void* q, DType q_dtype, cudaStream_t stream) {
  const Workspace& w = *ws_;
  const RouteArgs r = w.route_args(*this, dkv.kv, dkv.seq_lens, q, q_dtype);
  cuda::route_bounds_launch(r, batch_, num_kv_heads_, w.bounds_smem, stream);
  if (!fused_routing_) cuda::route_select_launch(r, batch_, num_kv_heads_, w.select_smem, stream);
}

void CudaDecoder::run(const DeviceKV& dkv, const void* q, DType q_dtype, void* out, DType out_dtype,
                      cudaStream_t stream) {
  check_run_args(dkv, q_dtype, out_dtype);
  // The tensor-core kernel loads q in pairs of elements (8 bytes for float, 4 for 16-bit).
  const size_t q_align = q_dtype == DType::F32 ? 8 : 4;
  SR_CHECK(!tensor_cores_ || reinterpret_cast<uintptr_t>(q) % q_align == 0,
           "decode (CUDA): q ({}) must be {}-byte aligned", static_cast<const void*>(q), q_align);
  const bool routed = policy_.kind != PolicyKind::Dense;
  if (routed) enqueue_routing(dkv, q, q_dtype, stream);  // run_routing's checks are the ones above
  Workspace& w = *ws_;
  AttnArgs a{};
  a.kv = dkv.kv;
  a.seq_lens = dkv.seq_lens;
  a.q = q;
  a.q_dtype = q_dtype;
  a.num_q_heads = num_q_heads_;
  a.group = group_;
  a.head_chunks = head_chunks_;
  a.heads_per_cta = heads_per_cta_;
  a.q_scale = scale_ * cuda::kLog2e;
  if (routed) {
    a.routed_tokens = w.routed_tokens;
    a.kept_blocks = w.kept_blocks;
    a.kept_count = w.kept_count;
    a.extra_anchors = w.extra_anchors;
    a.extra_count = w.extra_count;
    a.window_start = w.window_start;
    a.anchor_stride = w.anchor_stride;
  }
  a.block_stride = w.block_stride;
  a.wave_ctas = wave_ctas_;
  a.waves = waves_;
  a.waves_min_split_tokens = waves_min_split_tokens_;
  a.min_split_tokens = min_split_tokens_;
  a.cta_stride = cta_stride_;
  a.kv_l2_prefetch = kv_l2_prefetch_;
  a.pad_anchors = tma_copies_ && routed;
  a.early_page_ids = dkv.tables_fixed ? early_page_ids_ : 0;
  a.cluster = cluster_ctas_;
  a.cluster_groups = cluster_groups_;
  a.wide = wide_ctas_ ? 1 : 0;
  a.part_acc = w.part_acc;
  a.part_ml = w.part_ml;
  a.tickets = w.tickets;
  a.claims = w.claims;
  a.claim_min_split_tokens = dynamic_min_split_tokens_;
  a.claim_stages = dynamic_chunk_tokens_ / 16;
  a.out = out;
  a.out_dtype = out_dtype;
  a.stats = w.stats;
  a.delta = w.delta;
  a.skipped_v_bound = w.vbound;
  a.phase_trace = phase_trace_;
  if (tma_copies_ && w.kv_map_pages != dkv.kv.pages) {  // host work only: no stream operation
    w.kv_map = cuda::paged_kv_tensor_map(dkv.kv, 16, 2, kv_l2_prefetch_, "decode (CUDA)");
    w.kv_map_pages = dkv.kv.pages;
  }
  cuda::attention_launch(a, head_dim_, kv_dtype_, routed, tensor_cores_, tma_copies_ ? &w.kv_map : nullptr,
                         grid_ctas_, launch_smem_, stream);
}

bool CudaDecoder::routes_on_tensor_cores() const {
  return policy_.kind != PolicyKind::Dense && route_tensor_cores_ && kv_dtype_ == DType::BF16 &&
         group_ <= cuda::kTcMaxGroup && !policy_.fast_estimates();
}

bool CudaDecoder::route_trigger_at_exit() const {
  return fused_routing_ && (route_trigger_ == 1 || (route_trigger_ == 2 && cluster_ctas_ != 16));
}

int CudaDecoder::route_trace_ctas() const {
  return policy_.kind == PolicyKind::Dense ? 0 : ws_->bounds_ctas_per_head * batch_ * num_kv_heads_;
}

std::vector<HeadStats> CudaDecoder::download_stats() const {
  SR_CUDA_CHECK(cudaDeviceSynchronize());
  return fetch(ws_->stats, size_t(batch_) * num_kv_heads_);
}

CudaRouting CudaDecoder::download_routing() const {
  SR_CHECK(policy_.kind != PolicyKind::Dense, "decode (CUDA): a dense decoder makes no routing decisions");
  SR_CUDA_CHECK(cudaDeviceSynchronize());
  const Workspace& w = *ws_;
  const size_t bh = size_t(batch_) * num_kv_heads_, qh = size_t(batch_) * num_q_heads_;
  CudaRouting r;
  r.sink_max = fetch(w.sink_max, qh);
  r.sink_sum = fetch(w.sink_sum, qh);
  r.delta = fetch(w.delta, qh);
  r.skipped_v_bound = fetch(w.vbound, qh);
  r.window_start = fetch(w.window_start, bh);
  const std::vector<int32_t> kept = fetch(w.kept_blocks, bh * w.block_stride);
  const std::vector<int32_t> kept_n = fetch(w.kept_count, bh);
  const std::vector<int32_t> extra = fetch(w.extra_anchors, bh * w.anchor_stride);
  const std::vector<int32_t> extra_n = fetch(w.extra_count, bh);
  const std::vector<float> ubound = fetch(w.ubound, bh * w.block_stride);
  const int R = block_size_;
  for (size_t i = 0; i < bh; ++i) {
    r.block_bounds.emplace_back(ubound.begin() + long(i * w.block_stride),
                                ubound.begin() + long(i * w.block_stride + r.window_start[i] / R));
    r.kept_blocks.emplace_back(kept.begin() + long(i * w.block_stride),
                               kept.begin() + long(i * w.block_stride + kept_n[i]));
    r.extra_anchors.emplace_back(extra.begin() + long(i * w.anchor_stride),
                                 extra.begin() + long(i * w.anchor_stride + extra_n[i]));
  }
  return r;
}

}  // namespace sinkrouter
