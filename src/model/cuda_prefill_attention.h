// Causal attention of a prefill chunk on a CUDA device, over the paged device KV cache
// that already holds the chunk's keys and values (DeviceKVCache::append ran first).
//
//   q        [c, n_head, head_dim]      bf16, device: the chunk's queries, RoPE applied;
//                                       query i sits at position p0 + i
//   kv       PagedKV of ONE sequence     device pointers (DeviceKVCache::view(seq, 1).kv),
//                                       bf16 pages, length p0 + c
//   out      [c, n_head, head_dim]      bf16, device
//   lse      [c, n_head] float or null  log-sum-exp of each row's scaled scores (natural log)
//
// Query head qh reads KV head qh / (n_head / num_kv_heads) (GQA). head_dim 64 or 128.
//
// Five kernels compute the same function (PrefillAttentionKernel; one selector below):
//   - WgmmaTma (cuda_prefill_tma.cu, head_dim 64 on an sm_90 device with the sm_90a build,
//     page sizes 16, 32, 64, 128 and 256): version 4, version 3's loop on 128-key tiles,
//     three warpgroups (192 query rows) a CTA, the K/V tiles copied by TMA (each warp
//     issuing its share of the copies) and the ring kept by mbarriers: no per-thread gather
//     and no CTA barrier in the loop.
//   - Wgmma (cuda_prefill_wgmma.cu, head_dim 64 on an sm_90 device with the sm_90a build):
//     version 3, the products on Hopper's warpgroup MMA; 128 query rows a CTA, two
//     warpgroups of 64; Q, K and V tiles in the 128-byte swizzle wgmma reads, the softmax
//     of one tile overlapping the products of the last.
//   - Flash2 (cuda_prefill_flash2.cu): version 2, flash-attention-2 on the tensor cores
//     (mma.sync m16n8k16 bf16, fp32 accumulate). head_dim 64: one CTA = 128 query rows of
//     one query head, 4 warps of 32 rows; head_dim 128: 64 rows, 4 warps of 16. Key tiles
//     of 64 gathered through the page table (page ids loaded a tile ahead) into a ring of
//     shared-memory stages with cp.async; online softmax in registers; P goes back into
//     the tensor cores as bf16; the causal mask only on diagonal tiles.
//   - FlashV1 (cuda_prefill_attention.cu): the first version, 64 query rows a CTA, 4 warps
//     of 16, two stages, page offsets resolved per 16-byte copy. Kept to measure against.
//   - Reference: one warp per (query row, head), float32 and exact probabilities; slow,
//     obviously right.
// Flash, the default, is WgmmaTma where it runs, else Wgmma where that runs, else Flash2.
// The tests hold the fast kernels to a float64 CPU reference and to the reference kernel;
// SINKROUTER_PREFILL_ATTENTION=flash|tma|wgmma|flash2|flash1|reference picks the engine's
// (reference is a fallback if a fast kernel ever misbehaves on new hardware).
#pragma once

#if defined(SINKROUTER_HAVE_CUDA)

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "sinkrouter/kv/paged_kv.h"

namespace sinkrouter {

struct PrefillAttentionArgs {
  PagedKV kv;                       // one sequence, device
  const __nv_bfloat16* q = nullptr;  // [c, n_head, head_dim]
  __nv_bfloat16* out = nullptr;      // [c, n_head, head_dim]
  float* lse = nullptr;              // [c, n_head] or null
  int64_t c = 0;                     // query rows in the chunk
  int64_t p0 = 0;                    // position of the first query row (tokens before the chunk)
  int n_head = 0;
  float scale = 0;                   // usually 1 / sqrt(head_dim)
};

enum class PrefillAttentionKernel { Flash, WgmmaTma, Wgmma, Flash2, FlashV1, Reference };

// "flash", "tma", "wgmma", "flash2", "flash1" or "reference" (SINKROUTER_PREFILL_ATTENTION's
// values); throws Error naming the accepted values on anything else.
PrefillAttentionKernel prefill_attention_kernel_from_name(const std::string& name);
const char* prefill_attention_kernel_name(PrefillAttentionKernel kernel);

// Throws Error on unsupported shapes (head_dim, dtype, GQA ratio) with what was expected,
// and for WgmmaTma / Wgmma where they do not run (head_dim 128, a device other than sm_90,
// for WgmmaTma a page size it does not take).
void prefill_attention_cuda(const PrefillAttentionArgs& args, cudaStream_t stream,
                            PrefillAttentionKernel kernel = PrefillAttentionKernel::Flash);

// Sink detection's signal, as prefill_attention_cpu computes it: received[h * n + j] is the
// mean attention key j receives from the last `rows` query rows of the chunk, over those
// rows and the G query heads of KV head h (n = p0 + c). Needs the lse of those rows from
// the attention call. received: [num_kv_heads, n] float, device.
void attention_received_cuda(const PrefillAttentionArgs& args, int rows, float* received, cudaStream_t stream);

namespace detail {
// The kernels' launchers, after the shared argument checks (cuda_prefill_attention.cu).
void prefill_attention_flash2(const PrefillAttentionArgs& args, cudaStream_t stream);
void prefill_attention_wgmma(const PrefillAttentionArgs& args, cudaStream_t stream);
// head_dim 64, an sm_90 device, and the sm_90a code in this build.
bool prefill_attention_wgmma_supported(const PrefillAttentionArgs& args);
void prefill_attention_tma(const PrefillAttentionArgs& args, cudaStream_t stream);
// The same, a page size of 16, 32, 64, 128 or 256, and the driver's TMA descriptor
// encoder.
bool prefill_attention_tma_supported(const PrefillAttentionArgs& args);
}  // namespace detail

}  // namespace sinkrouter

#endif  // SINKROUTER_HAVE_CUDA
