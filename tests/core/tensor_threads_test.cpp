#include <gtest/gtest.h>

#include <atomic>
#include <numeric>

#include "sinkrouter/core/tensor.h"
#include "sinkrouter/core/thread_pool.h"

namespace sinkrouter {
namespace {

TEST(Tensor, ContiguousStridesAndAccess) {
  HostTensor t(DType::BF16, {2, 3, 5});
  const TensorView& v = t.view();
  EXPECT_EQ(v.stride[0], 15);
  EXPECT_EQ(v.stride[1], 5);
  EXPECT_EQ(v.numel(), 30);
  EXPECT_TRUE(v.is_contiguous());
  v.store(v.offset(1, 2, 4), 3.0f);
  EXPECT_EQ(v.load(29), 3.0f);
  EXPECT_EQ(v.shape_str(), "[2, 3, 5] bf16");
}

TEST(Tensor, CheckTensorSaysWhatWasExpected) {
  HostTensor t(DType::F32, {4, 7});
  EXPECT_NO_THROW(check_tensor(t.view(), "x", {DType::F32}, {4, -1}));
  try {
    check_tensor(t.view(), "x", {DType::F32}, {4, 8});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[4, 7] f32"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[4, 8]"), std::string::npos) << e.what();
  }
  try {
    check_tensor(t.view(), "x", {DType::BF16, DType::F16}, {4, 7});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bf16 or f16"), std::string::npos) << e.what();
  }
}

TEST(ThreadPool, RunsEveryItemOnce) {
  ThreadPool pool(4);
  for (int64_t n : {0, 1, 7, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    pool.parallel_for(n, [&](int64_t i) { hits[size_t(i)]++; });
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  }
}

TEST(ThreadPool, PropagatesExceptions) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.parallel_for(100, [](int64_t i) {
    if (i == 37) throw Error("item 37");
  }),
               Error);
  // The pool still works afterwards.
  std::atomic<int64_t> sum{0};
  pool.parallel_for(100, [&](int64_t i) { sum += i; });
  EXPECT_EQ(sum.load(), 4950);
}

}  // namespace
}  // namespace sinkrouter
