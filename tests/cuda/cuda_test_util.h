// Helpers of the CUDA tests: skip without a device, device buffers, and the RoutePlan
// that reads exactly what a CUDA routed decode read (so that decode_reference and
// decode_exact can judge the kernel's output and its certificate).
#pragma once

#if defined(SINKROUTER_HAVE_CUDA)

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <vector>

#include "sinkrouter/attention/decode.h"
#include "sinkrouter/attention/decode_cuda.h"
#include "sinkrouter/core/tensor.h"
#include "sinkrouter/kv/device_kv_cache.h"

namespace sinkrouter::testing {

// At the start of every CUDA test: CI has no GPU, so these tests skip there, saying so.
// A kernel fault (illegal address, ...) in an earlier test leaves the process's context
// unusable: every later test would then fail at its first CUDA call with an error that
// is not its own. Such a test fails at once, naming the earlier fault; run it alone
// (ctest runs every test in its own process) to judge it.
#define SR_REQUIRE_CUDA_DEVICE()                                                               \
  do {                                                                                         \
    int sr_devices = 0;                                                                        \
    if (cudaGetDeviceCount(&sr_devices) != cudaSuccess || sr_devices == 0) {                   \
      (void)cudaGetLastError();                                                                \
      GTEST_SKIP() << "no CUDA device: skipped";                                               \
    }                                                                                          \
    (void)cudaGetLastError(); /* a launch error an earlier test left unread */                 \
    const cudaError_t sr_sticky = cudaDeviceSynchronize();                                     \
    if (sr_sticky != cudaSuccess)                                                              \
      GTEST_FAIL() << "the CUDA context was broken before this test by an earlier test ("     \
                   << cudaGetErrorName(sr_sticky) << "): not run; rerun it alone";            \
  } while (0)

#define SR_ASSERT_CUDA(call) ASSERT_EQ((call), cudaSuccess) << #call

// After a run: the launch and the kernels succeeded; on failure the message names the case
// (`what`), since every later CUDA call of the process will fail too.
#define SR_ASSERT_KERNELS_OK(what)                                                             \
  do {                                                                                         \
    const cudaError_t sr_launch = cudaGetLastError();                                          \
    ASSERT_EQ(sr_launch, cudaSuccess) << "launch failed (" << cudaGetErrorName(sr_launch)     \
                                      << ") in " << (what);                                   \
    const cudaError_t sr_run = cudaDeviceSynchronize();                                        \
    ASSERT_EQ(sr_run, cudaSuccess) << "kernel failed (" << cudaGetErrorName(sr_run) << ": "   \
                                   << cudaGetErrorString(sr_run) << ") in " << (what);        \
  } while (0)

// An owning device buffer.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (cudaMalloc(&ptr_, bytes ? bytes : 1) != cudaSuccess) throw Error("cudaMalloc failed in a test");
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Whether the current device is an sm_90 one (where the TMA copies and cluster mode run: the
// build always has sm_90a code).
// SinkRouter's certified policy at `epsilon`, with a window of `window` tokens (the policy's
// default where -1).
inline AttentionPolicy certified_policy(double epsilon, int window = -1) {
  AttentionPolicy p;
  p.kind = PolicyKind::SinkRouter;
  p.mode = RouterMode::Certified;
  p.epsilon = epsilon;
  if (window >= 0) p.window = window;
  return p;
}

inline bool device_is_sm90() {
  int dev = 0, major = 0, minor = 0;
  return cudaGetDevice(&dev) == cudaSuccess &&
         cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
         cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess && major == 9 &&
         minor == 0;
}

// A bf16 device cache of `batch` sequences, each `capacity` tokens long by its lengths but with
// one page of storage: for the decoders' plans at the benchmark's shapes (nothing runs on it).
inline DeviceKVCache capacity_only_cache(int kv_heads, int head_dim, int batch, int64_t capacity) {
  KVCacheConfig cfg;
  cfg.num_kv_heads = kv_heads;
  cfg.head_dim = head_dim;
  cfg.dtype = DType::BF16;
  cfg.page_size = 16;
  cfg.block_size = 64;
  cfg.num_pages = 1;
  DeviceKVCache cache(cfg, std::vector<int64_t>(size_t(batch), capacity));
  cache.set_lengths(std::vector<int64_t>(size_t(batch), capacity));
  return cache;
}

// Device copy of a contiguous host tensor.
inline DeviceBuffer to_device(const HostTensor& t) {
  DeviceBuffer d(t.bytes());
  if (cudaMemcpy(d.get(), t.data(), t.bytes(), cudaMemcpyHostToDevice) != cudaSuccess)
    throw Error("cudaMemcpy to the device failed in a test");
  return d;
}

inline void to_host(const DeviceBuffer& d, const HostTensor& t) {
  if (cudaMemcpy(t.data(), d.get(), t.bytes(), cudaMemcpyDeviceToHost) != cudaSuccess)
    throw Error("cudaMemcpy to the host failed in a test");
}

// Device copy of `bytes` host bytes, and of a host vector; host copy of `count` elements.
inline DeviceBuffer upload(const void* p, size_t bytes) {
  DeviceBuffer d(bytes);
  if (cudaMemcpy(d.get(), p, bytes, cudaMemcpyHostToDevice) != cudaSuccess)
    throw Error("cudaMemcpy to the device failed in a test");
  return d;
}
template <typename T>
DeviceBuffer upload(const std::vector<T>& v) {
  return upload(v.data(), v.size() * sizeof(T));
}
template <typename T>
std::vector<T> download(const DeviceBuffer& d, size_t count) {
  std::vector<T> v(count);
  if (cudaMemcpy(v.data(), d.get(), count * sizeof(T), cudaMemcpyDeviceToHost) != cudaSuccess)
    throw Error("cudaMemcpy to the host failed in a test");
  return v;
}

// Fills a device buffer with all-ones bytes (NaN in every float type): a kernel that
// leaves an output element unwritten fails the comparison.
inline void poison(const DeviceBuffer& d) {
  if (cudaMemset(d.get(), 0xff, d.bytes()) != cudaSuccess) throw Error("cudaMemset failed in a test");
}

// A copy of `t` converted to dtype (values rounded to nearest even).
inline HostTensor convert(const HostTensor& t, DType dtype) {
  std::vector<int64_t> shape(t.view().shape.begin(), t.view().shape.begin() + t.view().ndim);
  HostTensor r(dtype, shape);
  for (int64_t i = 0; i < t.numel(); ++i) r.view().store(i, t.view().load(i));
  return r;
}

// The RoutePlan whose spans are what the CUDA decoder read for each (sequence, KV head):
// anchors before the window, the kept blocks, the window (router.cpp's span rules).
inline RoutePlan plan_from_device(const CudaRouting& r, const PagedKV& kv, const AttentionPolicy& policy,
                                  int group, float scale) {
  const int B = kv.batch, H = kv.num_kv_heads, R = kv.block_size;
  RoutePlan plan;
  plan.policy = policy;
  plan.batch = B;
  plan.num_kv_heads = H;
  plan.group = group;
  plan.head_dim = kv.head_dim;
  plan.scale = scale;
  plan.sink_max = r.sink_max;
  plan.sink_sum = r.sink_sum;
  plan.delta = r.delta;
  plan.skipped_v_bound = r.skipped_v_bound;
  plan.stats.assign(size_t(B) * H, HeadStats{});
  plan.span_indptr.push_back(0);
  plan.split_indptr.push_back(0);
  for (int bh = 0; bh < B * H; ++bh) {
    const int b = bh / H, h = bh % H;
    const int64_t n = kv.seq_len(b), ws = r.window_start[size_t(bh)], nbr = ws / R;
    std::vector<uint8_t> keep(size_t(nbr), 0);
    const std::vector<int32_t>& kept = r.kept_blocks[size_t(bh)];
    // The list's contract (RouteArgs::kept_blocks): ascending, each block once.
    EXPECT_TRUE(std::adjacent_find(kept.begin(), kept.end(), std::greater_equal<int32_t>()) == kept.end())
        << "head " << bh << ": the kept-block list is not strictly ascending";
    for (int32_t j : kept) keep.at(size_t(j)) = 1;
    std::vector<int32_t> anchors;
    if (policy.kind == PolicyKind::Streaming) {
      for (int64_t p = 0; p < std::min<int64_t>(policy.sink_tokens, ws); ++p) anchors.push_back(int32_t(p));
    } else if (policy.kind != PolicyKind::Quest) {  // quest reads no anchors
      const int32_t* a = kv.anchor_pos + int64_t(bh) * kv.max_anchors;
      for (int i = 0; i < kv.anchor_count[bh]; ++i)
        if (a[i] < ws) anchors.push_back(a[i]);
    }
    const int32_t first = int32_t(plan.spans.size());
    size_t ai = 0;
    for (int64_t j = 0; j < nbr; ++j) {
      int64_t t = j * R;
      while (t < (j + 1) * R) {
        const int64_t next = ai < anchors.size() ? anchors[ai] : (j + 1) * R;
        const int64_t stop = std::min<int64_t>((j + 1) * R, next);
        if (stop > t && keep[size_t(j)]) plan.spans.push_back({int32_t(t), int32_t(stop), int32_t(j), SpanKind::Block});
        if (stop < (j + 1) * R) {
          plan.spans.push_back({int32_t(stop), int32_t(stop + 1), int32_t(j), SpanKind::Anchor});
          ++ai;
          t = stop + 1;
        } else {
          t = (j + 1) * R;
        }
      }
    }
    for (int64_t j = nbr; j * R < n; ++j)
      plan.spans.push_back({int32_t(j * R), int32_t(std::min<int64_t>(n, (j + 1) * R)), int32_t(j), SpanKind::Window});
    plan.span_indptr.push_back(int32_t(plan.spans.size()));
    plan.split_begin.push_back(first);
    plan.split_indptr.push_back(int32_t(plan.split_begin.size()));
  }
  plan.split_begin.push_back(int32_t(plan.spans.size()));
  return plan;
}

}  // namespace sinkrouter::testing

#endif  // SINKROUTER_HAVE_CUDA
