// Internal interface between the CUDA decode kernels (decode_cuda_*.cu) and the host
// side (decode_cuda.cu): the argument structs passed by value to the kernels, the launch
// functions, and the device helpers they share.
#pragma once

#include <cuda.h>  // CUtensorMap
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/cuda_fast_div.cuh"
#include "core/cuda_mma.cuh"  // cp.async wrappers
#include "sinkrouter/attention/decode.h"
#include "sinkrouter/attention/decode_cuda.h"
#include "sinkrouter/kv/paged_kv.h"

namespace sinkrouter::cuda {

// Threads a CTA of the CUDA-core attention kernel; the tensor-core kernel's are
// MmaShape<D, W>::kThreads (decode_cuda_mma_tiles.cuh).
constexpr int kAttnThreads = 128;
constexpr int kMaxHeadsPerCta = 8;

// The flat Split-K work list. A unit is one (sequence, KV head, head chunk); its tokens
// (all of them for dense, anchors + kept blocks + window for routed) are cut into
// ceil(tokens / chunk) splits (split_schedule.h: all tokens over one wave of wave_ctas CTAs,
// or over `waves` of them where a one-wave split is long), and the splits of all units are
// laid end to end over the CTAs. The combine is fused:
// every split CTA writes its partial (m, l, acc) and takes a ticket; the unit's last CTA
// merges the partials, writes the output and the statistics, and returns the ticket
// counter to zero for the next run. A unit of one split writes its output directly.
struct AttnArgs {
  PagedKV kv;                   // device pointers (kv.last_page_len unused)
  const int32_t* seq_lens;      // [batch]
  const void* q;                // [batch, num_q_heads, head_dim]
  DType q_dtype;
  int num_q_heads, group, head_chunks, heads_per_cta;
  float q_scale;                // softmax scale * log2(e): scores are kept in base 2
  // Routed: per (b, h); null for dense.
  const int32_t* routed_tokens;  // [B*H] anchors alone + kept blocks * R + window
  const int32_t* kept_blocks;    // [B*H, block_stride] ascending
  const int32_t* kept_count;     // [B*H]
  const int32_t* extra_anchors;  // [B*H, anchor_stride]
  const int32_t* extra_count;    // [B*H]
  const int32_t* window_start;   // [B*H]
  int block_stride, anchor_stride;
  int wave_ctas, waves, waves_min_split_tokens, min_split_tokens;
  int cta_stride;  // > 0: the first wave's CTAs take list entries strided over it (flat_cta)
  int kv_l2_prefetch;  // 0, 128 or 256: cp.async's L2 prefetch size for K/V (tensor-core kernel)
  // Routed with TMA copies: the anchors read alone are padded to a multiple of 16 tokens
  // (RoutedMap::block_start), so that every 16-token stage of the kept blocks and the window
  // is 16 contiguous rows of one page (the routing pass counts the padding in routed_tokens).
  bool pad_anchors;
  // Cluster mode with fixed splits: 1, the page list's start and the first stages' page ids are
  // loaded before the PDL wait; 2, with TMA the first copies are issued before the length is
  // known too; 0, neither (DeviceKV::tables_fixed and CudaDecodeOptions::early_page_ids).
  int early_page_ids;
  // Cluster mode (tensor cores, sm_90; decode_cuda_cluster.cuh): cluster 0 off (the flat
  // work list above); C >= 2: the grid is units * cluster_groups clusters of C CTAs (routed:
  // cluster_groups 1, over the routed token list of routed_tokens[unit] tokens),
  // unit u's CTA stages (MmaShape::kStageRows tokens) taken in turn by the C * cluster_groups
  // CTAs of clusters [u * cluster_groups, (u + 1) * cluster_groups), merged within each
  // cluster through distributed shared memory, then (cluster_groups > 1) over the clusters through part_acc,
  // read as float2 [units, C, cluster_groups, ceil(heads_per_cta * head_dim / C)] (o, lse),
  // and tickets [units, C]; with one cluster a unit part_acc, part_ml and tickets are unused.
  int cluster, cluster_groups;
  // Cluster mode: 1 where the plan takes the wide CTAs (kWideWarps warps, one CTA an
  // SM; CudaDecodeOptions::wide_ctas), 0 for 4 warps. Read by the launch, not the kernel.
  int wide;
  float* part_acc;   // [grid, heads_per_cta, head_dim] unnormalised sums
  float2* part_ml;   // [grid, heads_per_cta] (m in base 2, l)
  int32_t* tickets;  // [units] (cluster mode: [units, C]) zero between runs
  // Dynamic splits (dense, tensor cores; the kernel's DYN instance): a unit whose splits have
  // at least claim_min_split_tokens tokens each has its warps claim chunks of its tokens
  // (decode_cuda_claims.cuh, ClaimedChunks) through claims[unit], zero between runs
  // (the unit's last CTA returns it to 0). Null: every split is [v0, v1), fixed.
  int32_t* claims;
  int claim_min_split_tokens;
  int claim_stages;  // 16-token warp stages a chunk (at least 8: more than the ring's stages + 1)
  // Output and statistics (written by the unit's last CTA).
  void* out;         // [batch, num_q_heads, head_dim]
  DType out_dtype;
  HeadStats* stats;              // [B*H]: dense writes them whole; routed adds the output bound
  const float* delta;            // [B*QH] routed only
  const float* skipped_v_bound;  // [B*QH] routed only
  // Profiling only (CudaDecoder::set_phase_trace): [grid, kPhaseTraceSlots] stamps of the
  // tensor-core kernel's phases (PhaseSlot), written by thread 0 of each CTA; null: off.
  long long* phase_trace;
};

// Heads the tensor-core bounds step holds in one B tile (the mma's N; decode_cuda_route_mma.cuh).
constexpr int kTcMaxGroup = 8;

// The routing pass: two kernels (fast mode: route_bounds alone, see fused_finish).
//   route_bounds: grid (bounds_ctas_per_head, B*H), at most about one wave. Every CTA
//     computes the sink signal of its (b, h) (the anchors and window are a few hundred
//     tokens at most, read from L2; recomputing them per CTA costs less than a separate
//     launch), then the bound terms of its chunks of routable blocks from their summaries;
//     fast mode decides there.
//   route_select: one CTA per (b, h). Certified threshold (sort of the candidate blocks by
//     cost, then per-head prefix sums), quest's top blocks, the kept-block list, the
//     certificate and the statistics.
struct RouteArgs {
  PagedKV kv;
  const int32_t* seq_lens;
  const void* q;
  DType q_dtype;
  int group, num_q_heads;
  float scale;
  bool streaming;     // streaming: keep no block, anchors = the first sink_tokens
  bool quest;         // quest: no anchors, keep the top blocks by bound under a token budget
  int quest_budget;
  bool certified;     // sinkrouter mode
  double epsilon, tau;
  // fast: the block estimate deciding keep (policy.h EstimateKind): when `estimate`, e =
  // min(u, c + spread * (gauss ? ||q * w||_2 : ||q * w||_1)) from the box's centre c and
  // half-widths w; otherwise the bound u itself. The certificate always uses u.
  bool estimate, gauss;
  float spread;
  int window, sink_tokens;
  int block_stride;   // of the per-block arrays below (max blocks, rounded up to 16)
  int anchor_stride;  // of extra_anchors (kv.max_anchors is the stride of kv.anchor_pos)
  int sink_capacity;  // most tokens a sink set can hold: anchor_stride + window + block_size - 1
  int bounds_ctas_per_head;  // route_bounds CTAs per (b, h); each takes every this-many-th chunk of blocks
  // Chunks sized per (b, h) from its length (CudaDecodeOptions::adaptive_route_chunks), with
  // at least bounds_min_ctas CTAs wanted per (b, h) (about one per SM over the batch's heads).
  bool adaptive_chunks;
  // Adaptive chunks only: steps of fewer blocks where a (b, h) has fewer steps than CTAs
  // wanted (CudaDecodeOptions::adaptive_route_chunks 2).
  bool small_steps;
  int bounds_min_ctas;
  int sort_capacity;   // candidates route_select sorts in shared memory (1024 or 8192)
  // Fast mode in one launch: route_bounds' last CTA per (b, h) finishes (no route_select).
  bool fused_finish;
  bool pad_anchors;  // routed_tokens counts the anchors padded to 16 (AttnArgs::pad_anchors)
  int32_t* route_tickets;  // [B*H] zero between runs (the finishing CTA resets its own)
  // Fused fast mode, sequences of at least share_min_blocks routable blocks
  // (CudaDecodeOptions::certificate_share_min_blocks): each route_bounds CTA's share of the
  // certificate, summed over its skipped blocks after its bounds loop: [B*H,
  // bounds_ctas_per_head, G] of (sum b_jg, sum b_jg vmax_j); the finishing CTA adds the shares.
  double2* cert_partials;
  int share_min_blocks;
  // Fused fast mode with adaptive chunks: each route_bounds CTA's count of kept blocks in its
  // chunk, + 1 (0: not yet published), [B*H, bounds_ctas_per_head]; zero between runs (the
  // finishing CTA resets its row). The CTAs write the kept list themselves from these
  // (decode_cuda_route_chunk_list.cuh).
  int32_t* chunk_counts;
  bool chunk_lists;  // CudaDecodeOptions::route_chunk_lists: the CTAs write their lists (adaptive chunks only)
  // The bounds step on the tensor cores (decode_cuda_route_mma.cuh): CudaDecodeOptions::
  // route_tensor_cores, where it applies (a bf16 cache, G <= kTcMaxGroup, no estimate).
  bool tc_bounds;
  // Fused fast mode only (false otherwise): route_bounds lets its dependent (the attention
  // kernel) launch at each CTA's exit, not at its start (CudaDecoder::route_trigger_at_exit).
  bool trigger_at_exit;
  // Outputs, all device.
  float* sink_max;  float* sink_sum;  // [B*QH] m_A, Z_A
  float* bterm;     // [B*H, block_stride, G] R * exp(u - m) / Z, rounded up to float
  float* cost;      // [B*H, block_stride]     max over g of bterm
  float* ubound;    // [B*H, block_stride]     max over g of u_jg (quest's score)
  uint8_t* keep;    // [B*H, block_stride]
  int32_t* kept_blocks; int32_t* kept_count;
  int32_t* extra_anchors; int32_t* extra_count;
  int32_t* window_start; int32_t* routed_tokens;
  float* delta; float* skipped_v_bound;  // [B*QH]
  HeadStats* stats;                      // [B*H]
  // Profiling only (CudaDecoder::set_route_trace): [route_bounds CTAs, kRouteTraceSlots]
  // stamps (RouteSlot) by thread 0 of each CTA, CTA index y * gridDim.x + x; null: off.
  long long* route_trace;
};

// Shared memory bytes and occupancy of one attention instantiation; sets its dynamic
// shared-memory limit (call once, at plan time, outside any stream capture).
struct AttnKernelInfo {
  int smem_bytes;
  int ctas_per_sm;
};
// mma: the tensor-core kernel (decode_cuda_attention_mma.cuh, whole groups of up to 4
// query heads); otherwise the CUDA-core kernel (decode_cuda_attention.cuh). tma: the
// tensor-core kernel's TMA copies (dense or routed; prepare returns ctas_per_sm 0 where its
// sm_90a code cannot run). min_smem: the dynamic shared memory a CTA takes is at least this
// many bytes (CudaDecodeOptions::ctas_per_sm: a floor that leaves room for fewer CTAs an SM);
// info.smem_bytes is what launch must be given. launch: kv_map non-null runs the TMA kernel
// over that map.
AttnKernelInfo attention_prepare(int head_dim, DType kv_dtype, int heads_per_cta, bool routed, bool mma, bool tma,
                                 int min_smem);
void attention_launch(const AttnArgs& args, int head_dim, DType kv_dtype, bool routed, bool mma,
                      const CUtensorMap* kv_map, int grid, int smem, cudaStream_t stream);
// The most clusters a unit in cluster mode (AttnArgs::cluster_groups), and the partials
// their merge loads in one round (merge_cluster_groups: 8 a thread at 128 threads, 4 at 256).
constexpr int kMaxClusterGroups = 64;
constexpr int kGroupMergeRound = 1024;

// Cluster mode (AttnArgs::cluster): how many clusters of `cluster` CTAs of the dense (routed:
// the routed) tensor-core kernel (TMA copies or cp.async; wide: its wide CTAs, AttnArgs::wide)
// can be resident at once, each CTA taking at least min_smem bytes of dynamic shared memory (as
// attention_prepare); 0 where none can.
int attention_cluster_capacity(int head_dim, DType kv_dtype, bool tma, int cluster, int min_smem, bool wide,
                               bool routed);
// Per (head_dim, dtype) instantiation files (generated by generate_decode_cuda_instances.py).
#define SR_DECLARE_ATTENTION_INSTANCES(SUFFIX)                                                   \
  AttnKernelInfo attention_prepare_##SUFFIX(int heads_per_cta, bool routed, int min_smem);    \
  void attention_launch_##SUFFIX(const AttnArgs& args, bool routed, int grid, int smem, cudaStream_t stream); \
  AttnKernelInfo attention_mma_prepare_##SUFFIX(bool routed, bool tma, int min_smem);          \
  int attention_mma_clusters_##SUFFIX(bool tma, int cluster, int min_smem, bool wide, bool routed); \
  void attention_mma_launch_##SUFFIX(const AttnArgs& args, bool routed, const CUtensorMap* kv_map, int grid, \
                                     int smem, cudaStream_t stream);
