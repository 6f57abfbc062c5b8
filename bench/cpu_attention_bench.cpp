// CPU micro-benchmark (Google Benchmark): dense against routed decode attention on
// planted-sink data (Llama-3.1-8B shape: 32 query heads, 8 KV heads, d = 128, bf16),
// 4K to 128K tokens, batch 1. Counters: fraction of KV bytes read, blocks skipped, delta.
// Save JSON with: bench_cpu_attention --benchmark_out=bench/results/cpu_attention.json
#include <benchmark/benchmark.h>

#include <cmath>
#include <map>
#include <random>

#include "sinkrouter/attention/decode.h"
#include "sinkrouter/kv/synthetic_kv.h"

namespace sinkrouter {
namespace {

const SyntheticKV& workload(int64_t context) {
  static std::map<int64_t, SyntheticKV> cache;
  auto it = cache.find(context);
  if (it == cache.end()) {
    std::mt19937_64 rng{uint64_t(context)};
    SyntheticKVSpec spec = SyntheticKVSpec::llama_8b();
    spec.lengths = {context};
    it = cache.emplace(context, make_synthetic_kv(spec, rng)).first;
  }
  return it->second;
}

void run(benchmark::State& state, AttentionPolicy policy) {
  const SyntheticKV& kv = workload(state.range(0));
  HostTensor out(DType::F32, {1, 32, 128});
  const float scale = 1.f / std::sqrt(128.f);
  std::vector<HeadStats> stats;
  for (auto _ : state) {
    stats = decode_attention(kv.q.view(), kv.batch.view, policy, scale, out.view());
    benchmark::DoNotOptimize(out.data());
  }
  const HeadStats t = accumulate(stats);
  state.counters["kv_read_fraction"] = double(t.bytes_read()) / double(t.bytes_dense);
  state.counters["blocks_skipped"] = t.blocks_skipped;
  state.counters["blocks_total"] = t.blocks_total;
  state.counters["delta"] = t.delta;
  state.counters["bytes_read"] = double(t.bytes_read());
  state.SetBytesProcessed(int64_t(state.iterations()) * t.bytes_read());
  state.SetLabel(policy.describe());
}

AttentionPolicy make(PolicyKind kind, RouterMode mode = RouterMode::Certified) {
  AttentionPolicy p;
  p.kind = kind;
  p.mode = mode;
  if (kind == PolicyKind::Streaming) p.window = 1024;
  return p;
}

void Dense(benchmark::State& s) { run(s, make(PolicyKind::Dense)); }
void SinkRouterCertified(benchmark::State& s) { run(s, make(PolicyKind::SinkRouter)); }
void SinkRouterFast(benchmark::State& s) { run(s, make(PolicyKind::SinkRouter, RouterMode::Fast)); }
void Streaming(benchmark::State& s) { run(s, make(PolicyKind::Streaming)); }
void Quest(benchmark::State& s) { run(s, make(PolicyKind::Quest)); }
void Blasst(benchmark::State& s) { run(s, make(PolicyKind::Blasst)); }

#define CONTEXTS ->RangeMultiplier(2)->Range(4096, 131072)->Unit(benchmark::kMicrosecond)->UseRealTime()
BENCHMARK(Dense) CONTEXTS;
BENCHMARK(SinkRouterCertified) CONTEXTS;
BENCHMARK(SinkRouterFast) CONTEXTS;
BENCHMARK(Streaming) CONTEXTS;
BENCHMARK(Quest) CONTEXTS;
BENCHMARK(Blasst) CONTEXTS;

}  // namespace
}  // namespace sinkrouter

BENCHMARK_MAIN();
