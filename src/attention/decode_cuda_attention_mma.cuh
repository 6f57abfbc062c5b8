// The tensor-core Split-K decode attention kernel (dense and routed) for GQA groups of
// up to 4 query heads. Its host side (occupancy, launch, the entry points) is
// decode_cuda_attention_mma_host.cuh, which the generated files decode_cuda_attn_*.cu include.
//
// Why tensor cores in a bandwidth-bound kernel: on CUDA cores every K/V byte costs
// about five instructions (widening, FMAs, the shuffles that finish each score), which
// capped v1 at ~63 % of the read bandwidth. Here a warp spends ~200 instructions on
// 16 tokens (8 KB of K and V at head_dim 128): 32 mma.sync, 16 ldmatrix, the softmax.
//
// Layout. Each of the CTA's W warps (4; the wide CTAs' kWideWarps: decode_cuda_mma_tiles.cuh)
// owns a private ring of 3 shared-memory stages of 16 tokens (K rows then V rows, 16-byte
// chunks XOR-swizzled by row so that ldmatrix reads are conflict-free), fills it with cp.async
// or TMA and reads it with ldmatrix: no CTA barrier in the main loop. A CTA stage is 16 W
// tokens, warp w taking tokens [16w, 16w + 16).
//
// Two ways to fill the rings (template argument TMA):
//   cp.async: every lane copies 16-byte chunks of the rows it owns, the page id of each
//     row looked up by its lane; a stage is [K rows][V rows] of D * 2 bytes, 16-byte chunk c
//     of row r at unit r * D / 8 + (c ^ r % 8). Dense and routed, every page size.
//   TMA (page and routing-block sizes multiples of 16, sm_90): lane 0 of the warp issues one
//     cp.async.bulk.tensor per 64-dimension part of the head (kv/paged_kv_tensor_map.h), K
//     and V together, and the stage's mbarrier counts its bytes; a stage is
//     [D / 64 parts][K, V][16 rows][128 bytes] in the 128-byte swizzle (the same unit formula
//     with rows of 128 bytes). The split bounds are rounded down to multiples of 16 so that
//     a warp stage never crosses a page. No per-lane address work and far fewer memory
//     instructions: one request a 4 KB box, not 256 of 16 bytes. Routed, the anchors read
//     alone are single tokens: their stages (before RoutedMap::block_start, which pads them
//     to 16) are copied by cp.async into the same layout, and lane 0 arrives on the slot's
//     mbarrier without bytes so that every slot's phases stay in step.
//
// Schedule. The flat Split-K work list (find_split, finish_split: decode_cuda_split.cuh), or,
// dense with AttnArgs::cluster, thread-block clusters, AttnArgs::cluster_groups a unit
// (cluster_unit, cluster_combine: decode_cuda_cluster.cuh). The flat list's CTA takes
// [v0, v1) of its unit's tokens, a warp taking every kWarps-th 16-token stage of it; in cluster
// mode (not DYN) the unit's CTAs take its CTA stages in turn (see the prologue); in the DYN
// instance where the unit's splits are long (AttnArgs::claims), the unit's tokens are chunks
// (AttnArgs::claim_stages stages) that the unit's warps claim (ClaimedChunks,
// decode_cuda_claims.cuh).
//
// Precision. mma.sync takes 16-bit operands, but q (and the probabilities p) are float:
// each is split into three 16-bit parts, x = hi + mid + lo (about 24 bits, float's
// precision). With at most 4 heads the 16 rows of the m16n8k16 A operand hold them all:
//   row g      : hi(q_g)        (lanes 0..15 own rows 0..3 and 8..11 of C,
//   row g + 8  : mid(q_g)        lanes 16..31 rows 4..7 and 12..15)
//   row g + 4  : lo(q_g)
//   row g + 12 : zero
// so a lane adds its two rows and the row of lane ^ 16 to get the full score of head
// (lane / 4) % 4 for tokens 2 (lane % 4) + {0, 1} (+ 8): every lane holds finished
// scores, no reduction over dimensions. P * V uses the same row split for p, straight
// from the score fragments (the C fragment of S is the A fragment of P). For fp16 the
// parts are scaled by powers of two first so that the low parts stay normal.
#pragma once

#include <cstdint>
#include <type_traits>

