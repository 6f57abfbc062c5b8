// What both decode GEMV versions share (internal header, CUDA builds only): the bf16 dot
// product of one 16-byte chunk, the QKV epilogue (RoPE on q and k, then the split into
// q / k / v), and the launch dispatch over the token count rounded up to an instantiated
// width (1, 2, 4 or 8) and the prologue/epilogue pairs the engine uses. A version supplies its launcher as
//   struct Launcher { template <int NT, GemvIn IN, GemvOut OUT>
//                     static void run(const GemvArgs&, cudaStream_t); };
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_device_util.cuh"
#include "cuda_ops.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter::cuda {

// acc += w . x over 8 values: w as 8 bf16 in one 16-byte word, x as two float4.
__device__ __forceinline__ float dot8(const uint4& w, const float4& xa, const float4& xb, float acc) {
  acc = fmaf(__uint_as_float(w.x << 16), xa.x, acc);
  acc = fmaf(__uint_as_float(w.x & 0xffff0000u), xa.y, acc);
  acc = fmaf(__uint_as_float(w.y << 16), xa.z, acc);
  acc = fmaf(__uint_as_float(w.y & 0xffff0000u), xa.w, acc);
  acc = fmaf(__uint_as_float(w.z << 16), xb.x, acc);
  acc = fmaf(__uint_as_float(w.z & 0xffff0000u), xb.y, acc);
  acc = fmaf(__uint_as_float(w.w << 16), xb.z, acc);
  acc = fmaf(__uint_as_float(w.w & 0xffff0000u), xb.w, acc);
  return acc;
}

// Token t's outputs of the row pair (r, r + 1) of the stacked Q|K|V matrix: rotated by RoPE
// when they are q or k (the GGUF pairing puts a RoPE pair in adjacent rows), then stored
// into q_out, k_out or v_out.
__device__ __forceinline__ void store_qkv_rope(const GemvArgs& a, int t, int r, float y0, float y1) {
  if (r < a.q_dim + a.kv_dim) rope_rotate(y0, y1, a.positions[t], a.rope.inv_freq[(r % a.rope.head_dim) / 2]);
  float* dst = r < a.q_dim                ? a.q_out + int64_t(t) * a.q_dim + r
               : r < a.q_dim + a.kv_dim ? a.k_out + int64_t(t) * a.kv_dim + (r - a.q_dim)
                                        : a.v_out + int64_t(t) * a.kv_dim + (r - a.q_dim - a.kv_dim);
  dst[0] = y0;
  dst[1] = y1;
}

// Token t's outputs of rows (r, r + 1), by the epilogue (inlined: a constant `out` folds).
__device__ __forceinline__ void gemv_store(const GemvArgs& a, GemvOut out, int t, int r, float y0, float y1) {
  if (out == GemvOut::Store) {
    a.y[t * a.ldy + r] = y0;
    a.y[t * a.ldy + r + 1] = y1;
  } else if (out == GemvOut::Accumulate) {
    a.y[t * a.ldy + r] += y0;
    a.y[t * a.ldy + r + 1] += y1;
  } else {
    store_qkv_rope(a, t, r, y0, y1);
  }
}

// Up to kInputVecs float4 of one input row per thread, held in registers (the vector path
// of gemv_input_to_shared): rows of up to 16 * threads floats (6,144 for the chain's 384).
constexpr int kInputVecs = 4;

// One token's row, transformed, into dst: every load of a thread issued before any use, so
// that a row costs one L2 round trip (the stage trace of run v7e: the scalar loop below,
// loads and shared stores interleaved, took 1.3-1.7 us a stage). Needs x and the stride at
// 16-byte boundaries and in <= 4 * kInputVecs * threads (the caller checks).
__device__ __forceinline__ void input_row_vec(const GemvArgs& a, GemvIn in_kind, const float* x, float* dst,
                                              int threads) {
  const int nv = a.in / 4, tid = int(threadIdx.x);
  const float4* x4 = reinterpret_cast<const float4*>(x);
  float4* d4 = reinterpret_cast<float4*>(dst);
  float4 v[kInputVecs], u[kInputVecs];
#pragma unroll
  for (int k = 0; k < kInputVecs; ++k) {
    const int i = tid + k * threads;
    if (i < nv) {
      v[k] = x4[i];  // plain loads: written earlier in this kernel by other CTAs (the chain)
      if (in_kind == GemvIn::SwiGlu) u[k] = x4[nv + i];
    }
  }
  float inv = 1.f;
  if (in_kind == GemvIn::RmsNorm) {
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < kInputVecs; ++k)
      if (tid + k * threads < nv) ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
    inv = rsqrtf(block_sum(ss) / float(a.in) + a.eps);
  }
