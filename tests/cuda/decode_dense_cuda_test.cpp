// CUDA dense decode against the float64 exact attention, every output element, over the
// grid of the CPU tests (odd lengths, GQA groups 1 to 8 and beyond, page sizes 1 to 256,
// bf16/fp16 KV, head dims 64 and 128, f32/bf16/f16 queries and outputs, batches of
// different lengths) and Split-K settings from one split per sequence to one-token splits;
// groups of up to 4 through both the tensor-core and the CUDA-core kernel, the tensor-core
// one with both K/V copies (cp.async, and TMA where the page size is a multiple of 16 on an
// sm_90 device: the cache's unwritten rows are NaN, so a TMA stage reaching past a length
// must zero them), each in Split-K and, on an sm_90 device, in cluster mode (clusters of 2
// to 16 CTAs merging through distributed shared memory, one to five clusters a head merging
// slice by slice after, some CTAs with empty splits; with fixed splits, the page ids loaded
// before the PDL wait and, in most cases, the first TMA copies issued before the length is
// known), with fixed and with dynamic splits
// (warps claiming 256-token chunks; some units left fixed by their length). Every decoder
// runs twice: the fused combine's tickets and the chunk counters must be back at zero for the
// second run.
#include <gtest/gtest.h>

#if defined(SINKROUTER_HAVE_CUDA)

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <tuple>

#include "common/compare.h"
#include "cuda_test_util.h"
#include "sinkrouter/attention/decode_cuda.h"
#include "sinkrouter/kv/synthetic_kv.h"

