// Decode attention on a CUDA device over a DeviceKVCache (kv/device_kv_cache.h).
//
//   q    [batch, num_q_heads, head_dim]  device, f32, bf16 or f16
//   out  [batch, num_q_heads, head_dim]  device, f32, bf16 or f16
//   kv   DeviceKV: bf16 or f16 pages, head_dim 64 or 128, page size 1 to 256, any GQA group
//
// Plan, then run (FlashInfer's split). The constructor is the plan: it checks the shape,
// sizes the worst-case grids from the batch's capacities and the multiprocessor count, and
// allocates every workspace. run() is pure device work: no allocation, no host
// synchronisation, lengths read on the device, so a whole step (append + run) can be
// captured in a CUDA graph and replayed as the sequences grow.
//
// One run, in kernels (decode_cuda_*.cu):
//   dense:       attention (Split-K over a flat, balanced work list, combine fused: the
//                last CTA of each (sequence, KV head) merges the splits; or, for short
//                capacities on sm_90, cluster mode: thread-block clusters a (sequence, KV
//                head), each merged through distributed shared memory, then slice by slice
//                over the clusters: CudaDecodeOptions::cluster)
//   sinkrouter:  route_bounds (sink signal m_A, Z_A over anchors and window, and the bound
//   streaming,   of every routable block from its summary) -> route_select (threshold,
//   quest        kept-block list and certificate per (seq, KV head)) -> attention over the
//                kept blocks, window and anchors (combine fused)
// The split of the (kept) tokens over thread blocks is computed on the device from the
// lengths and kept counts: every CTA of the worst-case grid takes an equal share of the
// batch's tokens, so skipped blocks leave no split idle. Groups of up to 4 query heads per
// KV head run on tensor cores (mma.sync, q and p split into three 16-bit parts so that
// the result keeps float precision); larger groups on CUDA cores. On an sm_90 device the
// tensor-core kernel copies K/V with TMA bulk tensor copies where page (and routing-block)
// sizes are multiples of 16 (CudaDecodeOptions::kv_copy), else with cp.async.
//
// Blasst runs on the CPU paths only for now; asking the CUDA decoder for it is a clear
// Error.
#pragma once

#if defined(SINKROUTER_HAVE_CUDA)

#include <cuda_runtime_api.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "sinkrouter/attention/decode.h"
#include "sinkrouter/attention/policy.h"
#include "sinkrouter/kv/device_kv_cache.h"

