// What the two attention kernels (CUDA cores: decode_cuda_attention.cuh; tensor cores:
// decode_cuda_attention_mma.cuh) share: the asynchronous-copy helpers, the flat Split-K
// schedule (which unit and split a CTA takes), the routed token map, and the fused
// combine that ends every CTA (finish_split).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "core/cuda_dtype.cuh"
#include "decode_cuda_kernels.cuh"
#include "split_schedule.h"

namespace sinkrouter::cuda {

// Order-preserving map of a float to an int (for atomicMax in shared memory) and back.
__device__ __forceinline__ int ordered_int(float f) {
  const int i = __float_as_int(f);
  return i >= 0 ? i : i ^ 0x7fffffff;
}
__device__ __forceinline__ float unordered_int(int i) { return __int_as_float(i >= 0 ? i : i ^ 0x7fffffff); }

// Tokens of unit u: the sequence length (dense) or what the router kept.
template <bool ROUTED>
__device__ __forceinline__ int64_t unit_tokens(const AttnArgs& a, int u) {
  const int bh = u / a.head_chunks;
  if (ROUTED) return a.routed_tokens[bh];
  return a.seq_lens[bh / a.kv.num_kv_heads];
}

// This CTA's index in the flat work list: blockIdx.x, or, with AttnArgs::cta_stride, its
// image under c -> c * stride mod wave_ctas within the first wave (the resident CTAs; later
// waves keep their index). Why: a unit's splits are consecutive list entries, and CTAs of
// neighbouring indices run on neighbouring SMs, so a unit's CTAs shared the read rate of a
// few GPCs, and whole units ran slower than others (kernel run 18b: with dynamic splits, which
// even out the CTAs of one unit, the loops at SmolLM2 B=8 512K still ran from 559 to 687 us).
// Strided, a unit's CTAs land all over the GPU.
__device__ __forceinline__ int flat_cta(const AttnArgs& a) {
  const int c = int(blockIdx.x);
  return a.cta_stride > 0 && c < a.wave_ctas ? int(int64_t(c) * a.cta_stride % a.wave_ctas) : c;
}

// Finds which unit and split CTA `cta` takes (see AttnArgs), the unit's tokens and where
// its sequence's page list starts (kv.indptr). Returns false when the CTA has no work (the
// grid is sized for the worst case). Every load here is a round trip on the critical path
// of every CTA, so each unit's length is loaded once (a thread keeps its first unit's for
// the scan), and the page-list start along with it. The chunk is split_schedule.h's.
template <bool ROUTED, int THREADS>
__device__ bool find_split(const AttnArgs& a, int cta, int* unit, int* split, int* splits, int64_t* tokens,
                           int32_t* page_start) {
  using Reduce = cub::BlockReduce<long long, THREADS>;
  using Scan = cub::BlockScan<int, THREADS>;
  __shared__ union {
    typename Reduce::TempStorage reduce;
    typename Scan::TempStorage scan;
  } tmp;
  __shared__ long long s_total, s_tokens;
  __shared__ int s_found[4];
  const int units = a.kv.batch * a.kv.num_kv_heads * a.head_chunks;
  const int64_t first_tokens = int(threadIdx.x) < units ? unit_tokens<ROUTED>(a, int(threadIdx.x)) : 0;
  auto page_start_of = [&](int u) { return a.kv.indptr[u / a.head_chunks / a.kv.num_kv_heads]; };
  const int32_t first_page_start = int(threadIdx.x) < units ? page_start_of(int(threadIdx.x)) : 0;
  long long part = first_tokens;
  for (int u = int(threadIdx.x) + THREADS; u < units; u += THREADS) part += unit_tokens<ROUTED>(a, u);
  const long long total = Reduce(tmp.reduce).Sum(part);
  if (threadIdx.x == 0) {
    s_total = total;
    s_found[0] = -1;
  }
  __syncthreads();
  const int64_t chunk = split_schedule::chunk_for(s_total, units, a.wave_ctas, a.waves, a.waves_min_split_tokens,
                                                         a.min_split_tokens);
  // Past every split (there are at most ceil(total / chunk) + units): no scan. With several
  // waves and a short call, the later waves' CTAs return here.
  if (cta >= split_schedule::ceil_div(s_total, chunk) + units) return false;
  int base = 0;
  for (int u0 = 0; u0 < units; u0 += THREADS) {
    const int u = u0 + int(threadIdx.x);
    int s = 0;
    int64_t t = 0;
    if (u < units) {
      t = u0 == 0 ? first_tokens : unit_tokens<ROUTED>(a, u);
      s = split_schedule::splits_of(t, chunk);
    }
    int prefix, sum;
    Scan(tmp.scan).ExclusiveSum(s, prefix, sum);
    if (u < units && cta >= base + prefix && cta < base + prefix + s) {
      s_found[0] = u;
      s_found[1] = cta - base - prefix;
      s_found[2] = s;
      s_found[3] = u0 == 0 ? first_page_start : page_start_of(u);
      s_tokens = t;
    }
    base += sum;
    __syncthreads();  // tmp is reused by the next round
    if (base > cta) break;  // uniform: every thread has the same base
  }
  *unit = s_found[0];
  *split = s_found[1];
  *splits = s_found[2];
  *tokens = s_tokens;
  *page_start = s_found[3];
  return s_found[0] >= 0;
}

// A token position whose load (if any) is issued now and whose arithmetic is left for
// the next iteration: raw * mul + add, raw loaded (mul 0: nothing loaded). Why: the main
// loops load the position (routed) and then the page id of a stage a step before they use
// it, and an arithmetic consumer placed right after a load makes the warp wait for the
// load's round trip there (run 5a: the page id's scaling right after its load cost ~600
// cycles an iteration); kept apart, the round trip overlaps the iteration's work.
struct LazyPos {
  int raw, mul, add;
  bool valid;           // false: no token (past the split)
  bool anchor = false;  // routed with dynamic splits: the warp stage holds anchors read alone
  __device__ __forceinline__ int value() const { return raw * mul + add; }
};

// Position of virtual token v of a routed unit: [extra anchors][padding][kept blocks][window],
// the padding (no token: invalid, its scores masked) up to block_start, a multiple of 16 when
// AttnArgs::pad_anchors (TMA copies), else none.
struct RoutedMap {
  const int32_t* anchors;
  const int32_t* blocks;
  int num_anchors, block_start, block_tokens, window_start;
  FastDiv R;
  // The position, lazily (LazyPos): the anchor or block id is loaded, not used.
  __device__ __forceinline__ LazyPos lazy(int v) const {
    LazyPos p{0, 0, 0, true};
    const int w = v - block_start;
    if (v < num_anchors) {
      p.raw = anchors[v];
      p.mul = 1;
    } else if (w < 0) {
      p.valid = false;
    } else if (w < block_tokens) {
      const int j = int(R.div(uint32_t(w)));
      p.raw = blocks[j];
      p.mul = int(R.d);
      p.add = w - j * int(R.d);
    } else {
      p.add = window_start + (w - block_tokens);
    }
    return p;
  }
  __device__ __forceinline__ int operator()(int v) const { return lazy(v).value(); }
  // PAD: the kernel may run with AttnArgs::pad_anchors (the tensor-core kernel's TMA
  // instantiation); false elsewhere, so that the others carry no padding code.
  template <bool PAD>
  __device__ static RoutedMap make(const AttnArgs& a, int bh) {
    const int na = a.extra_count[bh];
    return RoutedMap{a.extra_anchors + int64_t(bh) * a.anchor_stride,
                     a.kept_blocks + int64_t(bh) * a.block_stride,
                     na,
                     anchor_rows(na, PAD && a.pad_anchors),
                     a.kept_count[bh] * a.kv.block_size,
                     a.window_start[bh],
                     FastDiv(a.kv.block_size)};
  }
};

__device__ __forceinline__ void store_out(void* out, DType t, int64_t i, float v) {
  if (t == DType::F32)
    static_cast<float*>(out)[i] = v;
  else if (t == DType::BF16)
    static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(v);
  else
    static_cast<__half*>(out)[i] = __float2half_rn(v);
}

// sum += wt * x, per component.
__device__ __forceinline__ void add_weighted(float4& sum, float wt, const float4& x) {
  sum.x += wt * x.x;
  sum.y += wt * x.y;
  sum.z += wt * x.z;
  sum.w += wt * x.w;
}

// Shared floats finish_split needs as scratch.
constexpr int kMergeChunk = 128;  // splits whose weights are staged at once (<= the CTA's threads)
constexpr int kFinishScratchFloats = 2 * kMergeChunk * kMaxHeadsPerCta + kMaxHeadsPerCta;

// The last CTA of a unit merges the unit's `splits` partials (consecutive CTAs from
// `first`) into out_sh[g * D + d] (normalised) for g < gc. Why this shape: the merge is a
// chain of dependent L2 round trips on the critical path of every decode step, so it is
// cut into as few as possible. A thread sums float4 vector `vec` of the unit's gc * D
// floats over the splits of its slice (split i in slice i % slices), kMergeBatch
// independent 16-byte loads in flight per step, the first batch issued together with the
// (m, l) loads (one load per thread per head, kept in shared memory), so that a chunk of
// up to kMergeBatch * slices splits costs one round trip. Chunks of kMergeChunk splits
// after the first rescale the running sums (online softmax), so any number of splits
// merges. Same sum as merge_state() in another association.
template <int D, int THREADS>
__device__ void merge_partials(const AttnArgs& a, int64_t first, int splits, int gc, float* scratch, float* out_sh) {
  __shared__ int s_mi[kMaxHeadsPerCta];
  __shared__ float s_scale[kMaxHeadsPerCta], s_run_m[kMaxHeadsPerCta], s_L[kMaxHeadsPerCta];
  const int tid = int(threadIdx.x);
  const int nvec = gc * D / 4;                                  // float4 vectors of one partial
  const int slices = nvec >= THREADS ? 1 : THREADS / nvec;
  const int slice = tid / nvec < slices ? tid / nvec : -1;      // -1: idle in the sums
  const int64_t stride4 = int64_t(gc) * D / 4;                  // float4s between splits
  const float4* acc4 = reinterpret_cast<const float4*>(a.part_acc);
  float* w = scratch;                                   // [kMergeChunk][kMaxHeadsPerCta]: m, then the weight
  float* wl = scratch + kMergeChunk * kMaxHeadsPerCta;  // l, then weight * l
  constexpr int kVecPerThread = (kMaxHeadsPerCta * D / 4 + THREADS - 1) / THREADS;
  constexpr int kMergeBatch = 16 / kVecPerThread;  // loads in flight per thread (64 registers)
  float4 acc[kVecPerThread];
#pragma unroll
  for (int k = 0; k < kVecPerThread; ++k) acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);
  if (tid < kMaxHeadsPerCta) {
    s_run_m[tid] = -INFINITY;
    s_L[tid] = 0.f;
  }
  for (int s0 = 0; s0 < splits; s0 += kMergeChunk) {
    const int n = splits - s0 < kMergeChunk ? splits - s0 : kMergeChunk;
    const float4* base = acc4 + (first + s0) * stride4;
    // This thread's first batch, loaded before the weights are known (a split past n
    // reads split 0 and gets weight 0), so that its round trip overlaps the (m, l) one.
    float4 x0[kVecPerThread][kMergeBatch];
    if (slice >= 0)
#pragma unroll
      for (int k = 0; k < kVecPerThread; ++k) {
        const int vec = tid % nvec + k * THREADS;
#pragma unroll
        for (int j = 0; j < kMergeBatch; ++j) {
          const int i = slice + j * slices;
          x0[k][j] = vec < nvec ? __ldcg(base + vec + int64_t(i < n ? i : 0) * stride4) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
      }
    if (tid < kMaxHeadsPerCta) s_mi[tid] = ordered_int(-INFINITY);
    __syncthreads();
    if (tid < n)
      for (int g = 0; g < gc; ++g) {
        const float2 ml = __ldcg(&a.part_ml[(first + s0 + tid) * gc + g]);
        w[tid * kMaxHeadsPerCta + g] = ml.x;
        wl[tid * kMaxHeadsPerCta + g] = ml.y;
        atomicMax(&s_mi[g], ordered_int(ml.x));
      }
    __syncthreads();
    if (tid < gc) {  // the running maximum and the factor of the sums so far
      const float mc = unordered_int(s_mi[tid]), mo = s_run_m[tid];
      const float mn = fmaxf(mo, mc);
      s_scale[tid] = mo == -INFINITY ? 0.f : exp2f(mo - mn);
      s_run_m[tid] = mn;
    }
    __syncthreads();
    if (tid < n)
      for (int g = 0; g < gc; ++g) {
        const float m = w[tid * kMaxHeadsPerCta + g], M = s_run_m[g];
        const float wt = m == -INFINITY ? 0.f : exp2f(m - M);
        w[tid * kMaxHeadsPerCta + g] = wt;
        wl[tid * kMaxHeadsPerCta + g] *= wt;
      }
    __syncthreads();
    if (s0 == 0) trace_phase(a, kPhaseMergeWeights);
    if (slice >= 0) {
#pragma unroll
      for (int k = 0; k < kVecPerThread; ++k) {
        const int vec = tid % nvec + k * THREADS;
        if (vec < nvec) {
          const int g = vec * 4 / D;
          const float f = s_scale[g];
          float4 sum = make_float4(acc[k].x * f, acc[k].y * f, acc[k].z * f, acc[k].w * f);
          const float4* p = base + vec;
#pragma unroll
          for (int j = 0; j < kMergeBatch; ++j) {
            const int i = slice + j * slices;
            add_weighted(sum, i < n ? w[i * kMaxHeadsPerCta + g] : 0.f, x0[k][j]);
          }
          // Later batches: all loads of a batch issued before any is used (a split past n
          // re-reads split i0 with weight 0: no branch between the loads).
          for (int i0 = slice + kMergeBatch * slices; i0 < n; i0 += kMergeBatch * slices) {
            float4 x[kMergeBatch];
            float wt[kMergeBatch];
#pragma unroll
            for (int j = 0; j < kMergeBatch; ++j) {
              const int i = i0 + j * slices;
              x[j] = __ldcg(p + int64_t(i < n ? i : i0) * stride4);
              wt[j] = i < n ? w[i * kMaxHeadsPerCta + g] : 0.f;
            }
#pragma unroll
            for (int j = 0; j < kMergeBatch; ++j) add_weighted(sum, wt[j], x[j]);
          }
          acc[k] = sum;
        }
      }
    }
    if (tid < gc) {
      float l = s_L[tid] * s_scale[tid];
      for (int i = 0; i < n; ++i) l += wl[i * kMaxHeadsPerCta + tid];
      s_L[tid] = l;
    }
    __syncthreads();  // w and wl are refilled by the next chunk
    if (s0 == 0) trace_phase(a, kPhaseMergeSums);
  }
  // Slices -> one sum per vector, in slice order (scratch is free now).
  if (slices > 1) {
    if (slice > 0)
#pragma unroll
      for (int k = 0; k < kVecPerThread; ++k) {
        const int vec = tid % nvec + k * THREADS;
        if (vec < nvec) {
          float* d = scratch + ((slice - 1) * nvec + vec) * 4;  // scalar: scratch may not be 16-byte aligned
          d[0] = acc[k].x;
          d[1] = acc[k].y;
          d[2] = acc[k].z;
          d[3] = acc[k].w;
        }
      }
    __syncthreads();
    if (slice == 0)
      for (int s = 1; s < slices; ++s) {
        const float* x = scratch + ((s - 1) * nvec + tid) * 4;
        acc[0].x += x[0];
        acc[0].y += x[1];
        acc[0].z += x[2];
        acc[0].w += x[3];
      }
  }
  if (slice == 0)
#pragma unroll
    for (int k = 0; k < kVecPerThread; ++k) {
      const int vec = tid + k * THREADS;
      if (vec < nvec) {
        const float L = s_L[vec * 4 / D];
        const float inv = L > 0.f ? 1.f / L : 0.f;
        out_sh[vec * 4 + 0] = L > 0.f ? acc[k].x * inv : 0.f;
        out_sh[vec * 4 + 1] = L > 0.f ? acc[k].y * inv : 0.f;
        out_sh[vec * 4 + 2] = L > 0.f ? acc[k].z * inv : 0.f;
        out_sh[vec * 4 + 3] = L > 0.f ? acc[k].w * inv : 0.f;
      }
    }
  __syncthreads();
}

// The warps' states in shared memory, [W warps][HEADS][D + 2] (acc, then m in base 2 and l),
// merged into the CTA's: m = -inf when the split is empty (then l and every acc are 0).
template <int D, int W, int HEADS>
struct WarpStates {
  const float* wst;
  __device__ __forceinline__ const float* row(int w, int g) const { return wst + (w * HEADS + g) * (D + 2); }
  // m of head g over the warps (the largest warp's).
  __device__ __forceinline__ float m(int g) const {
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < W; ++w) M = fmaxf(M, row(w, g)[D]);
    return M;
  }
  // l of head g, given the head's merged m.
  __device__ __forceinline__ float l(int g, float M) const {
    float L = 0.f;
    if (M != -INFINITY)
#pragma unroll
      for (int w = 0; w < W; ++w) L += row(w, g)[D + 1] * exp2f(row(w, g)[D] - M);
    return L;
  }
  // acc element d of head g, given the head's merged m.
  __device__ __forceinline__ float acc(int g, int d, float M) const {
    float A = 0.f;
    if (M != -INFINITY)
#pragma unroll
      for (int w = 0; w < W; ++w) A += row(w, g)[d] * exp2f(row(w, g)[D] - M);
    return A;
  }
  // Elements d .. d + 3 of head g's acc, given its merged m: acc's sums, each warp's weight
  // computed once for the four (the same values, bit for bit).
  __device__ __forceinline__ float4 acc4(int g, int d, float M) const {
    float4 A = make_float4(0.f, 0.f, 0.f, 0.f);
    if (M != -INFINITY)
#pragma unroll
      for (int w = 0; w < W; ++w) {
        const float* r = row(w, g);
        const float wt = exp2f(r[D] - M);
        A.x += r[d] * wt;
        A.y += r[d + 1] * wt;
        A.z += r[d + 2] * wt;
        A.w += r[d + 3] * wt;
      }
    return A;
  }
};

