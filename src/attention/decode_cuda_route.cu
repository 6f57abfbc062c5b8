// The routing pass of the CUDA decoder (DESIGN.md sections 2 and 5), mirroring
// router.cpp's plan_decode for the sinkrouter, streaming and quest policies:
//   1. sink_signal_kernel   per (seq, KV head): scores of anchors and window for the G heads,
//                           lowered by their rounding bound -> m_A, Z_A (double);
//   2. block_bounds_kernel  per routable block (many CTAs): u_jg from the min/max summary
//                           plus its rounding margin, b_jg = R exp(u_jg - m_g) / Z_g;
//                           fast mode decides here (keep if any b_jg > tau);
//   3. select_kernel        per (seq, KV head): certified selection (see below), the
//                           kept-block list in position order, the anchors that are read
//                           on their own, the certificate (delta, skipped value bound) and
//                           the statistics.
// Certified selection: skip {j : c_j <= theta} for the largest theta whose per-head sums
// of b_jg stay <= epsilon, c_j = max_g b_jg. That is the CPU's "longest prefix in ascending
// order of c_j", except that tied blocks are taken or left together. Fast path: if all
// candidates (c_j <= epsilon) fit, theta = epsilon; otherwise the candidates are compacted
// and theta is found by bisection on the float bit patterns (~30 passes over them).
// Quest keeps the k blocks of largest bound max_g u_jg, ties to the lower index, as the
// CPU's stable sort does: the k-th largest value by bisection on its ordered bits, then
// the blocks above it and the first of those equal to it.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cstdint>

#include "core/cuda_check.h"
#include "core/cuda_dtype.cuh"
#include "decode_cuda_kernels.cuh"

namespace sinkrouter::cuda {
namespace {

// Order-preserving map of a float to an int, for atomicMax on shared memory.
__device__ __forceinline__ int ordered(float f) {
  const int i = __float_as_int(f);
  return i >= 0 ? i : i ^ 0x7fffffff;
}
__device__ __forceinline__ float unordered(int i) { return __int_as_float(i >= 0 ? i : i ^ 0x7fffffff); }

// Token i of the (b, h) sink set: anchors before the window, then the window.
struct SinkSet {
  const int32_t* anchors;
  int num_anchors;
  int64_t window_start;
  bool streaming;
  __device__ int64_t operator()(int i) const {
    if (i < num_anchors) return streaming ? i : anchors[i];
    return window_start + (i - num_anchors);
  }
};

// Anchors of (b, h) that lie before the window: the first `count` entries (ascending).
__device__ int anchors_before(const RouteArgs& a, int bh, int64_t ws) {
  if (a.streaming) return int(ws < a.sink_tokens ? ws : a.sink_tokens);
  if (a.quest) return 0;
  const int32_t* p = a.kv.anchor_pos + int64_t(bh) * a.kv.max_anchors;
  int c = 0;
  while (c < a.kv.anchor_count[bh] && p[c] < ws) ++c;
  return c;
}

template <typename Tag>
__device__ float lowered_score(const RouteArgs& a, const float* qs, int b, int h, int64_t pos) {
  const int D = a.kv.head_dim;
  const uint4* k = reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(a.kv.pages) + a.kv.k_offset(b, pos, h));
  float dot = 0.f, mag = 0.f;
  for (int c = 0; c < D / 8; ++c) {
    const uint4 raw = k[c];
    const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float x = bits_to_float(uint16_t(i % 2 ? w[i / 2] >> 16 : w[i / 2] & 0xffffu), Tag{});
      const float p = qs[c * 8 + i] * x;
      dot += p;
      mag += fabsf(p);
    }
  }
  return dot - dot_error_factor(D) * mag;
}