namespace sinkrouter {

// The stamps a traced run writes for each attention CTA (CudaDecoder::set_phase_trace), in
// this order: SM clock cycles, except the two global-timer stamps (ns); kPhaseRole is 0 for
// a CTA without work, 1 for a split, 2 for the unit's last CTA, which also stamps its
// combine (kPhaseMergeWeights, kPhaseMergeSums: weights known, sums done, first chunk).
// kPhaseTokens is not a stamp: the tokens of the CTA's split.
enum PhaseSlot : int {
  kPhaseEntry = 0, kPhaseSplitFound, kPhaseIssued, kPhaseQReady, kPhaseLoopDone, kPhaseCtaMerged, kPhaseTicket,
  kPhaseEnd, kPhaseStartNs, kPhaseEndNs, kPhaseRole, kPhaseMergeWeights, kPhaseMergeSums, kPhaseTokens,
  kPhaseTraceSlots = 16  // slots per CTA
};

// The stamps a traced routing pass writes for each route_bounds CTA (CudaDecoder::
// set_route_trace), SM clock cycles at the end of each step except the two global-timer
// stamps (ns): entry (after the wait for the kernel before), q in shared memory, the sink
// set's scores, the sink signal (m, Z), the blocks' bounds (with, in one-launch fast mode on
// long sequences, the CTA's certificate share: CudaDecodeOptions::certificate_share_min_blocks),
// the ticket (fast mode), the end of the pass (the (b, h)'s last CTA only; inside its finish,
// the kept list with the certificate, then the anchors read alone). kRouteRole: 0 a
// CTA without blocks, 1 a CTA that bounded blocks, 2 one that also finished the pass as its
// (b, h)'s last.
enum RouteSlot : int {
  kRouteEntry = 0, kRouteQ, kRouteSinkScores, kRouteSinkSignal, kRouteBounds, kRouteTicket, kRouteEnd,
  kRouteStartNs, kRouteEndNs, kRouteRole,
  kRouteFinishList, kRouteFinishAnchors,  // inside the finish: the kept list and certificate, the anchors
  // fused fast mode with adaptive chunks: the CTA's own kept list written (after its wait for
  // the counts of the CTAs before it); elsewhere stamped with kRouteBounds' step
  kRouteChunkList,
  kRouteTraceSlots = 13  // slots per CTA
};

struct CudaDecodeOptions {
  int target_ctas = 0;          // CTAs of the one wave the tokens are spread over; 0: the device's resident capacity
  // Waves of resident CTAs the tokens are spread over when target_ctas is 0 and a one-wave
  // split would be long (src/attention/split_schedule.h): more, shorter splits let the CTAs
  // that finish early take the next ones (the block scheduler balances the tail) at the cost
  // of more partials to merge. 1 to 8; -1: SINKROUTER_DECODE_WAVES, unset: 4 (kernel run
  // 13b: routed Llama B=8 512K 5 % faster than one wave, dense -1 to -6 % at batch 8, small
  // calls unchanged since they keep one wave; docs/PERF.md).
  int waves = -1;
  // No more waves are taken than keep every split at this many tokens or more (src/
  // attention/split_schedule.h): 8K tokens is 4 MB of K and V at head dim 128, a few hundred
  // microseconds of one CTA's loop, against a prologue and partial of ~5. -1:
  // SINKROUTER_DECODE_WAVES_MIN_SPLIT (for sweeps), unset 8192.
  int waves_min_split_tokens = -1;
  // No split gets fewer tokens than this (short sequences stay whole). 128: at 4K-16K it
  // beat or tied 256 and 512 in kernel runs 5c, 5e and 5f (SmolLM2 B=1 8K: 12.0 against
  // 13.1 and 13.9 us), once the combine had its loads in flight together (docs/PERF.md,
  // v5); from 32K up the chunk is set by the CTA count, not by this.
  int min_split_tokens = 128;
  bool tensor_cores = true;     // the tensor-core kernel where it applies (GQA group <= 4)
  bool fused_fast_routing = true;  // fast mode routes in one launch (false: bounds, then select)
  // L2 prefetch size (bytes) the tensor-core kernel asks for with each 16-byte K/V copy:
  // 0 (none), 128 or 256. A head's K or V row is 128-256 bytes inside a token row of all
  // KV heads; asking the L2 for 128 bytes at the first miss makes fewer, larger DRAM
  // reads. Kernel run 8b: 128 took dense 5-6 % off from 64K up at both model shapes, 256
  // added 7-14 % (docs/PERF.md). -1: SINKROUTER_KV_L2_PREFETCH, unset: 128.
  int kv_l2_prefetch = -1;
  // The routing pass's chunks of blocks (docs/PERF.md, "The routing pass's steps, traced"):
  // 0 fixed (128 blocks), 1 sized per (b, h) from its length (kernel run 9a: the small
  // calls' routed time -2 to -24 us; Llama B=8 512K 3-4 % slower). -1:
  // SINKROUTER_ROUTE_CHUNKS ("fixed", "adaptive" or "small"), unset: adaptive. 2 ("small"):
  // adaptive, and where a (b, h) has fewer steps of 64 blocks than CTAs wanted, steps as small
  // as one round of the bounds' lanes (16 blocks at G = 4), so that more CTAs share it.
  int adaptive_route_chunks = -1;
  // Fast mode in one launch with adaptive chunks, on sequences whose certificate the routing
  // CTAs sum in shares (certificate_share_min_blocks): who writes the kept-block list. 1: each
  // routing CTA its own chunk's part, from the counts of the CTAs before it
  // (src/attention/decode_cuda_route_chunk_list.cuh; kernel run 35a: Llama B=1 512K's pass
  // 37.5 -> 33.9 us); 0: the (b, h)'s finishing CTA, over every block (4,096 a pass). Shorter
  // sequences are always listed by the finish. -1: SINKROUTER_ROUTE_CHUNK_LISTS ("off" or
  // "on"), unset: on.
  int route_chunk_lists = -1;
  // The routing pass's bounds step (src/attention/decode_cuda_route_mma.cuh): 1 on the tensor
  // cores, u = [lo | hi] x [min(q, 0); max(q, 0)] as mma.sync products with q in three exact
  // bf16 parts, where it applies (a bf16 cache, GQA group <= 8, no fast-mode estimate); 0 the
  // quads' CUDA-core sums everywhere. Both take the same rounding allowance (cpu::box_max_dot),
  // so they bound and decide alike. -1: SINKROUTER_ROUTE_TENSOR_CORES ("off" or "on"), unset: on.
  int route_tensor_cores = -1;
  // Fused fast mode (the routing pass's last CTA per (b, h) finishes it, and the attention
  // kernel follows it directly): when the pass lets the attention kernel launch (programmatic
  // dependent launch). 0 at its start, as every other PDL kernel here: the attention's CTAs
  // are then placed while the pass's CTAs still hold every SM, each cluster wherever a GPC
  // first frees enough of them; 1 at each routing CTA's exit, so that the attention is placed
  // on an idle GPU; 2 auto: at the exit except where the routed attention runs in clusters of
  // 16 (head dim 64 at batch 1), a whole GPC each, whose place an early launch cannot spoil and
  // which only lose the launch's overlap. Kernel runs 38a-38g: Llama batch 1 512K in clusters of
  // 8 wide CTAs, nothing skipped, 791 us placed at the start, 543 at the exit, 545 with PDL
  // off; SmolLM2 batch 1 4K in clusters of 16, 50 % skipped, 22.3 us at the start, 23.4 at the
  // exit (docs/PERF.md, "Where the routed attention is placed"). -1: SINKROUTER_ROUTE_TRIGGER
  // ("start", "exit" or "auto"), unset: auto.
  int route_trigger = -1;
  // How the tensor-core kernel copies K/V into shared memory (docs/PERF.md, "Decode attention
  // with TMA copies"): 0 cp.async (16 bytes a lane, every page size); 1 TMA (one bulk tensor copy a
  // warp stage of 16 tokens: the tensor-core kernel, page sizes and, routed, routing-block
  // sizes a multiple of 16, an sm_90 device; elsewhere a clear error); 2 auto (TMA where it
  // can run, else cp.async).
  // -1: SINKROUTER_KV_COPY ("cp.async", "tma" or "auto"), unset: auto.
  int kv_copy = -1;
  // Cluster mode's page ids before the PDL wait (src/attention/decode_cuda_attention_mma.cuh):
  // where the view's page tables are fixed (DeviceKV::tables_fixed: every DeviceKVCache view),
  // the attention kernel loads the page list's start and its first stages' page ids while the
  // kernel before it still runs (1), and with TMA also issues its first copies before the
  // length has arrived (2). 0: after the wait. -1: SINKROUTER_EARLY_PAGE_IDS ("off", "ids" or
  // "copies"), unset: copies.
  int early_page_ids = -1;
  // Adaptive chunks: the fewest routing CTAs wanted per (b, h); 0: about one per SM over the
  // batch's KV heads. (Tests set 1, so that chunks of several steps occur at small sizes.)
  int route_min_ctas = 0;
  // Fast mode in one launch: sequences of at least this many routable blocks have each routing
  // CTA sum the certificate over its own skipped blocks, the finishing CTA adding the shares;
  // shorter ones sum it in the finish (kernel run 13d: 9 us off Llama B=8 512K's pass, 2 us
  // onto the calls of one finish pass). 4096 is one pass of the finish. (Tests draw 0 too, so
  // that the shares run at small sizes.)
  int certificate_share_min_blocks = 4096;
  // Cluster mode of dense decode on tensor cores (an sm_90 device; src/attention/
  // decode_cuda_cluster.cuh): each (sequence, KV head) is read by cluster_groups thread-block
  // clusters whose CTAs take its CTA stages in turn; each cluster merges through distributed
  // shared memory, and several clusters of a head then merge slice by slice (a ticket and one
  // round of loads a slice), instead of the flat Split-K list's search for the split and its
  // last CTA merging every partial of the head alone. 0 off; 1 on (a clear error where it
  // cannot run); 2 auto: on where it can run with every cluster resident at once, and the
  // planned capacity is at most cluster_max_tokens (below).
  // Routed decoders take it only through routed_cluster (below).
  // -1: SINKROUTER_DECODE_CLUSTER ("off", "on" or "auto"), unset: auto.
  int cluster = -1;
  // Cluster mode for routed decoders: one cluster a (sequence, KV head), whose CTAs take the
  // routed token list's (anchors, kept blocks, window) CTA stages in turn, so that its length,
  // known only on the device, needs no split search, and the head's partials merge through
  // distributed shared memory instead of the flat list's last CTA (6-12 us at batch 1, kernel
  // run 24b's traces). The cluster is the dense plan's for the capacity (options.cluster_ctas
  // where given; several clusters a head become one of 16 at head dim 64, of 8 at 128), wide
  // CTAs as options.wide_ctas decides. 0 off; 1 on (a clear error where it cannot run); 2
  // auto: where that plan has clusters of 8 or more (batch 1's) and the capacity is at most 64K
  // tokens (fast mode at head dim 128; any capacity at batch 1 where route_trigger lets the
  // attention launch at the routing CTAs' exit) or 16K (otherwise), unless dynamic_splits is on
  // (the two are exclusive for routed decoders). Past those its fewer CTAs read slower than the
  // flat list's many (kernel runs 25a-25b, 38d-38e; docs/PERF.md, "Routed decode in cluster mode",
  // "Where the routed attention is placed").
  // -1: SINKROUTER_DECODE_ROUTED_CLUSTER ("off", "on" or "auto"), unset: auto.
  int routed_cluster = -1;
  // CTAs a cluster: 0 chooses (2 to 16, all clusters resident at once, the busiest SM's read
  // shortest; at head dim 128 one cluster of 16 a head becomes one of 8); 2 to 16: exactly that
  // many. Clusters a head: 0 chooses (one, or, where 16 CTAs cap a head and their loops are
  // long, the most that stay resident within one wave, placed as twice as many clusters of 8;
  // or two clusters of 8 where a second one of 16 is not resident); 1 to 64: exactly that many.
  // (src/attention/decode_cuda_cluster_plan.cu.) -1: the environment's
  // SINKROUTER_DECODE_CLUSTER_CTAS / SINKROUTER_DECODE_CLUSTER_GROUPS, unset: 0.
  int cluster_ctas = -1;
  int cluster_groups = -1;
  // Auto's longest planned capacity (tokens) for cluster mode; default: any. Before session
  // 25's interleaved stages (a cluster's CTAs take its CTA stages in turn) auto stopped at
  // 16K to 128K depending on the shape, because the flat list won past them (runs 14d-16f).
  // With interleaved stages and fixed splits (dynamic_max_cluster_ctas), clusters beat the flat
  // list at every context measured, 64K to 512K, in the four benchmark shapes (runs 21b-21c:
  // Llama B=1 128K / 256K / 512K 128.6 / 244.0 / 475.3 us against 132.1 / 248.4 / 478.2;
  // SmolLM2 B=1 256K 57.5 against 61.9; SmolLM2 B=8 64K-512K 3-9 %).
  int64_t cluster_max_tokens = std::numeric_limits<int64_t>::max();
  // Wide CTAs in cluster mode: 8 warps a CTA, one CTA an SM, instead of 4 warps. A small call's
  // warp spends each 16-token stage in a chain of dependent steps (copy wait, ldmatrix, mma,
  // exp2, mma), so where a plan leaves one CTA an SM anyway, more warps a CTA shorten each
  // warp's share (docs/PERF.md, "Wide CTAs"). 0 off; 1 on (a clear error without cluster mode
  // or where no wide cluster is resident); 2 auto: on in clusters of 8 or more CTAs where the
  // plan's CTAs are at most one an SM and its wide clusters are all resident at once; and
  // several clusters of 8 a head (chosen sizes only) become fewer wide ones: one cluster of 8 at
  // head dim 128; 8 x k -> 16 x k / 4 at head dim 64, and where that is still several clusters, as
  // many wide clusters of 8 as give each CTA an SM and a split of at least 512 tokens (SmolLM2 B=1:
  // 8 x 5 from 32K, 8 x 4 at 16K; B=2 16 x 1). Routed decoders take them in cluster mode
  // only (routed_cluster). -1: SINKROUTER_DECODE_WIDE ("off", "on" or "auto"), unset:
  // auto.
  int wide_ctas = -1;
  // At most this many attention CTAs on an SM (1 to 32; 0: as many as fit: 2 for the d128
  // tensor-core kernel, 4 at d64), by giving each CTA enough shared memory that one more would not fit.
  // It sets the flat list's wave and, in cluster mode, where clusters can be placed. Kernel
  // runs 14d-15d hinted that at head dim 128 one CTA an SM streams faster than two (Llama B=8
  // in clusters of 2, 128 CTAs: 2-3 % faster than the flat list's 264 from 64K). Run 16a
  // measured it: one CTA an SM was at most 1-2 % faster (Llama from 128K) and up to 19 %
  // slower elsewhere (clusters of 8 at Llama B=1 64K, SmolLM2 B=8, routed Llama B=8). -1:
  // SINKROUTER_DECODE_CTAS_PER_SM; unset: 2 for the tensor-core kernel at head dim 64 (its
  // 3-stage ring would let 4 fit, and then the plan takes more CTAs, which ran slower from 64K:
  // kernel runs 21e-21f), 0 otherwise.
  int ctas_per_sm = -1;
  // Dynamic splits of decode on tensor cores (src/attention/decode_cuda_claims.cuh):
  // where a (sequence, KV head)'s splits have at least dynamic_min_split_tokens tokens each,
  // its CTAs' warps claim chunks of it as they go, instead of each CTA reading one fixed
  // split, so that CTAs on faster SMs read more and the call does not wait for its slowest
  // CTA (kernel run 17e: equal splits' loops ran from 318 to 443 us at Llama B=1 512K). The
  // sums' order then varies from run to run: outputs agree to float rounding, not bit for bit.
  // 0 off; 1 on (dense on tensor cores; a clear error on CUDA cores); 2 auto: on where the
  // planned capacity's splits reach dynamic_min_split_tokens. With dynamic splits the flat
  // list takes one wave (`waves` is then 1: a later wave would start after the chunks were
  // claimed). Routed decoders take them only when on (auto keeps their fixed splits: kernel
  // runs 24a-24b, 3-17 % slower at batch 8 and at head dim 64, 2-4 % faster at Llama B=1 512K);
  // on, they plan on the capacity (as if nothing were skipped), and each call's (sequence, KV
  // head) decides from the tokens the router kept. -1: SINKROUTER_DECODE_DYNAMIC ("off", "on"
  // or "auto"), unset: auto.
  // dynamic_min_split_tokens: -1: SINKROUTER_DECODE_DYNAMIC_MIN_SPLIT (tokens), unset: 5120,
  // the measured choice of kernel runs 18a-18d: SmolLM2 B=1 512K's 6,026-token splits gained
  // 6-8 % in every run, and Llama B=1 64K's 4,096-token splits (clusters) lost ~2.5 % in three
  // runs of four.
  int dynamic_splits = -1;
  int dynamic_min_split_tokens = -1;
  // In cluster mode, auto takes dynamic splits only in clusters of at most this many CTAs.
  // Cluster mode's fixed splits interleave the cluster's CTAs stage by stage (the dynamic
  // instance does not), and in run 21b they beat dynamic splits in clusters of 8 and 16 at
  // every context (Llama B=1 128K 8 x 2: 128.6 against 132.1 us; SmolLM2 B=8 64K 8 x 1: 99.1
  // against 109.5; SmolLM2 B=1 256K 16 x 4: 57.5 against 60.3), while in clusters of 2 (Llama
  // B=8) dynamic splits stayed ~1 % faster from 16K to 512K.
  int dynamic_max_cluster_ctas = 2;
  // Tokens a claimed chunk: a multiple of 16 from 128 to 4096. A call's tail is about one
  // chunk of one warp's copies (a warp streams ~5 GB/s: 128 tokens are ~13 us at head dim 128),
  // so short ones; 128 is the shortest the kernel's pipeline allows. -1:
  // SINKROUTER_DECODE_DYNAMIC_CHUNK (tokens), unset: 128.
  int dynamic_chunk_tokens = -1;
  // The flat list's first wave of CTAs takes its entries strided (c -> c * stride mod wave,
  // src/attention/decode_cuda_split.cuh, flat_cta), so that a (sequence, KV head)'s splits run
  // on SMs all over the GPU rather than on neighbouring ones (kernel run 18c, with dynamic
  // splits: dense SmolLM2 B=8 512K 788 -> 742 us, B=8 128K 202 -> 192, Llama B=1 512K 486 ->
  // 478; cluster mode does not use the list). 0 off, 1 on. -1: SINKROUTER_DECODE_SPREAD ("off"
  // or "on"), unset: on.
  int spread_ctas = -1;
};

// The routing decisions of the last run, copied back (for tests and analysis).
struct CudaRouting {
  std::vector<float> sink_max, sink_sum;       // [batch, q_heads]  m_A, Z_A
  std::vector<float> delta, skipped_v_bound;   // [batch, q_heads]  certificate
  std::vector<int32_t> window_start;           // [batch * kv_heads] first window token
  std::vector<std::vector<int32_t>> kept_blocks;    // [batch * kv_heads] ascending block ids
  std::vector<std::vector<int32_t>> extra_anchors;  // anchors attended alone (their block skipped)
  // [batch * kv_heads][routable blocks, window_start / block_size] max over the group's heads of
  // the block's score bound u_jg (its rounding allowance included; scores pre-scaled by `scale`).
  std::vector<std::vector<float>> block_bounds;
};

class CudaDecoder {
 public:
  // Plans for batches shaped like `kv` (batch, heads, head_dim, dtype, page and block size,
  // capacities up to kv.max_capacity) with num_q_heads query heads.
  CudaDecoder(const DeviceKV& kv, int num_q_heads, const AttentionPolicy& policy, float scale,
              const CudaDecodeOptions& options = {});
  ~CudaDecoder();
  CudaDecoder(const CudaDecoder&) = delete;
  CudaDecoder& operator=(const CudaDecoder&) = delete;