namespace sinkrouter {
namespace {

using testing::compare_to_reference;
using testing::DeviceBuffer;
using testing::device_is_sm90;
using testing::tolerance_for;

struct DenseCase {
  int kv_heads, group, head_dim;
  DType kv_dtype, q_dtype, out_dtype;
  int page_size;
  std::vector<int64_t> lengths;
  int min_split_tokens;
  int cluster_ctas;    // cluster mode's CTAs a cluster (0: the decoder chooses)
  int cluster_groups;  // and clusters a (sequence, KV head) (0: the decoder chooses)
  int ctas_per_sm;     // at most this many attention CTAs an SM (0: as many as fit)
};

// The current device's SM count (the flat list's wave is a multiple of it).
void device_sm_count(int* sms) {
  int dev_id = 0;
  SR_ASSERT_CUDA(cudaGetDevice(&dev_id));
  SR_ASSERT_CUDA(cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, dev_id));
}

std::string case_name(const DenseCase& c) {
  std::string s = fmt::format("h{}_g{}_d{}_{}_q{}_out{}_p{}_split{}_cl{}x{}_sm{}", c.kv_heads, c.group, c.head_dim,
                              dtype_name(c.kv_dtype), dtype_name(c.q_dtype), dtype_name(c.out_dtype), c.page_size,
                              c.min_split_tokens, c.cluster_ctas, c.cluster_groups, c.ctas_per_sm);
  for (int64_t n : c.lengths) s += fmt::format("_{}", n);
  return s;
}

std::vector<DenseCase> dense_cases() {
  std::vector<DenseCase> cases;
  const std::vector<std::vector<int64_t>> lengths = {{1}, {3, 65, 129}, {1000, 17}, {2049}, {5000, 1, 333}};
  const DType types[] = {DType::F32, DType::BF16, DType::F16};
  int i = 0;
  for (int group : {1, 2, 3, 4, 5, 8, 12, 24})
    for (int page : {1, 16, 64, 256})
      for (DType kv : {DType::BF16, DType::F16}) {
        const int head_dim = (i % 2) ? 128 : 64;
        const int kv_heads = group == 8 ? 1 : 2;  // group 8 over one KV head: MQA
        const int split = i % 3 == 0 ? 128 : (i % 3 == 1 ? 16 : 1);
        const int cluster_ctas[] = {0, 2, 3, 7, 16}, cluster_groups[] = {0, 1, 2, 5}, ctas_per_sm[] = {0, 1, 3};
        cases.push_back({kv_heads, group, head_dim, kv, types[(i / 3) % 3], types[i % 3], page,
                         lengths[size_t(i) % lengths.size()], split, cluster_ctas[i % 5], cluster_groups[i % 4],
                         ctas_per_sm[(i / 4) % 3]});
        ++i;
      }
  return cases;
}

class CudaDenseDecode : public ::testing::TestWithParam<DenseCase> {};

TEST_P(CudaDenseDecode, MatchesFloat64Exact) {
  SR_REQUIRE_CUDA_DEVICE();
  const DenseCase c = GetParam();
  std::mt19937_64 rng(std::hash<std::string>{}(case_name(c)));
  SyntheticKVSpec spec;
  spec.num_kv_heads = c.kv_heads;
  spec.group = c.group;
  spec.head_dim = c.head_dim;
  spec.dtype = c.kv_dtype;
  spec.page_size = c.page_size;
  spec.lengths = c.lengths;
  spec.key_scale = 2.0f;  // a peaked softmax, not a flat average
  spec.sink_positions = {0};
  spec.sink_score = 10.f;
  auto r = make_synthetic_kv(spec, rng);
  const int B = int(c.lengths.size()), QH = c.kv_heads * c.group, D = c.head_dim;
  const float scale = 1.f / std::sqrt(float(D));
  const HostTensor q = testing::convert(r.q, c.q_dtype);  // the reference sees the rounded q

  DeviceKVCache dev = DeviceKVCache::upload(*r.cache, r.seqs, 3);
  DeviceBuffer qd = testing::to_device(q);
  HostTensor out(c.out_dtype, {B, QH, D}), ref(DType::F64, {B, QH, D});
  decode_exact(q.view(), r.batch.view, scale, ref.view());
  std::vector<HeadStats> st;
  // (tensor cores, K/V copies, cluster mode, dynamic splits, wide CTAs): cp.async, TMA where it
  // runs (auto), each in Split-K and in clusters (sm_90 only), each with fixed and dynamic
  // splits, clusters also of wide CTAs, and the CUDA cores.
  struct Config {
    bool tensor_cores;
    int kv_copy;
    bool cluster, dynamic, wide;
  };
  for (auto [tensor_cores, kv_copy, cluster, dynamic, wide] :
       {Config{true, 0, false, false, false}, Config{true, 2, false, false, false},
        Config{true, 0, true, false, false}, Config{true, 2, true, false, false},
        Config{true, 0, false, true, false}, Config{true, 2, false, true, false},
        Config{true, 0, true, true, false}, Config{true, 2, true, true, false},
        Config{true, 0, true, false, true}, Config{true, 2, true, false, true},
        Config{true, 2, true, true, true}, Config{false, 0, false, false, false}}) {
    if (!tensor_cores && c.group > 4) continue;  // groups past 4 always take the CUDA cores
    if (cluster && (c.group > 4 || !device_is_sm90())) continue;  // clusters: tensor cores on sm_90
    if (dynamic && c.group > 4) continue;                         // dynamic splits: tensor cores
    CudaDecodeOptions opt;
    opt.min_split_tokens = c.min_split_tokens;
    opt.tensor_cores = tensor_cores;
    opt.kv_copy = kv_copy;
    opt.cluster = cluster ? 1 : 0;
    opt.wide_ctas = wide ? 1 : 0;
    opt.cluster_ctas = c.cluster_ctas;
    opt.cluster_groups = c.cluster_groups;
    opt.ctas_per_sm = c.ctas_per_sm;
    // Dynamic: every unit claims chunks, or (512) only those whose splits reach 512 tokens;
    // chunks of 128 and 208 tokens.
    opt.dynamic_splits = dynamic ? 1 : 0;
    opt.dynamic_min_split_tokens = c.min_split_tokens == 16 ? 512 : 1;
    opt.dynamic_chunk_tokens = c.page_size == 64 ? 208 : 128;
    opt.spread_ctas = c.page_size == 16 || c.page_size == 256 ? 1 : 0;  // the flat list's entries strided
    opt.early_page_ids = c.min_split_tokens == 16 ? 1 : -1;  // cluster mode: page ids early, copies too (default)
    // Every L2 prefetch size over the grid (page sizes 1, 16, 64, 256 -> 0, 128, 256, 128):
    // the hint changes which bytes the L2 fetches, never what lands in shared memory.
    opt.kv_l2_prefetch = c.page_size == 1 ? 0 : (c.page_size == 64 ? 256 : 128);
    CudaDecoder decoder(dev.view(), QH, AttentionPolicy{}, scale, opt);
    EXPECT_EQ(decoder.uses_tensor_cores(), tensor_cores && c.group <= 4) << case_name(c);
    EXPECT_EQ(decoder.uses_dynamic_splits(), dynamic) << case_name(c);
    if (c.ctas_per_sm > 0) {  // the flat list's wave: at most ctas_per_sm CTAs an SM (one: exactly one)
      int sms = 0;
      device_sm_count(&sms);
      if (c.ctas_per_sm == 1)
        EXPECT_EQ(decoder.wave_ctas(), sms) << case_name(c);
      else
        EXPECT_LE(decoder.wave_ctas(), c.ctas_per_sm * sms) << case_name(c);
    }
    if (cluster) {  // clusters a (sequence, KV head); chosen: 2 to 16 CTAs, at most a wave's CTAs a head
      const int units = B * c.kv_heads;
      if (c.cluster_ctas > 0) {
        EXPECT_EQ(decoder.cluster_ctas(), c.cluster_ctas) << case_name(c);
      } else {
        EXPECT_GE(decoder.cluster_ctas(), 2) << case_name(c);
        EXPECT_LE(decoder.cluster_ctas(), 16) << case_name(c);
      }
      if (c.cluster_groups > 0) {
        EXPECT_EQ(decoder.cluster_groups(), c.cluster_groups) << case_name(c);
      } else {
        EXPECT_GE(decoder.cluster_groups(), 1) << case_name(c);
        if (c.cluster_ctas == 0)
          EXPECT_LE(decoder.cluster_ctas() * decoder.cluster_groups(), std::max(2, decoder.wave_ctas() / units))
              << case_name(c);
      }
      EXPECT_EQ(decoder.grid_ctas(), units * decoder.cluster_ctas() * decoder.cluster_groups()) << case_name(c);
      EXPECT_EQ(decoder.uses_wide_ctas(), wide) << case_name(c);
    } else {
      EXPECT_EQ(decoder.cluster_ctas(), 0) << case_name(c);
    }
    const bool tma = kv_copy == 2 && decoder.uses_tensor_cores() && c.page_size % 16 == 0 && device_is_sm90();
    EXPECT_EQ(decoder.uses_tma_copies(), tma) << case_name(c);
    if (kv_copy == 2 && !decoder.uses_tma_copies() && decoder.uses_tensor_cores()) continue;  // cp.async again
    DeviceBuffer od(out.bytes());
    for (int repeat = 0; repeat < 2; ++repeat) {
      testing::poison(od);
      decoder.run(dev.view(), qd.get(), c.q_dtype, od.get(), c.out_dtype, nullptr);
      SR_ASSERT_CUDA(cudaDeviceSynchronize());
      testing::to_host(od, out);
      EXPECT_EQ(compare_to_reference(out.view(), ref.view(), tolerance_for(c.out_dtype)), "")
          << case_name(c) << (tensor_cores ? (tma ? " tensor cores, TMA" : " tensor cores") : " CUDA cores")
          << (cluster ? fmt::format(", {} clusters of {}", decoder.cluster_groups(), decoder.cluster_ctas())
                      : std::string())
          << (dynamic ? ", dynamic splits" : "") << (wide ? ", wide CTAs" : "") << ", run " << repeat;
    }
    st = decoder.download_stats();
  }

  // Dense reads everything once; the statistics say so, per (sequence, KV head).
  ASSERT_EQ(st.size(), size_t(B) * c.kv_heads);
  const int64_t tb = r.batch.view.token_bytes();
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < c.kv_heads; ++h) {
      const HeadStats& s = st[size_t(b) * c.kv_heads + size_t(h)];
      EXPECT_EQ(s.bytes_dense, c.lengths[size_t(b)] * tb);
      EXPECT_EQ(s.bytes_read(), s.bytes_dense);
      EXPECT_EQ(s.blocks_skipped, 0);
      EXPECT_EQ(s.blocks_total, (c.lengths[size_t(b)] + 63) / 64);
      EXPECT_EQ(s.delta, 0.f);
    }
}

