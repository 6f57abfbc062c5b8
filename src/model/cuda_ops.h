// The element-wise and matrix pieces of the Llama forward pass on a CUDA device (the CPU
// versions are llama_ops.h and qmatmul.h). All pointers are device pointers; activations
// are row-major [tokens, width]; weights are bf16 [out, in] row-major (the GGUF rows).
//
// Prefill (many tokens): rms_norm_bf16 -> gemm_bf16 (cuBLAS, f32 accumulate) ->
// rope_split -> ... -> swiglu_bf16 -> gemm_bf16 with beta = 1 (residual add).
// Decode (a few tokens): gemv with fused prologues (RMSNorm, SwiGLU) and epilogues
// (store, residual add, RoPE + split into q / k / v), x kept in float32 throughout.
#pragma once

#if defined(SINKROUTER_HAVE_CUDA)

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace sinkrouter::cuda {

// RoPE with GGUF's adjacent pairs (REFERENCE.md §3): within each head, (x[2i], x[2i+1])
// rotates by pos * inv_freq[i]. The angle is formed and reduced modulo 2 pi in double (positions
// reach 2^19: a float angle would be off by ~0.03 rad), then sin/cos run in float.
struct RopeTable {
  const double* inv_freq = nullptr;  // [head_dim / 2] device
  int head_dim = 0;
};

// x[t, :] = table[tokens[t], :] widened to float. tokens: [n] device (ids checked by the caller).
void embed_rows(const __nv_bfloat16* table, const int32_t* tokens, int64_t n, int width, float* x,
                cudaStream_t stream);

// y[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * g, rounded to bf16. One row per CTA.
void rms_norm_bf16(const float* x, const float* g, float eps, int64_t rows, int width, __nv_bfloat16* y,
                   cudaStream_t stream);

// Splits a prefill QKV product qkv [n, q_dim + 2 kv_dim] (float) into q [n, q_dim] bf16 and
// k, v [n, kv_dim] float, rotating q and k of token t by position p0 + t.
void rope_split(const float* qkv, int64_t n, int q_dim, int kv_dim, int64_t p0, const RopeTable& rope,
                __nv_bfloat16* q, float* k, float* v, cudaStream_t stream);

// out[t, i] = silu(gu[t, i]) * gu[t, ff + i], rounded to bf16; gu: [n, 2 ff], out: [n, ff].
void swiglu_bf16(const float* gu, int64_t n, int ff, __nv_bfloat16* out, cudaStream_t stream);

// Y[t, o] = beta * Y[t, o] + sum_i W[o, i] X[t, i] for t < n: bf16 operands, f32
// accumulation and output (cuBLAS). W: [out, in], X: [n, in], Y: [n, out].
void gemm_bf16(cublasHandle_t handle, const __nv_bfloat16* w, int64_t out, int64_t in, const __nv_bfloat16* x,
               int64_t n, float* y, float beta, cudaStream_t stream);

// out[r] = the first index of row r's largest value, as std::max_element gives it on rows
// without NaN (greedy decoding without downloading the logits). x: [rows, width] device, out: [rows] device.
void argmax_rows(const float* x, int rows, int width, int32_t* out, cudaStream_t stream);

// ---- decode GEMV: y = W x for a few tokens, one read of W per 8 tokens (cuda_gemv.cu) ----
enum class GemvIn {
  Plain,    // x as given, [tokens, in]
  RmsNorm,  // rms_norm(x[t]) * gain, [tokens, in]
  SwiGlu,   // silu(x[t, i]) * x[t, in + i]: x is [tokens, 2 in] (gate | up)
};
enum class GemvOut {
  Store,       // y[t, o] = acc
  Accumulate,  // y[t, o] += acc (the residual stream)
  QkvRope,     // rows [0, q_dim) -> q_out, [q_dim, q_dim + kv_dim) -> k_out, the rest ->
               // v_out, q and k rotated by positions[t]
};

struct GemvArgs {
  const __nv_bfloat16* w = nullptr;  // [out, in]
  int out = 0, in = 0;               // out even, in a multiple of 8
  int tokens = 0;
  const float* x = nullptr;          // input rows, ldx floats apart
  int64_t ldx = 0;
  const float* gain = nullptr;       // RmsNorm
  float eps = 0;
  float* y = nullptr;                // Store / Accumulate: [tokens, ldy]
  int64_t ldy = 0;
  float* q_out = nullptr;            // QkvRope: [tokens, q_dim]
  float* k_out = nullptr;            // QkvRope: [tokens, kv_dim]
  float* v_out = nullptr;            // QkvRope: [tokens, kv_dim]
  int q_dim = 0, kv_dim = 0;
  const int32_t* positions = nullptr;  // QkvRope: [tokens] device (the cache lengths before the append)
  RopeTable rope;
};

// Three implementations of the same contract:
//   V1 (cuda_gemv_v1.cu): the input transform into shared memory, a warp per two rows,
//      plain launches (the GPU engine's first device run);
//   V2 (cuda_gemv.cu): 8, 16 or 32 lanes per row, the weights loaded into registers before
//      the wait of programmatic dependent launch (cuda_launch.cuh), no shared memory;
//   Chain (cuda_gemv_chain.cu): V1's arithmetic in a persistent grid that runs several
//      dependent GEMVs in one launch (gemv_chain); gemv() with it is a chain of one.
// gemv() without a version runs gemv_default_version(): V1, or what SINKROUTER_GEMV
// names (v1, v2 or chain; decided once per process; any other value is an error).
enum class GemvVersion { V1 = 1, V2 = 2, Chain = 3 };
GemvVersion gemv_default_version();
const char* gemv_version_name(GemvVersion version);

// Any number of tokens (launched in groups of at most 8, one read of W per group). x, w and
// gain start at 16-byte boundaries, ldx is a multiple of 4 (V2 checks it).
void gemv(const GemvArgs& args, GemvIn in, GemvOut out, cudaStream_t stream);
void gemv(const GemvArgs& args, GemvIn in, GemvOut out, cudaStream_t stream, GemvVersion version);
void gemv_v1(const GemvArgs& args, GemvIn in, GemvOut out, cudaStream_t stream);
void gemv_v2(const GemvArgs& args, GemvIn in, GemvOut out, cudaStream_t stream);

// One GEMV of a chain: its arguments, prologue and epilogue.
struct GemvStage {
  GemvArgs args;
  GemvIn in = GemvIn::Plain;
  GemvOut out = GemvOut::Store;
};
constexpr int kMaxChainStages = 4;

// stages[0..count) in one launch, in order: stage s reads what stages before it wrote (and
// stage 0 what the kernels before the launch wrote), separated by grid-wide barriers. All
// stages have the same token count; more than 8 tokens (or than shared memory holds at
// the widest `in`) run as chains over slices of the tokens. barrier: one device word, zero
// before the launch and left zero after it (count > 1; may be null for one stage); launches
// that may overlap need different words. V1's arithmetic stage by stage (the RMSNorm's sum
// of squares in another order).
//
// trace (profiling, optional): thread 0 of each CTA stamps clock64() at four points of every
// stage, trace[(cta * kMaxChainStages + stage) * kChainStamps + point], points
// ChainStamp (the SM's cycle counter: compare stamps of one CTA only). Needs
// gemv_chain_trace_words() words (the grid is one CTA per SM); the first token slice of a
// launch only.
enum ChainStamp : int { kStampBeforeWait = 0, kStampReleased = 1, kStampInputReady = 2, kStampRowsDone = 3 };
constexpr int kChainStamps = 4;
void gemv_chain(const GemvStage* stages, int count, unsigned* barrier, cudaStream_t stream,
                long long* trace = nullptr);
int64_t gemv_chain_trace_words();  // [grid CTAs][kMaxChainStages][kChainStamps]

// V1 only: its shared memory holds min(8, tokens) input rows; call once with the widest
// `in` before using in > 1536 with 8 tokens (otherwise V1 launches fewer tokens at a time).
void gemv_configure(int max_in);

// Whether the decode step's kernels (both GEMVs, the embedding, the append, the routing,
// the attention) are launched with programmatic dependent launch: device 9.0+ and
// SINKROUTER_PDL not "0" (decided once per process; defined in core/cuda_launch.cu).
bool pdl_enabled();

}  // namespace sinkrouter::cuda

#endif  // SINKROUTER_HAVE_CUDA
