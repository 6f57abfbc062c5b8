// Causal prefill attention on the tensor cores, version 1 (flash-attention-2 shape, 64
// query rows a CTA; version 2, the default, is cuda_prefill_flash2.cu), the plain float32
// reference kernel, the kernel selector and the sink-detection signal. See
// cuda_prefill_attention.h; the mma.sync fragment layouts are in core/cuda_mma.cuh.
// S = Q K^T takes K rows (keys) straight from shared memory with ldmatrix (a key's
// consecutive dims are B's consecutive k), P V takes V with ldmatrix.trans, and the
// accumulators of two adjacent 8-key n-tiles of S are exactly the A fragment of one
// 16-key k-step of P V (the FA2 register trick: P never touches shared memory).
#include "cuda_prefill_attention.h"

#include <cmath>

#include "core/cuda_check.h"
#include "core/cuda_dtype.cuh"
#include "core/cuda_mma.cuh"
#include "cuda_prefill_rows.cuh"
#include "sinkrouter/core/error.h"

namespace sinkrouter {
namespace {

constexpr int kRows = 64;  // query rows per CTA: 4 warps x 16
constexpr int kKeys = 64;  // keys per tile
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr float kLn2 = 0.6931471805599453f;

// Shared memory of one CTA: the Q tile, then K and V tiles of two pipeline stages, each
// kKeys (= kRows) rows of D bf16 plus 8 of padding: the 16 extra bytes per row put the 8
// row addresses of one ldmatrix into 8 distinct 16-byte bank groups (no conflicts).
template <int D>
struct Tiles {
  static constexpr int kStride = D + 8;          // elements per shared row
  static constexpr int kTile = kKeys * kStride;  // elements per tile
  static constexpr size_t kBytes = size_t(5) * kTile * sizeof(__nv_bfloat16);
};

using cuda::Bf16Tag;
using cuda::cp_async_commit_group;
using cuda::cp_async_wait_group;
using cuda::ldmatrix_x4;
using cuda::ldmatrix_x4_trans;
using cuda::smem_addr;

// Keys [key0, key0 + kKeys) of KV head h, K and V, into shared tiles; keys at or past n
// are zero-filled (their pages may hold the cache's NaN poison, and 0 * NaN is NaN).
template <int D>
__device__ __forceinline__ void load_kv_tile(const PagedKV& kv, int h, int64_t key0, int64_t n, __nv_bfloat16* ks,
                                             __nv_bfloat16* vs) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  const uint16_t* pages = static_cast<const uint16_t*>(kv.pages);
  const int64_t vstride = kv.v_stride();
  for (int i = int(threadIdx.x); i < kKeys * kChunks; i += kThreads) {
    const int row = i / kChunks, col = (i % kChunks) * 8;
    const int64_t t = key0 + row;
    const bool valid = t < n;
    const uint16_t* src = pages + (valid ? kv.k_offset(0, t, h) : 0) + col;
    cuda::cp_async16_to(smem_addr(ks + row * Tiles<D>::kStride + col), src, valid);
    cuda::cp_async16_to(smem_addr(vs + row * Tiles<D>::kStride + col), src + (valid ? vstride : 0), valid);
  }
}

// grid: (ceil(c / 64), n_head); block: 128 threads (4 warps x 16 query rows).
template <int D>
__global__ void __launch_bounds__(kThreads) flash_prefill_kernel(PrefillAttentionArgs a) {
  using T = Tiles<D>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* const qs = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* const ks0 = qs + T::kTile;      // K of stage s: ks0 + s * kTile
  __nv_bfloat16* const vs0 = ks0 + 2 * T::kTile;  // V of stage s: vs0 + s * kTile

  // The query tiles with the most keys (the last ones) start first: a shorter tail.
  const int64_t q0 = int64_t(gridDim.x - 1 - blockIdx.x) * kRows;
  const int qh = int(blockIdx.y);
  const int h = qh / (a.n_head / a.kv.num_kv_heads);
  const int64_t n = a.p0 + a.c;  // keys in the cache
  const int64_t last_row = min(q0 + kRows, a.c) - 1;
  const int num_tiles = int((a.p0 + last_row) / kKeys) + 1;  // up to the last row's diagonal
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int g = lane / 4, t4 = lane % 4;  // fragment coordinates (see the top of the file)

  // Stage 0: the Q tile (rows past the chunk zero-filled) and key tile 0.
  for (int i = int(threadIdx.x); i < kRows * (D / 8); i += kThreads) {
    const int row = i / (D / 8), col = (i % (D / 8)) * 8;
    const int64_t qi = q0 + row;
    const bool valid = qi < a.c;
    const __nv_bfloat16* src = a.q + (valid ? (qi * a.n_head + qh) * D : 0) + col;
    cuda::cp_async16_to(smem_addr(qs + row * T::kStride + col), src, valid);
  }
  load_kv_tile<D>(a.kv, h, 0, n, ks0, vs0);
  cp_async_commit_group();

  uint32_t qf[D / 16][4];  // this warp's 16 Q rows as A fragments, one per 16-dim k-step
  float o[D / 8][4];       // output accumulators, 8 dims per n-tile
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY};  // running max (log2 units) of rows g and g + 8
  float l[2] = {0.f, 0.f};              // this thread's part of the running sums
  const float scale_log2 = a.scale * cuda::kLog2e;
  const int64_t row_pos = a.p0 + q0 + warp * 16 + g;  // position of row g; row g + 8 is + 8