SR_DECLARE_ATTENTION_INSTANCES(d64_bf16)
SR_DECLARE_ATTENTION_INSTANCES(d64_f16)
SR_DECLARE_ATTENTION_INSTANCES(d128_bf16)
SR_DECLARE_ATTENTION_INSTANCES(d128_f16)
#undef SR_DECLARE_ATTENTION_INSTANCES

// Raises `kernel`'s dynamic shared-memory limit on the current device to at least `smem`
// bytes. The limit is state of the kernel, shared by every decoder: it only ever rises, so
// that a decoder planned later with a smaller need cannot lower it under an earlier one's.
void raise_smem_limit(const void* kernel, int smem);

// Routing: dynamic shared memory of the two kernels (sets their limits; plan time).
int route_bounds_prepare(const RouteArgs& args);
// route_bounds CTAs per (b, h) for a grid of about one wave on this device.
int route_bounds_ctas_per_head(const RouteArgs& args, int batch, int num_kv_heads, int smem);
int route_select_prepare(const RouteArgs& args);
void route_bounds_launch(const RouteArgs& args, int batch, int num_kv_heads, int smem, cudaStream_t stream);
void route_select_launch(const RouteArgs& args, int batch, int num_kv_heads, int smem, cudaStream_t stream);

// ---- device helpers shared by the kernels ----
#if defined(__CUDACC__)

