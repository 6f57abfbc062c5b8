// Causal prefill attention, version 4: version 3's warpgroup-MMA loop (the per-tile steps of
// cuda_prefill_wgmma_steps.cuh) with the K/V tiles copied by TMA and the ring kept by
// mbarriers (see cuda_prefill_attention.h for the arguments; docs/PERF.md "Prefill attention
// v4"). head_dim 64, sm_90a, page sizes 16 to 256, powers of two.
//
// Why: version 3 is instruction-bound (ncu, run 9e): of its ~390 instructions a warp per
// 64-key tile, ~75 are the page gather (page ids, offsets, eight cp.async a thread) and the
// CTA barrier of the ring. Here a tile is a few TMA copies (one box of min(page_size, 128)
// rows for K and one for V per page it touches, each landing in the 128-byte swizzle wgmma
// reads), each warp issuing at most two of them (WarpCopies), and the ring's barrier is a
// "full" mbarrier per stage (the copies' bytes) and an "empty" one (every warp done with
// the tile): no cp.async, no per-thread page arithmetic, no CTA barrier in the loop. Tiles
// are 128 keys (Shape): half the per-tile work of 64-key tiles for the same softmax.
//
// The cache as the TMA sees it: pages [num_pages, 2 (K, V), page_size, num_kv_heads, 64]
// bf16 as a 5-D tensor (dims innermost first: 64, num_kv_heads, page_size, 2, pages); a box
// is {64, 1, min(page_size, 128), 1, 1}. Keys at or past the cache's end: boxes that start
// there are not loaded (their stage keeps older, finite data or anything at all), and in
// the one tile that reaches past the end the consumers zero those V rows before P V (their
// P is 0, but 0 x NaN, the cache's poison, is NaN); K rows there only feed scores the
// causal mask overwrites with -inf.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "core/cuda_check.h"
#include "core/cuda_hopper.h"
#include "core/cuda_mma.cuh"
#include "core/cuda_tma.cuh"
#include "core/cuda_wgmma.cuh"
#include "cuda_prefill_attention.h"
#include "cuda_prefill_gather.cuh"
#include "cuda_prefill_wgmma_steps.cuh"
#include "kv/paged_kv_tensor_map.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter {
namespace {

using namespace wgmma_prefill;  // kD and the per-tile steps

// The kernel's shape, flash-attention 3's at head_dim 64: 128-key tiles (S is 64 registers a
// thread, P 32), three warpgroups of 64 query rows a CTA, one CTA an SM (168 registers a
// thread). 64-key tiles with two CTAs of two warpgroups an SM (S 32 registers, 128 a thread)
// measured 412-428 TFLOP/s against this shape's 449-467 (run 10h): half the tiles, half the
// per-tile work (waits, descriptors, copies, the max's shuffles) for the same softmax. The
// ring has 4 stages, a power of two (cheap t % kStages): tile kt + 3 is copied during
// iteration kt.
struct Shape {
  static constexpr int kKeys = 128;
  static constexpr int kLog2Keys = 7;
  static constexpr int kThreads = 3 * 128;
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kRows = 3 * 64;  // query rows per CTA
  static constexpr int kStages = 4;
  static constexpr uint32_t kTileBytes = kKeys * kD * 2;
  static constexpr uint32_t kQBytes = kRows * kD * 2;
  static constexpr uint32_t kRingBytes = kStages * 2 * kTileBytes;
  // + 1024: the dynamic shared window is only 16-byte aligned; Q and the tiles start at the
  // next 1024-byte boundary, the 2 x kStages mbarriers after the ring (153 KB in all).
  static constexpr size_t kSmemBytes = size_t(kQBytes) + kRingBytes + 2 * kStages * 8 + 1024;
  static_assert((1 << kLog2Keys) == kKeys && kWarps * 32 == kThreads, "shape");
};

#if defined(SINKROUTER_WGMMA_ENABLED)

// The ring: tile t uses stage t % kStages; its mbarriers' phase parity is (t / kStages) & 1.
// One shared address holds it all (registers are what limits the loop): stage 0's K tile, V
// one tile on, the "full" mbarriers after the ring, then the "empty" ones.
struct Ring {
  uint32_t kv0;
  __device__ uint32_t k_tile(int t) const { return kv0 + uint32_t(t % Shape::kStages) * 2 * Shape::kTileBytes; }
  __device__ uint32_t v_tile(int t) const { return k_tile(t) + Shape::kTileBytes; }
  __device__ uint32_t full(int t) const { return kv0 + Shape::kRingBytes + 8u * uint32_t(t % Shape::kStages); }
  __device__ uint32_t empty(int t) const { return full(t) + 8u * Shape::kStages; }
  __device__ static uint32_t parity(int t) { return uint32_t(t / Shape::kStages) & 1u; }
};

// Every warp's share of the copies of a tile: the tile is boxes of min(page_size, 128) rows
// (one page's part of the tile), each copied for K (copy 2 j) and for V (copy 2 j + 1) by
// one TMA instruction; warp w issues copies w, w + kWarps, ... that exist (page size 16:
// 16 copies, warps 0-3 two and the others one; 32: warps 0-7 one; 128 and more: warps 0
// and 1). Each
// warp arrives once a tile on the stage's "full" barrier announcing its copies' bytes
// (kWarps arrivals a phase), and before copying into a stage waits until every warp has
// released the tile that last used it (tile t - kStages: one tile of slack in the loop). Page
// ids are loaded a tile ahead; the page size is a template argument (shifts, folded). The
// copies of tile t are issued in the loop's iteration t - kStages + 1. Registers are what
// this must spare (167 of the 168 a thread that one CTA of 384 threads an SM allows).
template <int kPageShift>  // log2(page_size): 4 to 8
struct WarpCopies {
  // log2(box rows); K and V of each box; copies a warp, at most
  static constexpr int kBoxShift = kPageShift < Shape::kLog2Keys ? kPageShift : Shape::kLog2Keys;
  static constexpr int kCopies = 2 << (Shape::kLog2Keys - kBoxShift);
  static constexpr int kMine = (kCopies + Shape::kWarps - 1) / Shape::kWarps;
  static constexpr uint32_t kBoxBytes = uint32_t(kD * 2) << kBoxShift;