INSTANTIATE_TEST_SUITE_P(Grid, CudaDenseDecode, ::testing::ValuesIn(dense_cases()),
                         [](const auto& info) { return case_name(info.param); });

// Llama-shape heads (2 of them, group 4, head_dim 128) over a batch of one long sequence
// (40,000 tokens) and two short ones (7 and 1,500).
SyntheticKV long_and_short_batch(std::mt19937_64& rng) {
  SyntheticKVSpec spec = SyntheticKVSpec::llama_8b();
  spec.num_kv_heads = 2;
  spec.lengths = {40000, 7, 1500};
  spec.quiet_block_fraction = 0.f;
  return make_synthetic_kv(spec, rng);
}

// A long sequence spread over many CTAs, with the rest of the batch short: every split of
// the flat work list is exercised, and the result is still exact.
TEST(CudaDenseDecode, LongAndShortSequencesShareTheGrid) {
  SR_REQUIRE_CUDA_DEVICE();
  std::mt19937_64 rng(21);
  auto r = long_and_short_batch(rng);
  const int B = 3, QH = 8, D = 128;
  DeviceKVCache dev = DeviceKVCache::upload(*r.cache, r.seqs, 1);
  for (int target : {0, 3, 1000})
    for (auto [tensor_cores, kv_copy, dynamic] :
         {std::tuple{true, 0, false}, std::tuple{true, 2, false}, std::tuple{false, 0, false},
          std::tuple{true, 0, true}, std::tuple{true, 2, true}}) {
      CudaDecodeOptions opt;
      opt.cluster = 0;  // the flat list (cluster mode: below)
      // Dynamic: the long sequence's splits claim its 157 chunks; units whose splits are
      // under 256 tokens keep them fixed.
      opt.dynamic_splits = dynamic ? 1 : 0;
      opt.dynamic_min_split_tokens = 256;
      opt.spread_ctas = target != 3 ? 1 : 0;  // (strided over the wave of 1,000 CTAs and the device's)
      opt.target_ctas = target;
      opt.waves = target == 0 && kv_copy == 2 ? 3 : 1;  // three waves of splits over the resident CTAs
      opt.waves_min_split_tokens = 64;                    // (taken however short the call)
      opt.min_split_tokens = 64;
      opt.tensor_cores = tensor_cores;
      opt.kv_copy = kv_copy;
      CudaDecoder decoder(dev.view(), QH, AttentionPolicy{}, 1.f / std::sqrt(128.f), opt);
      DeviceBuffer qd = testing::to_device(r.q);
      HostTensor out(DType::F32, {B, QH, D}), ref(DType::F64, {B, QH, D});
      DeviceBuffer od(out.bytes());
      testing::poison(od);
      decoder.run(dev.view(), qd.get(), DType::F32, od.get(), DType::F32, nullptr);
      SR_ASSERT_CUDA(cudaDeviceSynchronize());
      testing::to_host(od, out);
      decode_exact(r.q.view(), r.batch.view, 1.f / std::sqrt(128.f), ref.view());
      EXPECT_EQ(compare_to_reference(out.view(), ref.view(), tolerance_for(DType::F32)), "")
          << "target " << target << (tensor_cores ? " tensor cores" : " CUDA cores") << ", kv_copy " << kv_copy
          << (decoder.uses_tma_copies() ? " (TMA)" : "") << (dynamic ? ", dynamic splits" : "");
    }
}

