// The prefill attention kernels alone (model/cuda_prefill_attention.h): time per call and
// TFLOP/s of each flash version (v2 mma.sync, v4 tma and v3 wgmma where they run, v1) on the
// engine's chunks (by default 16K query rows after 0, 16K, 48K and 112K earlier tokens:
// --chunk C takes C rows after 0, C, 3 C and 7 C, those that end by 128K), for the
// SmolLM2-135M (9 query heads, 3 KV heads, d 64) and Llama-3.1-8B
// (32 / 8, d 128) shapes, bf16, page size 16 in a shuffled page order. Also the largest
// difference between the versions' outputs (a sanity figure; the tests hold each kernel to
// a float64 reference). JSON out.
//
//   bench_prefill_attention --out prefill_attention.json [--reps 5] [--once] [--chunk 16384]
//                           [--shape smollm2_135m|llama3_8b] [--prompt N]
//
// --prompt N: every chunk of an N-token prompt instead (p0 = 0, C, 2 C, ...), and each
// kernel's total over them (version 1 left out): what one layer of the engine's prefill
// spends in attention.
//
// --once: one call of each kernel on the first case only (for ncu). FLOP: causal attention
// of c rows after p0 keys = 4 * D * n_head * (c * p0 + c (c + 1) / 2) (QK^T and PV, 2 FLOP
// per multiply-add).
#include <cuda_runtime_api.h>

#include <chrono>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_main.h"
#include "core/cuda_check.h"
#include "model/cuda_prefill_attention.h"
#include "sinkrouter/core/dtype.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/kv/device_kv_cache.h"

namespace sinkrouter {
namespace {

// Random bf16 bits, N(0, ~1)-like (sum of two uniforms), from a counter hash: fresh values
// without a host round trip of gigabytes.
__global__ void fill_random_bf16(uint16_t* x, int64_t n, uint64_t seed, float amplitude) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t z = seed + uint64_t(i) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u1 = float(uint32_t(z)) * 2.3283064e-10f, u2 = float(uint32_t(z >> 32)) * 2.3283064e-10f;
    const float v = amplitude * (u1 + u2 - 1.f) * 2.449f;  // variance of u1 + u2 is 1/6
    x[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
  }
}

struct Shape {
  const char* name;
  int q_heads, kv_heads, head_dim;
};

double seconds_per_call(const PrefillAttentionArgs& a, PrefillAttentionKernel k, int reps) {
  cudaEvent_t e0, e1;
  SR_CUDA_CHECK(cudaEventCreate(&e0));
  SR_CUDA_CHECK(cudaEventCreate(&e1));
  prefill_attention_cuda(a, nullptr, k);  // warm-up
  SR_CUDA_CHECK(cudaEventRecord(e0));
  for (int r = 0; r < reps; ++r) prefill_attention_cuda(a, nullptr, k);
  SR_CUDA_CHECK(cudaEventRecord(e1));
  SR_CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  SR_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return ms / 1e3 / reps;
}

std::vector<float> download_bf16(const void* p, size_t n) {
  std::vector<uint16_t> bits(n);
  SR_CUDA_CHECK(cudaMemcpy(bits.data(), p, n * 2, cudaMemcpyDeviceToHost));
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i) f[i] = to_float(bf16{bits[i]});
  return f;
}

