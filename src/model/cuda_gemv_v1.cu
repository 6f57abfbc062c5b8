// The decode GEMV, version 1 (the GPU engine's first device run), the default (also the
// LM head's under SINKROUTER_GEMV=chain): measured faster than version 2 (cuda_gemv.cu,
// SINKROUTER_GEMV=v2) in the engine, and than the chain since run v7f; its arithmetic is the
// chain's stages' (cuda_gemv_chain.cu). Launched with
// programmatic dependent launch (cuda_launch.cuh; SINKROUTER_PDL=0: plain): before its
// pdl_wait() a CTA only asks L2 to prefetch its own weight rows (constant data), so that
// the launch and the first weight round trip overlap the kernel before it.
//
// Decode is bound by reading the weights (270 MB a step for SmolLM2), so each weight row is
// read once per launch and dotted with every token of the launch (up to 8). One warp takes
// two adjacent rows (RoPE's pairs land in one warp), its lanes striding over 16-byte
// chunks of the rows; 4 warps per CTA. The launch's inputs are first transformed
// (RMSNorm or SwiGLU, recomputed by every CTA: a few KB) into shared memory, so the
// normalisation and the activation need no kernels of their own, and the epilogue adds
// into the residual stream or rotates and splits q / k / v.
#include <algorithm>

#include "core/cuda_check.h"
#include "cuda_device_util.cuh"
#include "cuda_gemv_common.cuh"
#include "core/cuda_launch.cuh"
#include "cuda_ops.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kRowsPerCta = 2 * kWarps;
constexpr int kMaxTokens = 8;
constexpr size_t kDefaultSmem = 48 * 1024;  // usable without raising the kernel's limit

size_t g_smem_limit = kDefaultSmem;  // raised by gemv_configure

// grid: ceil(out / 8) CTAs of 128 threads; dynamic shared memory: NT * in floats.
template <int NT, GemvIn IN, GemvOut OUT>
__global__ void __launch_bounds__(kThreads) gemv_kernel(GemvArgs a) {
  extern __shared__ __align__(16) float xs[];  // [NT][in]
  const int in = a.in;
  const int r0 = int(blockIdx.x) * kRowsPerCta;  // this CTA's rows into L2
  prefetch_l2(a.w + int64_t(r0) * in, int64_t(min(kRowsPerCta, a.out - r0)) * in * 2, int(threadIdx.x), kThreads);
  pdl_begin(a);  // the inputs below are the kernel before's outputs
  gemv_input_to_shared<NT>(a, IN, xs, kThreads);
  __syncthreads();

  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int r = (int(blockIdx.x) * kWarps + warp) * 2;  // rows r and r + 1
  if (r >= a.out) return;
  const int chunks = in / 8;
  const uint4* w0 = reinterpret_cast<const uint4*>(a.w + int64_t(r) * in);
  const uint4* w1 = w0 + chunks;
  float acc0[NT], acc1[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc0[t] = acc1[t] = 0.f;
#pragma unroll 4
  for (int c = lane; c < chunks; c += 32) {
    const uint4 wa = __ldg(w0 + c), wb = __ldg(w1 + c);
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const float4* xv = reinterpret_cast<const float4*>(xs + t * in + c * 8);
      const float4 xa = xv[0], xb = xv[1];
      acc0[t] = dot8(wa, xa, xb, acc0[t]);
      acc1[t] = dot8(wb, xa, xb, acc1[t]);
    }
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float y0 = warp_sum(acc0[t]), y1 = warp_sum(acc1[t]);
    if (lane == t && t < a.tokens) gemv_store(a, OUT, t, r, y0, y1);
  }
}

// One launch of an instantiated width (gemv_launch_group, cuda_gemv_common.cuh).
struct Launcher {
  template <int NT, GemvIn IN, GemvOut OUT>
  static void run(const GemvArgs& a, cudaStream_t stream) {
    const size_t smem = size_t(NT) * a.in * sizeof(float);
    // Raised from 48 KB on: a launch of exactly 48 KB was refused on the H200
    // (cudaErrorInvalidValue, 8 tokens x 1536 floats, run 3), so the limit is raised at and
    // above it.
    if (smem >= kDefaultSmem)
      SR_CUDA_CHECK(cudaFuncSetAttribute(gemv_kernel<NT, IN, OUT>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    launch_pdl(gemv_kernel<NT, IN, OUT>, dim3(unsigned((a.out + kRowsPerCta - 1) / kRowsPerCta)), dim3(kThreads),
               smem, stream, a);
  }
};

}  // namespace

void gemv_configure(int max_in) {  // affects version 1 only (version 2 uses no shared memory)
  int device = 0, optin = 0;
  SR_CUDA_CHECK(cudaGetDevice(&device));
  SR_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  g_smem_limit = std::max(kDefaultSmem, std::min(size_t(optin), size_t(kMaxTokens) * size_t(max_in) * sizeof(float)));
}

void gemv_v1(const GemvArgs& a, GemvIn in, GemvOut out, cudaStream_t stream) {
  gemv_check_shape(a, in, out);
  // Tokens per launch: as many as fit the shared memory (8 at most).
  const int fit = int(std::min<size_t>(kMaxTokens, g_smem_limit / (size_t(a.in) * sizeof(float))));
  SR_CHECK(fit >= 1, "gemv: an input row of {} floats does not fit in shared memory (call gemv_configure)", a.in);
  const int group = fit >= 8 ? 8 : fit >= 4 ? 4 : fit >= 2 ? 2 : 1;
  gemv_launch_sliced<Launcher>(a, in, out, group, stream);
}

}  // namespace sinkrouter::cuda
