// The device KV cache's kernels (internal to device_kv_cache.cu, CUDA builds only): the
// append of a chunk of K/V rows into the pages, the summary update that follows
// summary_math.h exactly (same comparisons, value norms summed in double in the same
// order, so a device append leaves the same bits as the host), and the default anchors.
#pragma once

#include <cstdint>
#include <limits>

#include "core/cuda_check.h"
#include "core/cuda_dtype.cuh"
#include "core/cuda_launch.cuh"

namespace sinkrouter {
namespace {

using cuda::Bf16Tag;
using cuda::F16Tag;

// What the kernels need of the cache, by value.
struct CacheArgs {
  uint16_t* pages;
  uint16_t* summaries;
  float* value_norm_max;
  const int32_t* page_indptr;
  const int32_t* page_indices;
  const int32_t* summary_indptr;
  const int32_t* summary_indices;
  int32_t* seq_lens;
  const int32_t* capacity;
  int32_t* anchor_pos;
  int32_t* anchor_count;
  int32_t* error_flag;
  int H, D, P, R, A, default_anchors;

  // Token t's K row (every head) in the page that holds it; V is v_stride() further on.
  __device__ int64_t k_row(int64_t page, int64_t t) const { return ((page * 2) * P + t % P) * int64_t(H) * D; }
  __device__ int64_t k_offset(int s, int64_t t, int h) const {
    return k_row(page_indices[page_indptr[s] + t / P], t) + int64_t(h) * D;
  }
  __device__ int64_t v_stride() const { return int64_t(P) * H * D; }
  // Head h's min | max summary in a summary slot.
  __device__ int64_t summary_at(int64_t slot, int h) const { return (slot * H + h) * 2 * int64_t(D); }
  __device__ int64_t summary_offset(int s, int64_t j, int h) const {
    return summary_at(summary_indices[summary_indptr[s] + j], h);
  }
  __device__ float* vnorm_at(int64_t slot, int h) const { return value_norm_max + slot * H + h; }
  __device__ float* vnorm(int s, int64_t j, int h) const {
    return vnorm_at(summary_indices[summary_indptr[s] + j], h);
  }
};

// Per-dimension summary update of one token, as update_block_summary() does it.
template <typename Tag>
__device__ void update_min_max(uint16_t* summary, int D, int d, uint16_t x, bool first) {
  const float xf = cuda::bits_to_float(x, Tag{});
  const float lo = cuda::bits_to_float(summary[d], Tag{});
  const float hi = cuda::bits_to_float(summary[D + d], Tag{});
  // The key is already in the storage type: rounding it outward changes nothing.
  if (first || xf < lo) summary[d] = x;
  if (first || xf > hi) summary[D + d] = x;
}

// ||v||_2 of one stored row, summed in double in index order, rounded up as on the host.
// The host build contracts norm2 += y * y into a fused multiply-add (gcc, -march with FMA);
// so does this. A host built without FMA may differ in the last bit of the norm. The row
// is read with 16-byte loads (D is a multiple of 8 and rows are 16-byte aligned).
template <typename Tag>
__device__ float value_norm(const uint16_t* v, int D) {
  double norm2 = 0;
  const uint4* row = reinterpret_cast<const uint4*>(v);
  for (int c = 0; c < D / 8; ++c) {
    float y[8];
    cuda::unpack8(row[c], y, Tag{});
#pragma unroll
    for (int i = 0; i < 8; ++i) norm2 = __fma_rn(double(y[i]), double(y[i]), norm2);
  }
  return float(__dmul_rn(sqrt(norm2), 1.0 + 1e-6));
}

// One token per sequence: block s appends k[s], v[s] to sequence first + s. Dynamic shared
// memory: the new V row, H * D values in the storage type.
//
// A decode step waits for this kernel, so it is written for latency: the sequence's page
// and summary tables' offsets (constant while the cache lives) are read before pdl_wait, the
// length and the new rows right after it and together, then the page and summary slots
// together, and the value norms come from the row in shared memory rather than from the
// page just written (the same bits, summed in the same order: docs/PERF.md, GPU engine v6).
template <typename Tag, typename In>
__global__ void append_step_kernel(CacheArgs c, const In* k, const In* v, int first) {
  extern __shared__ __align__(16) uint16_t v_row[];  // [H * D]
  const int s = first + int(blockIdx.x);
  const int32_t page_base = c.page_indptr[s], summary_base = c.summary_indptr[s], capacity = c.capacity[s];
  cuda::pdl_begin(c);  // k, v and the lengths are the kernels before's output
  const int64_t t = c.seq_lens[s];
  const int HD = c.H * c.D;
  // This thread's elements of the new rows (HD <= 4 * blockDim.x: the launcher's choice).
  constexpr int kPerThread = 4;
  float kf[kPerThread], vf[kPerThread];
#pragma unroll
  for (int e = 0; e < kPerThread; ++e) {
    const int i = int(threadIdx.x) + e * int(blockDim.x);
    if (i < HD) {
      const int64_t src = int64_t(blockIdx.x) * HD + i;
      kf[e] = cuda::load_as_float(k, src);
      vf[e] = cuda::load_as_float(v, src);
    }
  }
  if (t >= capacity) {
    if (threadIdx.x == 0) atomicOr(c.error_flag, 1);
    return;
  }
  const bool open = t % c.R == 0;
  const int64_t j = t / c.R;
  const int64_t page = c.page_indices[page_base + t / c.P];
  const int64_t slot = c.summary_indices[summary_base + j];
  const int64_t row = c.k_row(page, t);  // this token's K row, all heads
#pragma unroll
  for (int e = 0; e < kPerThread; ++e) {
    const int i = int(threadIdx.x) + e * int(blockDim.x);
    if (i < HD) {
      const int h = i / c.D, d = i % c.D;
      const uint16_t kx = cuda::float_to_bits(kf[e], Tag{}), vx = cuda::float_to_bits(vf[e], Tag{});
      c.pages[row + i] = kx;
      c.pages[row + c.v_stride() + i] = vx;
      v_row[i] = vx;
      update_min_max<Tag>(c.summaries + c.summary_at(slot, h), c.D, d, kx, open);
    }
  }
  __syncthreads();  // the V row is complete in shared memory before its norms are taken
  for (int h = int(threadIdx.x); h < c.H; h += int(blockDim.x)) {
    const float norm = value_norm<Tag>(v_row + h * c.D, c.D);
    float* vmax = c.vnorm_at(slot, h);
    if (open || norm > *vmax) *vmax = norm;
    if (t < c.default_anchors) {
      int32_t& count = c.anchor_count[s * c.H + h];
      if (count < c.A) c.anchor_pos[(int64_t(s) * c.H + h) * c.A + count++] = int32_t(t);
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) c.seq_lens[s] = int32_t(t + 1);
}

// Chunk append, step 1: writes K and V of n tokens at the end of sequence s.
template <typename Tag, typename In>
__global__ void append_chunk_write_kernel(CacheArgs c, int s, const In* k, const In* v, int64_t n) {
  const int64_t t0 = c.seq_lens[s];
  if (t0 + n > c.capacity[s]) {
    if (blockIdx.x == 0 && threadIdx.x == 0) atomicOr(c.error_flag, 1);
    return;
  }
  const int64_t total = n * c.H * c.D;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t tok = i / (int64_t(c.H) * c.D);
    const int h = int(i / c.D % c.H), d = int(i % c.D);
    const int64_t dst = c.k_offset(s, t0 + tok, h) + d;
    c.pages[dst] = cuda::float_to_bits(cuda::load_as_float(k, i), Tag{});
    c.pages[dst + c.v_stride()] = cuda::float_to_bits(cuda::load_as_float(v, i), Tag{});
  }
}

// Recomputes the summary of block j of (s, h) from its tokens [j*R, min((j+1)*R, end)) in
// token order, which gives the bits the host's token-by-token update gives. grid: (blocks,
// H, sequences). chunk_n > 0: a chunk of chunk_n tokens is being appended to sequence
// `only_seq` (grid.z = 1), whose touched blocks start at block seq_lens / R; chunk_n == 0:
// every block of every sequence (rebuild).
template <typename Tag>
__global__ void summary_kernel(CacheArgs c, int only_seq, int64_t chunk_n) {
  const int s = chunk_n > 0 ? only_seq : int(blockIdx.z);
  const int h = int(blockIdx.y);
  const int64_t len = c.seq_lens[s];
  if (chunk_n > 0 && len + chunk_n > c.capacity[s]) return;  // the write kernel flagged it
  const int64_t end = len + chunk_n;
  const int64_t j = (chunk_n > 0 ? len / c.R : 0) + blockIdx.x;
  const int64_t begin = j * c.R;
  if (begin >= end) return;
  const int64_t stop = min(end, begin + c.R);
  uint16_t* summary = c.summaries + c.summary_offset(s, j, h);
  for (int d = int(threadIdx.x); d < c.D; d += int(blockDim.x)) {
    // The running min and max stay in registers; the rule is update_min_max's.
    uint16_t lo = c.pages[c.k_offset(s, begin, h) + d], hi = lo;
    float lof = cuda::bits_to_float(lo, Tag{}), hif = lof;
    for (int64_t t = begin + 1; t < stop; ++t) {
      const uint16_t x = c.pages[c.k_offset(s, t, h) + d];
      const float xf = cuda::bits_to_float(x, Tag{});
      if (xf < lof) {
        lo = x;
        lof = xf;
      }
      if (xf > hif) {
        hi = x;
        hif = xf;
      }
    }
    summary[d] = lo;
    summary[c.D + d] = hi;
  }
  // Value norms: each thread takes a few tokens; the block maximum is order-independent.
  __shared__ float warp_max[32];
  float best = -1.f;
  for (int64_t t = begin + threadIdx.x; t < stop; t += blockDim.x)
    best = fmaxf(best, value_norm<Tag>(c.pages + c.k_offset(s, t, h) + c.v_stride(), c.D));
  for (int o = 16; o > 0; o >>= 1) best = fmaxf(best, __shfl_xor_sync(0xffffffffu, best, o));
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = best;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < int(blockDim.x + 31) / 32; ++w) best = fmaxf(best, warp_max[w]);
    *c.vnorm(s, j, h) = best;
  }
}

// Chunk append, last step: default anchors and the new length.
__global__ void append_chunk_finish_kernel(CacheArgs c, int s, int64_t n) {
  const int64_t t0 = c.seq_lens[s];
  if (t0 + n > c.capacity[s]) return;
  for (int h = int(threadIdx.x); h < c.H; h += int(blockDim.x)) {
    int32_t& count = c.anchor_count[s * c.H + h];
    for (int64_t t = t0; t < t0 + n && t < c.default_anchors; ++t)
      if (count < c.A) c.anchor_pos[(int64_t(s) * c.H + h) * c.A + count++] = int32_t(t);
  }
  __syncthreads();
  if (threadIdx.x == 0) c.seq_lens[s] = int32_t(t0 + n);
}

}  // namespace
}  // namespace sinkrouter
