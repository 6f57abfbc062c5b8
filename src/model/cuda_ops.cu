// Element-wise kernels of the forward pass (embedding, RMSNorm, RoPE + split, SwiGLU) and
// the cuBLAS GEMM of the prefill. See cuda_ops.h; the decode GEMV is cuda_gemv.cu.
#include "cuda_ops.h"

#include <algorithm>

#include "core/cuda_check.h"
#include "cuda_device_util.cuh"
#include "core/cuda_launch.cuh"
#include "sinkrouter/core/error.h"

namespace sinkrouter::cuda {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t items) {
  return unsigned(std::min<int64_t>((items + kThreads - 1) / kThreads, int64_t(1) << 20));
}

// Also the first kernel of a decode step: it lets the first GEMV launch early (PDL).
__global__ void embed_kernel(const __nv_bfloat16* table, const int32_t* tokens, int64_t n, int width, float* x) {
  pdl_wait();
  pdl_launch_dependents();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n * width; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / width, c = i % width;
    x[i] = __bfloat162float(table[int64_t(tokens[t]) * width + c]);
  }
}

// One warp per row (the sum of squares by shuffles: no block barrier), 16-byte loads when
// the width allows; the row is read twice (the second time from L1).
constexpr int kNormRowsPerBlock = kThreads / 32;
__global__ void rms_norm_kernel(const float* x, const float* g, float eps, int64_t rows, int width,
                                __nv_bfloat16* y) {
  const int lane = int(threadIdx.x) % 32;
  const int64_t r = int64_t(blockIdx.x) * kNormRowsPerBlock + int(threadIdx.x) / 32;
  if (r >= rows) return;
  const float* row = x + r * width;
  __nv_bfloat16* out = y + r * width;
  const bool vec = width % 4 == 0;  // rows start at 16-byte boundaries then
  float ss = 0.f;
  if (vec) {
    for (int i = 4 * lane; i < width; i += 128) {
      const float4 v = *reinterpret_cast<const float4*>(row + i);
      ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
  } else {
    for (int i = lane; i < width; i += 32) ss += row[i] * row[i];
  }
  const float inv = rsqrtf(warp_sum(ss) / float(width) + eps);
  if (vec) {
    for (int i = 4 * lane; i < width; i += 128) {
      const float4 v = *reinterpret_cast<const float4*>(row + i), w = *reinterpret_cast<const float4*>(g + i);
      __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(out + i);
      o[0] = __floats2bfloat162_rn(v.x * inv * w.x, v.y * inv * w.y);
      o[1] = __floats2bfloat162_rn(v.z * inv * w.z, v.w * inv * w.w);
    }
  } else {
    for (int i = lane; i < width; i += 32) out[i] = __float2bfloat16_rn(row[i] * inv * g[i]);
  }
}

// Rows on grid y (grid-stride), pairs of a row on x: no 64-bit division per element.
// grid: (ceil(width / 2 / kThreads), min(n, 65535)); one thread per adjacent pair of a token's
// q | k | v row.
__global__ void rope_split_kernel(const float* qkv, int64_t n, int q_dim, int kv_dim, int64_t p0, RopeTable rope,
                                  __nv_bfloat16* q, float* k, float* v) {
  const int width = q_dim + 2 * kv_dim;
  const int r = (int(blockIdx.x) * int(blockDim.x) + int(threadIdx.x)) * 2;
  if (r >= width) return;
  const double inv_freq = rope.inv_freq[(r % rope.head_dim) / 2];
  for (int64_t t = blockIdx.y; t < n; t += gridDim.y) {
    const float2 xv = *reinterpret_cast<const float2*>(qkv + t * width + r);  // width is even
    float x0 = xv.x, x1 = xv.y;
    if (r < q_dim + kv_dim) rope_rotate(x0, x1, p0 + t, inv_freq);
    if (r < q_dim)
      *reinterpret_cast<__nv_bfloat162*>(q + t * q_dim + r) = __floats2bfloat162_rn(x0, x1);
    else if (r < q_dim + kv_dim)
      *reinterpret_cast<float2*>(k + t * kv_dim + r - q_dim) = make_float2(x0, x1);
    else
      *reinterpret_cast<float2*>(v + t * kv_dim + r - q_dim - kv_dim) = make_float2(x0, x1);
  }
}

// Rows on grid y (grid-stride), four columns a thread on x (16-byte loads when ff allows).
__global__ void swiglu_kernel(const float* gu, int64_t n, int ff, __nv_bfloat16* out) {
  const int c = (int(blockIdx.x) * int(blockDim.x) + int(threadIdx.x)) * 4;
  if (c >= ff) return;
  for (int64_t t = blockIdx.y; t < n; t += gridDim.y) {
    const float* row = gu + t * 2 * ff;
    __nv_bfloat16* o = out + t * ff;
    if (ff % 4 == 0) {
      const float4 g = *reinterpret_cast<const float4*>(row + c), u = *reinterpret_cast<const float4*>(row + ff + c);
      __nv_bfloat162* o2 = reinterpret_cast<__nv_bfloat162*>(o + c);
      const float4 y = swiglu4(g, u);
      o2[0] = __floats2bfloat162_rn(y.x, y.y);
      o2[1] = __floats2bfloat162_rn(y.z, y.w);
    } else {
      for (int j = c; j < min(c + 4, ff); ++j) o[j] = __float2bfloat16_rn(silu_times(row[j], row[ff + j]));
    }
  }
}

// Rows on grid y: at most 65535 blocks, each walking rows in steps of gridDim.y.
dim3 row_grid(int64_t row_items, int64_t rows) {
  return dim3(unsigned((row_items + kThreads - 1) / kThreads), unsigned(std::min<int64_t>(rows, 65535)));
}

// The first index of each row's largest value (std::max_element's choice on rows without
// NaN: a later equal value does not win; here NaN never wins over a number). One CTA of 1024 threads per row.
constexpr int kArgmaxThreads = 1024;
__device__ __forceinline__ bool argmax_better(float v, int i, float best, int best_i) {
  return v > best || (v == best && i < best_i) || (best != best && v == v);
}
__global__ void __launch_bounds__(kArgmaxThreads) argmax_kernel(const float* x, int width, int32_t* out) {
  __shared__ float vals[kArgmaxThreads / 32];
  __shared__ int idxs[kArgmaxThreads / 32];
  pdl_wait();
  pdl_launch_dependents();
  const float* row = x + int64_t(blockIdx.x) * width;
  float best = row[0];
  int best_i = 0;
  for (int i = int(threadIdx.x); i < width; i += kArgmaxThreads)
    if (argmax_better(row[i], i, best, best_i)) best = row[i], best_i = i;
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, best, o);
    const int i = __shfl_xor_sync(0xffffffffu, best_i, o);
    if (argmax_better(v, i, best, best_i)) best = v, best_i = i;
  }
  if (threadIdx.x % 32 == 0) vals[threadIdx.x / 32] = best, idxs[threadIdx.x / 32] = best_i;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kArgmaxThreads / 32; ++w)
      if (argmax_better(vals[w], idxs[w], best, best_i)) best = vals[w], best_i = idxs[w];
    out[blockIdx.x] = best_i;
  }
}

}  // namespace

