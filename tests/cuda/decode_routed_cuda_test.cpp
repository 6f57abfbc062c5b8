// CUDA routed decode (sinkrouter certified and fast, streaming, quest), on random caches with
// planted sinks:
//   - the kernel computes exactly what it decided to read: its output against the float64
//     run (decode_reference) of the RoutePlan rebuilt from the device's kept-block lists;
//   - its certificate is a true bound: the exact skipped softmax mass (decode_exact) never
//     exceeds delta, the exact output error never exceeds the stated bound, and certified
//     mode keeps delta <= epsilon;
//   - its decisions are the CPU router's (plan_decode), up to blocks at the threshold, and
//     its statistics mean what the CPU's mean.
// Diagnostic knobs (environment): SR_CUDA_ROUTED_CASES (how many seeds), _FIRST_SEED (from
// which), _GROUPS (a comma list of GQA groups to draw from), _MIN_SPLIT (every case's
// min_split_tokens).
#include <gtest/gtest.h>

#if defined(SINKROUTER_HAVE_CUDA)

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/compare.h"
#include "cuda_test_util.h"
#include "sinkrouter/attention/decode_cuda.h"
#include "sinkrouter/kv/synthetic_kv.h"

namespace sinkrouter {
namespace {

using testing::compare_to_reference;
using testing::DeviceBuffer;
using testing::tolerance_for;

// The groups the random cases draw from: SR_CUDA_ROUTED_GROUPS (a comma list) for a
// diagnostic run, else the tested ones. The router's lane maps (decode_cuda_route_bounds.cuh):
// up to 8 heads a warp covers several blocks (5: some quads idle); 12 to 24 share a block's
// heads over 2 to 4 warps; past 8 the attention takes 2 or 3 head chunks of 8. (16 to 24 failed
// in kernel runs 12i and 13a-13b until the synthetic sinks' keys were capped: a group of 24
// random queries left keys of norm ~10^5 and scores of ~10^4, SyntheticKVSpec::sink_positions.)
const std::vector<int>& routed_test_groups() {
  static const std::vector<int> groups = [] {
    std::vector<int> g;
    if (const char* env = std::getenv("SR_CUDA_ROUTED_GROUPS"))
      for (const char* p = env; *p;) {
        char* end = nullptr;
        const long v = std::strtol(p, &end, 10);
        if (end == p) break;
        if (v > 0) g.push_back(int(v));
        p = *end == ',' ? end + 1 : end;
      }
    if (g.empty()) g = {1, 2, 3, 4, 5, 8, 12, 16, 24};
    return g;
  }();
  return groups;
}

SyntheticKVSpec random_spec(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> pick(0, 1 << 20);
  SyntheticKVSpec s;
  s.num_kv_heads = 1 + pick(rng) % 3;
  s.group = routed_test_groups()[size_t(pick(rng)) % routed_test_groups().size()];
  s.head_dim = pick(rng) % 2 ? 128 : 64;
  s.dtype = pick(rng) % 2 ? DType::BF16 : DType::F16;
  const int pages[] = {1, 4, 16, 64, 256};
  s.page_size = pages[pick(rng) % 5];
  const int blocks[] = {8, 16, 32, 64};
  s.block_size = blocks[pick(rng) % 4];
  const int B = 1 + pick(rng) % 3;
  s.lengths.clear();
  for (int b = 0; b < B; ++b) s.lengths.push_back(1 + pick(rng) % 2500);
  s.sink_positions.clear();
  if (pick(rng) % 8 != 0) s.sink_positions.push_back(0);
  if (pick(rng) % 3 == 0) s.sink_positions.push_back(int32_t(pick(rng) % 300));
  s.sink_score = 4.f + float(pick(rng) % 160) / 10.f;
  s.sink_value_norm = float(pick(rng) % 100) / 100.f;
  s.key_scale = 0.5f + float(pick(rng) % 20) / 10.f;
  s.key_decay = float(pick(rng) % 3) * 2.f;
  s.quiet_block_fraction = float(pick(rng) % 4) / 4.f;
  return s;
}

AttentionPolicy random_policy(std::mt19937_64& rng, PolicyKind kind) {
  std::uniform_real_distribution<double> u(0, 1);
  AttentionPolicy p;
  p.kind = kind;
  p.mode = u(rng) < 0.5 ? RouterMode::Certified : RouterMode::Fast;
  p.epsilon = std::pow(10.0, -1 - 5 * u(rng));
  p.tau = std::pow(10.0, -1 - 6 * u(rng));
  p.window = 1 + int(u(rng) * 150);
  p.sink_tokens = int(u(rng) * 6);
  p.quest_budget = 16 + int(u(rng) * 400);
  if (p.mode == RouterMode::Fast && u(rng) < 0.6) {  // the fast mode's estimates (policy.h EstimateKind)
    p.estimate = u(rng) < 0.7 ? EstimateKind::Gauss : EstimateKind::Bound;
    // Gauss: any spread; bound: at most 1 (an estimate above the bound is no estimate).
    p.spread = p.estimate == EstimateKind::Gauss ? 0.25 + 1.75 * u(rng) : 0.25 + 0.75 * u(rng);
  }
  return p;
}

// Over head (b, qh): the squared distance of `got` (elements of type T) from the float64
// `ref`, and ref's squared norm.
struct HeadDiff {
  double err2 = 0, ref2 = 0;
};
template <typename T>
HeadDiff head_diff(const TensorView& got, const TensorView& ref, int b, int qh, int D) {
  HeadDiff r;
  for (int d = 0; d < D; ++d) {
    const double g = got.ptr<T>()[got.offset(b, qh, d)], x = ref.ptr<double>()[ref.offset(b, qh, d)];
    r.err2 += (g - x) * (g - x);
    r.ref2 += x * x;
  }
  return r;
}

struct CaseResult {
  int64_t blocks = 0, mismatched = 0;
};

void check_routed_case(uint64_t seed, PolicyKind kind, CaseResult& total) {
  std::mt19937_64 rng(seed);
  const SyntheticKVSpec spec = random_spec(rng);
  auto r = make_synthetic_kv(spec, rng);
  const AttentionPolicy policy = random_policy(rng, kind);
  const int B = int(spec.lengths.size()), H = spec.num_kv_heads, G = spec.group, QH = H * G, D = spec.head_dim;
  const float scale = 1.f / std::sqrt(float(D));
  const PagedKV& kv = r.batch.view;
  std::string what = fmt::format("seed {} {} G{} D{} P{} R{}", seed, policy.describe(), G, D, spec.page_size,
                                 spec.block_size);

  DeviceKVCache dev = DeviceKVCache::upload(*r.cache, r.seqs, 0);
  CudaDecodeOptions opt;
  opt.min_split_tokens = 1 + int(seed % 3) * 40;  // many small splits, or a few
  if (const char* env = std::getenv("SR_CUDA_ROUTED_MIN_SPLIT")) opt.min_split_tokens = std::max(1, std::atoi(env));
  opt.tensor_cores = (seed / 4) % 2 == 0;         // both attention kernels (groups <= 4)
  opt.kv_l2_prefetch = int(seed / 8 % 3) * 128;    // 0, 128, 256: every L2 prefetch size
  opt.adaptive_route_chunks = int(seed / 6 % 3);   // the routing pass's fixed, adaptive and small-step chunks,
  opt.route_min_ctas = seed / 12 % 2 ? 1 : 0;       // adaptive ones of several steps too
  opt.route_chunk_lists = seed % 4 == 3 ? 0 : 1;   // fast mode's kept list by the routing CTAs, or by the finish
  opt.route_tensor_cores = seed % 9 == 5 ? 0 : 1;   // the bounds step on the tensor cores (where it applies), or the quads
  opt.route_trigger = int(seed / 3 % 3);            // fast mode's attention launched at the pass's start, its CTAs' exit, or auto
  opt.kv_copy = seed / 24 % 2 ? 0 : 2;             // cp.async, or TMA where it runs (auto)
  opt.waves = seed % 5 == 2 ? 3 : 1;                // several waves of splits (taken however short the call)
  opt.waves_min_split_tokens = 1;
  opt.certificate_share_min_blocks = seed % 7 < 3 ? 0 : 4096;  // fast mode's certificate in shares, or the finish's
  opt.ctas_per_sm = seed % 11 == 4 ? 1 : 0;         // one attention CTA an SM (a smaller wave), or as many as fit
  opt.spread_ctas = seed % 3 == 1 ? 1 : 0;          // the flat list's entries strided over the first wave
  // Dynamic splits (tensor cores only): claimed chunks in every unit, in long units only, or none.
  opt.dynamic_splits = opt.tensor_cores && G <= 4 && seed / 2 % 3 != 0 ? 1 : 0;
  opt.dynamic_min_split_tokens = seed / 2 % 3 == 1 ? 1 : 256;
  // Cluster mode (tensor cores, fixed splits): on even seeds of those, clusters of 3, 8 or 16
  // CTAs or the plan's, wide CTAs on every other one (not with 16: no wide cluster of 16 need
  // be resident) and auto's choice otherwise.
  if (opt.tensor_cores && G <= 4 && opt.dynamic_splits == 0 && seed % 2 == 0) {
    opt.routed_cluster = 1;
    opt.cluster_ctas = std::array<int, 4>{0, 3, 8, 16}[(seed / 6 + seed / 24) % 4];
    opt.wide_ctas = seed % 4 == 0 && opt.cluster_ctas != 16 ? 1 : 2;
  } else {
    opt.routed_cluster = 0;
  }
  CudaDecoder decoder(dev.view(), QH, policy, scale, opt);
  if (decoder.uses_tma_copies()) what += " (TMA copies)";
  if (decoder.uses_dynamic_splits()) what += fmt::format(" (dynamic splits from {} tokens)", opt.dynamic_min_split_tokens);
  if (decoder.cluster_ctas() > 0)
    what += fmt::format(" (clusters of {}{})", decoder.cluster_ctas(), decoder.uses_wide_ctas() ? " wide CTAs" : "");
  DeviceBuffer qd = testing::to_device(r.q);
  HostTensor out(DType::F32, {B, QH, D}), routed(DType::F64, {B, QH, D}), exact(DType::F64, {B, QH, D});
  DeviceBuffer od(out.bytes());
  testing::poison(od);
  decoder.run(dev.view(), qd.get(), DType::F32, od.get(), DType::F32, nullptr);
  SR_ASSERT_KERNELS_OK(what);
  testing::to_host(od, out);
  const CudaRouting routing = decoder.download_routing();
  const std::vector<HeadStats> stats = decoder.download_stats();
  const RoutePlan plan = testing::plan_from_device(routing, kv, policy, G, scale);

  // 1. The kernel read and summed what it decided.
  decode_reference(r.q.view(), kv, plan, routed.view());
  const std::string mismatch = compare_to_reference(out.view(), routed.view(), tolerance_for(DType::F32));
  if (!mismatch.empty()) {  // where: the worst query head's relative error, its KV head and kept blocks
    double worst = -1;
    int wb = 0, wq = 0;
    for (int b = 0; b < B; ++b)
      for (int qh = 0; qh < QH; ++qh) {
        const HeadDiff hd = head_diff<float>(out.view(), routed.view(), b, qh, D);
        const double rel = std::sqrt(hd.err2 / std::max(hd.ref2, 1e-300));
        if (rel > worst) worst = rel, wb = b, wq = qh;
      }
    FAIL() << what << ": " << mismatch << "; worst head b" << wb << " qh" << wq << " (KV head " << wq / G
           << ", group member " << wq % G << ", length " << spec.lengths[size_t(wb)] << ", kept blocks "
           << routing.kept_blocks[size_t(wb * H + wq / G)].size() << "): relative error " << worst;
  }

  // 2. The certificate holds against the exact attention.
  std::vector<double> skipped;
  decode_exact(r.q.view(), kv, scale, exact.view(), &plan, &skipped);
  for (int b = 0; b < B; ++b)
    for (int qh = 0; qh < QH; ++qh) {
      const size_t qi = size_t(b) * QH + size_t(qh);
      ASSERT_LE(skipped[qi], double(routing.delta[qi]) + 1e-300) << what << " b" << b << " qh" << qh;
      if (kind == PolicyKind::SinkRouter && policy.mode == RouterMode::Certified)
        ASSERT_LE(routing.delta[qi], policy.epsilon * (1 + 1e-5)) << what;
      // The exact output against what was read (routed), and the norm of what was read.
      const HeadDiff hd = head_diff<double>(exact.view(), routed.view(), b, qh, D);
      const double err2 = hd.err2, kept2 = hd.ref2;
      const double bound = routing.skipped_v_bound[qi] + routing.delta[qi] * std::sqrt(kept2);
      ASSERT_LE(std::sqrt(err2), bound * (1 + 1e-6) + 1e-12) << what << " delta " << routing.delta[qi];
      const HeadStats& st = stats[size_t(b) * H + size_t(qh / G)];
      ASSERT_LE(std::sqrt(err2), st.output_error_bound * (1 + 1e-4) + 1e-6) << what;
    }

  // 3. Anchors are read once: alone when their block was skipped, else with the block.
  for (int bh = 0; bh < B * H; ++bh) {
    const std::set<int32_t> kept(routing.kept_blocks[size_t(bh)].begin(), routing.kept_blocks[size_t(bh)].end());
    for (int32_t p : routing.extra_anchors[size_t(bh)]) {
      ASSERT_LT(p, routing.window_start[size_t(bh)]) << what;
      ASSERT_EQ(kept.count(p / spec.block_size), 0u) << what << " anchor " << p << " read twice";
    }
  }

  // 4. Decisions and statistics against the CPU router.
  const RoutePlan cpu = plan_decode(r.q.view(), kv, policy, scale);
  const int64_t tb = kv.token_bytes();
  for (int bh = 0; bh < B * H; ++bh) {
    std::set<int32_t> cpu_kept;
    for (int32_t i = cpu.span_indptr[size_t(bh)]; i < cpu.span_indptr[size_t(bh) + 1]; ++i)
      if (cpu.spans[size_t(i)].kind == SpanKind::Block) cpu_kept.insert(cpu.spans[size_t(i)].block);
    const std::set<int32_t> dev_kept(routing.kept_blocks[size_t(bh)].begin(), routing.kept_blocks[size_t(bh)].end());
    // Blocks kept only because an anchor inside them holds no other token are not Block spans
    // on the CPU; compare on blocks that have a non-anchor token (all with R >= 8 here).
    std::vector<int32_t> diff;
    std::set_symmetric_difference(cpu_kept.begin(), cpu_kept.end(), dev_kept.begin(), dev_kept.end(),
                                  std::back_inserter(diff));
    const HeadStats& s = stats[size_t(bh)];
    const HeadStats& c = cpu.stats[size_t(bh)];
    total.blocks += c.blocks_total;
    total.mismatched += int64_t(diff.size());
    // Float vs double bound terms can move the certified threshold by a block, or swap two
    // blocks of nearly equal cost at it.
    ASSERT_LE(diff.size(), size_t(2)) << what << " bh " << bh << ": device and CPU decisions differ on "
                                      << diff.size() << " of " << c.blocks_total << " blocks";
    EXPECT_EQ(s.blocks_total, c.blocks_total) << what;
    EXPECT_EQ(s.bytes_dense, c.bytes_dense) << what;
    EXPECT_EQ(s.bytes_summary, c.bytes_summary) << what;
    EXPECT_EQ(s.bytes_anchor_window, c.bytes_anchor_window) << what;
    EXPECT_EQ(s.blocks_total - s.blocks_skipped, int32_t(dev_kept.size())) << what;
    if (diff.empty()) {
      EXPECT_EQ(s.blocks_skipped, c.blocks_skipped) << what;
      EXPECT_EQ(s.bytes_blocks, c.bytes_blocks) << what;
      EXPECT_EQ(s.sink_route, c.sink_route) << what;
      // Streaming and quest deltas are diagnostic bounds that overflow to inf when a skipped
      // block scores far above the sink; equal infinities agree.
      // Finite deltas: each term is R exp(u - m) / Z with u a float sum of D products taken
      // in another order on each side (lanes' butterfly against a sequential loop), so u
      // differs by up to ~|u| 2^-24 sqrt(D), and the term by that much relatively: with u
      // near 50 (fast mode skips such blocks), 1e-5 of the delta (seen on the H200, run 3:
      // 1.03e-5 at seed 128). Both are true bounds (u includes its rounding allowance).
      if (std::isinf(c.delta))
        EXPECT_EQ(s.delta, c.delta) << what;
      else
        EXPECT_NEAR(s.delta, c.delta, 1e-4 * c.delta + 1e-30) << what;
    }
    EXPECT_EQ(s.bytes_blocks % tb, 0) << what;
  }

  // 5. Fast mode routes in one launch by default (route_bounds finishes the pass); the
  // two-kernel path (route_select finishing) must decide, certify and attend identically.
  if (kind == PolicyKind::SinkRouter && policy.mode == RouterMode::Fast) {
    CudaDecodeOptions two_kernels = opt;
    two_kernels.fused_fast_routing = false;
    CudaDecoder unfused(dev.view(), QH, policy, scale, two_kernels);
    DeviceBuffer od2(out.bytes());
    testing::poison(od2);
    unfused.run(dev.view(), qd.get(), DType::F32, od2.get(), DType::F32, nullptr);
    SR_ASSERT_KERNELS_OK(what + " (two kernels)");
    HostTensor out2(DType::F32, {B, QH, D});
    testing::to_host(od2, out2);
    const CudaRouting r2 = unfused.download_routing();
    const std::vector<HeadStats> stats2 = unfused.download_stats();
    EXPECT_EQ(r2.kept_blocks, routing.kept_blocks) << what;
    EXPECT_EQ(r2.extra_anchors, routing.extra_anchors) << what;
    EXPECT_EQ(r2.window_start, routing.window_start) << what;
    EXPECT_EQ(r2.sink_max, routing.sink_max) << what;
    for (size_t i = 0; i < r2.delta.size(); ++i) {
      // The same terms summed in double by CTAs of 256 and 512 threads, then rounded up to
      // float: at most an ulp apart.
      EXPECT_NEAR(r2.delta[i], routing.delta[i], 1e-6 * routing.delta[i] + 1e-30) << what << " i " << i;
      EXPECT_NEAR(r2.skipped_v_bound[i], routing.skipped_v_bound[i], 1e-6 * routing.skipped_v_bound[i] + 1e-30)
          << what << " i " << i;
    }
    for (size_t bh = 0; bh < stats2.size(); ++bh) {
      EXPECT_EQ(stats2[bh].blocks_skipped, stats[bh].blocks_skipped) << what;
      EXPECT_EQ(stats2[bh].bytes_blocks, stats[bh].bytes_blocks) << what;
      EXPECT_EQ(stats2[bh].bytes_anchor_window, stats[bh].bytes_anchor_window) << what;
    }
    // Fixed splits sum in the same order: the same bits. Dynamic splits do not (which warp
    // claims which chunk varies): both against the reference of what was read.
    if (decoder.uses_dynamic_splits())
      EXPECT_EQ(compare_to_reference(out2.view(), routed.view(), tolerance_for(DType::F32)), "") << what << " (two kernels)";
    else
      EXPECT_EQ(std::memcmp(out2.data(), out.data(), out.bytes()), 0) << what << ": outputs differ";
  }
}

TEST(CudaRoutedDecode, CertificateAndOutputOnRandomCases) {
  SR_REQUIRE_CUDA_DEVICE();
  const PolicyKind kinds[] = {PolicyKind::SinkRouter, PolicyKind::SinkRouter, PolicyKind::Streaming,
                              PolicyKind::Quest};
  CaseResult total;
  // SR_CUDA_ROUTED_CASES lowers the count for slow runs (compute-sanitizer).
  const char* env = std::getenv("SR_CUDA_ROUTED_CASES");
  const uint64_t cases = env ? uint64_t(std::max(1, std::atoi(env))) : 240;
  // SR_CUDA_ROUTED_FIRST_SEED starts later (a diagnostic run of one failing case).
  const char* first_env = std::getenv("SR_CUDA_ROUTED_FIRST_SEED");
  const uint64_t first = first_env ? uint64_t(std::max(0, std::atoi(first_env))) : 0;
  for (uint64_t seed = first; seed < first + cases; ++seed) {
    check_routed_case(seed, kinds[seed % 4], total);
    if (::testing::Test::HasFatalFailure()) return;
  }
  // Boundary ties aside, the device decides as the CPU does.
  EXPECT_LE(total.mismatched * 1000, total.blocks) << total.mismatched << " of " << total.blocks;
  std::printf("routed CUDA vs CPU decisions: %lld of %lld blocks differ\n", (long long)total.mismatched,
              (long long)total.blocks);
}

// Auto's routed plan at the kernel benchmark's shapes (planned only, nothing runs): cluster mode
// at batch 1 up to its capacity (64K tokens in fast mode at head dim 128, else 16K), wide CTAs;
// the flat list past it, at batch 8 and with dynamic splits on; routed_cluster and
// dynamic_splits both on is a clear error.
TEST(CudaRoutedDecode, AutoPlanTakesClustersAtBatchOneUpToACapacity) {
  SR_REQUIRE_CUDA_DEVICE();
  if (!testing::device_is_sm90()) GTEST_SKIP() << "cluster mode needs an sm_90 device";
  struct Shape {
    int kv_heads, q_heads, head_dim, batch;
    int64_t capacity;
    RouterMode mode;
    int dynamic;       // CudaDecodeOptions::dynamic_splits
    int want_ctas;     // cluster CTAs expected (0: the flat list)
  };
  for (const Shape s : {Shape{8, 32, 128, 1, 4096, RouterMode::Fast, -1, 8}, Shape{8, 32, 128, 1, 65536, RouterMode::Fast, -1, 8},
                        Shape{8, 32, 128, 1, 131072, RouterMode::Fast, -1, 8},
                        Shape{8, 32, 128, 1, 524288, RouterMode::Fast, -1, 8},
                        Shape{8, 32, 128, 2, 131072, RouterMode::Fast, -1, 0},
                        Shape{8, 32, 128, 1, 16384, RouterMode::Certified, -1, 8},
                        Shape{8, 32, 128, 1, 65536, RouterMode::Certified, -1, 0},
                        Shape{8, 32, 128, 8, 4096, RouterMode::Fast, -1, 0}, Shape{8, 32, 128, 1, 4096, RouterMode::Fast, 1, 0},
                        Shape{3, 9, 64, 1, 16384, RouterMode::Fast, -1, 16}, Shape{3, 9, 64, 1, 65536, RouterMode::Fast, -1, 0}}) {
    DeviceKVCache cache = testing::capacity_only_cache(s.kv_heads, s.head_dim, s.batch, s.capacity);
    AttentionPolicy p;
    p.kind = PolicyKind::SinkRouter;
    p.mode = s.mode;
    CudaDecodeOptions opt;
    opt.dynamic_splits = s.dynamic;
    CudaDecoder d(cache.view(0, s.batch), s.q_heads, p, 0.1f, opt);
    const std::string how = fmt::format("{} KV heads, head dim {}, batch {}, capacity {}, {}: {} clusters of {}{}",
                                        s.kv_heads, s.head_dim, s.batch, s.capacity, p.describe(), d.cluster_groups(),
                                        d.cluster_ctas(), d.uses_wide_ctas() ? ", wide CTAs" : "");
    EXPECT_EQ(d.cluster_ctas(), s.want_ctas) << how;
    // Auto's launch trigger: at the routing CTAs' exit in fast mode, but for clusters of 16.
    EXPECT_EQ(d.route_trigger_at_exit(), s.mode == RouterMode::Fast && s.want_ctas != 16) << how;
    if (s.want_ctas > 0) {
      EXPECT_EQ(d.cluster_groups(), 1) << how;
      EXPECT_TRUE(d.uses_wide_ctas()) << how;
      EXPECT_EQ(d.grid_ctas(), s.kv_heads * s.batch * s.want_ctas) << how;
    }
    EXPECT_FALSE(d.uses_dynamic_splits() && d.cluster_ctas() > 0) << how;
    // Errors: dynamic splits and cluster mode both on; a value out of range.
    for (const auto& [value, needle] : {std::pair<int, std::string>{1, "not both"},
                                        std::pair<int, std::string>{3, "routed_cluster must be 0 (off), 1 (on) or 2 (auto), not 3"}}) {
      if (value == 1 && s.dynamic != 1) continue;
      CudaDecodeOptions bad = opt;
      bad.routed_cluster = value;
      try {
        CudaDecoder e(cache.view(0, s.batch), s.q_heads, p, 0.1f, bad);
        ADD_FAILURE() << how << ": expected an error mentioning '" << needle << "'";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      }
    }
  }
}

// A dominant sink and three quiet blocks in four: certified mode skips most of the cache,
// reads what it says it reads, and epsilon = 0 reads everything (equals dense).
TEST(CudaRoutedDecode, SkipsQuietBlocksAndEpsilonZeroIsDense) {
  SR_REQUIRE_CUDA_DEVICE();
  std::mt19937_64 rng(31);
  SyntheticKVSpec spec = SyntheticKVSpec::llama_8b();
  spec.num_kv_heads = 2;
  spec.lengths = {20000, 3001};
  spec.quiet_block_fraction = 0.75f;
  auto r = make_synthetic_kv(spec, rng);
  const int B = 2, QH = 8, D = 128;
  const float scale = 1.f / std::sqrt(128.f);
  DeviceKVCache dev = DeviceKVCache::upload(*r.cache, r.seqs, 0);
  DeviceBuffer qd = testing::to_device(r.q);
  for (double eps : {1e-2, 0.0}) {
    const AttentionPolicy p = testing::certified_policy(eps);
    CudaDecoder decoder(dev.view(), QH, p, scale);
    HostTensor out(DType::BF16, {B, QH, D}), ref(DType::F64, {B, QH, D});
    DeviceBuffer od(out.bytes());
    testing::poison(od);
    decoder.run(dev.view(), qd.get(), DType::F32, od.get(), DType::BF16, nullptr);
    SR_ASSERT_KERNELS_OK(fmt::format("eps {}", eps));
    testing::to_host(od, out);
    const HeadStats t = accumulate(decoder.download_stats());
    if (eps > 0) {
      EXPECT_GT(t.blocks_skipped, t.blocks_total / 2);
      EXPECT_LT(t.bytes_read(), t.bytes_dense / 2);
      EXPECT_LE(t.delta, 1e-2f);
      const RoutePlan plan = testing::plan_from_device(decoder.download_routing(), r.batch.view, p, 4, scale);
      decode_reference(r.q.view(), r.batch.view, plan, ref.view());
    } else {
      EXPECT_EQ(t.blocks_skipped, 0);
      EXPECT_EQ(t.delta, 0.f);
      decode_exact(r.q.view(), r.batch.view, scale, ref.view());
    }
    EXPECT_EQ(compare_to_reference(out.view(), ref.view(), tolerance_for(DType::BF16)), "") << "eps " << eps;
  }
}

}  // namespace
}  // namespace sinkrouter

#else

TEST(CudaRoutedDecode, Skipped) { GTEST_SKIP() << "built without CUDA"; }

#endif  // SINKROUTER_HAVE_CUDA