  for (int kt = 0; kt < num_tiles; ++kt) {
    const int stage = kt & 1;
    // Prefetch the next tile into the other stage (free: the barrier that ended the last
    // iteration came after every warp's reads of it), then wait for this one.
    if (kt + 1 < num_tiles)
      load_kv_tile<D>(a.kv, h, int64_t(kt + 1) * kKeys, n, ks0 + (stage ^ 1) * T::kTile,
                      vs0 + (stage ^ 1) * T::kTile);
    cp_async_commit_group();  // possibly empty: keeps "all but the newest group" meaning this tile
    cp_async_wait_group<1>();
    __syncthreads();
    if (kt == 0) {
#pragma unroll
      for (int ks = 0; ks < D / 16; ++ks)
        ldmatrix_x4(qf[ks], smem_addr(qs + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * T::kStride +
                                      ks * 16 + (lane >> 4) * 8));
    }
    const __nv_bfloat16* kst = ks0 + stage * T::kTile;
    const __nv_bfloat16* vst = vs0 + stage * T::kTile;

    // S = Q K^T for 16 rows x 64 keys: 8 n-tiles of 8 keys. One ldmatrix.x4 gives the B
    // fragments of two k-steps (32 dims) of one n-tile.
    float s[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 32; ++kk) {
        uint32_t b[4];
        ldmatrix_x4(b, smem_addr(kst + (nt * 8 + (lane & 7)) * T::kStride + kk * 32 + (lane >> 3) * 8));
        cuda::mma16816(s[nt], qf[2 * kk], b[0], b[1], Bf16Tag{});
        cuda::mma16816(s[nt], qf[2 * kk + 1], b[2], b[3], Bf16Tag{});
      }
    }

