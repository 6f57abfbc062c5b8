// A whole decode step -- append one token per sequence, then dense and routed attention --
// captured once in a CUDA graph and replayed as the sequences grow. The replays must
// equal the CPU paths on a host cache that received the same tokens: this shows that no
// length, split or block list was frozen into the graph at capture time. (At these
// capacities the dense decoder takes cluster mode on an sm_90 device, here with two clusters
// a head: a clustered launch and the tickets of its second merge are captured too. A second
// dense decoder takes the flat list with dynamic splits: its chunk counters are captured; a
// second routed one too. The first routed decoder takes cluster mode there, in clusters of 8
// wide CTAs over the routed token list, whose length only the device knows.)
#include <gtest/gtest.h>

#if defined(SINKROUTER_HAVE_CUDA)

#include <cmath>
#include <random>

#include "common/compare.h"
#include "cuda_test_util.h"
#include "sinkrouter/attention/decode_cuda.h"
#include "sinkrouter/kv/synthetic_kv.h"

namespace sinkrouter {
namespace {

using testing::compare_to_reference;
using testing::DeviceBuffer;
using testing::tolerance_for;

TEST(CudaGraph, CapturedStepReplaysAsTheCacheGrows) {
  SR_REQUIRE_CUDA_DEVICE();
  std::mt19937_64 rng(41);
  SyntheticKVSpec spec = SyntheticKVSpec::llama_8b();
  spec.num_kv_heads = 2;
  spec.page_size = 16;
  spec.block_size = 32;
  spec.lengths = {900, 2011, 31};  // 31: the window is the whole sequence
  spec.quiet_block_fraction = 0.6f;
  auto r = make_synthetic_kv(spec, rng);
  const int B = 3, H = 2, G = 4, QH = H * G, D = 128;
  const float scale = 1.f / std::sqrt(float(D));
  const int steps = 5;
  DeviceKVCache dev = DeviceKVCache::upload(*r.cache, r.seqs, steps);

  const AttentionPolicy routed_policy = testing::certified_policy(1e-2, 40);
  CudaDecodeOptions dense_options;
  dense_options.cluster_groups = 2;  // (where cluster mode is taken)
  CudaDecoder dense(dev.view(), QH, AttentionPolicy{}, scale, dense_options);
  CudaDecodeOptions routed_options;
  routed_options.routed_cluster = 2;  // auto: taken with clusters of 8 (where cluster mode runs)
  routed_options.cluster_ctas = 8;
  CudaDecoder routed(dev.view(), QH, routed_policy, scale, routed_options);
  CudaDecodeOptions dynamic_options;
  dynamic_options.cluster = 0;
  dynamic_options.dynamic_splits = 1;
  dynamic_options.dynamic_min_split_tokens = 64;
  CudaDecoder dynamic(dev.view(), QH, AttentionPolicy{}, scale, dynamic_options);
  CudaDecoder routed_dynamic(dev.view(), QH, routed_policy, scale, dynamic_options);

  DeviceBuffer kd(size_t(B) * H * D * 4), vd(size_t(B) * H * D * 4), qd(size_t(B) * QH * D * 4);
  const size_t out_bytes = size_t(B) * QH * D * 4;
  DeviceBuffer out_dense(out_bytes), out_routed(out_bytes), out_dynamic(out_bytes), out_routed_dynamic(out_bytes);
  cudaStream_t stream;
  SR_ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaGraph_t graph;
  SR_ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  dev.append_step(kd.get(), vd.get(), DType::F32, stream);
  dense.run(dev.view(), qd.get(), DType::F32, out_dense.get(), DType::F32, stream);
  routed.run(dev.view(), qd.get(), DType::F32, out_routed.get(), DType::F32, stream);
  dynamic.run(dev.view(), qd.get(), DType::F32, out_dynamic.get(), DType::F32, stream);
  routed_dynamic.run(dev.view(), qd.get(), DType::F32, out_routed_dynamic.get(), DType::F32, stream);
  SR_ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  SR_ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));