#include "core/cuda_check.h"
#include "core/cuda_dtype.cuh"
#include "core/cuda_hopper.h"
#include "core/cuda_launch.cuh"
#include "core/cuda_mma.cuh"
#include "core/cuda_tma.cuh"
#include "decode_cuda_claims.cuh"
#include "decode_cuda_cluster.cuh"
#include "decode_cuda_kernels.cuh"
#include "decode_cuda_mma_tiles.cuh"
#include "decode_cuda_split.cuh"

namespace sinkrouter::cuda {

// kv_map: the paged cache as a TMA tensor, boxes of 16 rows x (K, V) (read when TMA only).
// GROUPS (dense cluster mode with AttnArgs::cluster_groups > 1 only): the instance that has
// the second merge over clusters. It is a kernel of its own so that the others do not carry
// its code: inline in every dense kernel it made the small calls ~0.3 us slower (kernel runs
// 16a-16b, Llama B=1 4K; at head dim 64, 209 registers against 197 and 17 KB more code).
// DYN (with AttnArgs::claims only, dense or routed): the instance with dynamic splits, for the same reason.
// W: warps a CTA (MmaShape; dense cluster mode with AttnArgs::wide: kWideWarps).
template <int D, typename Tag, bool ROUTED, bool TMA, bool GROUPS = false, bool DYN = false, int W = 4>
__global__ void __launch_bounds__(MmaShape<D, W>::kThreads, MmaShape<D, W>::kMinCtasPerSm)
    attention_mma_kernel(const AttnArgs a, const __grid_constant__ CUtensorMap kv_map) {
  using S = MmaShape<D, W>;
  constexpr int CH = S::kChunks, NS = S::kStages, KT = D / 16, NT = D / 8;
  constexpr bool kF16 = std::is_same_v<Tag, F16Tag>;
  // fp16 probabilities are split after scaling by 2^14 (< 65504), so that their low parts
  // stay normal; the accumulators carry the factor until the end.
  constexpr float kPScale = kF16 ? 16384.f : 1.f;
  extern __shared__ __align__(128) unsigned char smem_raw[];

#if !(defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900)
  if constexpr (TMA) __trap();  // never launched: the plan checks that the sm_90a code runs
#endif
  // Cluster mode with fixed splits (not DYN; routed over the routed token list, whose length
  // comes with the routing pass's output): the unit's splits take its CTA stages
  // in turn, stage st of split s starting at token (st * splits + s) * kStageRows, so where a
  // CTA's stages lie does not depend on the length. Where the page tables are fixed
  // (AttnArgs::early_page_ids > 0) the page list's start and the page ids of the first ring
  // stages are loaded before the PDL wait, while the kernel before still runs; with TMA and
  // early_page_ids 2 the first copies then go out right after the wait, before the length has
  // arrived (stages that turn out to lie past it are waited for after the loop and not read).
  // Elsewhere a split is [v0, v1), contiguous: the flat list's, and the DYN instance's where its
  // splits are short.
  warm_params(a);
  const bool interleaved = !DYN && a.cluster > 0;
  const bool early = interleaved && !ROUTED && a.early_page_ids > 0;  // (routed: pages follow the kept list)
  const bool early_copies = TMA && early && a.early_page_ids == 2;
  // Cluster mode's code: dense, and routed with static splits (CudaDecodeOptions::routed_cluster).
  constexpr bool kClusterable = !(ROUTED && DYN) && !(ROUTED && GROUPS);
  const int H = a.kv.num_kv_heads, G = a.group;
  const int tid = int(threadIdx.x), warp = tid >> 5, lane = tid & 31;
  const FastDiv page_div(a.kv.page_size);
  const int P = a.kv.page_size;
  // Dense TMA: the warp stage's first row, for all lanes (lane 0 copies the stage); otherwise
  // lane l (and l ^ 16) owns row l % 16 of each warp stage.
  const int my_row = TMA && !ROUTED ? 0 : lane & 15;
  struct PageRef {
    int page, slot;
    bool valid;
    bool anchor = false;  // routed, dynamic splits: the stage holds anchors read alone (LazyPos::anchor)
  };
  // ---- shared memory: this warp's ring of stages and, with TMA, its mbarriers (before the
  // wait: shared memory only; before the early loads, which the fence would wait for) ----
  const unsigned smem_base = static_cast<unsigned>(__cvta_generic_to_shared(smem_raw));
  const unsigned ring_base =
      (TMA ? (smem_base + 1023u) & ~1023u : smem_base) + unsigned(warp) * NS * S::kStageBytes;
  const unsigned bar_base = smem_base + S::kTmaBarrierOffset + unsigned(warp) * NS * 8;
  if constexpr (TMA) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (lane == 0) {
#pragma unroll
      for (int i = 0; i < NS; ++i) mbarrier_init(bar_base + 8 * i, 1);
      fence_mbarrier_init();
    }
    __syncwarp();
#endif
  }
  int unit = 0, split = 0, splits = 1;
  int b = 0, h = 0;  // the unit's sequence and KV head, once the unit is known
  if (kClusterable && a.cluster > 0) {  // (before the wait: two integer divisions off the critical path)
    cluster_unit<GROUPS>(a, int(blockIdx.x), &unit, &split, &splits);
    b = unit / a.head_chunks / H;
    h = unit / a.head_chunks % H;
  }
  int32_t page_start = 0;  // kv.indptr of the unit's sequence
  PageRef page_early[NS];  // early: the first NS stages' pages, valid where within the page list
#pragma unroll
  for (int st = 0; st < NS; ++st) page_early[st] = PageRef{0, 0, false};
  const int64_t stage_stride = interleaved ? int64_t(splits) * S::kStageRows : S::kStageRows;
  if (early) {  // constant data only: the page tables (no kernel writes them, DeviceKV::tables_fixed)
    page_start = a.kv.indptr[b];
    const int pages = a.kv.indptr[b + 1] - page_start;
#pragma unroll
    for (int st = 0; st < NS; ++st) {
      const int pos = int(int64_t(split) * S::kStageRows + st * stage_stride + warp * S::kWarpRows + my_row);
      const int pg = int(page_div.div(uint32_t(pos)));
      page_early[st] = PageRef{pg < pages ? a.kv.indices[page_start + pg] : 0, pos - pg * P, pg < pages};
    }
  }
  pdl_wait();  // every other input (q, the cache, the lengths) is the kernels before's output
  pdl_launch_dependents();
  trace_phase(a, kPhaseStartNs);
  trace_phase(a, kPhaseEntry);

