// CudaDecoder::plan_cluster_mode: whether dense decode takes cluster mode, and its CTAs a
// cluster and clusters a (sequence, KV head) (decode_cuda_cluster.cuh; docs/PERF.md,
// sections "Cluster mode" and "Several clusters a head"), and plan_wide_ctas: whether its
// CTAs are the wide ones (decode_cuda_mma_tiles.cuh); CudaDecoder::plan_dynamic_splits:
// whether its splits are claimed in chunks (decode_cuda_claims.cuh).
#include <algorithm>
#include <cstdint>
#include <limits>

#include "decode_cuda_env.h"
#include "decode_cuda_kernels.cuh"
#include "sinkrouter/attention/decode_cuda.h"
#include "split_schedule.h"

namespace sinkrouter {

using decode_env::int_option_from_env;
using decode_env::option_from_env;

namespace {

// An off / on / auto switch: `given` (an option, 0 off, 1 on, 2 auto) unless negative, else the
// environment variable `env` ("off", "on" or "auto"; unset: auto); `what` names the option in
// the error for a value out of range.
int off_on_auto(int given, const char* env, const char* what) {
  const int mode =
      given >= 0 ? given : option_from_env(env, "auto", {{"off", 0}, {"on", 1}, {"auto", 2}}, "off, on or auto");
  SR_CHECK(mode >= 0 && mode <= 2, "decode (CUDA): {} must be 0 (off), 1 (on) or 2 (auto), not {}", what, mode);
  return mode;
}

int wide_mode(const CudaDecodeOptions& options) {
  return off_on_auto(options.wide_ctas, "SINKROUTER_DECODE_WIDE", "wide_ctas");
}

// The most clusters a unit whose partials the second merge (merge_cluster_groups) loads in one
// round, for clusters of `ctas` CTAs that each hold a slice of heads_per_cta * head_dim outputs.
int one_round_groups(int heads_per_cta, int head_dim, int ctas) {
  const int slice = (heads_per_cta * head_dim + ctas - 1) / ctas;
  return std::min(cuda::kMaxClusterGroups, std::max(1, cuda::kGroupMergeRound / slice));
}

// Whether `clusters` clusters of `ctas` wide CTAs (routed: of the routed kernel) get an SM each
// and are all resident at once.
bool wide_all_resident(const CudaDecoder& d, int ctas, int64_t clusters, int sms, bool routed) {
  return clusters * ctas <= sms && d.resident_clusters(ctas, true, routed) >= clusters;
}

int dynamic_mode(const CudaDecodeOptions& options) {
  return off_on_auto(options.dynamic_splits, "SINKROUTER_DECODE_DYNAMIC", "dynamic_splits");
}

// Cluster mode's switch: options.cluster / SINKROUTER_DECODE_CLUSTER for dense decoders,
// options.routed_cluster / SINKROUTER_DECODE_ROUTED_CLUSTER for routed ones.
int cluster_mode(const CudaDecodeOptions& options, bool routed) {
  return routed ? off_on_auto(options.routed_cluster, "SINKROUTER_DECODE_ROUTED_CLUSTER", "routed_cluster")
                : off_on_auto(options.cluster, "SINKROUTER_DECODE_CLUSTER", "cluster");
}

}  // namespace

void CudaDecoder::plan_cluster_mode(const CudaDecodeOptions& options, bool routed, int units, int sms) {
  const int mode = cluster_mode(options, routed);
  const int want_ctas = options.cluster_ctas >= 0 ? options.cluster_ctas
                                                 : int_option_from_env("SINKROUTER_DECODE_CLUSTER_CTAS");
  const int want_groups = options.cluster_groups >= 0 ? options.cluster_groups
                                                     : int_option_from_env("SINKROUTER_DECODE_CLUSTER_GROUPS");
  SR_CHECK(want_ctas == 0 || (want_ctas >= 2 && want_ctas <= 16),
           "decode (CUDA): cluster_ctas {} out of range (expected 0, or 2 to 16)", want_ctas);
  SR_CHECK(want_groups >= 0 && want_groups <= cuda::kMaxClusterGroups,
           "decode (CUDA): cluster_groups {} out of range (expected 0, or 1 to {})", want_groups,
           cuda::kMaxClusterGroups);
  SR_CHECK(options.cluster_max_tokens >= 0, "decode (CUDA): cluster_max_tokens {} must not be negative",
           options.cluster_max_tokens);
  cluster_ctas_ = cluster_groups_ = 0;
  if (mode == 0) return;
  // Routed: cluster mode and dynamic splits exclude each other; auto yields to dynamic splits on.
  if (routed && mode == 2 && dynamic_mode(options) == 1) return;
  // CTAs a cluster (c): as given, or among the sizes up to 16 and one wave's share of a unit
  // (and under auto min_split_tokens of the capacity a CTA) whose clusters are all resident at
  // once (a cluster lives within one GPC, so fewer fit than CTAs do: kernel run 14a's 24
  // clusters of 11 at SmolLM2 B=8 4K ran in two waves, 21.0 us against the flat list's 17.3),
  // the one whose busiest SM takes the least time to read its share: with units * c CTAs of
  // 1 / c of a unit each, an SM holds up to n = ceil(units * c / sms) of them, and n CTAs read
  // 1 + gain * (n - 1) times one CTA's rate. gain, measured (runs 14b-14d, batch 8 at 4K-8K):
  // ~0.45 at head_dim 64 (SmolLM2: clusters of 8, 192 CTAs, beat clusters of 5, 120 CTAs, by
  // 8 %), at most ~0.2 at head_dim 128 (Llama: clusters of 2, 128 CTAs, beat clusters of 3,
  // 192 CTAs, by 8 %). Ties go to the larger size. On: where none is all resident, the
  // largest that fits at all.
  // Clusters a unit (k): as given, or more than one only where the hardware's largest cluster
  // caps a unit's CTAs (c = 16: few units) and a CTA's loop would be long (its share of the
  // capacity at r1, one CTA's rate alone on an SM, over kLongLoopUs): then the most clusters of
  // 16 that stay all resident, whose CTAs fit one wave, and whose partials the second merge
  // loads in one round (merge_cluster_groups); where no second cluster of 16 a unit is
  // resident, clusters of 8, two a unit (the same CTAs, placed more evenly). Measured (runs
  // 15a-15c): the second merge (stores, ticket, a round of loads) took ~2.9 us where one
  // cluster's output stores took ~1.2, so short loops keep one cluster (SmolLM2 B=1 8K: 16 x 4
  // CTAs no faster than 16 x 1); long ones gain (SmolLM2 B=1 16K / 64K: 16 x 4 12.9 / 22.9 us,
  // 16 x 1 14.9 / 39.3, the flat list 15.5 / 24.9), and 128 CTAs in clusters of 16 place worse
  // than in clusters of 8 (Llama B=1 64K: 16 x 1 85.0 us, 8 x 2 72.1). r1, measured in runs
  // 14c-14d (loops of batch 1 at 4K-8K): ~33 GB/s at head_dim 64, ~41 at 128.
  constexpr double kLongLoopUs = 7.0;
  const double r1 = head_dim_ == 64 ? 33e3 : 41e3;  // bytes a us
  const double gain = head_dim_ == 64 ? 0.45 : 0.2;
  const double token_bytes = 4.0 * head_dim_;  // K and V of one KV head, 16-bit
  const int64_t most = std::max(2, wave_ctas_ / units);  // CTAs a unit in one wave
  const int64_t most_auto = (max_capacity_ + min_split_tokens_ - 1) / min_split_tokens_;
  auto fit = [&](int c) { return resident_clusters(c, false, routed); };  // (tensor cores: below)
  int ctas = 0, groups = 0;
  if (tensor_cores_ && want_ctas > 0) {
    ctas = fit(want_ctas) >= 1 ? want_ctas : 0;
  } else if (tensor_cores_) {
    const int k = std::max(1, want_groups);
    const int most_c = int(std::min<int64_t>(16, mode == 2 ? std::min(most, most_auto) : most));
    double best = 0;
    for (int c = most_c; c >= 2; --c) {
      const int64_t n = (int64_t(units) * c * k + sms - 1) / sms;  // CTAs on the busiest SM
      const double busiest = double(n) / c / (1 + gain * double(n - 1));  // its time, in units' reads
      if ((ctas == 0 || busiest < best) && fit(c) >= units * k) ctas = c, best = busiest;
    }
    if (mode == 1)
      for (int c = most_c; c >= 2 && ctas == 0; --c)
        if (fit(c) >= 1) ctas = c;
  }
  if (ctas > 0) {
    groups = std::max(1, want_groups);
    const double loop_us = double(max_capacity_) / ctas * token_bytes / r1;  // a CTA's, one cluster a unit
    if (want_groups == 0 && ctas == 16 && loop_us > kLongLoopUs) {
      const int one_round = one_round_groups(heads_per_cta_, head_dim_, ctas);
      const int f = fit(ctas);
      for (int k = 2; k <= one_round; ++k) {
        if (int64_t(units) * k > f || int64_t(units) * ctas * k > wave_ctas_ ||
            (mode == 2 && int64_t(ctas) * k > most_auto))
          break;
        groups = k;
      }
      if (groups == 1 && want_ctas == 0 && fit(8) >= 2 * units) ctas = 8, groups = 2;
    }
    // Clusters of 16 (chosen, not given) stay only as the one cluster of a head at head dim 64;
    // elsewhere they become clusters of 8 where those fit:
    // - at head dim 128, one of 16 a head becomes one of 8, whose CTAs read twice as much each
    //   (Llama B=1 4K / 8K in runs 21a-21b: 10.8 / 15.95 us against 11.2 / 16.7; the model above,
    //   which weighs only the busiest SM's reads, prefers 16; at head dim 64 16 stays faster:
    //   SmolLM2 B=1 4K 7.6 against 9.1 us);
    // - several of 16 a head become twice as many of 8 (the same CTAs), where those stay resident
    //   and merge in one round. 16 is a non-portable size whose placement depends on the chip's
    //   GPCs: at SmolLM2 B=1 512K the same binaries' 16 x 4 took 105.0 us in kernel run 21g and
    //   119.8 in run 21i (the flat list: 107.8 in both), while 8 x 8 was as fast or ~1 % faster
    //   where both were measured (runs 21c, 21h, 21j: 16K 10.50 against 10.73 us, 512K 104.2
    //   against 105.2).
    if (want_ctas == 0 && ctas == 16) {
      if (groups == 1 && head_dim_ == 128 && fit(8) >= units)
        ctas = 8;
      else if (groups > 1 && want_groups == 0 && 2 * groups <= one_round_groups(heads_per_cta_, head_dim_, 8) &&
               fit(8) >= 2 * units * groups)
        ctas = 8, groups *= 2;
    }
  }
  // Wide CTAs (plan_wide_ctas): several clusters of 8 a head (chosen) become clusters of the wide
  // kind, each CTA on an SM of its own, where those are all resident:
  // - at head dim 128, one cluster of 8 a head: the second merge (~2.6 us) goes, and a wide CTA
  //   reads twice a narrow one's share in about the same time (kernel run 22b, Llama B=1: 16K
  //   22.33 against 24.94 us, 64K 69.44 / 71.30, 128K 128.67 / 130.66; 256K-512K within 0.5 %);
  // - at head dim 64, 8 x k becomes 16 x k / 4 (run 22c, SmolLM2 B=1, 16 x 2 against 8 x 8:
  //   128K 31.58 against 32.43 us, 256K 54.24 / 56.34, 512K 99.84 / 102.69; run 22f, SmolLM2 B=2,
  //   16 x 1 against 8 x 4: 3-10 % faster from 8K). Where that still leaves several clusters a
  //   head (a second merge either way), clusters of 8 instead, as many a head as give every CTA an
  //   SM and a split of at least kWideMinSplitTokens: SmolLM2 B=1 8 x 4 at 16K, 8 x 5 = 120 CTAs
  //   from 32K. Kernel run 23c, against 16 x 2, medians of 3 rounds in one call: 16K 10.07 (8 x 4)
  //   against 10.57 us, 64K 19.12 (8 x 5) / 19.96, 128K 31.22 / 32.05, 256K 53.98 / 55.01, 512K
  //   100.06 / 101.92; 8 x 5 at 16K (410-token splits) took 11.00. A d64 page holds half a d128
  //   one's bytes, so a d64 loop reads less an SM, and spreading it over more SMs gains. Where
  //   16 x k / 4 is one cluster a head, it stays: SmolLM2 B=2's 8 x 2 took 6-10 % longer than its
  //   16 x 1 from 16K (run 23h: 512K 201.95 against 189.47 us).
  if (ctas == 8 && groups > 1 && want_groups == 0 && want_ctas == 0 && wide_mode(options) == 2) {
    constexpr int64_t kWideMinSplitTokens = 512;
    // Takes the wide plan of c CTAs a cluster and k clusters a head where it is all resident.
    auto take = [&](int c, int k) {
      if (!wide_all_resident(*this, c, int64_t(units) * k, sms, routed)) return false;
      ctas = c, groups = k;
      return true;
    };
    if (head_dim_ == 128) {
      take(8, 1);
    } else if (groups % 4 == 0) {
      const int k8 = int(std::min<int64_t>({sms / (int64_t(units) * 8), max_capacity_ / (8 * kWideMinSplitTokens),
                                            one_round_groups(heads_per_cta_, head_dim_, 8)}));
      if (!(groups / 4 > 1 && k8 > 1 && take(8, k8))) take(16, groups / 4);
    }
  }
  // Routed: one cluster a unit (the routed kernel has no second merge over clusters). Where the
  // plan has several, one of 16 at head dim 64 where those are all resident (the largest
  // cluster: a routed call reads its unit's tokens in fewer, shorter loops anyway), else one
  // of 8. Auto takes clusters of 8 or more only (batch 1's), up to a capacity: kernel runs
  // 25a-25b, batch 1, against the flat list in the same call, 50 % of the blocks skipped:
  // - fast mode (fused_routing_) at head dim 128 (Llama, 8 x 1 wide): 4K-64K 13-14 % faster (64K
  //   76.5 against 88.0 us), 128K 30 % and 512K 10-17 % slower: its 64 CTAs' loops read 1.3x
  //   slower a token than dense ones (the trace; not the kept block's id, run 25c), where the
  //   flat list's 1,064 CTAs read at the bandwidth;
  // - the certified policy at head dim 128: 4K-16K 4-7 % faster, 64K 4-20 % slower;
  // - head dim 64 (SmolLM2, 16 x 1 wide, 48 CTAs): 4K-16K 7-18 % faster in both modes, 64K up to
  //   7 % slower. The flat list's last CTA merges tens of partials alone (6-12 us at batch 1, run
  //   24b); at batch 8 (clusters of 2) it reads within 5-10 % of the bytes' floor (run 24d).
  // Fast mode at head dim 128 and batch 1 takes them at every capacity where the routing pass
  // lets the attention launch at its CTAs' exit (route_trigger exit or auto): the slow loops
  // above were clusters placed while the pass held every SM. Kernel run 38e, 50 % skipped,
  // cluster mode / the flat list: 64K 70.9 / 81.0 us, 128K 104.0 / 114.6, 256K 174.7 / 186.0,
  // 512K 299.1 / 310.9 (0-90 % skipped: 1.5-16 % faster everywhere). At head dim 64 the limit
  // stays (run 38d, SmolLM2 B=1 512K nothing skipped: 240.6 against 146.0 us: 48 CTAs read too
  // slowly).
  if (routed && ctas > 0) {
    if (groups > 1) {
      const bool wide16 = head_dim_ == 64 && wide_all_resident(*this, 16, units, sms, true);
      ctas = wide16 || (head_dim_ == 64 && fit(16) >= units) ? 16 : fit(8) >= units ? 8 : 0;
      groups = ctas > 0 ? 1 : 0;
    }
    // (Auto triggers at the exit for these clusters of 8: route_trigger_at_exit.)
    const int64_t most_tokens = head_dim_ != 128 || !fused_routing_   ? 16384
                                : route_trigger_ != 0 && batch_ == 1 ? std::numeric_limits<int64_t>::max()
                                                                     : 65536;
    if (mode == 2 && (ctas < 8 || max_capacity_ > most_tokens)) ctas = groups = 0;
  }
  // Auto takes the plan chosen above wherever its clusters are all resident (ctas > 0), up to
  // cluster_max_tokens of capacity (default: any). Before session 25's interleaved stages, the
  // flat list won past 16K-128K in most shapes (runs 14d-16f: clusters of 8 at Llama B=1 512K
  // 527.9 against 508.9 us) and auto kept limits there; with interleaved stages and fixed
  // splits, clusters won at every context from 64K to 512K in every benchmark shape (runs
  // 21b-21c; docs/PERF.md, "Plans after interleaving").
  if (mode == 2 && max_capacity_ > options.cluster_max_tokens) return;
  const char* why = !tensor_cores_ ? "it needs the tensor-core kernel (GQA group <= 4, tensor_cores on)"
                    : ctas == 0    ? "it needs an sm_90 device, a build with sm_90a and room for a cluster"
                                   : nullptr;
  SR_CHECK(why == nullptr || mode == 2, "decode (CUDA): cluster mode cannot run here: {}", why);
  if (why == nullptr) cluster_ctas_ = ctas, cluster_groups_ = groups;
}

// Auto: the wide CTAs in clusters of 8 or more CTAs where the plan places at most one CTA an SM
// (its CTAs would each have an SM to themselves anyway) and the wide clusters are all resident
// at once. Measured (kernel runs 22a-22b, against 4 warps in the same call): SmolLM2 B=1 4K / 8K
// (16 x 1) 7.04 / 8.21 us against 7.34 / 9.23; Llama B=1 8K (8 x 1) 15.0 against 15.95, 4K 10.9
// against 10.84. In clusters of 2 (Llama B=8, 128 CTAs) they were up to 3 % slower.
void CudaDecoder::plan_wide_ctas(const CudaDecodeOptions& options, bool routed, int units, int sms) {
  const int mode = wide_mode(options);
  wide_ctas_ = false;
  if (mode == 0 || (routed && cluster_ctas_ == 0)) return;  // (routed: the flat list has 4 warps)
  SR_CHECK(mode == 2 || cluster_ctas_ > 0, "decode (CUDA): wide CTAs (wide_ctas on) need cluster mode");
  if (cluster_ctas_ == 0) return;
  SR_CHECK(mode == 2 || resident_clusters(cluster_ctas_, true, routed) >= 1,
           "decode (CUDA): wide CTAs (wide_ctas on) cannot run here: no cluster of {} is resident", cluster_ctas_);
  wide_ctas_ = mode == 1 || (cluster_ctas_ >= 8 && wide_all_resident(*this, cluster_ctas_,
                                                                     int64_t(units) * cluster_groups_, sms, routed));
}

int CudaDecoder::resident_clusters(int ctas, bool wide, bool routed) const {
  SR_CHECK(ctas >= 2 && ctas <= 16, "decode (CUDA): resident_clusters of {} CTAs (expected 2 to 16)", ctas);
  return tensor_cores_ ? cuda::attention_cluster_capacity(head_dim_, kv_dtype_, tma_copies_, ctas, min_smem_, wide,
                                                          routed)
                       : 0;
}

// The planned split is that of the capacity in every unit: the cluster's share, or the flat
// list's chunk. The kernel decides again per unit from its length (AttnArgs::claims).
void CudaDecoder::plan_dynamic_splits(const CudaDecodeOptions& options, bool routed, int units) {
  const int mode = dynamic_mode(options);
  dynamic_min_split_tokens_ = options.dynamic_min_split_tokens;
  if (dynamic_min_split_tokens_ < 0) {  // left to the environment; unset (0): 5120
    dynamic_min_split_tokens_ = int_option_from_env("SINKROUTER_DECODE_DYNAMIC_MIN_SPLIT");
    if (dynamic_min_split_tokens_ == 0) dynamic_min_split_tokens_ = 5120;
  }
  SR_CHECK(dynamic_min_split_tokens_ >= 1, "decode (CUDA): dynamic_min_split_tokens {} must be at least 1",
           dynamic_min_split_tokens_);
  SR_CHECK(mode != 1 || tensor_cores_,
           "decode (CUDA): dynamic splits (dynamic_splits on) need the tensor-core kernel (GQA group <= 4, "
           "tensor_cores on)");
  const int chunk = options.dynamic_chunk_tokens >= 0 ? options.dynamic_chunk_tokens
                                                      : int_option_from_env("SINKROUTER_DECODE_DYNAMIC_CHUNK");
  dynamic_chunk_tokens_ = chunk == 0 ? 128 : chunk;
  SR_CHECK(dynamic_chunk_tokens_ % 16 == 0 && dynamic_chunk_tokens_ >= 128 && dynamic_chunk_tokens_ <= 4096,
           "decode (CUDA): dynamic_chunk_tokens {} must be a multiple of 16 from 128 to 4096",
           dynamic_chunk_tokens_);
  SR_CHECK(options.dynamic_max_cluster_ctas >= 0, "decode (CUDA): dynamic_max_cluster_ctas {} must not be negative",
           options.dynamic_max_cluster_ctas);
  dynamic_splits_ = false;
  if (!tensor_cores_ || mode == 0) return;
  SR_CHECK(!(routed && cluster_ctas_ > 0 && mode == 1),
           "decode (CUDA): routed decode takes dynamic splits (dynamic_splits on) or cluster mode (routed_cluster "
           "on), not both");
  if (routed && cluster_ctas_ > 0) return;
  // Auto: clusters of more CTAs keep fixed splits, whose stages their CTAs take in turn
  // (CudaDecodeOptions::dynamic_max_cluster_ctas, run 21b). Routed decode keeps them too: in
  // kernel runs 24a-24b dynamic splits were 3-17 % slower at batch 8 and at head dim 64 (the
  // flat list's four waves, which they replace by one, balance the units against each other;
  // the claims only balance a unit's own CTAs) and 2-4 % faster only at Llama B=1 512K with up
  // to half the blocks skipped. On, a routed decoder plans on the capacity (as if nothing were
  // skipped) and each call's units decide again from what the router kept.
  if (mode == 2 && (routed || cluster_ctas_ > options.dynamic_max_cluster_ctas)) return;
  const int64_t split =
      cluster_ctas_ > 0 ? max_capacity_ / (int64_t(cluster_ctas_) * cluster_groups_)
                        : split_schedule::chunk_for(max_capacity_ * units, units, wave_ctas_, waves_,
                                                    waves_min_split_tokens_, min_split_tokens_);
  dynamic_splits_ = mode == 1 || split >= dynamic_min_split_tokens_;
  // One wave: the claims even out the CTAs' rates, which is what later waves were for, and a
  // CTA of a later wave would start after its unit's chunks were claimed, holding only its
  // warps' first chunks back to the end.
  if (dynamic_splits_) waves_ = 1;
}

}  // namespace sinkrouter