// Cluster mode where one sequence is long: the clusters of each of its (sequence, KV head)
// split 40,000 tokens, the others a few, and CTAs past a short sequence's end have empty
// splits; one cluster a head and several (whole clusters then empty at length 7). With fixed
// splits the page ids are loaded before the PDL wait (TMA: the first copies issued before the
// length is known, some past it); loaded after it instead (the option off, or a view whose
// tables are not fixed), the output is the same, bit for bit.
TEST(CudaDenseDecode, ClusterModeOverLongAndShortSequences) {
  SR_REQUIRE_CUDA_DEVICE();
  if (!device_is_sm90()) GTEST_SKIP() << "cluster mode needs an sm_90 device";
  std::mt19937_64 rng(23);
  auto r = long_and_short_batch(rng);
  const int B = 3, QH = 8, D = 128;
  DeviceKVCache dev = DeviceKVCache::upload(*r.cache, r.seqs, 1);
  DeviceBuffer qd = testing::to_device(r.q);
  HostTensor out(DType::BF16, {B, QH, D}), ref(DType::F64, {B, QH, D});
  decode_exact(r.q.view(), r.batch.view, 1.f / std::sqrt(128.f), ref.view());
  for (auto [ctas, groups] : {std::pair{16, 1}, std::pair{5, 1}, std::pair{16, 3}, std::pair{5, 7}})
    for (auto [kv_copy, dynamic] : {std::pair{0, false}, std::pair{2, false}, std::pair{0, true}, std::pair{2, true}}) {
      CudaDecodeOptions opt;
      opt.dynamic_splits = dynamic ? 1 : 0;
      opt.dynamic_min_split_tokens = 256;
      opt.cluster = 1;
      opt.cluster_ctas = ctas;
      opt.cluster_groups = groups;
      opt.kv_copy = kv_copy;
      std::vector<uint16_t> first_bits;  // the output of the first way below
      // The page ids and first copies before the length (the default), the page ids only, both
      // after the wait (the option off), and after it because the view's tables are not fixed.
      for (auto [early, fixed] :
           {std::pair{-1, true}, std::pair{1, true}, std::pair{0, true}, std::pair{-1, false}}) {
        opt.early_page_ids = early;
        DeviceKV view = dev.view();
        ASSERT_TRUE(view.tables_fixed);  // (a DeviceKVCache's views)
        view.tables_fixed = fixed;
        CudaDecoder decoder(view, QH, AttentionPolicy{}, 1.f / std::sqrt(128.f), opt);
        ASSERT_EQ(decoder.cluster_ctas(), ctas);
        ASSERT_EQ(decoder.cluster_groups(), groups);
        EXPECT_GE(decoder.resident_clusters(ctas), 1);  // (it was launched: at least one fits)
        DeviceBuffer od(out.bytes());
        testing::poison(od);
        decoder.run(view, qd.get(), DType::F32, od.get(), DType::BF16, nullptr);
        SR_ASSERT_CUDA(cudaDeviceSynchronize());
        testing::to_host(od, out);
        const std::string how = fmt::format("{} clusters of {}, kv_copy {}{}{}, early_page_ids {}, tables fixed {}",
                                            groups, ctas, kv_copy, decoder.uses_tma_copies() ? " (TMA)" : "",
                                            dynamic ? ", dynamic splits" : "", early, fixed);
        EXPECT_EQ(compare_to_reference(out.view(), ref.view(), tolerance_for(DType::BF16)), "") << how;
        const uint16_t* bits = static_cast<const uint16_t*>(out.data());
        const std::vector<uint16_t> now(bits, bits + out.numel());
        if (first_bits.empty()) first_bits = now;
        EXPECT_TRUE(now == first_bits) << how << ": not the same bits as with the page ids before the wait";
        const std::vector<HeadStats> st = decoder.download_stats();
        for (int b = 0; b < B; ++b)
          for (int h = 0; h < 2; ++h)
            EXPECT_EQ(st[size_t(b) * 2 + size_t(h)].bytes_dense,
                      r.batch.view.seq_len(b) * r.batch.view.token_bytes())
                << how;
      }
    }
}