  int page[kMine];  // page ids of this warp's copies of the next tile (-1: none)

  // The page of copy c of tile t, or -1 (no such copy, or its box starts past the cache).
  __device__ static int page_of(const PrefillAttentionArgs& a, int t, int c) {
    const int key = t * Shape::kKeys + ((c >> 1) << kBoxShift);
    return c < kCopies && key < int(a.p0 + a.c) ? a.kv.indices[a.kv.indptr[0] + (key >> kPageShift)] : -1;
  }

  __device__ void start(const PrefillAttentionArgs& a, int warp) {
#pragma unroll
    for (int i = 0; i < kMine; ++i) page[i] = page_of(a, 0, warp + i * Shape::kWarps);
  }

  // This warp's copies of tile t (< num_tiles), then the page ids of its copies of t + 1.
  __device__ void copy(const CUtensorMap* map, const PrefillAttentionArgs& a, int h, int t, int num_tiles,
                       const Ring& ring, int warp, int lane) {
    int mine[kMine];
    uint32_t bytes = 0;
#pragma unroll
    for (int i = 0; i < kMine; ++i) {
      mine[i] = page[i];
      if (t + 1 < num_tiles) page[i] = page_of(a, t + 1, warp + i * Shape::kWarps);
      bytes += mine[i] >= 0 ? kBoxBytes : 0u;
    }
    if (bytes != 0 && t >= Shape::kStages) cuda::mbarrier_wait(ring.empty(t), Ring::parity(t) ^ 1u);
    if (lane == 0) {
      cuda::mbarrier_arrive_expect_tx(ring.full(t), bytes);
#pragma unroll
      for (int i = 0; i < kMine; ++i) {
        if (mine[i] < 0) continue;
        const int c = warp + i * Shape::kWarps, box = c >> 1, kv = c & 1;
        // (Pages of a tile's keys or fewer: each box starts its page.)
        const int in_page = kPageShift <= Shape::kLog2Keys ? 0 : (t * Shape::kKeys) & ((1 << kPageShift) - 1);
        cuda::tma_load_5d(ring.k_tile(t) + uint32_t(kv) * Shape::kTileBytes + uint32_t(box) * kBoxBytes, map,
                          ring.full(t), 0, h, in_page, kv, mine[i]);
      }
    }
    __syncwarp();
  }
};

// Zeroes rows first_row .. kKeys - 1 of the V tile at `v` (whole 128-byte rows: the swizzle
// only permutes chunks within a row), then makes the writes visible to wgmma.
__device__ __forceinline__ void zero_v_rows(uint32_t v, int first_row, int tid) {
  for (int i = first_row * 8 + tid; i < Shape::kKeys * 8; i += Shape::kThreads)
    asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(v + uint32_t(i) * 16u), "r"(0) : "memory");
  cuda::fence_proxy_async_shared();
  __syncthreads();
}

#endif  // SINKROUTER_WGMMA_ENABLED