// One profiling stamp: the global timer (ns) or the SM clock (cycles).
__device__ __forceinline__ void write_stamp(long long* at, bool global_time) {
  long long v;
  if (global_time)
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(v));
  else
    v = clock64();
  *at = v;
}

// Records phase `slot` of this CTA when tracing is on (one uniform branch otherwise).
__device__ __forceinline__ void trace_phase(const AttnArgs& a, int slot) {
  if (a.phase_trace == nullptr || threadIdx.x != 0) return;
  write_stamp(&a.phase_trace[int64_t(blockIdx.x) * kPhaseTraceSlots + slot],
              slot == kPhaseStartNs || slot == kPhaseEndNs);
}
// A traced value that is not a time (kPhaseTokens).
__device__ __forceinline__ void trace_value(const AttnArgs& a, int slot, long long v) {
  if (a.phase_trace != nullptr && threadIdx.x == 0) a.phase_trace[int64_t(blockIdx.x) * kPhaseTraceSlots + slot] = v;
}
// The CTA's last stamps: its role (PhaseSlot) and the global time it ends.
__device__ __forceinline__ void trace_end(const AttnArgs& a, int role) {
  trace_value(a, kPhaseRole, role);
  trace_phase(a, kPhaseEndNs);
}

// The routing pass's stamps (RouteSlot), as trace_phase's.
__device__ __forceinline__ void trace_route(const RouteArgs& a, int slot) {
  if (a.route_trace == nullptr || threadIdx.x != 0) return;
  write_stamp(&a.route_trace[(int64_t(blockIdx.y) * gridDim.x + blockIdx.x) * kRouteTraceSlots + slot],
              slot == kRouteStartNs || slot == kRouteEndNs);
}
__device__ __forceinline__ void trace_route_end(const RouteArgs& a, int role) {
  if (a.route_trace == nullptr || threadIdx.x != 0) return;
  a.route_trace[(int64_t(blockIdx.y) * gridDim.x + blockIdx.x) * kRouteTraceSlots + kRouteRole] = role;
  trace_route(a, kRouteEndNs);
}