void argmax_rows(const float* x, int rows, int width, int32_t* out, cudaStream_t stream) {
  SR_CHECK(rows >= 1 && rows <= 65535 && width >= 1, "argmax_rows: {} rows of {} values not supported", rows, width);
  launch_pdl(argmax_kernel, dim3(unsigned(rows)), dim3(kArgmaxThreads), 0, stream, x, width, out);
}

void embed_rows(const __nv_bfloat16* table, const int32_t* tokens, int64_t n, int width, float* x,
                cudaStream_t stream) {
  embed_kernel<<<grid_for(n * width), kThreads, 0, stream>>>(table, tokens, n, width, x);
  SR_CUDA_CHECK_LAUNCH("embed_kernel");
}

void rms_norm_bf16(const float* x, const float* g, float eps, int64_t rows, int width, __nv_bfloat16* y,
                   cudaStream_t stream) {
  SR_CHECK(rows >= 1 && rows < (int64_t(1) << 31), "rms_norm_bf16: {} rows out of range", rows);
  rms_norm_kernel<<<unsigned((rows + kNormRowsPerBlock - 1) / kNormRowsPerBlock), kThreads, 0, stream>>>(x, g, eps, rows,
                                                                                                      width, y);
  SR_CUDA_CHECK_LAUNCH("rms_norm_kernel");
}

void rope_split(const float* qkv, int64_t n, int q_dim, int kv_dim, int64_t p0, const RopeTable& rope,
                __nv_bfloat16* q, float* k, float* v, cudaStream_t stream) {
  SR_CHECK(rope.head_dim % 2 == 0 && q_dim % rope.head_dim == 0 && kv_dim % rope.head_dim == 0,
           "rope_split: q width {} and kv width {} are not whole heads of {} (even) dims", q_dim, kv_dim,
           rope.head_dim);
  SR_CHECK(n >= 1, "rope_split: {} tokens", n);
  rope_split_kernel<<<row_grid(q_dim / 2 + kv_dim, n), kThreads, 0, stream>>>(qkv, n, q_dim, kv_dim, p0, rope, q, k, v);
  SR_CUDA_CHECK_LAUNCH("rope_split_kernel");
}

void swiglu_bf16(const float* gu, int64_t n, int ff, __nv_bfloat16* out, cudaStream_t stream) {
  SR_CHECK(n >= 1 && ff >= 1, "swiglu_bf16: {} tokens of width {}", n, ff);
  swiglu_kernel<<<row_grid((ff + 3) / 4, n), kThreads, 0, stream>>>(gu, n, ff, out);
  SR_CUDA_CHECK_LAUNCH("swiglu_kernel");
}

void gemm_bf16(cublasHandle_t handle, const __nv_bfloat16* w, int64_t out, int64_t in, const __nv_bfloat16* x,
               int64_t n, float* y, float beta, cudaStream_t stream) {
  SR_CHECK(out >= 1 && in >= 1 && n >= 1 && out < (int64_t(1) << 31) && in < (int64_t(1) << 31) &&
               n < (int64_t(1) << 31),
           "gemm_bf16: shape [{} x {}] x {} tokens out of range", out, in, n);
  const float alpha = 1.f;
  cublasStatus_t st = cublasSetStream(handle, stream);
  // Column-major view: Y^T [out, n] = (W^T [in, out])^T X^T [in, n].
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, int(out), int(n), int(in), &alpha, w, CUDA_R_16BF, int(in), x,
                      CUDA_R_16BF, int(in), &beta, y, CUDA_R_32F, int(out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  SR_CHECK(st == CUBLAS_STATUS_SUCCESS, "cuBLAS GEMM [{} x {}] x {} tokens failed: {}", out, in, n,
           cublasGetStatusString(st));
}

}  // namespace sinkrouter::cuda
