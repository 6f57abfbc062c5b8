// The CUDA routing select kernel on long sequences, so that every one of its paths runs:
// block size 8 and 90 % quiet blocks put ~700, ~4500 and ~9000 candidate blocks per
// (sequence, KV head) at 6000, 40000 and 80000 tokens: the small sort (<= 1024), the
// large sort (<= 8192) and the bisection past it. Certified routing at several epsilons
// (at least one of which must cut through the quiet blocks, or the sort never decides
// anything) and quest at several budgets; every time the device decides as the CPU
// router does (up to two blocks per head at the threshold: float versus double bound
// terms), certified deltas stay <= epsilon and the certificate bounds the exact skipped
// softmax mass. Fast mode runs on the same sequences: its finish (route_bounds' last CTA)
// then takes one, two and three passes of 4,096 blocks, with the certificate in the CTAs'
// shares and in the finish itself, and its kept list written by the route_bounds CTAs
// (each its chunk's part) and by the finish; certified and fast mode also bound on the quads
// (route_tensor_cores off) besides the tensor cores; a second run of each decoder must list and
// bound exactly as the first (the pass's tickets and counts return to 0). A second test
// makes the quiet blocks' bounds exactly equal, so that the cuts fall inside runs of ties
// (decided by block index).
#include <gtest/gtest.h>

#if defined(SINKROUTER_HAVE_CUDA)

#include <algorithm>
#include <climits>
#include <cmath>
#include <iterator>
#include <random>
#include <set>
#include <utility>

#include "cuda_test_util.h"
#include "sinkrouter/attention/decode_cuda.h"
#include "sinkrouter/kv/synthetic_kv.h"