// Auto's plan at the kernel benchmark's shapes (planned only, nothing runs): cluster mode at
// long capacities too; fixed splits in clusters of more than dynamic_max_cluster_ctas (2) CTAs,
// dynamic ones in clusters of 2 whose splits reach dynamic_min_split_tokens; at head dim 128 no
// single cluster of 16 a head, and nowhere several of 16 (docs/PERF.md, runs 21b and 21j).
TEST(CudaDenseDecode, AutoPlanTakesClustersWithFixedSplits) {
  SR_REQUIRE_CUDA_DEVICE();
  if (!device_is_sm90()) GTEST_SKIP() << "cluster mode needs an sm_90 device";
  struct Shape {
    int kv_heads, q_heads, head_dim, batch;
    int64_t capacity;
    bool wide;  // wide CTAs expected (H200: clusters of 8 or 16, at most one CTA an SM)
  };
  for (const Shape s : {Shape{8, 32, 128, 1, 4096, true}, Shape{8, 32, 128, 1, 262144, true},
                        Shape{8, 32, 128, 8, 65536, false}, Shape{3, 9, 64, 1, 4096, true},
                        Shape{3, 9, 64, 1, 16384, true}, Shape{3, 9, 64, 1, 262144, true},
                        Shape{3, 9, 64, 2, 65536, true}, Shape{3, 9, 64, 8, 65536, false}}) {
    DeviceKVCache cache = testing::capacity_only_cache(s.kv_heads, s.head_dim, s.batch, s.capacity);
    CudaDecoder d(cache.view(0, s.batch), s.q_heads, AttentionPolicy{}, 0.1f);
    const std::string how = fmt::format("{} KV heads, head dim {}, batch {}, capacity {}: {} clusters of {}{}{}",
                                        s.kv_heads, s.head_dim, s.batch, s.capacity, d.cluster_groups(),
                                        d.cluster_ctas(), d.uses_dynamic_splits() ? ", dynamic splits" : "",
                                        d.uses_wide_ctas() ? ", wide CTAs" : "");
    ASSERT_GE(d.cluster_ctas(), 2) << how;
    if (s.head_dim == 128 && d.cluster_groups() == 1) EXPECT_LT(d.cluster_ctas(), 16) << how;
    // Several a head: clusters of 8 (wide: one of 8 at head dim 128; at head dim 64 one of 16, or
    // where that would still be several, as many of 8 as give each CTA an SM and 512 tokens).
    if (d.cluster_groups() > 1) EXPECT_LE(d.cluster_ctas(), 8) << how;
    const int64_t split = s.capacity / (int64_t(d.cluster_ctas()) * d.cluster_groups());
    EXPECT_EQ(d.uses_dynamic_splits(), d.cluster_ctas() <= 2 && split >= 5120) << how;
    EXPECT_EQ(d.uses_wide_ctas(), s.wide) << how;
    if (d.uses_wide_ctas()) {
      int sms = 0;
      device_sm_count(&sms);
      EXPECT_LE(d.grid_ctas(), sms) << how;  // at most one CTA an SM
      if (s.head_dim == 128) EXPECT_EQ(d.cluster_groups(), 1) << how;  // 8 x 2 became 8 x 1
      if (s.head_dim == 64 && d.cluster_groups() == 1) EXPECT_EQ(d.cluster_ctas(), 16) << how;  // SmolLM2 B=2
      if (s.head_dim == 64 && d.cluster_groups() > 1) {  // SmolLM2 B=1 (H200): 8 x 4 at 16K, 8 x 5 at 256K
        EXPECT_EQ(d.cluster_ctas(), 8) << how;
        EXPECT_GE(split, 512) << how;
        // The most: one more cluster a head would not have an SM a CTA, or would split below 512.
        const bool sm_bound = int64_t(d.grid_ctas()) + int64_t(s.kv_heads) * s.batch * 8 > sms;
        const bool split_bound = s.capacity / (8 * (int64_t(d.cluster_groups()) + 1)) < 512;
        EXPECT_TRUE(sm_bound || split_bound) << how;
      }
    }
  }
}