// A 16-bit q element (bf16 or f16 bits, as t says) as float.
__device__ __forceinline__ float q_bits_to_float(uint16_t x, DType t) {
  return t == DType::BF16 ? __uint_as_float(uint32_t(x) << 16) : __half2float(__ushort_as_half(x));
}

__device__ __forceinline__ float load_q(const void* q, DType t, int64_t i) {
  if (t == DType::F32) return static_cast<const float*>(q)[i];
  return q_bits_to_float(static_cast<const uint16_t*>(q)[i], t);
}

// Elements i and i + 1 of q (i even) as floats, in one load where the pair is aligned (the
// load's value is converted after it arrives, so that a thread's pair costs one round trip).
__device__ __forceinline__ float2 load_q_pair(const void* q, DType t, int64_t i) {
  if (t == DType::F32) {
    const float* p = static_cast<const float*>(q) + i;
    if (reinterpret_cast<uintptr_t>(p) % 8 == 0) return *reinterpret_cast<const float2*>(p);
    return make_float2(p[0], p[1]);
  }
  const uint16_t* p = static_cast<const uint16_t*>(q) + i;
  uint32_t w;
  if (reinterpret_cast<uintptr_t>(p) % 4 == 0) w = *reinterpret_cast<const uint32_t*>(p);
  else w = uint32_t(p[0]) | uint32_t(p[1]) << 16;
  return make_float2(q_bits_to_float(uint16_t(w & 0xffffu), t), q_bits_to_float(uint16_t(w >> 16), t));
}