namespace sinkrouter {
namespace {

void check_every_path(int64_t len, float quiet_scale) {
  {
    std::mt19937_64 rng{uint64_t(len)};
    SyntheticKVSpec spec;
    spec.num_kv_heads = 2;
    spec.group = 3;
    spec.head_dim = 64;
    spec.dtype = DType::BF16;
    spec.page_size = 16;
    spec.block_size = 8;
    spec.lengths = {len};
    spec.sink_positions = {0};
    spec.sink_score = 14.f;
    spec.quiet_block_fraction = 0.9f;
    spec.quiet_key_scale = quiet_scale;
    auto r = make_synthetic_kv(spec, rng);
    const PagedKV& kv = r.batch.view;
    const int H = spec.num_kv_heads, G = spec.group, QH = H * G, D = spec.head_dim;
    const float scale = 1.f / std::sqrt(float(D));
    DeviceKVCache dev = DeviceKVCache::upload(*r.cache, r.seqs, 0);
    testing::DeviceBuffer qd = testing::to_device(r.q);
    testing::DeviceBuffer od(size_t(QH) * D * 4);

    // (policy, certificate_share_min_blocks, route_chunk_lists, route_tensor_cores): fast mode's
    // certificate in the route_bounds CTAs' shares from 4,096 blocks (the default), or always in
    // the finish; its kept list by the route_bounds CTAs (the default), or by the finish; the
    // bounds step on the tensor cores (the default here: a bf16 cache, G 3) or the quads.
    struct Case {
      AttentionPolicy policy;
      int share_min, chunk_lists, tc = 1;
    };
    std::vector<Case> cases;
    for (double eps : {1e-1, 1e-2, 1e-3, 1e-4, 1e-5}) {
      const AttentionPolicy p = testing::certified_policy(eps, 32);
      cases.push_back({p, CudaDecodeOptions{}.certificate_share_min_blocks, 1});
      if (eps == 1e-3) cases.push_back({p, CudaDecodeOptions{}.certificate_share_min_blocks, 1, 0});
    }
    for (double frac : {0.1, 0.5, 0.9}) {
      AttentionPolicy p;
      p.kind = PolicyKind::Quest;
      p.window = 32;
      p.quest_budget = 32 + int(frac * double(len));
      cases.push_back({p, CudaDecodeOptions{}.certificate_share_min_blocks, 1});
    }
    // Fast mode: shares from the default 4,096 blocks (the longer sequences' CTAs write their
    // lists) with and without the CTAs' lists; no shares (the finish sums and lists); shares
    // from 0 blocks (every length's CTAs write their lists).
    const int default_share = CudaDecodeOptions{}.certificate_share_min_blocks;
    for (double tau : {1e-2, 1e-4})
      for (const auto& [share_min, chunk_lists] :
           {std::pair{default_share, 1}, std::pair{default_share, 0}, std::pair{INT_MAX, 1}, std::pair{0, 1}}) {
        AttentionPolicy p;
        p.kind = PolicyKind::SinkRouter;
        p.mode = RouterMode::Fast;
        p.tau = tau;
        p.window = 32;
        cases.push_back({p, share_min, chunk_lists});
        if (share_min == default_share && chunk_lists == 1) cases.push_back({p, share_min, chunk_lists, 0});
      }
    bool cut_through_quiet = false;
    for (const auto& [policy, share_min, chunk_lists, tc] : cases) {
      const bool certified = policy.kind == PolicyKind::SinkRouter && policy.mode == RouterMode::Certified;
      const std::string what =
          fmt::format("length {} quiet key scale {} {} (shares from {} blocks, chunk lists {}, tensor cores {})", len,
                      quiet_scale, policy.describe(), share_min, chunk_lists, tc);
      CudaDecodeOptions options;
      options.certificate_share_min_blocks = share_min;
      options.route_chunk_lists = chunk_lists;
      options.route_tensor_cores = tc;
      CudaDecoder decoder(dev.view(), QH, policy, scale, options);
      EXPECT_EQ(decoder.routes_on_tensor_cores(), tc == 1) << what;
      decoder.run(dev.view(), qd.get(), DType::F32, od.get(), DType::F32, nullptr);
      SR_ASSERT_KERNELS_OK(what);
      const CudaRouting routing = decoder.download_routing();
      const std::vector<HeadStats> stats = decoder.download_stats();
      {  // A second run decides and lists the same (the pass returns its tickets and counts to 0).
        decoder.run(dev.view(), qd.get(), DType::F32, od.get(), DType::F32, nullptr);
        SR_ASSERT_KERNELS_OK(what + " (second run)");
        const CudaRouting again = decoder.download_routing();
        EXPECT_EQ(again.kept_blocks, routing.kept_blocks) << what << ": the second run listed other blocks";
        EXPECT_EQ(again.delta, routing.delta) << what << ": the second run bounded otherwise";
      }
      const RoutePlan cpu = plan_decode(r.q.view(), kv, policy, scale);
      int64_t skipped_blocks = 0;
      for (int bh = 0; bh < H; ++bh) {
        std::set<int32_t> cpu_kept;
        for (int32_t i = cpu.span_indptr[size_t(bh)]; i < cpu.span_indptr[size_t(bh) + 1]; ++i)
          if (cpu.spans[size_t(i)].kind == SpanKind::Block) cpu_kept.insert(cpu.spans[size_t(i)].block);
        const std::set<int32_t> dev_kept(routing.kept_blocks[size_t(bh)].begin(),
                                         routing.kept_blocks[size_t(bh)].end());
        std::vector<int32_t> diff;
        std::set_symmetric_difference(cpu_kept.begin(), cpu_kept.end(), dev_kept.begin(), dev_kept.end(),
                                      std::back_inserter(diff));
        EXPECT_LE(diff.size(), size_t(2)) << what << " head " << bh << ": " << diff.size() << " of "
                                          << cpu.stats[size_t(bh)].blocks_total << " blocks decided otherwise";
        const HeadStats& c = cpu.stats[size_t(bh)];
        if (certified && c.blocks_skipped > c.blocks_total / 10 && c.blocks_skipped < c.blocks_total * 8 / 10)
          cut_through_quiet = true;
        EXPECT_EQ(stats[size_t(bh)].blocks_total, c.blocks_total) << what;
        EXPECT_EQ(stats[size_t(bh)].blocks_total - stats[size_t(bh)].blocks_skipped, int32_t(dev_kept.size()))
            << what;
        skipped_blocks += stats[size_t(bh)].blocks_skipped;
      }
      // Fast mode's quiet blocks (keys x 0.02, or 0) fall below both taus: its finish compacts a
      // list with holes and sums a certificate over them.
      if (policy.kind == PolicyKind::SinkRouter && policy.mode == RouterMode::Fast) EXPECT_GT(skipped_blocks, 0) << what;

      // The certificate, against the exact attention over what the device skipped.
      const RoutePlan plan = testing::plan_from_device(routing, kv, policy, G, scale);
      HostTensor exact(DType::F64, {1, QH, D});
      std::vector<double> skipped;
      decode_exact(r.q.view(), kv, scale, exact.view(), &plan, &skipped);
      for (int qh = 0; qh < QH; ++qh) {
        EXPECT_LE(skipped[size_t(qh)], double(routing.delta[size_t(qh)]) + 1e-300) << what << " head " << qh;
        if (certified) EXPECT_LE(routing.delta[size_t(qh)], policy.epsilon * (1 + 1e-5)) << what << " head " << qh;
      }
    }
    EXPECT_TRUE(cut_through_quiet) << "no epsilon skipped only part of the quiet blocks at length " << len
                                   << ", quiet key scale " << quiet_scale
                                   << ": the sorted and bisected cuts were not exercised";
  }
}

TEST(CudaRouteSelect, EveryPathDecidesAsTheCpu) {
  SR_REQUIRE_CUDA_DEVICE();
  for (int64_t len : {6000, 40000, 80000}) {
    check_every_path(len, 0.02f);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

// Quiet keys of zero: every quiet block has the bound 0 and the same cost, so that quest's
// top-k (budgets past the loud blocks) and the certified cut fall inside a run of exactly
// tied blocks, which the CPU orders by block index; the device must too, on every path
// (small sort, large sort, bisection on the bits and then on the index).
TEST(CudaRouteSelect, TiedBlocksAreTakenInBlockOrder) {
  SR_REQUIRE_CUDA_DEVICE();
  for (int64_t len : {6000, 40000, 80000}) {
    check_every_path(len, 0.f);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace sinkrouter

#else

TEST(CudaRouteSelect, Skipped) { GTEST_SKIP() << "built without CUDA"; }

#endif  // SINKROUTER_HAVE_CUDA