// grid: B*H; block 256. Dynamic smem: G*D floats of scaled queries.
template <typename Tag>
__global__ void sink_signal_kernel(const RouteArgs a) {
  extern __shared__ float qs[];  // [G][D] q * scale
  __shared__ int smax[64];
  __shared__ double ssum[64];
  const int bh = int(blockIdx.x), H = a.kv.num_kv_heads, b = bh / H, h = bh % H;
  const int G = a.group, D = a.kv.head_dim;
  for (int i = int(threadIdx.x); i < G * D; i += blockDim.x)
    qs[i] = load_q(a.q, a.q_dtype, (int64_t(b) * a.num_q_heads + int64_t(h) * G) * D + i) * a.scale;
  for (int g = int(threadIdx.x); g < G; g += blockDim.x) {
    smax[g] = ordered(-INFINITY);
    ssum[g] = 0.0;
  }
  const int64_t n = a.seq_lens[b];
  const int64_t ws = window_start_of(n, a.window, a.kv.block_size);
  SinkSet set{a.kv.anchor_pos + int64_t(bh) * a.kv.max_anchors, anchors_before(a, bh, ws), ws, a.streaming};
  const int count = set.num_anchors + int(n - ws);
  if (threadIdx.x == 0) a.window_start[bh] = int32_t(ws);
  __syncthreads();
  for (int i = int(threadIdx.x); i < count * G; i += blockDim.x) {
    const int g = i % G;
    atomicMax(&smax[g], ordered(lowered_score<Tag>(a, qs + g * D, b, h, set(i / G))));
  }
  __syncthreads();
  for (int i = int(threadIdx.x); i < count * G; i += blockDim.x) {
    const int g = i % G;
    const double s = lowered_score<Tag>(a, qs + g * D, b, h, set(i / G));
    atomicAdd(&ssum[g], exp(s - double(unordered(smax[g]))));
  }
  __syncthreads();
  for (int g = int(threadIdx.x); g < G; g += blockDim.x) {
    const int64_t qi = int64_t(b) * a.num_q_heads + int64_t(h) * G + g;
    const double m = unordered(smax[g]);
    const double z = ssum[g] * (1.0 - 1e-12);
    a.m_d[qi] = m;
    a.z_d[qi] = z;
    a.sink_max[qi] = float(m);
    a.sink_sum[qi] = float(z);
  }
}

constexpr int kBoundThreads = 128;
constexpr int kBlocksPerCta = 64;

// grid: (ceil(max_blocks / 64), B*H); block 128. Row groups of D/8 lanes take one block
// summary at a time; all of a CTA's summary loads are issued before the first use.
template <int D, typename Tag>
__global__ void __launch_bounds__(kBoundThreads) block_bounds_kernel(const RouteArgs a) {
  constexpr int LANES = D / 8, RP = kBoundThreads / LANES, PER = kBlocksPerCta / RP;
  extern __shared__ float qs[];  // [G][D]
  const int bh = int(blockIdx.y), H = a.kv.num_kv_heads, b = bh / H, h = bh % H;
  const int G = a.group, R = a.kv.block_size;
  const int64_t n = a.seq_lens[b];
  const int64_t nbr = window_start_of(n, a.window, R) / R;
  const int64_t j0 = int64_t(blockIdx.x) * kBlocksPerCta;
  if (j0 >= nbr) return;
  for (int i = int(threadIdx.x); i < G * D; i += kBoundThreads)
    qs[i] = load_q(a.q, a.q_dtype, (int64_t(b) * a.num_q_heads + int64_t(h) * G) * D + i) * a.scale;
  __syncthreads();
  const int lane = int(threadIdx.x) % LANES, row = int(threadIdx.x) / LANES;
  const uint16_t* summ = static_cast<const uint16_t*>(a.kv.summaries);
  uint4 lo[PER], hi[PER];
#pragma unroll
  for (int k = 0; k < PER; ++k) {
    const int64_t j = j0 + k * RP + row;
    lo[k] = hi[k] = make_uint4(0, 0, 0, 0);
    if (j < nbr) {
      const uint16_t* s = summ + a.kv.summary_offset(b, j, h) + lane * 8;
      lo[k] = *reinterpret_cast<const uint4*>(s);
      hi[k] = *reinterpret_cast<const uint4*>(s + D);
    }
  }
  const float err = dot_error_factor(D);
#pragma unroll
  for (int k = 0; k < PER; ++k) {
    // Every lane of the warp runs the shuffles below; rows past the last block only skip
    // their writes.
    const int64_t j = j0 + k * RP + row;
    const bool valid = j < nbr;
    if (__all_sync(0xffffffffu, !valid)) continue;
    float x0[8], x1[8];
    unpack8(lo[k], x0, Tag{});
    unpack8(hi[k], x1, Tag{});
    float cost = 0.f, umax = -INFINITY;
    bool keep = false;
    float* bt = a.bterm + (int64_t(bh) * a.max_blocks + j) * G;
    for (int g = 0; g < G; ++g) {
      const float* q = qs + g * D + lane * 8;
      float u = 0.f, mag = 0.f;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float m = fmaxf(q[i] * x1[i], q[i] * x0[i]);
        u += m;
        mag += fabsf(m);
      }
#pragma unroll
      for (int off = LANES / 2; off > 0; off >>= 1) {
        u += __shfl_xor_sync(0xffffffffu, u, off);
        mag += __shfl_xor_sync(0xffffffffu, mag, off);
      }
      const int64_t qi = int64_t(b) * a.num_q_heads + int64_t(h) * G + g;
      const float ub = u + err * mag;
      umax = fmaxf(umax, ub);
      const double term = double(R) * exp(double(ub) - a.m_d[qi]) / a.z_d[qi];
      const float up = __double2float_ru(term);
      cost = fmaxf(cost, up);
      keep = keep || term > a.tau;
      if (valid && lane == 0) bt[g] = up;
    }
    if (valid && lane == 0) {
      a.ubound[int64_t(bh) * a.max_blocks + j] = umax;
      a.cost[int64_t(bh) * a.max_blocks + j] = cost;
      a.keep[int64_t(bh) * a.max_blocks + j] = keep ? 1 : 0;
    }
  }
}