    // Scores in log2 units; keys past a row's position are masked (only tiles that reach
    // past the CTA's first row can hold such keys, keys past the sequence included).
    const int64_t key0 = int64_t(kt) * kKeys;
    const bool diagonal = key0 + kKeys - 1 > a.p0 + q0;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t key = key0 + nt * 8 + 2 * t4 + (e & 1);
        const int64_t pos = row_pos + (e >> 1) * 8;
        s[nt][e] = diagonal && key > pos ? -INFINITY : s[nt][e] * scale_log2;
      }

    // Online softmax per row (r = 0: row g, r = 1: row g + 8). The 4 lanes of a quad hold
    // one row between them: the max is shared by shuffles; the sums stay per lane (every
    // lane rescales by the same factor) and are added up once at the end.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[r], mx);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;  // nothing visible yet: no NaN
      const float alpha = exp2f(m[r] - m_use);               // 0 while m[r] is -inf
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        s[nt][2 * r] = exp2f(s[nt][2 * r] - m_use);
        s[nt][2 * r + 1] = exp2f(s[nt][2 * r + 1] - m_use);
        sum += s[nt][2 * r] + s[nt][2 * r + 1];
      }
      l[r] = l[r] * alpha + sum;
      m[r] = m_new;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        o[dt][2 * r] *= alpha;
        o[dt][2 * r + 1] *= alpha;
      }
    }

    // O += P V: k-step kk covers keys 16 kk .. 16 kk + 15 = n-tiles 2 kk and 2 kk + 1 of S.
    // One ldmatrix.x4.trans gives the B fragments of two 8-dim n-tiles of V.
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint32_t pa[4] = {cuda::pack_bf16x2(s[2 * kk][0], s[2 * kk][1]), cuda::pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                              cuda::pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              cuda::pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, smem_addr(vst + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * T::kStride +
                                       dp * 16 + (lane >> 4) * 8));
        cuda::mma16816(o[2 * dp], pa, b[0], b[1], Bf16Tag{});
        cuda::mma16816(o[2 * dp + 1], pa, b[2], b[3], Bf16Tag{});
      }
    }
    __syncthreads();  // every warp is done with this stage before the next prefetch refills it
  }

  // Normalise and store rows g and g + 8 of this warp (m is in log2 units).
  const float m_nat[2] = {m[0] * kLn2, m[1] * kLn2};
  store_prefill_rows<D>(a, o, l, m_nat, q0 + warp * 16 + g, qh, t4);
}

// The reference: one warp per (query row, query head), lane owning dims lane + 32 j;
// exact float32 online softmax over keys 0 .. p0 + row, one key at a time.
template <int D>
__global__ void reference_prefill_kernel(PrefillAttentionArgs a) {
  constexpr int kPer = D / 32;
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = int(threadIdx.x) % 32;
  const int qh = int(blockIdx.y);
  if (row >= a.c) return;
  const int h = qh / (a.n_head / a.kv.num_kv_heads);
  const uint16_t* pages = static_cast<const uint16_t*>(a.kv.pages);
  float q[kPer], acc[kPer];
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    q[j] = __bfloat162float(a.q[(row * a.n_head + qh) * D + lane + 32 * j]);
    acc[j] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int64_t t = 0; t <= a.p0 + row; ++t) {
    const uint16_t* k = pages + a.kv.k_offset(0, t, h);
    const uint16_t* v = k + a.kv.v_stride();
    float dot = 0.f;
#pragma unroll
    for (int j = 0; j < kPer; ++j) dot += q[j] * cuda::bits_to_float(k[lane + 32 * j], Bf16Tag{});
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    const float sc = dot * a.scale;
    const float m_new = fmaxf(m, sc);
    const float corr = expf(m - m_new);  // 0 at the first key
    const float p = expf(sc - m_new);
    l = l * corr + p;
#pragma unroll
    for (int j = 0; j < kPer; ++j) acc[j] = acc[j] * corr + p * cuda::bits_to_float(v[lane + 32 * j], Bf16Tag{});
    m = m_new;
  }
#pragma unroll
  for (int j = 0; j < kPer; ++j) a.out[(row * a.n_head + qh) * D + lane + 32 * j] = __float2bfloat16_rn(acc[j] / l);
  if (a.lse != nullptr && lane == 0) a.lse[row * a.n_head + qh] = m + logf(l);
}