  // TMA: lane 0 copies a warp stage (every 64-dimension part of the head, K and V) into ring
  // slot `slot` and announces its bytes on the slot's mbarrier.
  auto tma_copy = [&](int slot, const PageRef& r) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (lane == 0 && r.valid) {
      const unsigned dst = ring_base + unsigned(slot) * S::kStageBytes, bar = bar_base + 8 * slot;
      mbarrier_arrive_expect_tx(bar, S::kStageBytes);
#pragma unroll
      for (int part = 0; part < D / 64; ++part)
        tma_load_5d(dst + part * S::kTmaPartBytes, &kv_map, bar, 0, h * (D / 64) + part, r.slot, 0, r.page);
    }
#endif
  };
  const int g = (lane >> 2) & 3;  // head of this lane's score and output rows
  const bool upper = lane >= 16;  // rows 4..7 and 12..15: the low parts
  const int tq = lane & 3;        // column pair within a fragment
  // Raw q words of q[g][16kk + 2tq + {0, 1, 8, 9}] of sequence qb, KV head qh, loaded
  // unconditionally (head 0's row stands in for g >= G) so that all are in flight at once.
  // 16-bit q: words 0 and 1 hold elements {0, 1} and {8, 9}; float: one element per word.
  uint32_t qraw[KT][4];
  auto load_q = [&](int qb, int qh) {
    const int64_t qrow = (int64_t(qb) * a.num_q_heads + int64_t(qh) * G + (g < G ? g : 0)) * D;
    if (a.q_dtype == DType::F32) {
      const uint2* p = reinterpret_cast<const uint2*>(static_cast<const float*>(a.q) + qrow);
#pragma unroll
      for (int kk = 0; kk < KT; ++kk) {
        const uint2 x = p[8 * kk + tq], y = p[8 * kk + tq + 4];
        qraw[kk][0] = x.x, qraw[kk][1] = x.y, qraw[kk][2] = y.x, qraw[kk][3] = y.y;
      }
    } else {
      const uint32_t* p = reinterpret_cast<const uint32_t*>(static_cast<const uint16_t*>(a.q) + qrow);
#pragma unroll
      for (int kk = 0; kk < KT; ++kk) {
        qraw[kk][0] = p[8 * kk + tq], qraw[kk][1] = p[8 * kk + tq + 4];
        qraw[kk][2] = qraw[kk][3] = 0u;
      }
    }
  };
  // The prologue in the order of its round trips. Cluster mode: the length, q and (unless
  // early) the page list's start together, then the first copies (early_copies: at once). The
  // flat list: find_split's loads, then q, then the first stages' page ids, then the first
  // copies. q's split into 16-bit parts runs while the copies are in flight.
  int64_t T;  // the unit's tokens
  const int cta = flat_cta(a);  // (the flat list's; cluster mode: unused)
  if (kClusterable && a.cluster > 0) {
    T = ROUTED ? a.routed_tokens[b * H + h] : a.seq_lens[b];  // routed: anchors (padded), kept blocks, window
    if (!early) page_start = a.kv.indptr[b];  // (a load beside the length's)
    load_q(b, h);
    if (early_copies) {  // the first stages' copies, while the length is on its way
#pragma unroll
      for (int st = 0; st < NS - 1; ++st) tma_copy(st, page_early[st]);
    }
    combine_barrier_init<D, ROUTED>(a, split);  // (before the arrival: the peers' stores count on it)
    cluster_arrive_relaxed();  // "started": the peers wait for it before their first store here
  } else if (!find_split<ROUTED, S::kThreads>(a, cta, &unit, &split, &splits, &T, &page_start)) {
    trace_end(a, 0);
    return;
  }
  trace_phase(a, kPhaseSplitFound);
  if (!kClusterable || a.cluster == 0) {  // (cluster mode: known before the wait)
    b = unit / a.head_chunks / H;
    h = unit / a.head_chunks % H;
    load_q(b, h);
  }
  const int bh = b * H + h;
  // Dynamic splits where the unit's splits are long (the same choice in all its CTAs).
  const bool dyn = DYN && T >= int64_t(splits) * a.claim_min_split_tokens;
  int64_t v0 = dyn ? 0 : T * split / splits, v1 = dyn ? T : T * (split + 1) / splits;
  if (interleaved) {  // the CTA's first stage; its last lies before the unit's end
    v0 = int64_t(split) * S::kStageRows;
    v1 = T;
  } else if (TMA && !dyn) {  // on multiples of 16, so that no warp stage crosses a page (neighbours agree)
    v0 &= ~int64_t(15);
    v1 = split + 1 == splits ? T : v1 & ~int64_t(15);
  }
  trace_value(a, kPhaseTokens, dyn || interleaved ? T / splits : v1 - v0);
  // Stages this warp reads: all of the CTA's for cp.async (rows past v1 are zero-filled);
  // with TMA only those where it has a row before v1 (its copies and waits match). Dynamic:
  // not known yet; pos_of sets it at the warp's first stage past its chunks or the unit.
  const int64_t warp_v0 = v0 + warp * S::kWarpRows;
  auto stages_before = [&](int64_t first) {  // stages st with first + st * stage_stride < v1
    return v1 > first ? int((v1 - first + stage_stride - 1) / stage_stride) : 0;
  };
  int n_stages = dyn ? INT32_MAX : stages_before(TMA ? warp_v0 : v0);
  ClaimedChunks claimed{};
  static_assert(NS + 1 < kMinClaimStages, "the copies stay within the read side's chunk or the next");
  if (dyn) {
    const int first = warp * splits + split;
    const int64_t chunk_tokens = int64_t(a.claim_stages) * 16;
    claimed = ClaimedChunks{a.claims + unit, a.claim_stages, S::kWarps * splits,
                            int((T + chunk_tokens - 1) / chunk_tokens), first, 0, first, 0, 0};
    if (first < claimed.chunks) claimed.claim_next(lane);
  }

  const int32_t* page_table = a.kv.indices + page_start;
  // ---- addresses: lane l (and l ^ 16) owns row l % 16 of each warp stage ----
  // A row is named by its index in the page pool (page * 2P + slot: K rows; V rows are
  // P further). That index fits in 32 bits: 2^31 token rows of even one 64-dim head would
  // be 549 GB of K and V.
  const uint32_t row_bytes = uint32_t(H) * D * 2;  // one token row of all KV heads
  RoutedMap map{nullptr, nullptr, 0, 0, 0, 0, FastDiv(a.kv.block_size)};
  if (ROUTED) map = RoutedMap::make<TMA>(a, bh);
  constexpr uint32_t kNoRow = 0xffffffffu;
  // A stage's row for this lane in three steps, each one's load consumed a step later
  // (LazyPos): its position (routed: loads an anchor or block id), its page id (loads the
  // page table), its pool row (arithmetic only).
  // Called for st = 0, 1, 2, ... in order (dynamic splits step the claimed chunks with it).
  auto pos_of = [&](int st) -> LazyPos {
    if (DYN && dyn) {
      const int64_t s0 = claimed.next_ahead(lane);
      if (s0 < 0 || s0 >= T) {
        n_stages = st < n_stages ? st : n_stages;
        return LazyPos{0, 0, 0, false};
      }
      const int64_t v = s0 + my_row;
      if (!ROUTED) return LazyPos{0, 0, int(v), v < T};
      // Routed: the stage's start (uniform in the warp) says whether it holds anchors read
      // alone; block_start and s0 are multiples of 16 where that matters (TMA).
      LazyPos p = v < T ? map.lazy(int(v)) : LazyPos{0, 0, 0, false};
      p.anchor = s0 < map.block_start;
      return p;
    }
    const int64_t v = warp_v0 + int64_t(st) * stage_stride + my_row;
    if (st >= n_stages || v >= v1) return LazyPos{0, 0, 0, false};
    if (ROUTED) return map.lazy(int(v));
    return LazyPos{0, 0, int(v), true};
  };
  auto page_of = [&](const LazyPos& p) -> PageRef {
    PageRef r{0, 0, p.valid, p.anchor};
    if (p.valid) {
      const int pos = p.value();
      const int pg = int(page_div.div(uint32_t(pos)));
      r.page = page_table[pg];
      r.slot = pos - pg * P;
    }
    return r;
  };
  // Pool row of the K row (page * 2P + slot; V rows are P further), or kNoRow.
  auto row_of = [&](const PageRef& r) -> uint32_t {
    return r.valid ? uint32_t(r.page) * uint32_t(2 * P) + uint32_t(r.slot) : kNoRow;
  };

  // This lane's chunk of every row it copies: source bytes (K; V is + vbytes) and the
  // swizzled destination (chunk c of row r lands at 16-byte unit r * CH + (c ^ (r % 8))).
  const int chunk = lane % CH;
  const char* src_base =
      reinterpret_cast<const char*>(a.kv.pages) + (int64_t(h) * D + chunk * 8) * 2;
  const int64_t vbytes = a.kv.v_stride() * 2;
  // With TMA (routed anchors) the destination is the TMA layout: part chunk / 8, row r, unit
  // (chunk % 8) ^ (r % 8) of its 128 bytes.
  constexpr int kVOffset = TMA ? S::kTmaVOffset : S::kSlot16 / 2 * 16;  // V's rows after K's
  uint32_t dst_off[S::kPasses];
