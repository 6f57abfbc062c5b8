// Kernel benchmark of the CUDA decode (dense on tensor cores and on CUDA cores, routed at
// planted skip rates, the routing pass alone) against the bandwidth floor measured in the
// same run. Writes JSON.
//
//   bench_kernels --out kernels.json [--contexts 4096,8192,...] [--batches 1,8] [--reps 30]
//                 [--shapes llama-3.1-8b,smollm2-135m] [--kernels dense,dense_splitk,...]
//       --kernels: only the rows of these names (e.g. dense, dense_splitk, dense_cluster,
//       dense_fixed, sinkrouter_fast, read_probe; summary_probe, bench_summary_probe.cuh, only
//       when named); the routed caches are generated only where a routed row is asked for. For
//       sweeps of the plan's settings (KERNEL_VARIANTS) at long contexts.
//   --probe-ctas 96,132: with the read_probe row, rows read_probe_ctas: the same read by exactly
//       that many CTAs of 512 threads (what a plan that leaves SMs idle could read at best).
//   bench_kernels --trace-phases --shapes smollm2-135m --contexts 4096,8192 --batches 1
//       where the time of one dense and one routed (default policy) tensor-core attention
//       call goes: per-CTA phase stamps (CudaDecoder::set_phase_trace) of one call after a
//       timed graph, medians over the CTAs that had work, and for the routed call the
//       routing pass's steps too (set_route_trace, lines "trace-route"); printed, and JSON
//   --trace-warm: the traced call right after another call on the same copy (its code warm in
//       L2), not after the timed graph's last call on another copy (kernel runs 25h-25i).
//   --trace-quiet 90: the planted quiet blocks, in percent (default 50), of the traced calls
//     (--trace-phases) and of the profiled ones (--profile-once).
//   bench_kernels --profile-once --shapes llama-3.1-8b --contexts 65536 --batches 1
//       one eager dense run and one routed run (the default policy, 50 % quiet blocks unless
//       --trace-quiet) of the first shape, context and batch, nothing else: for ncu (run_on_device.sh),
//       whose kernel filter then sees attention, route_bounds (which finishes fast mode), attention.
//   --probe-policy fast: the routed call of those two is the sinkrouter_fast rows' policy
//       (fast mode deciding on the bound itself) instead of the default policy.
//   --quiet-heads shared: every KV head of a sequence has the same quiet blocks (default
//       distinct: each head's pattern is shifted). In the NHD layout a token's row holds all
//       heads, so distinct patterns read part of each row and shared ones whole rows.
//
// Method (docs/PERF.md, "CUDA decode kernels"):
//   - caches are generated on the device (bench_planted_cache.cuh: hash-based pseudo-normal
//     keys and values, a planted sink at position 0 that every query of its group scores 20 on,
//     and exactly the requested fraction of routing blocks made quiet: keys scaled by 0.02);
//   - each timed unit is a CUDA graph of `copies` decode calls over distinct copies of the
//     cache (separate sequences of one pool), copies = ceil(256 MB / cache bytes), so that
//     small caches are not served from the 60 MB L2;
//   - time = median over replays of (graph time / copies), CUDA events, after at least 20 ms of
//     warm-up replays (bench_timing.cuh);
//   - bytes = what the decoder's statistics say it read (dense: all K and V);
//   - floor = bytes / read bandwidth, the read bandwidth measured by a pure-read kernel
//     in this run (a device-to-device copy is measured too, bytes read + written);
//   - row read_probe: a pure read of each dense row's bytes, timed like the decode calls
//     (bench_read_probe.cuh): what any kernel pays at that size beyond the floor.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench_main.h"
#include "bench_planted_cache.cuh"
#include "bench_read_probe.cuh"
#include "bench_summary_probe.cuh"
#include "bench_timing.cuh"
#include "core/cuda_check.h"
#include "core/cuda_graph.h"
#include "sinkrouter/attention/decode_cuda.h"
#include "sinkrouter/kv/device_kv_cache.h"

namespace sr = sinkrouter;

