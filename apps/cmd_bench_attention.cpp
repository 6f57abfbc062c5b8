// `sinkrouter bench-attention`: dense against every policy on a synthetic planted-sink
// KV cache, on the CPU. Prints time per decode step, the fraction of KV bytes read, the
// certificate and the measured error against dense. The demo `make run` shows until
// the engine lands.
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "commands.h"
#include "sinkrouter/attention/decode.h"
#include "sinkrouter/kv/synthetic_kv.h"

namespace sinkrouter::apps {
namespace {

struct BenchAttentionOptions {
  std::vector<int64_t> contexts{4096, 16384, 65536};
  std::string shape = "llama-8b";
  int batch = 1;
  int repeats = 5;
  bool json = false;
};

double time_ms(const std::function<void()>& fn, int repeats) {
  std::vector<double> t;
  fn();  // warm-up
  for (int i = 0; i < repeats; ++i) {
    const auto a = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

int run(const BenchAttentionOptions& o) {
  SyntheticKVSpec spec = o.shape == "smollm2" ? SyntheticKVSpec::smollm2() : SyntheticKVSpec::llama_8b();
  std::vector<AttentionPolicy> policies;
  policies.push_back(AttentionPolicy{});
  for (const char* name : {"sinkrouter", "streaming", "quest", "blasst"}) {
    AttentionPolicy p;
    p.kind = parse_policy_kind(name);
    if (p.kind == PolicyKind::Streaming) p.window = 1024;
    policies.push_back(p);
  }
  nlohmann::json rows = nlohmann::json::array();
  fmt::print("{:>8} {:<42} {:>10} {:>9} {:>10} {:>10}\n", "context", "policy", "ms/step", "KV read",
             "delta", "max |err|");
  for (int64_t n : o.contexts) {
    std::mt19937_64 rng{uint64_t(n)};
    spec.lengths.assign(size_t(o.batch), n);
    SyntheticKV kv = make_synthetic_kv(spec, rng);
    const int QH = spec.num_kv_heads * spec.group, D = spec.head_dim;
    const float scale = 1.f / std::sqrt(float(D));
    HostTensor dense_out(DType::F32, {o.batch, QH, D});
    for (const AttentionPolicy& p : policies) {
      HostTensor out(DType::F32, {o.batch, QH, D});
      std::vector<HeadStats> stats;
      const double ms = time_ms([&] { stats = decode_attention(kv.q.view(), kv.batch.view, p, scale, out.view()); },
                                o.repeats);
      if (p.kind == PolicyKind::Dense)
        std::copy_n(static_cast<float*>(out.data()), out.numel(), static_cast<float*>(dense_out.data()));
      float err = 0;
      for (int64_t i = 0; i < out.numel(); ++i)
        err = std::max(err, std::fabs(out.view().load(i) - dense_out.view().load(i)));
      const HeadStats t = accumulate(stats);
      const double frac = double(t.bytes_read()) / double(t.bytes_dense);
      fmt::print("{:>8} {:<42} {:>10.3f} {:>8.1f}% {:>10.2e} {:>10.2e}\n", n, p.describe(), ms, 100 * frac,
                 t.delta, err);
      rows.push_back({{"context", n}, {"policy", p.describe()}, {"ms", ms}, {"kv_read_fraction", frac},
                      {"delta", t.delta}, {"max_abs_err_vs_dense", err}, {"blocks_skipped", t.blocks_skipped},
                      {"blocks_total", t.blocks_total}});
    }
  }
  if (o.json) fmt::print("{}\n", rows.dump(2));
  return 0;
}

}  // namespace

Runner register_bench_attention(CLI::App& app) {
  auto o = std::make_shared<BenchAttentionOptions>();
  CLI::App* cmd = app.add_subcommand("bench-attention",
                                     "time dense and routed CPU decode attention on planted-sink data");
  cmd->add_option("--context", o->contexts, "context lengths")->capture_default_str();
  cmd->add_option("--shape", o->shape, "llama-8b (32 q / 8 kv heads, d=128) or smollm2 (9 / 3, d=64)")
      ->check(CLI::IsMember({"llama-8b", "smollm2"}))
      ->capture_default_str();
  cmd->add_option("--batch", o->batch, "sequences")->check(CLI::Range(1, 64))->capture_default_str();
  cmd->add_option("--repeats", o->repeats, "timed repetitions (median reported)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "also print the rows as JSON");
  return [o] { return run(*o); };
}

}  // namespace sinkrouter::apps