// One thread per key j of KV head h = blockIdx.y. The (row, head) query vectors of the last
// `rows` rows are staged in shared memory kPairs at a time.
template <int D>
__global__ void __launch_bounds__(128) received_kernel(PrefillAttentionArgs a, int rows, float* received) {
  constexpr int kPairs = 8;
  __shared__ float qv[kPairs][D];
  __shared__ float lse[kPairs];
  __shared__ long long pos[kPairs];
  const int h = int(blockIdx.y);
  const int G = a.n_head / a.kv.num_kv_heads;
  const int64_t n = a.p0 + a.c;
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  float k[D];
  const uint16_t* kp = static_cast<const uint16_t*>(a.kv.pages) + (j < n ? a.kv.k_offset(0, j, h) : 0);
#pragma unroll
  for (int d = 0; d < D; ++d) k[d] = j < n ? cuda::bits_to_float(kp[d], Bf16Tag{}) : 0.f;
  float acc = 0.f;
  const int pairs = rows * G;
  for (int first = 0; first < pairs; first += kPairs) {
    __syncthreads();  // the previous batch of pairs is no longer read
    for (int i = int(threadIdx.x); i < kPairs * D; i += int(blockDim.x)) {
      const int p = first + i / D, d = i % D;
      if (p >= pairs) continue;
      const int64_t row = a.c - rows + p / G;
      const int qh = h * G + p % G;
      qv[i / D][d] = __bfloat162float(a.q[(row * a.n_head + qh) * D + d]);
      if (d == 0) {
        lse[i / D] = a.lse[row * a.n_head + qh];
        pos[i / D] = a.p0 + row;
      }
    }
    __syncthreads();
    for (int pp = 0; pp < kPairs && first + pp < pairs; ++pp) {
      float dot = 0.f;
#pragma unroll
      for (int d = 0; d < D; ++d) dot += qv[pp][d] * k[d];
      if (j <= pos[pp]) acc += expf(dot * a.scale - lse[pp]);
    }
  }
  if (j < n) received[int64_t(h) * n + j] = acc / float(pairs);
}

void check_args(const PrefillAttentionArgs& a, const char* what) {
  const PagedKV& kv = a.kv;
  SR_CHECK(kv.dtype == DType::BF16, "{}: KV dtype {} is not supported (expected bf16)", what, dtype_name(kv.dtype));
  SR_CHECK(kv.head_dim == 64 || kv.head_dim == 128, "{}: head_dim {} is not supported (expected 64 or 128)", what,
           kv.head_dim);
  SR_CHECK(kv.num_kv_heads >= 1 && a.n_head >= kv.num_kv_heads && a.n_head % kv.num_kv_heads == 0,
           "{}: {} query heads are not a multiple of {} KV heads", what, a.n_head, kv.num_kv_heads);
  SR_CHECK(a.n_head <= 65535, "{}: {} query heads exceed the grid limit of 65535", what, a.n_head);
  SR_CHECK(kv.batch == 1, "{}: the KV view holds {} sequences (expected exactly one)", what, kv.batch);
  SR_CHECK(a.c >= 1 && a.p0 >= 0, "{}: chunk of {} rows at position {} (expected c >= 1, p0 >= 0)", what, a.c, a.p0);
  SR_CHECK(a.q != nullptr && a.out != nullptr && kv.pages != nullptr, "{}: null q, out or pages", what);
  SR_CHECK(std::isfinite(a.scale) && a.scale > 0, "{}: scale {} must be a positive finite number", what, a.scale);
}