namespace {

using sr::bench::Bandwidth;
using sr::bench::fill_kv;
using sr::bench::fill_q;
using sr::bench::kMaxPlantGroup;
using sr::bench::measure_bandwidth;
using sr::bench::median;
using sr::bench::parse_list;
using sr::bench::spread;
using sr::bench::time_graph;

struct Shape {
  const char* name;
  int q_heads, kv_heads, head_dim;
};

// The steps of a traced call, each between two stamps; last_only: stamped only by a unit's
// last CTA. Attention kernel (sr::PhaseSlot): the last three split last_cta_combine: the
// combine's (m, l) and weights, its sums, its normalisation and stores. Routing pass
// (sr::RouteSlot, route_bounds): the last, the (b, h)'s last CTA finishing the pass.
struct PhaseStep {
  const char* name;
  int from, to;
  bool last_only;
};
const PhaseStep kPhaseSteps[] = {
    {"find_split", sr::kPhaseEntry, sr::kPhaseSplitFound, false},
    {"first_issue", sr::kPhaseSplitFound, sr::kPhaseIssued, false},
    {"q_fragments", sr::kPhaseIssued, sr::kPhaseQReady, false},
    {"loop", sr::kPhaseQReady, sr::kPhaseLoopDone, false},
    {"cta_merge", sr::kPhaseLoopDone, sr::kPhaseCtaMerged, false},
    {"ticket", sr::kPhaseCtaMerged, sr::kPhaseTicket, false},
    {"last_cta_combine", sr::kPhaseTicket, sr::kPhaseEnd, true},
    {"combine_weights", sr::kPhaseTicket, sr::kPhaseMergeWeights, true},
    {"combine_sums", sr::kPhaseMergeWeights, sr::kPhaseMergeSums, true},
    {"combine_out", sr::kPhaseMergeSums, sr::kPhaseEnd, true},
};
const PhaseStep kRouteSteps[] = {
    {"q_to_shared", sr::kRouteEntry, sr::kRouteQ, false},
    {"sink_scores", sr::kRouteQ, sr::kRouteSinkScores, false},
    {"sink_signal", sr::kRouteSinkScores, sr::kRouteSinkSignal, false},
    {"bounds", sr::kRouteSinkSignal, sr::kRouteBounds, false},
    {"chunk_list", sr::kRouteBounds, sr::kRouteChunkList, false},
    {"ticket", sr::kRouteChunkList, sr::kRouteTicket, false},
    {"finish", sr::kRouteTicket, sr::kRouteEnd, true},
    {"finish_list", sr::kRouteTicket, sr::kRouteFinishList, true},
    {"finish_anchors", sr::kRouteFinishList, sr::kRouteFinishAnchors, true},
    {"finish_stats", sr::kRouteFinishAnchors, sr::kRouteEnd, true},
};
// Where a trace keeps its stamps: slots per CTA, the global-timer and role slots, the
// first and last clock stamps (for the SM clock), and its steps.
struct TraceLayout {
  int slots, start_ns, end_ns, role, entry, end;
  const PhaseStep* steps;
  int n_steps;
};
const TraceLayout kAttentionTrace{sr::kPhaseTraceSlots, sr::kPhaseStartNs, sr::kPhaseEndNs, sr::kPhaseRole,
                                  sr::kPhaseEntry, sr::kPhaseEnd, kPhaseSteps,
                                  int(sizeof(kPhaseSteps) / sizeof(kPhaseSteps[0]))};
const TraceLayout kRouteTrace{sr::kRouteTraceSlots, sr::kRouteStartNs, sr::kRouteEndNs, sr::kRouteRole,
                              sr::kRouteEntry, sr::kRouteEnd, kRouteSteps,
                              int(sizeof(kRouteSteps) / sizeof(kRouteSteps[0]))};

// Phases of one traced call: median cycles of each step over the CTAs that stamped both
// its ends (a CTA without work stamps none; one whose unit has one split takes no ticket;
// only a unit's last CTA combines or finishes), the call's span in ns from the first CTA's
// start to the last CTA's end, and the SM clock the last CTAs ran at (cycles over ns
// between their entry and end, both pairs stamped at the same points).
nlohmann::json summarise_phases(const std::vector<long long>& tr, int ctas, double ghz, const TraceLayout& t) {
  std::vector<std::vector<float>> steps(size_t(t.n_steps));
  std::vector<float> ghz_seen;
  long long t0 = -1, t1 = -1;
  int working = 0, last = 0;
  // Attention only: how evenly the CTAs are loaded and end (kernel run 12g's routed calls
  // ended on a tail of late CTAs): tokens per split, loop time, start and end after the first
  // start (a late start is a CTA that was not resident when the call began).
  const bool attention = t.slots == sr::kPhaseTraceSlots;
  std::vector<float> tokens, loop_us;
  std::vector<long long> start_ns, end_ns;
  for (int c = 0; c < ctas; ++c) {
    const long long* r = &tr[size_t(c) * size_t(t.slots)];
    if (r[t.start_ns] <= 0 || r[t.end_ns] <= 0) continue;  // not reached
    t0 = t0 < 0 ? r[t.start_ns] : std::min(t0, r[t.start_ns]);
    t1 = std::max(t1, r[t.end_ns]);
    const long long role = r[t.role];
    if (role == 0) continue;
    ++working;
    if (attention) {
      tokens.push_back(float(r[sr::kPhaseTokens]));
      if (r[sr::kPhaseLoopDone] >= r[sr::kPhaseQReady] && r[sr::kPhaseQReady] > 0)
        loop_us.push_back(float(r[sr::kPhaseLoopDone] - r[sr::kPhaseQReady]) / float(ghz * 1e3));
      start_ns.push_back(r[t.start_ns]);
      end_ns.push_back(r[t.end_ns]);
    }
    for (int k = 0; k < t.n_steps; ++k) {
      const PhaseStep& st = t.steps[k];
      if ((st.last_only && role != 2) || r[st.from] == 0 || r[st.to] < r[st.from]) continue;
      steps[size_t(k)].push_back(float(r[st.to] - r[st.from]));
    }
    if (role == 2) {
      ++last;
      if (r[t.end_ns] > r[t.start_ns])
        ghz_seen.push_back(float(double(r[t.end] - r[t.entry]) / double(r[t.end_ns] - r[t.start_ns])));
    }
  }
  nlohmann::json j;
  j["sm_ghz_measured"] = ghz_seen.empty() ? 0.0 : double(median(ghz_seen));
  j["ctas_with_work"] = working;
  j["last_ctas"] = last;
  j["span_us"] = (t1 - t0) * 1e-3;
  if (attention) {
    std::vector<float> start_us, end_us;
    for (long long s : start_ns) start_us.push_back(float(double(s - t0) * 1e-3));
    for (long long e : end_ns) end_us.push_back(float(double(e - t0) * 1e-3));
    j["split_tokens_p10_p50_p90_max"] = spread(tokens);
    j["loop_us_p10_p50_p90_max"] = spread(loop_us);
    j["cta_start_us_p10_p50_p90_max"] = spread(start_us);
    j["cta_end_us_p10_p50_p90_max"] = spread(end_us);
  }
  for (int k = 0; k < t.n_steps; ++k)
    j["median_us"][t.steps[k].name] = steps[size_t(k)].empty() ? 0.0 : median(steps[size_t(k)]) / (ghz * 1e3);
  return j;
}

// The sinkrouter rows' policy: certified, epsilon 1e-2.
sr::AttentionPolicy certified_rows_policy() {
  sr::AttentionPolicy p;
  p.kind = sr::PolicyKind::SinkRouter;
  p.mode = sr::RouterMode::Certified;
  p.epsilon = 1e-2;
  return p;
}
// The sinkrouter_fast rows' policy. Fast mode (estimate 'bound', tau 1e-3) keeps a block when
// any head's bound term exceeds tau, so the planted quiet blocks are the skipped ones whatever
// the certified budget allows: the kernel's time against its skip fraction.
sr::AttentionPolicy fast_rows_policy() {
  sr::AttentionPolicy f = certified_rows_policy();
  f.mode = sr::RouterMode::Fast;
  f.tau = 1e-3;
  return f;
}
// The routed policy that --profile-once and --trace-phases run: "default" (the product's:
// fast mode, gauss estimate) or "fast" (the sinkrouter_fast rows').
sr::AttentionPolicy probe_routed_policy(const std::string& name) {
  return name == "default" ? sr::default_sinkrouter_policy() : fast_rows_policy();
}

}  // namespace

