// The combine step of Split-K decode: merges the partials (m, l, acc) of a unit's splits
// with merge_state() (the function the CPU paths use), normalises, writes the output, and
// finishes the statistics: dense writes them whole; routed adds the output-error bound
// (skipped_v_bound + delta * ||o||, as decode_cpu.cpp states it).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "core/cuda_check.h"
#include "core/cuda_dtype.cuh"
#include "decode_cuda_kernels.cuh"
#include "sinkrouter/attention/merge_state.h"

namespace sinkrouter::cuda {
namespace {

constexpr int kCombineThreads = 128;
constexpr int kMaxHeadsPerCta = 8;

__device__ void store_out(void* out, DType t, int64_t i, float v) {
  if (t == DType::F32)
    static_cast<float*>(out)[i] = v;
  else if (t == DType::BF16)
    static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(v);
  else
    static_cast<__half*>(out)[i] = __float2half_rn(v);
}

// grid: units (b, h, head chunk); block: kCombineThreads over (head, dim) pairs.
__global__ void __launch_bounds__(kCombineThreads) combine_kernel(const CombineArgs a) {
  const int unit = int(blockIdx.x);
  const int bh = unit / a.head_chunks, hc = unit % a.head_chunks;
  const int b = bh / a.num_kv_heads, h = bh % a.num_kv_heads;
  const int GC = a.heads_per_cta, D = a.head_dim, QH = a.num_kv_heads * a.group;
  const int2 sched = a.sched[unit];
  __shared__ float norm2[kMaxHeadsPerCta];
  if (threadIdx.x < kMaxHeadsPerCta) norm2[threadIdx.x] = 0.f;
  __syncthreads();
  for (int idx = int(threadIdx.x); idx < GC * D; idx += kCombineThreads) {
    const int g = idx / D, d = idx % D;
    const int gg = hc * GC + g;
    if (gg >= a.group) continue;
    float m = -INFINITY, l = 0.f, acc = 0.f;
    for (int s = 0; s < sched.y; ++s) {
      const int64_t p = int64_t(sched.x + s) * GC + g;
      const float2 ml = a.part_ml[p];
      const float other = a.part_acc[p * D + d];
      merge_state(m, l, &acc, ml.x, ml.y, &other, 1);
    }
    const float o = l > 0.f ? acc / l : 0.f;
    store_out(a.out, a.out_dtype, (int64_t(b) * QH + int64_t(h) * a.group + gg) * D + d, o);
    atomicAdd(&norm2[g], o * o);
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  HeadStats& st = a.stats[bh];
  if (!a.routed) {
    if (hc != 0) return;
    const int64_t n = a.seq_lens[b];
    st.bytes_summary = 0;
    st.bytes_anchor_window = 0;
    st.bytes_blocks = n * a.token_bytes;
    st.bytes_dense = n * a.token_bytes;
    st.blocks_total = int32_t((n + a.block_size - 1) / a.block_size);
    st.blocks_skipped = 0;
    st.delta = 0.f;
    st.output_error_bound = 0.f;
    st.sink_route = false;
    return;
  }
  float bound = 0.f;
  for (int g = 0; g < GC; ++g) {
    const int gg = hc * GC + g;
    if (gg >= a.group) break;
    const int64_t qi = int64_t(b) * QH + int64_t(h) * a.group + gg;
    const double e = (double(a.skipped_v_bound[qi]) + double(a.delta[qi]) * sqrt(double(norm2[g]))) * (1 + 1e-5);
    bound = fmaxf(bound, float(e));
  }
  // Non-negative floats order as their bit patterns; the routing step zeroed the field.
  atomicMax(reinterpret_cast<int*>(&st.output_error_bound), __float_as_int(bound));
}

}  // namespace

void combine_launch(const CombineArgs& args, cudaStream_t stream) {
  SR_CHECK(args.heads_per_cta <= kMaxHeadsPerCta, "combine: {} heads per CTA exceed {}", args.heads_per_cta,
           kMaxHeadsPerCta);
  const int units = args.batch * args.num_kv_heads * args.head_chunks;
  combine_kernel<<<units, kCombineThreads, 0, stream>>>(args);
  SR_CUDA_CHECK_LAUNCH("combine_kernel");
}

}  // namespace sinkrouter::cuda