constexpr int kSelectThreads = 512;
constexpr int kSelectWarps = kSelectThreads / 32;

// Per-head sums over blocks in `list` (or all blocks 0..count-1 when list is null) with
// cost <= theta (or keep == 0 when use_keep): warps stride over blocks, lane g and g + 32
// accumulate head g. Returns (in every thread) whether every head's sum is <= epsilon;
// when sums is non-null also fills sums[g] (and vsums[g] with the value-norm weighting).
__device__ bool head_sums(const RouteArgs& a, int bh, int b, int h, const int32_t* list, int count, float theta,
                          bool use_keep, double* sums, double* vsums, double (*part)[64], double (*vpart)[64]) {
  __shared__ int s_fits;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, G = a.group;
  double acc0 = 0, acc1 = 0, v0 = 0, v1 = 0;
  const float* cost = a.cost + int64_t(bh) * a.max_blocks;
  const uint8_t* keep = a.keep + int64_t(bh) * a.max_blocks;
  for (int i = warp; i < count; i += kSelectWarps) {
    const int j = list ? list[i] : i;
    const bool take = use_keep ? keep[j] == 0 : cost[j] <= theta;
    if (!take) continue;
    const float* bt = a.bterm + (int64_t(bh) * a.max_blocks + j) * G;
    const double vn = vsums ? double(a.kv.block_value_norm(b, j, h)) : 0.0;
    if (lane < G) {
      acc0 += bt[lane];
      v0 += double(bt[lane]) * vn;
    }
    if (lane + 32 < G) {
      acc1 += bt[lane + 32];
      v1 += double(bt[lane + 32]) * vn;
    }
  }
  part[warp][lane] = acc0;
  part[warp][lane + 32] = acc1;
  if (vsums) {
    vpart[warp][lane] = v0;
    vpart[warp][lane + 32] = v1;
  }
  __syncthreads();
  if (warp == 0) {
    bool fits = true;
    for (int g = lane; g < G; g += 32) {
      double s = 0, vs = 0;
      for (int w = 0; w < kSelectWarps; ++w) {
        s += part[w][g];
        if (vsums) vs += vpart[w][g];
      }
      fits = fits && s <= a.epsilon;
      if (sums) sums[g] = s;
      if (vsums) vsums[g] = vs;
    }
    fits = __all_sync(0xffffffffu, fits);
    if (lane == 0) s_fits = fits;
  }
  __syncthreads();
  const bool r = s_fits;
  __syncthreads();  // part and s_fits are reused by the next call
  return r;
}

// Number of blocks j < nbr whose ordered bound key is >= t (same value in every thread).
__device__ int count_at_least(const float* ub, int nbr, int64_t t) {
  using Reduce = cub::BlockReduce<int, kSelectThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  __shared__ int s_total;
  int c = 0;
  for (int j = int(threadIdx.x); j < nbr; j += kSelectThreads) c += int64_t(ordered(ub[j])) >= t ? 1 : 0;
  const int total = Reduce(tmp).Sum(c);
  if (threadIdx.x == 0) s_total = total;
  __syncthreads();
  const int r = s_total;
  __syncthreads();
  return r;
}