#pragma unroll
  for (int i = 0; i < S::kPasses; ++i) {
    const int r = lane / CH + S::kRowsPerPass * i;
    dst_off[i] = TMA ? uint32_t((chunk / 8) * S::kTmaPartBytes + r * 128 + ((chunk % 8) ^ (r & 7)) * 16)
                     : uint32_t(r * CH + (chunk ^ (r & 7))) * 16;
  }
  const int l2_prefetch = a.kv_l2_prefetch;  // the plan's L2 prefetch size for K / V copies
  auto issue = [&](int slot, uint32_t krow) {  // cp.async
    const unsigned dst = ring_base + unsigned(slot) * S::kStageBytes;
#pragma unroll
    for (int i = 0; i < S::kPasses; ++i) {
      const uint32_t kr = __shfl_sync(0xffffffffu, krow, lane / CH + S::kRowsPerPass * i);
      const bool valid = kr != kNoRow;
      const char* src = src_base + uint64_t(valid ? kr : 0u) * row_bytes;
      cp_async16_to(dst + dst_off[i], src, valid, l2_prefetch);
      cp_async16_to(dst + kVOffset + dst_off[i], src + vbytes, valid, l2_prefetch);
    }
  };
  // Routed: whether stage st, whose copies hold page r, holds anchors read alone (copied by
  // cp.async), uniform in the warp: from the stage's first token (dynamic splits: the claimed
  // chunk's, carried by r).
  auto anchor_stage = [&](int st, const PageRef& r) {
    if (DYN && dyn) return ROUTED && r.anchor;
    return ROUTED && warp_v0 + int64_t(st) * stage_stride < map.block_start;
  };
  // TMA: lane 0 copies a stage; only stages with rows are ever issued (early: see the prologue).
  auto issue_tma = [&](int st, int slot, const PageRef& r) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (anchor_stage(st, r)) {
      if (st >= n_stages) return;
      issue(slot, row_of(r));
      cp_async_commit_group();
      if (lane == 0) mbarrier_arrive_expect_tx(bar_base + 8 * slot, 0);  // the phase, without bytes
      return;
    }
    tma_copy(slot, r);