  // One decode step over `kv` (the same shape as planned; lengths may have grown up to the
  // capacities). Enqueued on `stream`; nothing waits.
  void run(const DeviceKV& kv, const void* q, DType q_dtype, void* out, DType out_dtype,
           cudaStream_t stream);
  // Only the routing part of run() (sink signal, bounds, select/compact), for timing.
  void run_routing(const DeviceKV& kv, const void* q, DType q_dtype, cudaStream_t stream);

  // Synchronous copies of what the last run wrote: statistics per (sequence, KV head), with
  // the meaning of the CPU's HeadStats, and the routing decisions.
  std::vector<HeadStats> download_stats() const;
  CudaRouting download_routing() const;

  // Profiling: from the next run on, the tensor-core attention kernel writes per-CTA phase
  // stamps (PhaseSlot) to `device_buffer` (grid_ctas() * kPhaseTraceSlots int64 on the
  // device); null turns it off. Used by bench_kernels --trace-phases.
  void set_phase_trace(long long* device_buffer) { phase_trace_ = device_buffer; }
  // The same for the routing pass's first kernel (RouteSlot; route_trace_ctas() *
  // kRouteTraceSlots int64). route_trace_ctas() is 0 for dense.
  void set_route_trace(long long* device_buffer) { route_trace_ = device_buffer; }
  int route_trace_ctas() const;