TEST(CudaDecodeErrors, UnsupportedShapesAndPoliciesAreClear) {
  SR_REQUIRE_CUDA_DEVICE();
  std::mt19937_64 rng(22);
  SyntheticKVSpec spec;
  spec.lengths = {50};
  auto r = make_synthetic_kv(spec, rng);
  DeviceKVCache dev = DeviceKVCache::upload(*r.cache, r.seqs, 0);
  auto expect_error = [](auto fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  // A decoder of 4 query heads over the view, planned with `opt`, fails mentioning `needle`.
  auto expect_options_error = [&](const CudaDecodeOptions& opt, const std::string& needle) {
    expect_error([&] { CudaDecoder d(dev.view(), 4, AttentionPolicy{}, 0.125f, opt); }, needle);
  };
  AttentionPolicy blasst;
  blasst.kind = PolicyKind::Blasst;
  expect_error([&] { CudaDecoder d(dev.view(), 4, blasst, 0.125f); }, "policy blasst is not implemented on the GPU");
  expect_error([&] { CudaDecoder d(dev.view(), 5, AttentionPolicy{}, 0.125f); }, "not a multiple of 2 KV heads");
  expect_error([&] { CudaDecoder d(dev.view(), 4, AttentionPolicy{}, -1.f); }, "scale -1 must be a positive");
  CudaDecodeOptions bad_prefetch;
  bad_prefetch.kv_l2_prefetch = 64;
  expect_options_error(bad_prefetch, "kv_l2_prefetch must be 0, 128 or 256, not 64");
  CudaDecodeOptions bad_wide;
  bad_wide.wide_ctas = 3;
  expect_options_error(bad_wide, "wide_ctas must be 0 (off), 1 (on) or 2 (auto), not 3");
  CudaDecodeOptions wide_without_clusters;
  wide_without_clusters.cluster = 0;
  wide_without_clusters.wide_ctas = 1;
  expect_options_error(wide_without_clusters, "wide CTAs (wide_ctas on) need cluster mode");
  CudaDecodeOptions bad_early;
  bad_early.early_page_ids = 3;
  expect_options_error(bad_early, "early_page_ids must be 0, 1 or 2, not 3");
  CudaDecodeOptions bad_copy;
  bad_copy.kv_copy = 3;
  expect_options_error(bad_copy, "kv_copy must be 0 (cp.async), 1 (tma) or 2 (auto), not 3");
  {  // asking for TMA copies where they cannot run is an error, not a silent fallback
    CudaDecodeOptions tma;
    tma.kv_copy = 1;
    AttentionPolicy routed;
    routed.kind = PolicyKind::SinkRouter;
    DeviceKV blocks8 = dev.view();
    blocks8.kv.block_size = 8;
    expect_error([&] { CudaDecoder d(blocks8, 4, routed, 0.125f, tma); },
                 "the routing block size is not a multiple of 16");
    tma.tensor_cores = false;
    expect_options_error(tma, "they need the tensor-core kernel");
    tma.tensor_cores = true;
    DeviceKV page8 = dev.view();
    page8.kv.page_size = 8;
    expect_error([&] { CudaDecoder d(page8, 4, AttentionPolicy{}, 0.125f, tma); },
                 "the page size is not a multiple of 16");
    if (dev.view().kv.page_size % 16 == 0 && !device_is_sm90()) {
      expect_options_error(tma, "need an sm_90 device");
    }
  }
  // Options out of range, each case a decoder planned with them: the error names the option.
  struct BadOptions {
    void (*set)(CudaDecodeOptions&);
    const char* needle;
  };
  const BadOptions bad_options[] = {
      {[](CudaDecodeOptions& o) { o.waves = 9; }, "waves must be 1 to 8, not 9"},
      {[](CudaDecodeOptions& o) { o.waves_min_split_tokens = 0; }, "waves_min_split_tokens 0 must be at least 1"},
      {[](CudaDecodeOptions& o) { o.waves_min_split_tokens = -2; }, "waves_min_split_tokens -2 must be at least 1"},
      {[](CudaDecodeOptions& o) { o.certificate_share_min_blocks = -1; },
       "certificate_share_min_blocks -1 is negative"},
      {[](CudaDecodeOptions& o) { o.cluster = 3; }, "cluster must be 0 (off), 1 (on) or 2 (auto), not 3"},
      {[](CudaDecodeOptions& o) { o.cluster = 1, o.cluster_ctas = 17; },
       "cluster_ctas 17 out of range (expected 0, or 2 to 16)"},
      {[](CudaDecodeOptions& o) { o.cluster = 1, o.cluster_groups = 65; },
       "cluster_groups 65 out of range (expected 0, or 1 to 64)"},
      {[](CudaDecodeOptions& o) { o.cluster = 1, o.tensor_cores = false; },
       "cannot run here: it needs the tensor-core kernel"},
      {[](CudaDecodeOptions& o) { o.adaptive_route_chunks = 3; }, "adaptive_route_chunks must be 0, 1 or 2, not 3"},
      {[](CudaDecodeOptions& o) { o.route_chunk_lists = 2; }, "route_chunk_lists must be 0 or 1, not 2"},
      {[](CudaDecodeOptions& o) { o.route_tensor_cores = 2; }, "route_tensor_cores must be 0 or 1, not 2"},
      {[](CudaDecodeOptions& o) { o.route_trigger = 3; }, "route_trigger must be 0 (start), 1 (exit) or 2 (auto), not 3"},
      {[](CudaDecodeOptions& o) { o.ctas_per_sm = 33; }, "ctas_per_sm must be 0 (as many as fit) to 32, not 33"},
      {[](CudaDecodeOptions& o) { o.dynamic_splits = 3; },
       "dynamic_splits must be 0 (off), 1 (on) or 2 (auto), not 3"},
      {[](CudaDecodeOptions& o) { o.dynamic_splits = 1, o.dynamic_min_split_tokens = 0; },
       "dynamic_min_split_tokens 0 must be at least 1"},
      {[](CudaDecodeOptions& o) { o.dynamic_splits = 1, o.dynamic_chunk_tokens = 120; },
       "dynamic_chunk_tokens 120 must be a multiple of 16 from 128 to 4096"},
      {[](CudaDecodeOptions& o) { o.dynamic_splits = 1, o.tensor_cores = false; },
       "dynamic splits (dynamic_splits on) need the tensor-core kernel"},
      {[](CudaDecodeOptions& o) { o.spread_ctas = 2; }, "spread_ctas must be 0 (off) or 1 (on), not 2"},
      {[](CudaDecodeOptions& o) { o.dynamic_max_cluster_ctas = -1; },
       "dynamic_max_cluster_ctas -1 must not be negative"},
  };
  for (const BadOptions& bad : bad_options) {
    CudaDecodeOptions opt;
    bad.set(opt);
    expect_options_error(opt, bad.needle);
  }
  if (!device_is_sm90()) {
    CudaDecodeOptions clusters;
    clusters.cluster = 1;
    expect_options_error(clusters, "it needs an sm_90 device");
  }
  // Options left at -1: the environment decides. with_env runs fn with `name` set to `value`,
  // then restores the variable.
  auto with_env = [](const char* name, const char* value, auto fn) {
    const char* was = std::getenv(name);
    const std::string saved = was == nullptr ? "" : was;
    ::setenv(name, value, 1);
    fn();
    if (was == nullptr)
      ::unsetenv(name);
    else
      ::setenv(name, saved.c_str(), 1);
  };
  auto expect_env_error = [&](const char* name, const char* value, const std::string& needle) {
    with_env(name, value, [&] { expect_error([&] { CudaDecoder d(dev.view(), 4, AttentionPolicy{}, 0.125f); }, needle); });
  };
  expect_env_error("SINKROUTER_KV_L2_PREFETCH", "128B", "SINKROUTER_KV_L2_PREFETCH must be 0, 128 or 256, not '128B'");
  expect_env_error("SINKROUTER_EARLY_PAGE_IDS", "maybe",
                   "SINKROUTER_EARLY_PAGE_IDS must be off, ids or copies, not 'maybe'");
  expect_env_error("SINKROUTER_DECODE_CLUSTER_GROUPS", "2x",
                   "SINKROUTER_DECODE_CLUSTER_GROUPS must be an integer, not '2x'");
  expect_env_error("SINKROUTER_DECODE_CLUSTER_CTAS", "17", "cluster_ctas 17 out of range");
  expect_env_error("SINKROUTER_DECODE_CTAS_PER_SM", "one", "SINKROUTER_DECODE_CTAS_PER_SM must be an integer, not 'one'");
  expect_env_error("SINKROUTER_DECODE_DYNAMIC", "yes", "SINKROUTER_DECODE_DYNAMIC must be off, on or auto, not 'yes'");
  expect_env_error("SINKROUTER_DECODE_DYNAMIC_CHUNK", "64", "dynamic_chunk_tokens 64 must be a multiple of 16");
  expect_env_error("SINKROUTER_DECODE_SPREAD", "1", "SINKROUTER_DECODE_SPREAD must be off or on, not '1'");
  expect_env_error("SINKROUTER_ROUTE_CHUNK_LISTS", "yes", "SINKROUTER_ROUTE_CHUNK_LISTS must be off or on, not 'yes'");
  expect_env_error("SINKROUTER_ROUTE_TENSOR_CORES", "1", "SINKROUTER_ROUTE_TENSOR_CORES must be off or on, not '1'");
  expect_env_error("SINKROUTER_ROUTE_TRIGGER", "ticket", "SINKROUTER_ROUTE_TRIGGER must be start, exit or auto, not 'ticket'");
  expect_env_error("SINKROUTER_DECODE_DYNAMIC_MIN_SPLIT", "5k",
                   "SINKROUTER_DECODE_DYNAMIC_MIN_SPLIT must be an integer, not '5k'");
  expect_env_error("SINKROUTER_DECODE_DYNAMIC_MIN_SPLIT", "-3", "dynamic_min_split_tokens -3 must be at least 1");
  // Auto leaves a 50-token capacity's splits fixed, and a routed decoder's always; on claims
  // chunks, routed decoders too; a lower threshold from the environment takes them under auto
  // (dense only).
  AttentionPolicy routed;
  routed.kind = PolicyKind::SinkRouter;
  EXPECT_FALSE(CudaDecoder(dev.view(), 4, AttentionPolicy{}, 0.125f).uses_dynamic_splits());
  with_env("SINKROUTER_DECODE_DYNAMIC", "on", [&] {
    EXPECT_TRUE(CudaDecoder(dev.view(), 4, AttentionPolicy{}, 0.125f).uses_dynamic_splits());
    EXPECT_TRUE(CudaDecoder(dev.view(), 4, routed, 0.125f).uses_dynamic_splits());
  });
  with_env("SINKROUTER_DECODE_DYNAMIC_MIN_SPLIT", "1", [&] {
    CudaDecodeOptions flat;
    flat.cluster = 0;  // (cluster mode's clusters of more than 2 CTAs keep fixed splits)
    EXPECT_TRUE(CudaDecoder(dev.view(), 4, AttentionPolicy{}, 0.125f, flat).uses_dynamic_splits());
    EXPECT_FALSE(CudaDecoder(dev.view(), 4, routed, 0.125f).uses_dynamic_splits());
  });
  with_env("SINKROUTER_DECODE_CTAS_PER_SM", "1", [&] {
    int sms = 0;
    device_sm_count(&sms);
    CudaDecodeOptions flat;
    flat.cluster = 0;
    EXPECT_EQ(CudaDecoder(dev.view(), 4, AttentionPolicy{}, 0.125f, flat).wave_ctas(), sms);
  });
  DeviceKV odd = dev.view();
  odd.kv.head_dim = 96;
  expect_error([&] { CudaDecoder d(odd, 4, AttentionPolicy{}, 0.1f); }, "head_dim 96 is not supported");
  CudaDecoder d(dev.view(), 4, AttentionPolicy{}, 0.125f);
  expect_error([&] { (void)d.resident_clusters(17); }, "resident_clusters of 17 CTAs (expected 2 to 16)");
  DeviceKV other = dev.view();
  other.kv.page_size = 8;
  expect_error([&] { d.run(other, nullptr, DType::F32, nullptr, DType::F32, nullptr); }, "is not the shape");
  expect_error([&] { d.run(dev.view(), nullptr, DType::F64, nullptr, DType::F32, nullptr); },
               "q/out dtype f64 is not supported");
  expect_error([&] { d.download_routing(); }, "makes no routing decisions");
}

}  // namespace
}  // namespace sinkrouter

#else

TEST(CudaDenseDecode, Skipped) { GTEST_SKIP() << "built without CUDA"; }

#endif  // SINKROUTER_HAVE_CUDA