#endif
  };
  // ldmatrix row addresses within a slot. K, k-step kk: matrices (tokens 0-7, chunk 2kk),
  // (0-7, 2kk+1), (8-15, 2kk), (8-15, 2kk+1); V, n-tile pair np: (0-7, 2np), (8-15, 2np),
  // (0-7, 2np+1), (8-15, 2np+1). With x = lane % 8 (= token % 8), chunk 2k+c lands at
  // 2 (k ^ (x / 2)) + (c ^ (x % 2)): for k = 4 k1 + k0 that is 128 k1 bytes past the
  // address for k0, so four offsets per operand serve every k.
  constexpr int kRowPitch = TMA ? 128 : CH * 16;            // bytes between a stage's rows
  constexpr int kPartPitch = TMA ? S::kTmaPartBytes : 128;  // between 64-dimension parts of a row
  uint32_t kmat[4], vmat[4];
  {
    const int x = lane & 7;
    const int ktok = x + ((lane >> 4) << 3), kc = (lane >> 3) & 1;
    const int vtok = x + (((lane >> 3) & 1) << 3), vc = lane >> 4;
#pragma unroll
    for (int k0 = 0; k0 < 4; ++k0) {
      kmat[k0] = uint32_t(ktok * kRowPitch + (2 * (k0 ^ (x >> 1)) + (kc ^ (x & 1))) * 16);
      vmat[k0] = uint32_t(kVOffset + vtok * kRowPitch + (2 * (k0 ^ (x >> 1)) + (vc ^ (x & 1))) * 16);
    }
  }

  float o[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int i = 0; i < 4; ++i) o[nt][i] = 0.f;
  float m_run = -INFINITY, l_run = 0.f;

  // Pipeline: NS - 1 stages in flight. The page ids of the first NS stages are loaded
  // together before any copy is issued (a cp.async, an asm with a memory clobber, keeps
  // the compiler from moving a load past it: interleaved, they were NS - 1 round trips
  // one after another). In the loop the page id of a stage is loaded one iteration before
  // its copies are issued (routed: its position one iteration before that).
  LazyPos pos_first[NS + 1];