  for (int step = 0; step < steps; ++step) {
    HostTensor k(DType::F32, {B, H, D}), v(DType::F32, {B, H, D}), q(DType::F32, {B, QH, D});
    fill_normal(k.view(), rng, 1.f);
    fill_normal(v.view(), rng, 1.f);
    fill_normal(q.view(), rng, 1.f);
    for (int b = 0; b < B; ++b) {
      TensorView kb = k.view(), vb = v.view();
      kb.data = k.view().ptr<float>() + b * H * D;
      vb.data = v.view().ptr<float>() + b * H * D;
      kb.shape[0] = vb.shape[0] = 1;
      r.cache->append(r.seqs[size_t(b)], kb, vb);
    }
    const PagedKVBatch host = r.cache->batch(r.seqs);
    SR_ASSERT_CUDA(cudaMemcpyAsync(kd.get(), k.data(), k.bytes(), cudaMemcpyHostToDevice, stream));
    SR_ASSERT_CUDA(cudaMemcpyAsync(vd.get(), v.data(), v.bytes(), cudaMemcpyHostToDevice, stream));
    SR_ASSERT_CUDA(cudaMemcpyAsync(qd.get(), q.data(), q.bytes(), cudaMemcpyHostToDevice, stream));
    SR_ASSERT_CUDA(cudaMemsetAsync(out_dense.get(), 0xff, out_dense.bytes(), stream));
    SR_ASSERT_CUDA(cudaMemsetAsync(out_routed.get(), 0xff, out_routed.bytes(), stream));
    SR_ASSERT_CUDA(cudaMemsetAsync(out_dynamic.get(), 0xff, out_dynamic.bytes(), stream));
    SR_ASSERT_CUDA(cudaMemsetAsync(out_routed_dynamic.get(), 0xff, out_routed_dynamic.bytes(), stream));
    SR_ASSERT_CUDA(cudaGraphLaunch(exec, stream));
    SR_ASSERT_CUDA(cudaStreamSynchronize(stream));
    ASSERT_NO_THROW(dev.check_errors());

    HostTensor od(DType::F32, {B, QH, D}), orr(DType::F32, {B, QH, D}), odyn(DType::F32, {B, QH, D});
    HostTensor ordyn(DType::F32, {B, QH, D});
    HostTensor ref(DType::F64, {B, QH, D});
    testing::to_host(out_dense, od);
    testing::to_host(out_routed, orr);
    testing::to_host(out_dynamic, odyn);
    testing::to_host(out_routed_dynamic, ordyn);
    decode_exact(q.view(), host.view, scale, ref.view());
    EXPECT_EQ(compare_to_reference(od.view(), ref.view(), tolerance_for(DType::F32)), "") << "dense, step " << step;
    EXPECT_EQ(compare_to_reference(odyn.view(), ref.view(), tolerance_for(DType::F32)), "")
        << "dense with dynamic splits, step " << step;
    const RoutePlan plan = testing::plan_from_device(routed.download_routing(), host.view, routed_policy, G, scale);
    decode_reference(q.view(), host.view, plan, ref.view());
    EXPECT_EQ(compare_to_reference(orr.view(), ref.view(), tolerance_for(DType::F32)), "") << "routed, step " << step;
    // The same policy decides the same blocks; its attention claims chunks.
    const RoutePlan plan_dyn =
        testing::plan_from_device(routed_dynamic.download_routing(), host.view, routed_policy, G, scale);
    decode_reference(q.view(), host.view, plan_dyn, ref.view());
    EXPECT_EQ(compare_to_reference(ordyn.view(), ref.view(), tolerance_for(DType::F32)), "")
        << "routed with dynamic splits, step " << step;
    const std::vector<HeadStats> st = dense.download_stats();
    for (int b = 0; b < B; ++b)
      EXPECT_EQ(st[size_t(b) * H].bytes_dense, (spec.lengths[size_t(b)] + step + 1) * host.view.token_bytes())
          << "the device length advanced, step " << step;
  }
  SR_ASSERT_CUDA(cudaGraphExecDestroy(exec));
  SR_ASSERT_CUDA(cudaGraphDestroy(graph));
  SR_ASSERT_CUDA(cudaStreamDestroy(stream));
}

}  // namespace
}  // namespace sinkrouter

#else

TEST(CudaGraph, Skipped) { GTEST_SKIP() << "built without CUDA"; }

#endif  // SINKROUTER_HAVE_CUDA