#pragma unroll
  for (int k = 0; k < kInputVecs; ++k) {
    const int i = tid + k * threads;
    if (i >= nv) continue;
    float4 y = v[k];
    if (in_kind == GemvIn::RmsNorm) {
      const float4 g = __ldg(reinterpret_cast<const float4*>(a.gain) + i);
      y = make_float4(y.x * inv * g.x, y.y * inv * g.y, y.z * inv * g.z, y.w * inv * g.w);
    } else if (in_kind == GemvIn::SwiGlu) {
      y = swiglu4(y, u[k]);
    }
    d4[i] = y;
  }
}

// The launch's input rows, transformed (RMSNorm or SwiGLU), into shared memory xs [NT][in]
// by the CTA's `threads` threads; rows past a.tokens are zeroed. Plain loads: the input may
// have been written earlier in the same kernel (the chain, cuda_gemv_chain.cu). Ends before
// the CTA's barrier (the caller's). Inlined: a constant `in` folds.
template <int NT>
__device__ __forceinline__ void gemv_input_to_shared(const GemvArgs& a, GemvIn in_kind, float* xs, int threads) {
  const int in = a.in;
  for (int i = a.tokens * in + int(threadIdx.x); i < NT * in; i += threads) xs[i] = 0.f;  // unused token rows
  // The vector path when x, its stride and the gain sit at 16-byte boundaries (the engine's
  // buffers do; in is a multiple of 8 by gemv_check_shape) and a row fits the registers.
  const bool vec = ((reinterpret_cast<uintptr_t>(a.x) | uintptr_t(a.ldx) * 4 |
                     (in_kind == GemvIn::RmsNorm ? reinterpret_cast<uintptr_t>(a.gain) : 0)) %
                        16 ==
                    0) &&
                   in <= 4 * kInputVecs * threads;
  for (int t = 0; t < NT && t < a.tokens; ++t) {
    const float* x = a.x + t * a.ldx;
    float* dst = xs + t * in;
    if (vec) {
      input_row_vec(a, in_kind, x, dst, threads);
    } else if (in_kind == GemvIn::RmsNorm) {
      float ss = 0.f;
      for (int i = int(threadIdx.x); i < in; i += threads) ss += x[i] * x[i];
      const float inv = rsqrtf(block_sum(ss) / float(in) + a.eps);
      for (int i = int(threadIdx.x); i < in; i += threads) dst[i] = x[i] * inv * a.gain[i];
    } else if (in_kind == GemvIn::SwiGlu) {
      for (int i = int(threadIdx.x); i < in; i += threads) {
        const float g = x[i];
        dst[i] = silu_times(g, x[in + i]);
      }
    } else {
      for (int i = int(threadIdx.x); i < in; i += threads) dst[i] = x[i];
    }
  }
}

// The checks every version makes: an even row count, whole 16-byte chunks per row, at least
// one token, SwiGLU's gate | up rows within the stride, and for QkvRope the stacked shape
// (gemv_check_qkv_shape).
inline void gemv_check_qkv_shape(const GemvArgs& a);
inline void gemv_check_shape(const GemvArgs& a, GemvIn in, GemvOut out) {
  SR_CHECK(a.in >= 8 && a.in % 8 == 0 && a.out >= 2 && a.out % 2 == 0,
           "gemv: shape [{} x {}] not supported (expected an even row count and a multiple of 8 columns)", a.out,
           a.in);
  SR_CHECK(a.tokens >= 1, "gemv: {} tokens (expected at least 1)", a.tokens);
  SR_CHECK(in != GemvIn::SwiGlu || a.ldx >= 2 * int64_t(a.in),
           "gemv: SwiGLU input rows hold gate | up: stride {} is less than 2 x {}", a.ldx, a.in);
  if (out == GemvOut::QkvRope) gemv_check_qkv_shape(a);
}