#pragma unroll
  for (int st = 0; st <= NS; ++st) pos_first[st] = pos_of(st);
  PageRef page_first[NS];
#pragma unroll
  for (int st = 0; st < NS; ++st) {
    if (early) {  // loaded before the wait; now also within the split
      page_first[st] = page_early[st];
      page_first[st].valid = page_early[st].valid && pos_first[st].valid;
    } else {
      page_first[st] = page_of(pos_first[st]);
    }
  }
#pragma unroll
  for (int st = 0; st < NS - 1; ++st) {
    if constexpr (TMA) {
      if (!early_copies) issue_tma(st, st, page_first[st]);  // invalid past n_stages: not issued
    } else {
      if (st < n_stages) issue(st, row_of(page_first[st]));
      cp_async_commit_group();
    }
  }
  trace_phase(a, kPhaseIssued);
  PageRef page_next = page_first[NS - 1];
  LazyPos pos_next = pos_first[NS];

  // ---- q fragments: lane holds q[g][16kk + 2tq + {0, 1, 8, 9}] * scale, split ----
  uint32_t qa[KT][4];
  const float qs_inv = q_fragments<Tag, KT>(qraw, a.q_dtype, a.q_scale, g < G, upper, qa);
  trace_phase(a, kPhaseQReady);

  int fill = NS - 1, read = 0;  // ring slots of the next stage issued and read
  for (int t = 0; t < n_stages; ++t) {
    if constexpr (TMA) {
      issue_tma(t + NS - 1, fill, page_next);  // page id loaded an iteration ago; invalid past n_stages
    } else {
      const uint32_t krow = row_of(page_next);  // page id loaded an iteration ago
      if (t + NS - 1 < n_stages) issue(fill, krow);
      cp_async_commit_group();
    }
    fill = fill == NS - 1 ? 0 : fill + 1;
    page_next = page_of(pos_next);  // position loaded an iteration ago; its page id now
    pos_next = pos_of(t + NS + 1);
    // The first token of stage t (dynamic: of the chunk the read side is in).
    const int64_t stage_v0 = DYN && dyn ? claimed.next_read() : warp_v0 + int64_t(t) * stage_stride;
    const unsigned slot = ring_base + unsigned(read) * S::kStageBytes;
    if constexpr (TMA) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
      // Routed: stage t holds anchors read alone (anchor_stage's test, from its first token).
      const bool anchors_alone = ROUTED && stage_v0 < map.block_start;
      mbarrier_wait(bar_base + 8 * read, unsigned(t / NS) & 1u);  // stage t's bytes have landed
      if (anchors_alone) cp_async_wait_group<0>();  // anchors: this lane's copies have landed
      // Rows at or past the cache's end hold anything at all (NaN included): their scores
      // are masked below, and their V rows are zeroed here (0 x NaN would be NaN in P V).
      if (stage_v0 + S::kWarpRows > T && !anchors_alone) {  // (anchor stages: zero-filled by cp.async)
        const int first = int(T - stage_v0);  // >= 1: the stage has a row before v1 <= T
        for (int i = lane; i < (S::kWarpRows - first) * 8 * (D / 64); i += 32) {
          const int r = first + i / (8 * (D / 64)), part = i / 8 % (D / 64), c = i % 8;
          const unsigned at = slot + unsigned(part * S::kTmaPartBytes + S::kTmaVOffset + r * 128 + c * 16);
          asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(at), "r"(0u) : "memory");
        }
      }