  int grid_ctas() const { return grid_ctas_; }      // attention CTAs launched per run
  int wave_ctas() const { return wave_ctas_; }  // CTAs of one wave (target_ctas, or the resident capacity)
  int waves() const { return waves_; }
  int cluster_ctas() const { return cluster_ctas_; }  // CTAs a cluster in cluster mode; 0: the flat Split-K list
  // Whether fused fast mode's routing pass lets the attention kernel launch only at its CTAs'
  // exit (options.route_trigger resolved for this plan); false where the routing is not fused.
  bool route_trigger_at_exit() const;
  int cluster_groups() const { return cluster_groups_; }  // clusters a (sequence, KV head) in cluster mode
  // How many clusters of `ctas` CTAs (2 to 16) of this decoder's dense tensor-core kernel can be
  // resident at once (cudaOccupancyMaxActiveClusters; 0 where none can, or without tensor
  // cores): what the cluster plan weighs, for benchmarks and diagnostics.
  // (wide: of the wide CTAs; routed: of the routed kernel's)
  int resident_clusters(int ctas, bool wide = false, bool routed = false) const;
  bool uses_tensor_cores() const { return tensor_cores_; }
  bool uses_tma_copies() const { return tma_copies_; }  // options.kv_copy resolved
  bool uses_dynamic_splits() const { return dynamic_splits_; }  // options.dynamic_splits resolved
  bool uses_wide_ctas() const { return wide_ctas_; }             // options.wide_ctas resolved
  // Whether the routing pass bounds on the tensor cores (options.route_tensor_cores, where it
  // applies: a routed policy, a bf16 cache, group <= 8, no fast-mode estimate).
  bool routes_on_tensor_cores() const;
  const AttentionPolicy& policy() const { return policy_; }