int run(int argc, char** argv) {
  std::string out_path = "prefill_attention.json";
  int reps = 5;
  bool once = false;
  int64_t chunk = 16384;
  int64_t prompt = 0;
  std::string only_shape;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--out" && i + 1 < argc) {
      out_path = argv[++i];
    } else if (arg == "--reps" && i + 1 < argc) {
      reps = std::stoi(argv[++i]);
      SR_CHECK(reps >= 1, "--reps {} must be at least 1", reps);
    } else if (arg == "--once") {
      once = true;
    } else if (arg == "--chunk" && i + 1 < argc) {
      chunk = std::stoll(argv[++i]);
      SR_CHECK(chunk >= 1 && chunk <= 131072, "--chunk {} must be 1 to 131072", chunk);
    } else if (arg == "--prompt" && i + 1 < argc) {
      prompt = std::stoll(argv[++i]);
      SR_CHECK(prompt >= 1 && prompt <= (int64_t(1) << 20), "--prompt {} must be 1 to 2^20", prompt);
    } else if (arg == "--shape" && i + 1 < argc) {
      only_shape = argv[++i];
      SR_CHECK(only_shape == "smollm2_135m" || only_shape == "llama3_8b",
               "--shape {} is unknown (expected smollm2_135m or llama3_8b)", only_shape);
    } else {
      fail("unknown argument '{}' (usage: bench_prefill_attention [--out FILE] [--reps N] [--once] [--chunk C] "
           "[--shape NAME] [--prompt N])",
           arg);
    }
  }
  cudaDeviceProp prop{};
  SR_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  nlohmann::json j;
  j["device"] = prop.name;
  j["date"] = [] {
    char b[32];
    const std::time_t t = std::time(nullptr);
    std::strftime(b, sizeof b, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
    return std::string(b);
  }();
  j["reps"] = reps;
  j["rows"] = nlohmann::json::array();

  const Shape shapes[] = {{"smollm2_135m", 9, 3, 64}, {"llama3_8b", 32, 8, 128}};
  std::vector<std::pair<int64_t, int64_t>> chunks;  // (p0, rows)
  if (prompt > 0) {
    for (int64_t p0 = 0; p0 < prompt; p0 += chunk) chunks.emplace_back(p0, std::min(chunk, prompt - p0));
  } else {
    for (const int64_t k : {0, 1, 3, 7})
      if (k == 0 || (k * chunk + chunk <= 131072)) chunks.emplace_back(k * chunk, chunk);
  }
  std::printf("%-13s %7s %7s %-7s %10s %8s\n", "shape", "p0", "c", "kernel", "ms/call", "TFLOP/s");
  for (const Shape& sh : shapes) {
    if (!only_shape.empty() && only_shape != sh.name) continue;
    const int64_t capacity = chunks.back().first + chunks.back().second;
    std::map<std::string, double> total_ms;  // --prompt: per kernel
    KVCacheConfig kc;
    kc.num_kv_heads = sh.kv_heads;
    kc.head_dim = sh.head_dim;
    kc.dtype = DType::BF16;
    kc.page_size = 16;
    kc.block_size = 64;
    DeviceKVCache cache(kc, {capacity}, /*page_order_seed=*/7);
    fill_random_bf16<<<1024, 256>>>(static_cast<uint16_t*>(cache.mutable_pages()), int64_t(cache.page_pool_bytes() / 2),
                                    11, 1.f);
    const size_t q_elems = size_t(chunk) * sh.q_heads * sh.head_dim;
    void* q = nullptr;
    SR_CUDA_CHECK(cudaMalloc(&q, q_elems * 2));
    fill_random_bf16<<<1024, 256>>>(static_cast<uint16_t*>(q), int64_t(q_elems), 13, 2.f);  // peaked rows
    SR_CUDA_CHECK(cudaGetLastError());
    for (const auto& [p0, chunk_rows] : chunks) {
      const int64_t c = chunk_rows;
      const size_t c_elems = size_t(c) * sh.q_heads * sh.head_dim;  // outputs compared: the chunk's rows
      cache.set_lengths({p0 + c});
      PrefillAttentionArgs a;
      a.kv = cache.view(0, 1).kv;
      a.q = static_cast<const __nv_bfloat16*>(q);
      a.c = c;
      a.p0 = p0;
      a.n_head = sh.q_heads;
      a.scale = 1.f / std::sqrt(float(sh.head_dim));
      // Version 2 first (the comparisons' base), then versions 4 and 3 where they run, then 1.
      std::vector<PrefillAttentionKernel> kernels = {PrefillAttentionKernel::Flash2};
      if (detail::prefill_attention_tma_supported(a)) kernels.push_back(PrefillAttentionKernel::WgmmaTma);
      if (detail::prefill_attention_wgmma_supported(a)) kernels.push_back(PrefillAttentionKernel::Wgmma);
      if (prompt == 0) kernels.push_back(PrefillAttentionKernel::FlashV1);
      const double flop = 4.0 * sh.head_dim * sh.q_heads * (double(c) * p0 + double(c) * (c + 1) / 2);
      std::vector<double> t(kernels.size(), 0.0);
      std::vector<void*> outs(kernels.size(), nullptr);
      for (size_t k = 0; k < kernels.size(); ++k) {
        SR_CUDA_CHECK(cudaMalloc(&outs[k], q_elems * 2));
        a.out = static_cast<__nv_bfloat16*>(outs[k]);
        if (once) {
          prefill_attention_cuda(a, nullptr, kernels[k]);
          SR_CUDA_CHECK(cudaDeviceSynchronize());
          continue;
        }
        t[k] = seconds_per_call(a, kernels[k], reps);
        total_ms[prefill_attention_kernel_name(kernels[k])] += t[k] * 1e3;
        std::printf("%-13s %7lld %7lld %-7s %10.3f %8.1f\n", sh.name, (long long)p0, (long long)c,
                    prefill_attention_kernel_name(kernels[k]), t[k] * 1e3, flop / t[k] / 1e12);
        j["rows"].push_back({{"shape", sh.name}, {"q_heads", sh.q_heads}, {"kv_heads", sh.kv_heads},
                             {"head_dim", sh.head_dim}, {"p0", p0}, {"c", c}, {"page_size", 16},
                             {"kernel", prefill_attention_kernel_name(kernels[k])}, {"ms_per_call", t[k] * 1e3},
                             {"tflops", flop / t[k] / 1e12}});
      }
      if (!once) {
        const std::vector<float> base = download_bf16(outs[0], c_elems);
        for (size_t k = 1; k < kernels.size(); ++k) {
          const std::vector<float> other = download_bf16(outs[k], c_elems);
          double worst = 0;
          for (size_t i = 0; i < c_elems; ++i) worst = std::max(worst, double(std::fabs(other[i] - base[i])));
          const char* name = prefill_attention_kernel_name(kernels[k]);
          SR_CHECK(std::isfinite(worst), "{} p0 {}: {}'s output is not finite", sh.name, p0, name);
          std::printf("%-13s %7lld %7lld %s vs flash2: max |difference| %.3g, time ratio %.2fx\n", sh.name,
                      (long long)p0, (long long)c, name, worst, t[0] / t[k]);
          j["rows"].push_back({{"shape", sh.name}, {"p0", p0}, {"c", c}, {"kind", "comparison"}, {"kernel", name},
                               {"max_abs_difference_to_flash2", worst}, {"speedup_over_flash2", t[0] / t[k]}});
        }
      }
      for (void* o : outs) cudaFree(o);
      if (once) break;
    }
    cudaFree(q);
    if (once) break;
    for (const auto& [name, ms] : total_ms) {
      if (prompt == 0) break;
      std::printf("%-13s prompt %lld in chunks of %lld: %s %.3f ms in all\n", sh.name, (long long)prompt,
                  (long long)chunk, name.c_str(), ms);
      j["rows"].push_back({{"shape", sh.name}, {"kind", "prompt_total"}, {"prompt", prompt}, {"chunk", chunk},
                           {"kernel", name}, {"ms", ms}});
    }
  }
  if (!once) {
    std::ofstream f(out_path);
    SR_CHECK(bool(f), "cannot write {}", out_path);
    f << j.dump(2) << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace sinkrouter

int main(int argc, char** argv) {
  return sinkrouter::bench_main("bench_prefill_attention", sinkrouter::run, argc, argv);
}