#endif
    } else {
      cp_async_wait_group<NS - 1>();  // this lane's copies of stage t have landed
    }
    __syncwarp();  // ... and every other lane's (cp.async), or the zeroed rows (TMA)
    read = read == NS - 1 ? 0 : read + 1;
    // S = Q K^T for the 16 tokens: two n-tiles of 8 tokens.
    float c[2][4];
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) c[n][i] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KT; ++kk) {
      uint32_t kb[4];
      ldmatrix_x4(kb, slot + kmat[kk & 3] + (kk >> 2) * kPartPitch);
      mma16816(c[0], qa[kk], kb[0], kb[1], Tag{});
      mma16816(c[1], qa[kk], kb[2], kb[3], Tag{});
    }
    // Finished scores of head g, tokens 8n + 2tq + e; masked past the split and, routed, in
    // the padding after the anchors (virtual rows pad_lo .. pad_hi - 1 of this stage).
    const int64_t left = v1 - stage_v0;
    const int nvalid = left < S::kWarpRows ? int(left) : S::kWarpRows;  // may be <= 0
    const int64_t pad_lo = ROUTED ? map.num_anchors - stage_v0 : 0, pad_hi = ROUTED ? map.block_start - stage_v0 : 0;
    float s[2][2];
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float x = c[n][e] + c[n][e + 2];
        x += __shfl_xor_sync(0xffffffffu, x, 16);
        if (kF16) x *= qs_inv;
        const int col = 8 * n + 2 * tq + e;
        s[n][e] = col < nvalid && (col < pad_lo || col >= pad_hi) ? x : -INFINITY;
      }
    // Online softmax (base 2); the quad of lanes 4r..4r+3 shares a head.
    float mt = fmaxf(fmaxf(s[0][0], s[0][1]), fmaxf(s[1][0], s[1][1]));
    mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
    mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 2));
    const float mn = fmaxf(m_run, mt);
    const float mu = mn == -INFINITY ? 0.f : mn;  // nothing valid yet: keep everything 0
    const float alpha = fast_exp2(m_run - mu);
    float p[2][2], ps = 0.f;
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        p[n][e] = fast_exp2(s[n][e] - mu);
        ps += p[n][e];
      }
    l_run = l_run * alpha + ps;
    m_run = mn;
    if (__any_sync(0xffffffffu, alpha != 1.f)) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) o[nt][i] *= alpha;
    }
    // P as the A operand: the rows of the q split, tokens as k.
    uint32_t pa[4];