// Quest: keep[j] for the k largest bounds, ties to the lower block index.
__device__ void quest_select(const RouteArgs& a, const float* ub, uint8_t* keep, int nbr, int64_t k) {
  using Scan = cub::BlockScan<int, kSelectThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  if (k >= nbr || k <= 0) {
    for (int j = int(threadIdx.x); j < nbr; j += kSelectThreads) keep[j] = k > 0 ? 1 : 0;
    __syncthreads();
    return;
  }
  // Largest key t with count(key >= t) >= k: the k-th largest key.
  int64_t lo = INT32_MIN, hi = int64_t(INT32_MAX) + 1;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (count_at_least(ub, nbr, mid) >= k)
      lo = mid;
    else
      hi = mid;
  }
  const int above = count_at_least(ub, nbr, lo + 1);
  int equal_seen = 0;
  for (int j0 = 0; j0 < nbr; j0 += kSelectThreads) {
    const int j = j0 + int(threadIdx.x);
    const int key = j < nbr ? ordered(ub[j]) : 0;
    const int tie = j < nbr && int64_t(key) == lo ? 1 : 0;
    int rank, ties;
    Scan(scan_tmp).ExclusiveSum(tie, rank, ties);
    if (j < nbr) keep[j] = int64_t(key) > lo || (tie && equal_seen + rank < k - above) ? 1 : 0;
    equal_seen += ties;
    __syncthreads();
  }
}

// grid: B*H; block 512.
__global__ void __launch_bounds__(kSelectThreads) select_kernel(const RouteArgs a) {
  using Scan = cub::BlockScan<int, kSelectThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ double part[kSelectWarps][64], vpart[kSelectWarps][64];
  __shared__ double dsum[64], vsum[64];
  __shared__ int s_count;
  const int bh = int(blockIdx.x), H = a.kv.num_kv_heads, b = bh / H, h = bh % H;
  const int G = a.group, R = a.kv.block_size;
  const int64_t n = a.seq_lens[b];
  const int64_t ws = window_start_of(n, a.window, R);
  const int nbr = int(ws / R);
  uint8_t* keep = a.keep + int64_t(bh) * a.max_blocks;
  const float* cost = a.cost + int64_t(bh) * a.max_blocks;

  if (a.streaming) {
    for (int j = int(threadIdx.x); j < nbr; j += kSelectThreads) keep[j] = 0;
    __syncthreads();
  } else if (a.quest) {
    const int64_t k = (int64_t(a.quest_budget) - (n - ws)) / R;  // truncates as the CPU's does
    quest_select(a, a.ubound + int64_t(bh) * a.max_blocks, keep, nbr, k > 0 ? k : 0);
  } else if (a.certified) {
    const float eps = __double2float_rd(a.epsilon);
    float theta = eps;
    if (!head_sums(a, bh, b, h, nullptr, nbr, eps, false, nullptr, nullptr, part, vpart)) {
      // Compact the candidates, then bisect: S(lo) fits, S(hi) does not.
      int32_t* cand = a.candidates + int64_t(bh) * a.max_blocks;
      if (threadIdx.x == 0) s_count = 0;
      __syncthreads();
      for (int j = int(threadIdx.x); j < nbr; j += kSelectThreads)
        if (cost[j] <= eps) cand[atomicAdd(&s_count, 1)] = j;
      __syncthreads();
      const int count = s_count;
      int lo = 0, hi = __float_as_int(eps);  // non-negative floats: bit order is value order
      while (hi - lo > 1) {
        const int mid = lo + (hi - lo) / 2;
        if (head_sums(a, bh, b, h, cand, count, __int_as_float(mid), false, nullptr, nullptr, part, vpart))
          lo = mid;
        else
          hi = mid;
      }
      theta = __int_as_float(lo);
    }
    for (int j = int(threadIdx.x); j < nbr; j += kSelectThreads) keep[j] = cost[j] <= theta ? 0 : 1;
    __syncthreads();
  }
  // (fast mode: block_bounds_kernel already wrote keep)

  // Certificate over the skipped blocks.
  head_sums(a, bh, b, h, nullptr, nbr, 0.f, true, dsum, vsum, part, vpart);

  // Kept blocks in position order.
  int32_t* kept = a.kept_blocks + int64_t(bh) * a.max_blocks;
  int total = 0;
  for (int j0 = 0; j0 < nbr; j0 += kSelectThreads) {
    const int j = j0 + int(threadIdx.x);
    const int flag = j < nbr && keep[j] ? 1 : 0;
    int prefix, sum;
    Scan(scan_tmp).ExclusiveSum(flag, prefix, sum);
    if (flag) kept[total + prefix] = j;
    total += sum;
    __syncthreads();
  }

  if (threadIdx.x != 0) return;
  // Anchors before the window: read alone when their block is skipped, else with it.
  const int na = anchors_before(a, bh, ws);
  const int32_t* apos = a.kv.anchor_pos + int64_t(bh) * a.kv.max_anchors;
  int32_t* extra = a.extra_anchors + int64_t(bh) * a.anchor_stride;
  int extra_n = 0, in_kept = 0;
  for (int i = 0; i < na; ++i) {
    const int32_t p = a.streaming ? i : apos[i];
    if (keep[p / R])
      ++in_kept;
    else
      extra[extra_n++] = p;
  }
  a.kept_count[bh] = total;
  a.extra_count[bh] = extra_n;
  a.routed_tokens[bh] = int32_t(extra_n + int64_t(total) * R + (n - ws));

  const int64_t tb = a.kv.token_bytes();
  float dmax = 0.f;
  for (int g = 0; g < G; ++g) {
    const int64_t qi = int64_t(b) * a.num_q_heads + int64_t(h) * G + g;
    const float d = float(dsum[g] * (1 + 1e-6));
    a.delta[qi] = d;
    a.skipped_v_bound[qi] = float(vsum[g] * (1 + 1e-6));
    dmax = fmaxf(dmax, d);
  }
  HeadStats& st = a.stats[bh];
  st.bytes_summary = a.streaming ? 0 : int64_t(nbr) * a.kv.summary_bytes();
  st.bytes_anchor_window = (int64_t(na) + (n - ws)) * tb;
  st.bytes_blocks = (int64_t(total) * R - in_kept) * tb;
  st.bytes_dense = n * tb;
  st.blocks_total = nbr;
  st.blocks_skipped = nbr - total;
  st.delta = dmax;
  st.output_error_bound = 0.f;  // the combine step adds delta * ||o||
  st.sink_route = !a.streaming && !a.quest && nbr > 0 && total == 0;
}

}  // namespace