int main(int argc, char** argv) {
  std::string out_path = "kernels.json";
  std::vector<int64_t> contexts = {4096, 8192, 16384, 65536, 131072, 262144, 524288};
  std::vector<int64_t> batches = {1, 8};
  std::string shape_filter, kernel_filter;
  std::vector<int64_t> probe_ctas;  // read_probe_ctas rows: the read probe on exactly these CTA counts
  int reps = 30;
  bool profile_once = false, trace_phases = false, trace_warm = false;
  std::string probe_policy = "default";  // the routed policy of --profile-once and --trace-phases
  bool shared_heads = false;             // --quiet-heads shared
  int trace_quiet = 50;                  // --trace-quiet: planted quiet blocks of the traced and profiled calls, %
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--profile-once" || k == "--trace-phases" || k == "--trace-warm") {
      (k == "--profile-once" ? profile_once : k == "--trace-phases" ? trace_phases : trace_warm) = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "option %s needs a value\n", k.c_str());
      return 2;
    }
    const std::string v = argv[++i];
    if ((k == "--contexts" || k == "--batches" || k == "--reps" || k == "--probe-ctas") && parse_list(v).empty()) {
      std::fprintf(stderr, "%s: '%s' is not a comma-separated list of integers\n", k.c_str(), v.c_str());
      return 2;
    }
    if (k == "--out") out_path = v;
    else if (k == "--contexts") contexts = parse_list(v);
    else if (k == "--batches") batches = parse_list(v);
    else if (k == "--reps") reps = int(parse_list(v)[0]);
    else if (k == "--shapes") shape_filter = "," + v + ",";
    else if (k == "--kernels") kernel_filter = "," + v + ",";
    else if (k == "--probe-ctas") probe_ctas = parse_list(v);
    else if (k == "--probe-policy" || k == "--quiet-heads" || k == "--trace-quiet") {
      const bool ok = k == "--probe-policy"  ? v == "default" || v == "fast"
                      : k == "--quiet-heads" ? v == "shared" || v == "distinct"
                                             : !v.empty() && v.size() <= 3 &&
                                                   v.find_first_not_of("0123456789") == std::string::npos &&
                                                   std::stoi(v) <= 100;
      if (!ok) {
        std::fprintf(stderr, "%s: '%s' is not one of %s\n", k.c_str(), v.c_str(),
                     k == "--probe-policy"  ? "default, fast"
                     : k == "--quiet-heads" ? "distinct, shared"
                                            : "0 to 100 (percent)");
        return 2;
      }
      if (k == "--probe-policy") probe_policy = v;
      else if (k == "--quiet-heads") shared_heads = v == "shared";
      else trace_quiet = std::stoi(v);
    } else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  // The rows --kernels may name (each a row's "kernel" in the JSON).
  const std::vector<std::string> known_rows = {
      "dense",          "dense_cuda_cores",   "dense_splitk",         "dense_cluster",       "dense_cluster1",
      "dense_fixed",    "dense_again",        "sinkrouter",           "routing_pass",        "sinkrouter_fast",
      "routing_pass_fast", "sinkrouter_fast_2k", "routing_pass_fast_2k", "sinkrouter_default", "routing_pass_default",
      "read_probe", "summary_probe"};
  for (size_t a = 1; a < kernel_filter.size();) {
    const size_t b = kernel_filter.find(',', a);
    const std::string name = kernel_filter.substr(a, b - a);
    if (std::find(known_rows.begin(), known_rows.end(), name) == known_rows.end()) {
      std::string all;
      for (const std::string& k : known_rows) all += (all.empty() ? "" : ", ") + k;
      std::fprintf(stderr, "--kernels: unknown row '%s' (expected a comma-separated list of: %s)\n", name.c_str(),
                   all.c_str());
      return 2;
    }
    a = b + 1;
  }
  auto wanted = [&](const std::string& kernel) {
    return kernel_filter.empty() || kernel_filter.find("," + kernel + ",") != std::string::npos;
  };
  const bool any_routed = std::any_of(known_rows.begin(), known_rows.end(), [&](const std::string& k) {
    return (k.rfind("sinkrouter", 0) == 0 || k.rfind("routing_pass", 0) == 0) && wanted(k);
  });
  try {
    cudaDeviceProp prop;
    SR_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    cudaStream_t stream;
    SR_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    const Bandwidth bw = profile_once || trace_phases ? Bandwidth{0, 0} : measure_bandwidth(stream, reps);
    std::printf("device %s: %d SMs, L2 %d MB; copy %.0f GB/s (read+write), read %.0f GB/s\n", prop.name,
                prop.multiProcessorCount, prop.l2CacheSize >> 20, bw.copy_gbps, bw.read_gbps);
    nlohmann::json doc;
    doc["device"] = prop.name;
    doc["sms"] = prop.multiProcessorCount;
    doc["l2_bytes"] = prop.l2CacheSize;
    doc["copy_gbps"] = bw.copy_gbps;
    doc["read_gbps"] = bw.read_gbps;
    doc["quiet_heads"] = shared_heads ? "shared" : "distinct";
    doc["method"] =
        "CUDA events over CUDA-graph replays; each replay runs `copies` decode calls over distinct cache copies "
        "(>= 256 MB in total, 4x the L2); time = median over replays / copies; bytes from the decoder statistics; "
        "floor = bytes / read_gbps";
    nlohmann::json rows = nlohmann::json::array();
    const Shape shapes[] = {{"llama-3.1-8b", 32, 8, 128}, {"smollm2-135m", 9, 3, 64}};
    const int skips[] = {0, 25, 50, 75, 90};
    for (const Shape& sh : shapes)
      for (int64_t B : batches)
        for (int64_t ctx : contexts) {
          if (!shape_filter.empty() && shape_filter.find("," + std::string(sh.name) + ",") == std::string::npos)
            continue;
          sr::KVCacheConfig cfg;
          cfg.num_kv_heads = sh.kv_heads;
          cfg.head_dim = sh.head_dim;
          cfg.dtype = sr::DType::BF16;
          cfg.page_size = 16;
          cfg.block_size = 64;
          cfg.num_pages = 1;
          const int64_t kv_bytes = B * ctx * sh.kv_heads * sh.head_dim * 4;  // K + V, bf16
          const int copies =
              profile_once ? 1 : int(std::max<int64_t>(1, ((int64_t(256) << 20) + kv_bytes - 1) / kv_bytes));
          sr::DeviceKVCache cache(cfg, std::vector<int64_t>(size_t(copies * B), ctx));
          cache.set_lengths(std::vector<int64_t>(size_t(copies * B), ctx));
          const int64_t q_elems = int64_t(copies) * B * sh.q_heads * sh.head_dim;
          __nv_bfloat16 *q, *out;
          SR_CUDA_CHECK(cudaMalloc(&q, q_elems * 2));
          SR_CUDA_CHECK(cudaMalloc(&out, q_elems * 2));
          fill_q<<<1024, 256, 0, stream>>>(q, q_elems, uint64_t(ctx) * 31 + B);
          SR_CUDA_CHECK_LAUNCH("fill_q");
          const float scale = 1.f / std::sqrt(float(sh.head_dim));
          const float sink_dot = 20.f / scale;  // every query scores 20 on the sink (scaled), ~20 above the rest
          const sr::DeviceKV all = cache.view();
          if (sh.q_heads / sh.kv_heads > kMaxPlantGroup) {
            std::fprintf(stderr, "%s: group %d exceeds the planted sink's %d\n", sh.name, sh.q_heads / sh.kv_heads,
                         kMaxPlantGroup);
            return 2;
          }
          auto generate = [&](int quiet_pct) {
            const dim3 grid(unsigned(std::min<int64_t>((ctx * sh.head_dim + 255) / 256, 4096)), unsigned(sh.kv_heads),
                            unsigned(copies * B));
            fill_kv<<<grid, 256, 0, stream>>>(all.kv, all.seq_lens, q, sh.q_heads, quiet_pct, shared_heads, sink_dot, 7);
            SR_CUDA_CHECK_LAUNCH("fill_kv");
            cache.rebuild_summaries(stream);
            SR_CUDA_CHECK(cudaStreamSynchronize(stream));
          };
          if (profile_once) {  // one eager dense run, one routed run; ncu picks the kernels
            generate(trace_quiet);
            const sr::AttentionPolicy routed = probe_routed_policy(probe_policy);
            sr::CudaDecoder dense(cache.view(0, int(B)), sh.q_heads, sr::AttentionPolicy{}, scale);
            sr::CudaDecoder router(cache.view(0, int(B)), sh.q_heads, routed, scale);
            dense.run(cache.view(0, int(B)), q, sr::DType::BF16, out, sr::DType::BF16, stream);
            router.run(cache.view(0, int(B)), q, sr::DType::BF16, out, sr::DType::BF16, stream);
            SR_CUDA_CHECK(cudaStreamSynchronize(stream));
            const sr::HeadStats t = sr::accumulate(router.download_stats());
            std::printf("profile-once %s B=%lld ctx=%lld: dense %d CTAs (tensor cores %d); routed skipped %d of %d blocks\n",
                        sh.name, (long long)B, (long long)ctx, dense.grid_ctas(), int(dense.uses_tensor_cores()),
                        t.blocks_skipped, t.blocks_total);
            return 0;
          }
          // Milliseconds of one call of `dec` (or of its routing pass alone): a graph of one
          // call per cache copy, timed as a whole, divided by the copies.
          auto time_calls = [&](sr::CudaDecoder& dec, bool routing_only) {
            cudaGraphExec_t exec = sr::cuda::capture_graph(stream, [&] {
              for (int c = 0; c < copies; ++c) {
                const int64_t qo = int64_t(c) * B * sh.q_heads * sh.head_dim;
                if (routing_only)
                  dec.run_routing(cache.view(c * int(B), int(B)), q + qo, sr::DType::BF16, stream);
                else
                  dec.run(cache.view(c * int(B), int(B)), q + qo, sr::DType::BF16, out + qo, sr::DType::BF16, stream);
              }
            });
            const float ms = time_graph(exec, stream, reps) / float(copies);
            cudaGraphExecDestroy(exec);
            return ms;
          };
          if (trace_phases) {  // dense and the default policy, 50 % quiet blocks (--trace-quiet); traced and not
            generate(trace_quiet);
            int clock_khz = 0;
            SR_CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0));
            for (const bool routed : {false, true}) {
              const sr::AttentionPolicy policy = routed ? probe_routed_policy(probe_policy) : sr::AttentionPolicy{};
              sr::CudaDecoder dec(cache.view(0, int(B)), sh.q_heads, policy, scale);
              const size_t slots = size_t(dec.grid_ctas()) * sr::kPhaseTraceSlots;
              const size_t route_slots = size_t(dec.route_trace_ctas()) * sr::kRouteTraceSlots;
              long long *tr = nullptr, *rtr = nullptr;
              SR_CUDA_CHECK(cudaMalloc(&tr, slots * sizeof(long long)));
              SR_CUDA_CHECK(cudaMalloc(&rtr, std::max<size_t>(route_slots, 1) * sizeof(long long)));
              float ms[2];
              for (int traced = 0; traced < 2; ++traced) {
                dec.set_phase_trace(traced ? tr : nullptr);
                dec.set_route_trace(traced && routed ? rtr : nullptr);
                ms[traced] = time_calls(dec, false);
              }
              // The stamps of one call (the timed graph stamped every call over every copy
              // of the cache, and a CTA whose role differs between them would mix calls):
              // cleared, then one traced call on copy 0, warm from the timed ones (--trace-warm:
              // right after an untraced call on copy 0).
              if (trace_warm) {  // (the stamps of this call are cleared below)
                dec.run(cache.view(0, int(B)), q, sr::DType::BF16, out, sr::DType::BF16, stream);
                SR_CUDA_CHECK(cudaStreamSynchronize(stream));
              }
              SR_CUDA_CHECK(cudaMemset(tr, 0, slots * sizeof(long long)));
              SR_CUDA_CHECK(cudaMemset(rtr, 0, std::max<size_t>(route_slots, 1) * sizeof(long long)));
              dec.run(cache.view(0, int(B)), q, sr::DType::BF16, out, sr::DType::BF16, stream);
              SR_CUDA_CHECK(cudaStreamSynchronize(stream));
              dec.set_phase_trace(nullptr);
              dec.set_route_trace(nullptr);
              std::vector<long long> host(slots), route_host(route_slots);
              SR_CUDA_CHECK(cudaMemcpy(host.data(), tr, slots * sizeof(long long), cudaMemcpyDeviceToHost));
              if (route_slots)
                SR_CUDA_CHECK(
                    cudaMemcpy(route_host.data(), rtr, route_slots * sizeof(long long), cudaMemcpyDeviceToHost));
              cudaFree(tr);
              cudaFree(rtr);
              nlohmann::json row = summarise_phases(host, dec.grid_ctas(), clock_khz * 1e-6, kAttentionTrace);
              row["shape"] = sh.name;
              row["batch"] = B;
              row["context"] = ctx;
              row["kernel"] = routed ? "trace_default" : "trace_dense";
              row["quiet_pct"] = trace_quiet;
              row["time_us"] = ms[0] * 1e3;
              row["time_traced_us"] = ms[1] * 1e3;
              row["ctas"] = dec.grid_ctas();
              row["cluster_ctas"] = dec.cluster_ctas();
              row["cluster_groups"] = dec.cluster_groups();
              row["dynamic_splits"] = dec.uses_dynamic_splits();
              row["wide_ctas"] = dec.uses_wide_ctas();
              row["route_tensor_cores"] = dec.routes_on_tensor_cores();
              row["clock_ghz"] = clock_khz * 1e-6;
              if (routed) {
                row["routing"] = summarise_phases(route_host, dec.route_trace_ctas(), clock_khz * 1e-6, kRouteTrace);
                row["routing"]["ctas"] = dec.route_trace_ctas();
              }
              rows.push_back(row);
              std::printf("trace %-13s B=%lld ctx=%7lld %-13s %7.2f us (traced %7.2f, span %6.2f, SM %.2f GHz) work CTAs %3d |",
                          sh.name, (long long)B, (long long)ctx, routed ? "default" : "dense", ms[0] * 1e3, ms[1] * 1e3,
                          row["span_us"].get<double>(), row["sm_ghz_measured"].get<double>(),
                          row["ctas_with_work"].get<int>());
              for (const PhaseStep& st : kPhaseSteps) std::printf(" %s %.2f", st.name, row["median_us"][st.name].get<double>());
              std::printf("\n");
              auto show = [&](const char* key) {
                const std::vector<float> v = row[key].get<std::vector<float>>();
                std::printf(" %s %.1f / %.1f / %.1f / %.1f", key, v[0], v[1], v[2], v[3]);
              };
              std::printf("trace-spread %-13s B=%lld ctx=%7lld %-7s (p10/p50/p90/max):", sh.name, (long long)B,
                          (long long)ctx, routed ? "routed" : "dense");
              show("split_tokens_p10_p50_p90_max");
              show("loop_us_p10_p50_p90_max");
              show("cta_start_us_p10_p50_p90_max");
              show("cta_end_us_p10_p50_p90_max");
              std::printf("\n");
              if (routed) {
                const nlohmann::json& rt = row["routing"];
                std::printf("trace-route %-13s B=%lld ctx=%7lld span %6.2f us, CTAs %d (with blocks %d, last %d) |", sh.name,
                            (long long)B, (long long)ctx, rt["span_us"].get<double>(), rt["ctas"].get<int>(),
                            rt["ctas_with_work"].get<int>(), rt["last_ctas"].get<int>());
                for (const PhaseStep& st : kRouteSteps) std::printf(" %s %.2f", st.name, rt["median_us"][st.name].get<double>());
                std::printf("\n");
              }
              std::fflush(stdout);
            }
            cudaFree(q);
            cudaFree(out);
            doc["rows"] = rows;
            std::ofstream(out_path) << doc.dump(1) << "\n";
            continue;
          }
          auto run_rows = [&](const sr::AttentionPolicy& policy, const char* kernel, int skip_target, bool routing_only,
                              sr::CudaDecodeOptions options = {}) {
            if (!wanted(kernel)) return;
            sr::CudaDecoder dec(cache.view(0, int(B)), sh.q_heads, policy, scale, options);
            const float ms = time_calls(dec, routing_only);
            // Statistics of the last copy's call (every copy holds the same kind of data).
            const sr::HeadStats t = sr::accumulate(dec.download_stats());
            const int64_t bytes = routing_only ? t.bytes_summary : (policy.kind == sr::PolicyKind::Dense ? t.bytes_dense : t.bytes_read());
            const double us = ms * 1e3;
            const double floor_us = double(bytes) / (bw.read_gbps * 1e9) * 1e6;
            nlohmann::json row;
            row["shape"] = sh.name;
            row["batch"] = B;
            row["context"] = ctx;
            row["kernel"] = kernel;
            row["skip_target_pct"] = skip_target;
            row["skip_measured_pct"] = t.blocks_total ? 100.0 * t.blocks_skipped / t.blocks_total : 0.0;
            row["time_us"] = us;
            row["bytes_read"] = bytes;
            row["gbps"] = double(bytes) / (us * 1e-6) / 1e9;
            row["floor_us"] = floor_us;
            row["ratio_to_floor"] = us / floor_us;
            row["copies"] = copies;
            row["ctas"] = dec.grid_ctas();
            row["wave_ctas"] = dec.wave_ctas();
            row["min_split_tokens"] = options.min_split_tokens;
            row["fused_fast_routing"] = options.fused_fast_routing;
            row["kv_copy"] = dec.uses_tma_copies() ? "tma" : "cp.async";
            row["cluster_ctas"] = dec.cluster_ctas();
            row["cluster_groups"] = dec.cluster_groups();
            row["dynamic_splits"] = dec.uses_dynamic_splits();
            row["wide_ctas"] = dec.uses_wide_ctas();
            row["route_tensor_cores"] = dec.routes_on_tensor_cores();
            if (std::string(kernel) == "dense") {  // what the cluster plan weighed (sizes 2 to 16)
              std::vector<int> fit;
              for (int c = 2; c <= 16; ++c) fit.push_back(dec.resident_clusters(c));
              row["resident_clusters_2_to_16"] = fit;
            }
            rows.push_back(row);
            std::printf("%-13s B=%lld ctx=%7lld %-12s skip %2d%% (%5.1f%%): %9.2f us  %6.0f GB/s  floor %9.2f us  x%.2f\n",
                        sh.name, (long long)B, (long long)ctx, kernel, skip_target,
                        row["skip_measured_pct"].get<double>(), us, row["gbps"].get<double>(), floor_us, us / floor_us);
            // The fast rows skip exactly the planted blocks where the planting works (every
            // query scores 20 on the sink, fill_kv): a miss would mislabel the row (run 28e).
            if (std::string(kernel).rfind("sinkrouter_fast", 0) == 0 && skip_target > 0 &&
                std::fabs(row["skip_measured_pct"].get<double>() - skip_target) > 2.0)
              std::printf("warning: %s B=%lld ctx=%lld %s planted %d %% quiet blocks but skipped %.1f %%\n", sh.name,
                          (long long)B, (long long)ctx, kernel, skip_target, row["skip_measured_pct"].get<double>());
            std::fflush(stdout);
          };
          generate(0);
          run_rows(sr::AttentionPolicy{}, "dense", 0, false);
          if (wanted("read_probe"))  // a pure read of dense's bytes, timed the same way (bench_read_probe.cuh)
            sr::bench::add_read_probe_rows(rows, {{"shape", sh.name}, {"batch", B}, {"context", ctx}}, kv_bytes, copies,
                                           bw.read_gbps, probe_ctas, stream, reps);
          if (!kernel_filter.empty() && wanted("summary_probe"))  // (only when named)
            sr::bench::add_summary_probe_rows(rows, {{"shape", sh.name}, {"batch", B}, {"context", ctx}}, int(B), sh.kv_heads,
                                              sh.head_dim, ctx / cfg.block_size, bw.read_gbps, stream, reps);
          sr::CudaDecodeOptions cuda_cores;
          cuda_cores.tensor_cores = false;
          cuda_cores.cluster = 0;  // (cluster mode is the tensor-core kernel's, whatever the environment says)
          run_rows(sr::AttentionPolicy{}, "dense_cuda_cores", 0, false, cuda_cores);
          {  // cluster mode against the flat Split-K list, whichever the default took, and
             // (up to 64K) cluster mode with one cluster a head, as before the second merge
            sr::CudaDecodeOptions split_k, clusters, one_cluster;
            split_k.cluster = 0;
            clusters.cluster = one_cluster.cluster = 1;
            one_cluster.cluster_groups = 1;
            run_rows(sr::AttentionPolicy{}, "dense_splitk", 0, false, split_k);
            run_rows(sr::AttentionPolicy{}, "dense_cluster", 0, false, clusters);
            if (ctx <= 65536) run_rows(sr::AttentionPolicy{}, "dense_cluster1", 0, false, one_cluster);
          }
          if (ctx >= 65536) {  // the default's plan with fixed splits (dynamic splits off), from 64K
            sr::CudaDecodeOptions fixed;
            fixed.dynamic_splits = 0;
            run_rows(sr::AttentionPolicy{}, "dense_fixed", 0, false, fixed);
          }
          // The default again, after the others: at Llama B=8 4K the first row (dense) was ~4 us slower
          // than its twin (dense_cluster, the same plan) in runs 14b-16d; this row tells order from plan.
          if (ctx <= 16384) run_rows(sr::AttentionPolicy{}, "dense_again", 0, false);
          for (int skip : skips) {
            if (!any_routed) break;
            if (skip != 0) generate(skip);
            const sr::AttentionPolicy p = certified_rows_policy(), f = fast_rows_policy();
            run_rows(p, "sinkrouter", skip, false);
            if (skip == 50) run_rows(p, "routing_pass", skip, true);
            run_rows(f, "sinkrouter_fast", skip, false);
            if (skip == 50) {
              run_rows(f, "routing_pass_fast", skip, true);
              // The two-kernel fast path (route_bounds, then route_select), as before the
              // fused finish: the same decisions, one launch more.
              sr::CudaDecodeOptions two;
              two.fused_fast_routing = false;
              run_rows(f, "sinkrouter_fast_2k", skip, false, two);
              run_rows(f, "routing_pass_fast_2k", skip, true, two);
              // The product's default policy (fast, gauss estimate, tau 1e-3, window 64).
              run_rows(sr::default_sinkrouter_policy(), "sinkrouter_default", skip, false);
              run_rows(sr::default_sinkrouter_policy(), "routing_pass_default", skip, true);
            }
          }
          cudaFree(q);
          cudaFree(out);
          // Written after every configuration, so that a run cut short keeps what it measured.
          doc["rows"] = rows;
          std::ofstream(out_path) << doc.dump(1) << "\n";
        }
    std::printf("wrote %s (%zu rows)\n", out_path.c_str(), rows.size());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_kernels: %s\n", e.what());
    return 1;
  }
  return 0;
}