// The stacked Q|K|V matrix is q plus two kv blocks of whole RoPE heads, with positions.
inline void gemv_check_qkv_shape(const GemvArgs& a) {
  SR_CHECK(a.q_dim + 2 * a.kv_dim == a.out && a.rope.head_dim > 0 && a.q_dim % a.rope.head_dim == 0 &&
               a.kv_dim % a.rope.head_dim == 0 && a.positions != nullptr,
           "gemv: QKV rows {} are not q {} + 2 x kv {} whole heads of {}", a.out, a.q_dim, a.kv_dim,
           a.rope.head_dim);
}

// The arguments of tokens [t0, t0 + n) of a launch: inputs, outputs and positions offset.
inline GemvArgs gemv_token_slice(const GemvArgs& a, int t0, int n) {
  GemvArgs g = a;
  g.tokens = n;
  g.x = a.x + int64_t(t0) * a.ldx;
  if (g.y) g.y = a.y + int64_t(t0) * a.ldy;
  if (g.q_out) g.q_out = a.q_out + int64_t(t0) * a.q_dim;
  if (g.k_out) g.k_out = a.k_out + int64_t(t0) * a.kv_dim;
  if (g.v_out) g.v_out = a.v_out + int64_t(t0) * a.kv_dim;
  if (g.positions) g.positions = a.positions + t0;
  return g;
}

template <typename Launcher, GemvIn IN, GemvOut OUT>
void gemv_launch_tokens(const GemvArgs& a, cudaStream_t stream) {
  if (a.tokens == 1)
    Launcher::template run<1, IN, OUT>(a, stream);
  else if (a.tokens == 2)
    Launcher::template run<2, IN, OUT>(a, stream);
  else if (a.tokens <= 4)
    Launcher::template run<4, IN, OUT>(a, stream);
  else
    Launcher::template run<8, IN, OUT>(a, stream);
}

template <typename Launcher>
void gemv_launch_group(const GemvArgs& a, GemvIn in, GemvOut out, cudaStream_t stream) {
  if (in == GemvIn::Plain && out == GemvOut::Store)
    return gemv_launch_tokens<Launcher, GemvIn::Plain, GemvOut::Store>(a, stream);
  if (in == GemvIn::Plain && out == GemvOut::Accumulate)
    return gemv_launch_tokens<Launcher, GemvIn::Plain, GemvOut::Accumulate>(a, stream);
  if (in == GemvIn::RmsNorm && out == GemvOut::Store)
    return gemv_launch_tokens<Launcher, GemvIn::RmsNorm, GemvOut::Store>(a, stream);
  if (in == GemvIn::RmsNorm && out == GemvOut::QkvRope)
    return gemv_launch_tokens<Launcher, GemvIn::RmsNorm, GemvOut::QkvRope>(a, stream);
  if (in == GemvIn::SwiGlu && out == GemvOut::Accumulate)
    return gemv_launch_tokens<Launcher, GemvIn::SwiGlu, GemvOut::Accumulate>(a, stream);
  fail("gemv: this prologue / epilogue pair is not instantiated (see cuda_gemv_common.cuh)");
}

// The launches of a call: its tokens in slices of at most per_launch (a power of two up to 8).
template <typename Launcher>
void gemv_launch_sliced(const GemvArgs& a, GemvIn in, GemvOut out, int per_launch, cudaStream_t stream) {
  for (int t0 = 0; t0 < a.tokens; t0 += per_launch)
    gemv_launch_group<Launcher>(gemv_token_slice(a, t0, a.tokens - t0 < per_launch ? a.tokens - t0 : per_launch), in,
                                out, stream);
}

}  // namespace sinkrouter::cuda