// Sums v over the warp; lane 0 adds the sum to *dst (shared memory): one atomic a warp, not
// one a lane (32 lanes' atomics on one address serialise: run 7a, run 25a).
__device__ __forceinline__ void warp_sum_into(float v, float* dst) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) atomicAdd(dst, v);
}

// Routed decode's bound on the output's error (HeadStats::output_error_bound): the max over
// the query heads g of skipped_v_g + delta_g ||o_g||, from the routing pass's certificate terms
// and the norm of the output. Thread g < 8 of a CTA that holds head g's whole output loads the
// head's terms early (their round trip then overlaps the combine: loaded after the merge, one
// head after another, they cost the last CTA ~3 us, run 13a); warp 0 publishes the bound.
struct HeadCertificate {
  float skipped_v = 0.f, delta = 0.f;
  bool valid = false;
  // Head g of unit chunk hc of (sequence b, KV head h), where `owned` (the CTA holds its output).
  __device__ __forceinline__ static HeadCertificate load(const AttnArgs& a, int b, int h, int hc, int g, bool owned) {
    HeadCertificate c;
    c.valid = owned && g < a.heads_per_cta && hc * a.heads_per_cta + g < a.group;
    if (c.valid) {
      const int64_t qi = int64_t(b) * a.num_q_heads + int64_t(h) * a.group + hc * a.heads_per_cta + g;
      c.skipped_v = a.skipped_v_bound[qi];
      c.delta = a.delta[qi];
    }
    return c;
  }
  // Called by all of warp 0, lane g holding head g's certificate; norm2[g]: the head's squared
  // output norm (shared memory, read where valid). The bound's maximum into stats[bh].
  __device__ __forceinline__ void publish(const AttnArgs& a, int bh, const float* norm2) const {
    static_assert(kMaxHeadsPerCta <= 8, "the bound's maximum is taken over lanes 0-7");
    float bound = 0.f;
    if (valid) bound = float((double(skipped_v) + double(delta) * sqrt(double(norm2[threadIdx.x]))) * (1 + 1e-5));
#pragma unroll
    for (int o = 4; o > 0; o >>= 1) bound = fmaxf(bound, __shfl_xor_sync(0xffffffffu, bound, o));
    // Non-negative floats order as their bit patterns; the routing step zeroed the field.
    if (threadIdx.x == 0) atomicMax(reinterpret_cast<int*>(&a.stats[bh].output_error_bound), __float_as_int(bound));
  }
};