void sink_signal_launch(const RouteArgs& a, int batch, int num_kv_heads, cudaStream_t stream) {
  SR_CHECK(a.group <= 64, "routing (CUDA): group {} exceeds 64", a.group);
  const int smem = a.group * a.kv.head_dim * 4;
  if (a.kv.dtype == DType::BF16)
    sink_signal_kernel<Bf16Tag><<<batch * num_kv_heads, 256, smem, stream>>>(a);
  else
    sink_signal_kernel<F16Tag><<<batch * num_kv_heads, 256, smem, stream>>>(a);
  SR_CUDA_CHECK_LAUNCH("sink_signal_kernel");
}

void block_bounds_launch(const RouteArgs& a, int batch, int num_kv_heads, cudaStream_t stream) {
  const dim3 grid(unsigned((a.max_blocks + kBlocksPerCta - 1) / kBlocksPerCta), unsigned(batch * num_kv_heads));
  if (grid.x == 0) return;
  const int smem = a.group * a.kv.head_dim * 4;
  const bool bf = a.kv.dtype == DType::BF16;
  if (a.kv.head_dim == 64) {
    if (bf)
      block_bounds_kernel<64, Bf16Tag><<<grid, kBoundThreads, smem, stream>>>(a);
    else
      block_bounds_kernel<64, F16Tag><<<grid, kBoundThreads, smem, stream>>>(a);
  } else {
    if (bf)
      block_bounds_kernel<128, Bf16Tag><<<grid, kBoundThreads, smem, stream>>>(a);
    else
      block_bounds_kernel<128, F16Tag><<<grid, kBoundThreads, smem, stream>>>(a);
  }
  SR_CUDA_CHECK_LAUNCH("block_bounds_kernel");
}

void select_launch(const RouteArgs& a, int batch, int num_kv_heads, cudaStream_t stream) {
  select_kernel<<<batch * num_kv_heads, kSelectThreads, 0, stream>>>(a);
  SR_CUDA_CHECK_LAUNCH("select_kernel");
}

}  // namespace sinkrouter::cuda