#pragma unroll
    for (int n = 0; n < 2; ++n) {
      uint32_t hp, mp, lp;
      split3x2<Tag>(p[n][0] * kPScale, p[n][1] * kPScale, hp, mp, lp);
      pa[2 * n] = upper ? lp : hp;
      pa[2 * n + 1] = upper ? 0u : mp;
    }
    // O += P V: V rows are k, dimensions n; pairs of n-tiles per ldmatrix.
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t vr[4];
      ldmatrix_x4_trans(vr, slot + vmat[np & 3] + (np >> 2) * kPartPitch);
      mma16816(o[2 * np], pa, vr[0], vr[1], Tag{});
      mma16816(o[2 * np + 1], pa, vr[2], vr[3], Tag{});
    }
    __syncwarp();  // every lane is done with this slot before it is refilled
  }
  if constexpr (!TMA) cp_async_wait_group<0>();
  if constexpr (TMA) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (early_copies) {  // copies issued before the length was known, of stages past it: landed, unread
#pragma unroll
      for (int st = 0; st < NS - 1; ++st)
        if (st >= n_stages && page_early[st].valid) mbarrier_wait(bar_base + 8 * st, 0u);
    }
#endif
  }
  trace_phase(a, kPhaseLoopDone);

  // ---- warp states -> shared memory: [warp][head][D] acc, then m, l ----
  l_run += __shfl_xor_sync(0xffffffffu, l_run, 1);  // lanes 16..31 hold copies of 0..15
  l_run += __shfl_xor_sync(0xffffffffu, l_run, 2);
  __syncthreads();  // the rings are reused below
  float* wst = reinterpret_cast<float*>(smem_raw);
  float* mine = wst + (warp * S::kHeads + g) * (D + 2);
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float x = o[nt][e] + o[nt][e + 2];
      x += __shfl_xor_sync(0xffffffffu, x, 16);
      if (!upper) mine[8 * nt + 2 * tq + e] = x * (1.f / kPScale);
    }
  if (!upper && tq == 0) {
    mine[D] = m_run;
    mine[D + 1] = l_run;
  }
  __syncthreads();

  // ---- merge the warps: the CTA's state for the group's heads ----
  const WarpStates<D, S::kWarps, S::kHeads> states{wst};
  if constexpr (kClusterable) {
    if (a.cluster > 0) {  // the merged elements go straight to their owners in the cluster
      cluster_combine<D, ROUTED, GROUPS, S::kThreads>(a, unit, split, states,
                                                      reinterpret_cast<float2*>(wst));  // (ring's start: free now)
      return;
    }
  }
  const int gc = a.heads_per_cta;
  float* s_m = wst + S::kWarps * S::kHeads * (D + 2);
  float* s_l = s_m + S::kHeads;
  float* s_acc = s_l + S::kHeads;
  float* scratch = s_acc + S::kHeads * D;
  for (int idx = tid; idx < gc * D; idx += S::kThreads) {
    const int hg = idx / D, d = idx % D;
    const float M = states.m(hg);
    s_acc[idx] = states.acc(hg, d, M);
    if (d == 0) {
      s_m[hg] = M;
      s_l[hg] = states.l(hg, M);
    }
  }
  __syncthreads();
  trace_phase(a, kPhaseCtaMerged);
  finish_split<D, ROUTED, S::kThreads>(a, cta, unit, split, splits, s_m, s_l, s_acc, scratch);
}

}  // namespace sinkrouter::cuda