 private:
  struct Workspace;
  void check_run_args(const DeviceKV& kv, DType q_dtype, DType out_dtype) const;
  // Resolves options.cluster into cluster_ctas_ and cluster_groups_ (after the kernel and the
  // wave are chosen); then options.wide_ctas into wide_ctas_.
  void plan_cluster_mode(const CudaDecodeOptions& options, bool routed, int units, int sms);
  void plan_wide_ctas(const CudaDecodeOptions& options, bool routed, int units, int sms);
  // Resolves options.dynamic_splits into dynamic_splits_ (after the cluster plan).
  void plan_dynamic_splits(const CudaDecodeOptions& options, bool routed, int units);
  // The routing launches of run() and run_routing(), after their checks.
  void enqueue_routing(const DeviceKV& kv, const void* q, DType q_dtype, cudaStream_t stream);

  AttentionPolicy policy_;
  float scale_ = 0;
  int batch_ = 0, num_kv_heads_ = 0, num_q_heads_ = 0, group_ = 0, head_dim_ = 0;
  int page_size_ = 0, block_size_ = 0;
  DType kv_dtype_ = DType::BF16;
  int64_t max_capacity_ = 0;
  int max_blocks_ = 0;     // routing blocks of the longest capacity
  int heads_per_cta_ = 0;  // query heads of one group handled by one CTA (1, 2, 3, 4 or 8)
  int head_chunks_ = 0;    // ceil(group / heads_per_cta)
  bool tensor_cores_ = false;
  bool tma_copies_ = false;
  bool fused_routing_ = false;  // fast sinkrouter, routed in one launch (options.fused_fast_routing)
  int wave_ctas_ = 0, waves_ = 1, waves_min_split_tokens_ = 0, grid_ctas_ = 0, min_split_tokens_ = 0;
  int cluster_ctas_ = 0;    // options.cluster resolved: CTAs a cluster, 0 off
  int cluster_groups_ = 0;  // clusters a unit in cluster mode
  bool wide_ctas_ = false;  // options.wide_ctas resolved
  bool dynamic_splits_ = false;       // options.dynamic_splits resolved
  int dynamic_min_split_tokens_ = 0;  // a unit's splits claim chunks from this many tokens each
  int dynamic_chunk_tokens_ = 128;    // tokens a claimed chunk
  int cta_stride_ = 0;                // options.spread_ctas resolved: the first wave's stride, 0 off
  int kv_l2_prefetch_ = 0;  // 0, 128 or 256 (options.kv_l2_prefetch resolved)
  int early_page_ids_ = 2;  // options.early_page_ids resolved
  int min_smem_ = 0;        // options.ctas_per_sm as a floor on a CTA's dynamic shared memory (0: none)
  int launch_smem_ = 0;     // the attention kernel's dynamic shared memory a CTA
  bool adaptive_route_chunks_ = false;  // options.adaptive_route_chunks resolved (1 or 2)
  bool small_route_steps_ = false;      // options.adaptive_route_chunks 2
  bool route_chunk_lists_ = true;       // options.route_chunk_lists resolved
  bool route_tensor_cores_ = true;      // options.route_tensor_cores resolved (before its conditions)
  int route_trigger_ = 2;               // options.route_trigger resolved (0 start, 1 exit, 2 auto)
  int route_min_ctas_ = 1;              // options.route_min_ctas resolved
  int certificate_share_min_blocks_ = 4096;
  long long* phase_trace_ = nullptr;
  long long* route_trace_ = nullptr;
  Workspace* ws_ = nullptr;
};

}  // namespace sinkrouter

#endif  // SINKROUTER_HAVE_CUDA
