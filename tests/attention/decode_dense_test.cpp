// The fast CPU decode against the float64 reference, over the grid the foundation
// promises: odd lengths, GQA groups 1 to 8 (MHA and MQA), page sizes 1 to 256, bf16
// and fp16 KV, head dims 64 and 128, f32/bf16/f16 outputs. Every element is checked.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/compare.h"
#include "sinkrouter/kv/synthetic_kv.h"
#include "sinkrouter/attention/decode.h"

namespace sinkrouter {
namespace {

using testing::compare_to_reference;
using testing::tolerance_for;

struct DenseCase {
  int kv_heads, group, head_dim;
  DType kv_dtype, out_dtype;
  int page_size;
  std::vector<int64_t> lengths;
};

std::string case_name(const DenseCase& c) {
  std::string s = fmt::format("h{}_g{}_d{}_{}_out{}_p{}", c.kv_heads, c.group, c.head_dim, dtype_name(c.kv_dtype),
                              dtype_name(c.out_dtype), c.page_size);
  for (int64_t n : c.lengths) s += fmt::format("_{}", n);
  return s;
}

std::vector<DenseCase> dense_cases() {
  std::vector<DenseCase> cases;
  const std::vector<std::vector<int64_t>> lengths = {{1}, {3, 65, 129}, {1000, 17}, {2049}};
  int i = 0;
  for (int group : {1, 2, 3, 4, 5, 8})
    for (int page : {1, 16, 64, 256})
      for (DType kv : {DType::BF16, DType::F16}) {
        const int head_dim = (i % 2) ? 128 : 64;
        const DType out = i % 3 == 0 ? DType::F32 : (i % 3 == 1 ? DType::BF16 : DType::F16);
        const int kv_heads = group == 8 ? 1 : 2;  // group 8 over one KV head: MQA
        cases.push_back({kv_heads, group, head_dim, kv, out, page, lengths[size_t(i) % lengths.size()]});
        ++i;
      }
  return cases;
}

class DenseDecode : public ::testing::TestWithParam<DenseCase> {};

TEST_P(DenseDecode, MatchesFloat64Reference) {
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
  auto r = make_synthetic_kv(spec, rng);
  const int B = int(c.lengths.size()), QH = c.kv_heads * c.group, D = c.head_dim;
  const float scale = 1.f / std::sqrt(float(D));

  HostTensor out(c.out_dtype, {B, QH, D}), ref(DType::F64, {B, QH, D});
  for (int64_t i = 0; i < out.numel(); ++i) out.view().store(i, std::nanf(""));  // poison
  AttentionPolicy dense;
  ThreadPool pool(3);
  RoutePlan plan = plan_decode(r.q.view(), r.batch.view, dense, scale, pool.size(), &pool);
  decode_cpu(r.q.view(), r.batch.view, plan, out.view(), pool);
  decode_exact(r.q.view(), r.batch.view, scale, ref.view());
  const std::string err = compare_to_reference(out.view(), ref.view(), tolerance_for(c.out_dtype));
  EXPECT_EQ(err, "") << case_name(c);

  // The plan-driven reference over the dense plan is the exact attention too.
  HostTensor ref2(DType::F64, {B, QH, D});
  decode_reference(r.q.view(), r.batch.view, plan, ref2.view());
  for (int64_t i = 0; i < ref.numel(); ++i)
    ASSERT_NEAR(ref2.view().ptr<double>()[i], ref.view().ptr<double>()[i], 1e-12);

  // Dense reads everything, once.
  const HeadStats total = accumulate(plan.stats);
  EXPECT_EQ(total.bytes_read(), total.bytes_dense);
  EXPECT_EQ(total.blocks_skipped, 0);
}

INSTANTIATE_TEST_SUITE_P(Grid, DenseDecode, ::testing::ValuesIn(dense_cases()),
                         [](const auto& info) { return case_name(info.param); });

TEST(DenseDecode, SplitKPartitionsAreBalancedAndCoverEverySpan) {
  std::mt19937_64 rng(77);
  SyntheticKVSpec spec;
  spec.lengths = {9000, 700, 5};
  auto r = make_synthetic_kv(spec, rng);
  AttentionPolicy dense;
  RoutePlan plan = plan_decode(r.q.view(), r.batch.view, dense, 0.125f, /*num_workers=*/8);
  for (int bh = 0; bh < plan.batch * plan.num_kv_heads; ++bh) {
    const int32_t first = plan.split_indptr[size_t(bh)], last = plan.split_indptr[size_t(bh) + 1];
    ASSERT_GE(last - first, 1);
    EXPECT_EQ(plan.split_begin[size_t(first)], plan.span_indptr[size_t(bh)]);
    int64_t biggest = 0, total = 0;
    for (int32_t s = first; s < last; ++s) {
      int64_t tokens = 0;
      for (int32_t i = plan.split_begin[size_t(s)]; i < plan.split_begin[size_t(s) + 1]; ++i)
        tokens += plan.spans[size_t(i)].end - plan.spans[size_t(i)].begin;
      biggest = std::max(biggest, tokens);
      total += tokens;
    }
    EXPECT_EQ(total, r.batch.view.seq_len(bh / plan.num_kv_heads));
    // No split holds much more than its share (one block of slack).
    EXPECT_LE(biggest, total / (last - first) + r.batch.view.block_size);
  }
  EXPECT_GT(plan.num_splits(0), 1);  // the 9000-token sequence is split
}

}  // namespace
}  // namespace sinkrouter