// Virtual rows a routed unit gives its na anchors read alone: na, padded to a multiple of 16
// with TMA copies (AttnArgs::pad_anchors); the kept blocks start there (RoutedMap::block_start,
// the routing pass's routed_tokens).
__device__ __forceinline__ int anchor_rows(int na, bool pad) { return pad ? (na + 15) & ~15 : na; }

// Relative bound on the rounding error of a D-term float dot product (cpu_math.h's).
__device__ __forceinline__ float dot_error_factor(int n) { return float(n + 4) * 5.9604645e-8f; }

// First window token of a sequence of n tokens: the window is at least `window` tokens,
// extended back to a routing-block boundary (router.cpp's rule).
__device__ __forceinline__ int64_t window_start_of(int64_t n, int window, int R) {
  const int64_t w = n - window > 0 ? n - window : 0;
  return w / R * R;
}

// Anchors of (b, h) that lie before the window (router.cpp's rule per policy): the first
// `count` entries of its ascending anchor list; streaming: the first sink_tokens
// positions; quest: none. Call with all 32 lanes of the warp (each gets the count): the
// list is ascending, so one ballot per 32 entries counts the prefix, instead of a chain
// of dependent loads one anchor after another.
__device__ __forceinline__ int anchors_before(const RouteArgs& a, int bh, int64_t ws) {
  if (a.streaming) return int(ws < a.sink_tokens ? ws : a.sink_tokens);
  if (a.quest) return 0;
  const int32_t* p = a.kv.anchor_pos + int64_t(bh) * a.kv.max_anchors;
  const int n = a.kv.anchor_count[bh], lane = int(threadIdx.x) & 31;
  int c = 0;
  for (int i0 = 0; i0 < n; i0 += 32) {
    const int i = i0 + lane;
    c += __popc(__ballot_sync(0xffffffffu, i < n && p[i] < ws));
  }
  return c;
}

#endif

}  // namespace sinkrouter::cuda