// grid: (query tiles x n_head), 1-D, heaviest first; block: Shape::kThreads (three warpgroups).
//
// The loop is version 3's (cuda_prefill_wgmma.cu: S of tile kt + 1 and P V of tile kt issued
// together, the softmax of kt + 1 overlapping P V; every warpgroup takes every tile; the
// last tile peeled), with the ring's CTA barrier and cp.async gather replaced by a wait on
// tile kt + 1's "full" barrier, one arrival a warp on tile kt's "empty" barrier once its
// P V is done, and then the warp's copies of tile kt + 3 into the stage tile kt - 1 used.
// A warp waits there only if another has not finished tile kt - 1 yet: a whole tile of
// slack, where version 3's barrier held every warp at every tile. (A separate producer warp
// would make 13 warps a CTA: ~152 registers a thread, and the loop needs 167. With 64-key
// tiles, warp 0 as the only producer measured 286 TFLOP/s against version 3's 359, run 10a:
// its ~300 instructions of copies a tile held up its whole warpgroup.)
template <int kPageShift>
__global__ void __launch_bounds__(Shape::kThreads, 1)
    tma_prefill_kernel(const __grid_constant__ CUtensorMap kv_map, PrefillAttentionArgs a) {
#if defined(SINKROUTER_WGMMA_ENABLED)
  constexpr int kKeys = Shape::kKeys;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t base = (cuda::smem_addr(smem_raw) + 1023u) & ~1023u;
  const uint32_t qs = base;  // Q: [kRows][kD] bf16, swizzled
  const Ring ring{base + Shape::kQBytes};

  const CtaRows<Shape::kRows, kKeys> cta(a);
  const int qh = cta.qh, h = cta.h, num_tiles = cta.num_tiles, cta_pos0 = cta.pos0;
  const int64_t q0 = cta.q0;
  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t4 = lane % 4;
  const int pos0 = cta_pos0 + warp * 16;  // this warp's row r sits at pos0 + r

  WarpCopies<kPageShift> copies;
  if (tid == 0) {
    for (int t = 0; t < Shape::kStages; ++t) {
      cuda::mbarrier_init(ring.full(t), Shape::kWarps);   // one expect_tx arrival a warp
      cuda::mbarrier_init(ring.empty(t), Shape::kWarps);  // one release a warp
    }
    cuda::fence_mbarrier_init();
  }
  copy_query_rows<kD, Shape::kRows, Shape::kThreads>(
      a, q0, qh, tid, [&](int row, int chunk) { return qs + cuda::swizzle128_offset(row, chunk); });
  cuda::cp_async_commit_group();
  __syncthreads();  // the barriers are initialised
  copies.start(a, warp);
  for (int t = 0; t < Shape::kStages - 1 && t < num_tiles; ++t)
    copies.copy(&kv_map, a, h, t, num_tiles, ring, warp, lane);
  cuda::cp_async_wait_group<0>();
  cuda::fence_proxy_async_shared();
  __syncthreads();  // Q is in place

  uint32_t pa[kKeys / 4];  // P as A fragments
  float o[32];             // O accumulator (m64n64 f32 layout)
  float s[kKeys / 2];      // S accumulator, then P in fp32
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, alpha[2];
#pragma unroll
  for (int i = 0; i < 32; ++i) o[i] = 0.f;
  const float scale_log2 = a.scale * cuda::kLog2e;
  auto diagonal = [&](int kt) { return kt * kKeys + kKeys - 1 > cta_pos0; };

  const uint32_t qw = qs + uint32_t(warp / 4) * 64 * kD * 2;  // this warpgroup's Q rows
  cuda::mbarrier_wait(ring.full(0), 0);
  issue_scores(s, qw, ring.k_tile(0));
  cuda::wgmma_wait_group<0>();
  cuda::wgmma_fence_operands(s);
  online_softmax(s, m, l, alpha, diagonal(0), 0, pos0, g, t4, scale_log2);
  to_p_fragments(s, pa);
  // Iteration kt: tile kt + 1's scores and tile kt's P V (version 3's order), then this
  // warp's release of tile kt and its copies of tile kt + 3. Tiles before first_diagonal lie
  // wholly before the CTA's first row: their loop has no mask code.
  auto iteration = [&](int kt, auto may_mask) {
    cuda::mbarrier_wait(ring.full(kt + 1), Ring::parity(kt + 1));
    issue_scores(s, qw, ring.k_tile(kt + 1));
    issue_pv(o, pa, ring.v_tile(kt));
    cuda::wgmma_wait_group<1>();  // S of tile kt + 1 is done; P V runs on
    cuda::wgmma_fence_operands(s);
    online_softmax<decltype(may_mask)::value>(s, m, l, alpha, diagonal(kt + 1), (kt + 1) * kKeys, pos0, g, t4,
                                              scale_log2);
    cuda::wgmma_fence_operands(s);  // the softmax stays before the wait: it is what overlaps P V
    cuda::wgmma_wait_group<0>();
    cuda::wgmma_fence_operands(o);
    cuda::wgmma_fence_operands(pa);
    cuda::mbarrier_arrive_if(ring.empty(kt), lane == 0);  // this warp is done with tile kt
    rescale_o(o, alpha);
    to_p_fragments(s, pa);
    if (kt + Shape::kStages - 1 < num_tiles)
      copies.copy(&kv_map, a, h, kt + Shape::kStages - 1, num_tiles, ring, warp, lane);
  };
  const int first_diagonal = min((cta_pos0 + 1) / kKeys, num_tiles);  // the first tile diagonal() is true for
  int kt = 0;
  for (; kt + 1 < first_diagonal; ++kt) iteration(kt, std::false_type{});
  for (; kt + 1 < num_tiles; ++kt) iteration(kt, std::true_type{});
  const int last = num_tiles - 1;
  const int n32 = int(a.p0 + a.c);
  if (last * kKeys + kKeys > n32) zero_v_rows(ring.v_tile(last), n32 - last * kKeys, tid);  // CTA-uniform
  finish_rows(a, o, pa, ring.v_tile(last), l, m, q0, warp, qh, lane);
#else
  __trap();  // never launched: prefill_attention_tma_supported() checks the build's arch
#endif
}