template <int D>
void launch_flash(const PrefillAttentionArgs& a, cudaStream_t stream) {
  const size_t smem = Tiles<D>::kBytes;
  // Raising the dynamic shared-memory limit is a host-side attribute, not a stream
  // operation: cheap, and legal while a stream is being captured.
  SR_CUDA_CHECK(cudaFuncSetAttribute(flash_prefill_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(unsigned((a.c + kRows - 1) / kRows), unsigned(a.n_head));
  flash_prefill_kernel<D><<<grid, kThreads, smem, stream>>>(a);
  SR_CUDA_CHECK_LAUNCH("flash_prefill_kernel");
}

void launch_reference(const PrefillAttentionArgs& a, cudaStream_t stream) {
  constexpr int kWarpsPerBlock = 4;
  const dim3 grid(unsigned((a.c + kWarpsPerBlock - 1) / kWarpsPerBlock), unsigned(a.n_head));
  if (a.kv.head_dim == 64)
    reference_prefill_kernel<64><<<grid, 32 * kWarpsPerBlock, 0, stream>>>(a);
  else
    reference_prefill_kernel<128><<<grid, 32 * kWarpsPerBlock, 0, stream>>>(a);
  SR_CUDA_CHECK_LAUNCH("reference_prefill_kernel");
}

}  // namespace

PrefillAttentionKernel prefill_attention_kernel_from_name(const std::string& name) {
  if (name == "flash") return PrefillAttentionKernel::Flash;
  if (name == "tma") return PrefillAttentionKernel::WgmmaTma;
  if (name == "wgmma") return PrefillAttentionKernel::Wgmma;
  if (name == "flash2") return PrefillAttentionKernel::Flash2;
  if (name == "flash1") return PrefillAttentionKernel::FlashV1;
  if (name == "reference") return PrefillAttentionKernel::Reference;
  fail("prefill attention kernel '{}' is unknown (expected flash, tma, wgmma, flash2, flash1 or reference)", name);
}

const char* prefill_attention_kernel_name(PrefillAttentionKernel kernel) {
  switch (kernel) {
    case PrefillAttentionKernel::Flash: return "flash";
    case PrefillAttentionKernel::WgmmaTma: return "tma";
    case PrefillAttentionKernel::Wgmma: return "wgmma";
    case PrefillAttentionKernel::Flash2: return "flash2";
    case PrefillAttentionKernel::FlashV1: return "flash1";
    case PrefillAttentionKernel::Reference: return "reference";
  }
  return "?";
}

void prefill_attention_cuda(const PrefillAttentionArgs& a, cudaStream_t stream, PrefillAttentionKernel kernel) {
  check_args(a, "prefill attention (CUDA)");
  if (kernel == PrefillAttentionKernel::Reference) return launch_reference(a, stream);
  if (kernel == PrefillAttentionKernel::Flash)
    kernel = detail::prefill_attention_tma_supported(a)     ? PrefillAttentionKernel::WgmmaTma
             : detail::prefill_attention_wgmma_supported(a) ? PrefillAttentionKernel::Wgmma
                                                            : PrefillAttentionKernel::Flash2;
  if (kernel == PrefillAttentionKernel::WgmmaTma) return detail::prefill_attention_tma(a, stream);
  if (kernel == PrefillAttentionKernel::Wgmma) return detail::prefill_attention_wgmma(a, stream);
  if (kernel == PrefillAttentionKernel::Flash2) return detail::prefill_attention_flash2(a, stream);
  SR_CHECK((a.c + kRows - 1) / kRows < (int64_t(1) << 31), "prefill attention (CUDA): chunk of {} rows is too long",
           a.c);
  if (a.kv.head_dim == 64)
    launch_flash<64>(a, stream);
  else
    launch_flash<128>(a, stream);
}

void attention_received_cuda(const PrefillAttentionArgs& a, int rows, float* received, cudaStream_t stream) {
  check_args(a, "attention received (CUDA)");
  SR_CHECK(a.lse != nullptr, "attention received (CUDA): needs the rows' log-sum-exp (lse is null)");
  SR_CHECK(rows >= 1 && rows <= a.c, "attention received (CUDA): {} observed rows out of range (chunk of {})", rows,
           a.c);
  const int64_t n = a.p0 + a.c;
  const dim3 grid(unsigned((n + 127) / 128), unsigned(a.kv.num_kv_heads));
  if (a.kv.head_dim == 64)
    received_kernel<64><<<grid, 128, 0, stream>>>(a, rows, received);
  else
    received_kernel<128><<<grid, 128, 0, stream>>>(a, rows, received);
  SR_CUDA_CHECK_LAUNCH("received_kernel");
}

}  // namespace sinkrouter