// Dense statistics of (sequence, KV head) bh: every token read once.
__device__ __forceinline__ void write_dense_stats(const AttnArgs& a, int bh) {
  HeadStats& st = a.stats[bh];
  const int64_t n = a.seq_lens[bh / a.kv.num_kv_heads], tb = a.kv.token_bytes();
  st.bytes_summary = 0;
  st.bytes_anchor_window = 0;
  st.bytes_blocks = n * tb;
  st.bytes_dense = n * tb;
  st.blocks_total = int32_t((n + a.kv.block_size - 1) / a.kv.block_size);
  st.blocks_skipped = 0;
  st.delta = 0.f;
  st.output_error_bound = 0.f;
  st.sink_route = false;
}

// The fused combine. The CTA's merged state over its split, for heads g < heads_per_cta,
// is in shared memory: s_m[g] (base 2; -inf when empty), s_l[g], s_acc[g * D + d]; the
// caller has synchronised after writing it. One split: normalise and write. Otherwise
// write the partial and take a ticket; the last CTA of the unit merges every partial
// (merge_partials), writes the output and the statistics, and resets the ticket (and, with
// dynamic splits, the unit's chunk counter). cta: the CTA's entry in the flat list
// (flat_cta), whose partial slot it writes.
template <int D, bool ROUTED, int THREADS>
__device__ void finish_split(const AttnArgs& a, int cta, int unit, int split, int splits, const float* s_m,
                             const float* s_l, float* s_acc, float* scratch) {
  constexpr int E = (kMaxHeadsPerCta * D + THREADS - 1) / THREADS;  // elements per thread
  static_assert(D % 32 == 0 && THREADS % 32 == 0, "a warp's output elements lie in one head");
  __shared__ int s_last;
  __shared__ float s_norm2[kMaxHeadsPerCta];
  const int gc = a.heads_per_cta, tid = int(threadIdx.x);
  if (tid < kMaxHeadsPerCta) s_norm2[tid] = 0.f;
  const int bh = unit / a.head_chunks, hc = unit % a.head_chunks;
  const int H = a.kv.num_kv_heads, b = bh / H, h = bh % H;
  // Routed: the certificate's terms of head tid, loaded now (their round trip overlaps the
  // partial's stores and the ticket).
  const HeadCertificate cert = ROUTED ? HeadCertificate::load(a, b, h, hc, tid, true) : HeadCertificate{};

  float res[E];
  if (splits == 1) {
    __syncthreads();
    if (a.claims != nullptr && tid == 0) a.claims[unit] = 0;  // (its own warps are done)
#pragma unroll
    for (int k = 0; k < E; ++k) {
      const int idx = tid + k * THREADS, g = idx / D;
      res[k] = idx < gc * D && s_l[g] > 0.f ? s_acc[idx] / s_l[g] : 0.f;
    }
  } else {
    for (int idx = tid; idx < gc * D; idx += THREADS) a.part_acc[int64_t(cta) * gc * D + idx] = s_acc[idx];
    if (tid < gc) a.part_ml[int64_t(cta) * gc + tid] = make_float2(s_m[tid], s_l[tid]);
    // The CTA's stores, ordered before thread 0's by the barrier, are published by its
    // acquire-release ticket, which also acquires the other CTAs' partials for the last.
    __syncthreads();
    if (tid == 0) s_last = grid_ticket(reinterpret_cast<unsigned*>(&a.tickets[unit])) == unsigned(splits - 1);
    __syncthreads();
    trace_phase(a, kPhaseTicket);
    if (!s_last) {
      trace_end(a, 1);
      return;
    }
    if (tid == 0) a.tickets[unit] = 0;  // every other CTA of the unit has taken its ticket
    // ... so every warp of the unit is past its last claim (dynamic splits).
    if (a.claims != nullptr && tid == 0) a.claims[unit] = 0;
    // s_acc (this CTA's own state, already in part_acc) receives the merged output.
    merge_partials<D, THREADS>(a, int64_t(cta - split), splits, gc, scratch, s_acc);
#pragma unroll
    for (int k = 0; k < E; ++k) {
      const int idx = tid + k * THREADS;
      res[k] = idx < gc * D ? s_acc[idx] : 0.f;
    }
  }

  // A warp's 32 elements lie in one head (D is a multiple of 32), so the routed output norm
  // is summed in the warp first: one shared atomic per warp and head, not one per element
  // (run 7a's trace: per-element atomics cost the last CTA 6.5 us at d64, 22.5 us at d128).
#pragma unroll
  for (int k = 0; k < E; ++k) {
    const int idx = tid + k * THREADS, g = idx / D, d = idx % D;
    const int gg = hc * gc + g;
    const bool mine = idx < gc * D && gg < a.group;  // the same for the whole warp
    if (mine) store_out(a.out, a.out_dtype, (int64_t(b) * a.num_q_heads + int64_t(h) * a.group + gg) * D + d, res[k]);
    if (ROUTED && mine) warp_sum_into(res[k] * res[k], &s_norm2[g]);
  }
  trace_phase(a, kPhaseEnd);
  trace_end(a, 2);
  if (!ROUTED) {
    if (tid == 0 && hc == 0) write_dense_stats(a, bh);
    return;
  }
  __syncthreads();
  if (tid < 32) cert.publish(a, bh, s_norm2);
}

}  // namespace sinkrouter::cuda