bool tma_kernel_runs_here() {
  static const bool runs =
      cuda::sm90a_code_runs_here(reinterpret_cast<const void*>(tma_prefill_kernel<4>)) &&
      cuda::tensor_map_encoder() != nullptr;
  return runs;
}

// Page sizes whose boxes tile a 128-key tile at 1024-byte-aligned (swizzle-atom) offsets in
// at most 16 copies (two a warp), found by shifts: 16, 32, 64, 128, 256.
bool page_size_fits(int page_size) {
  return page_size >= 16 && page_size <= 256 && (page_size & (page_size - 1)) == 0;
}

template <int kPageShift>
void launch_tma(const CUtensorMap& map, const PrefillAttentionArgs& a, cudaStream_t stream) {
  const int64_t blocks = (a.c + Shape::kRows - 1) / Shape::kRows * a.n_head;
  SR_CHECK(blocks < (int64_t(1) << 31), "prefill attention (CUDA): chunk of {} rows is too long", a.c);
  SR_CUDA_CHECK(cudaFuncSetAttribute(tma_prefill_kernel<kPageShift>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     int(Shape::kSmemBytes)));
  tma_prefill_kernel<kPageShift><<<unsigned(blocks), Shape::kThreads, Shape::kSmemBytes, stream>>>(map, a);
  SR_CUDA_CHECK_LAUNCH("tma_prefill_kernel");
}

void launch_tma(const PrefillAttentionArgs& a, cudaStream_t stream) {
  // Boxes of min(page_size, 128) rows of K or V (header comment); L2 promotion 256 bytes.
  const CUtensorMap map = cuda::paged_kv_tensor_map(a.kv, std::min(a.kv.page_size, Shape::kKeys), 1, 256,
                                                    "prefill attention (CUDA)");
  switch (a.kv.page_size) {
    case 16: return launch_tma<4>(map, a, stream);
    case 32: return launch_tma<5>(map, a, stream);
    case 64: return launch_tma<6>(map, a, stream);
    case 128: return launch_tma<7>(map, a, stream);
    default: return launch_tma<8>(map, a, stream);  // 256 (page_size_fits)
  }
}

}  // namespace

namespace detail {

bool prefill_attention_tma_supported(const PrefillAttentionArgs& a) {
  return a.kv.head_dim == kD && page_size_fits(a.kv.page_size) && tma_kernel_runs_here();
}

void prefill_attention_tma(const PrefillAttentionArgs& a, cudaStream_t stream) {
  SR_CHECK(a.kv.head_dim == kD, "prefill attention (CUDA): the tma kernel takes head_dim 64, not {} (use flash2)",
           a.kv.head_dim);
  SR_CHECK(page_size_fits(a.kv.page_size),
           "prefill attention (CUDA): the tma kernel takes page sizes 16, 32, 64, 128 and 256, not {} "
           "(use wgmma)",
           a.kv.page_size);
  SR_CHECK(tma_kernel_runs_here(),
           "prefill attention (CUDA): the tma kernel needs an sm_90 device, a build with sm_90a and a driver with "
           "cuTensorMapEncodeTiled (use flash2)");
  SR_CHECK(a.p0 + a.c + 128 < (int64_t(1) << 31), "prefill attention (CUDA): {} tokens exceed 2^31", a.p0 + a.c);
  launch_tma(a, stream);
}

}  // namespace detail

}  // namespace sinkrouter
