// The GPU engine end to end on a real model (SmolLM2-135M-Instruct): prefill tokens/s, and
// decode tokens/s at long contexts under dense and the sinkrouter default, with the
// measured fraction of KV bytes read; a batch of sequences of different lengths. JSON out.
//
//   bench_engine -m model.gguf --out engine.json [--decode-contexts 8192,32768,131072,524288]
//                [--steps 64] [--batch 8] [--text book.txt] [--time-budget 300]
//
// Each decode context is filled by a real prefill of text (beyond 8K tokens the model is
// past its trained length: speed and skip rates, not quality), whose time gives the
// prefill row (after one untimed warm-up prefill, as the transformers baseline does); then
// `steps` greedy decode steps (decode_greedy, as generate() takes them; --host-argmax: the
// logits downloaded instead) are timed under dense and again under the
// routed policy (each after a few warm-up steps: graph capture), the statistics
// downloaded once per policy outside the timed loop; then the attention kernels alone on
// the KV the model wrote (rows "attention_real_kv": one decode step's queries kept per
// layer, every layer's CudaDecoder replayed in one graph, dense and the default policy).
// A context whose prefill would not fit the time left is skipped, and the JSON says why.
//
// Floors (docs/PERF.md): one decode step reads the bf16 weights (decode_weight_bytes) plus
// the KV bytes it reads, at the device's read bandwidth (--bandwidth-gbps, 4490 measured
// by bench_kernels on the H200).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench_main.h"
#include "engine/cuda_session.h"
#include "model/cuda_ops.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/engine/engine.h"

namespace sinkrouter {
namespace {

using clock_type = std::chrono::steady_clock;
double seconds_since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }

// English-like filler when no text file is given: seeded sentences from small word lists.
std::string filler_text(size_t bytes, uint64_t seed) {
  static const char* nouns[] = {"river", "house", "teacher", "garden", "letter", "window", "market", "village",
                                "engine", "doctor", "mountain", "story", "bridge", "station", "painter", "harbour",
                                "forest", "kitchen", "student", "lantern", "road", "winter", "island", "clock"};
  static const char* verbs[] = {"watched", "carried", "opened", "found", "painted", "followed", "remembered",
                                "described", "visited", "repaired", "crossed", "answered", "counted", "built"};
  static const char* adjectives[] = {"old", "quiet", "bright", "small", "distant", "green", "heavy", "narrow",
                                     "warm", "broken", "famous", "careful", "empty", "golden"};
  std::mt19937_64 rng(seed);
  auto pick = [&](auto& list) { return list[rng() % (sizeof(list) / sizeof(list[0]))]; };
  std::string s;
  while (s.size() < bytes) {
    s += "The ";
    s += pick(adjectives);
    s += ' ';
    s += pick(nouns);
    s += ' ';
    s += pick(verbs);
    s += " the ";
    s += pick(adjectives);
    s += ' ';
    s += pick(nouns);
    s += rng() % 4 == 0 ? ".\n" : ". ";
  }
  return s;
}

// n tokens: BOS, then the text's tokens, repeated as needed.
std::vector<int32_t> prompt_tokens(const std::vector<int32_t>& text, int64_t n) {
  std::vector<int32_t> t;
  t.reserve(size_t(n));
  t.push_back(1);  // <|im_start|>: the sink SmolLM2's prompts begin with
  while (int64_t(t.size()) < n) t.push_back(text[(t.size() - 1) % text.size()]);
  return t;
}

int32_t argmax(const std::vector<float>& v) { return int32_t(std::max_element(v.begin(), v.end()) - v.begin()); }

struct DecodeRun {
  double seconds = 0;
  int steps = 0;
  HeadStats stats;  // of one step after the timed ones
};

// Greedy steps as generate() takes them (decode_greedy: the argmax on the device, one id
// downloaded), or with host_argmax the logits downloaded and the argmax taken here (runs up
// to v6b measured that way).
DecodeRun time_decode(CudaSession& s, int32_t& token, int steps, int warmup, bool host_argmax) {
  CudaForward& f = s.forward();
  f.set_collect_stats(false);
  auto step = [&](int32_t t) { return host_argmax ? argmax(s.decode(t)) : s.decode_greedy(t); };
  for (int i = 0; i < warmup; ++i) token = step(token);  // first: graph capture
  DecodeRun r;
  const auto t0 = clock_type::now();
  for (int i = 0; i < steps; ++i) token = step(token);
  r.seconds = seconds_since(t0);
  r.steps = steps;
  f.set_collect_stats(true);
  token = argmax(s.decode(token));
  r.stats = s.last_step_stats();
  return r;
}

// Dense decode with parts of the step left out (CudaForward::set_step_ablation): the
// difference to the whole step is what that part costs inside it, launch gaps included.
template <typename Save>
void ablation_rows(CudaSession& s, int32_t& token, int steps, int warmup, bool host_argmax, int64_t n,
                   const AttentionPolicy& dense, nlohmann::json& j, const Save& save) {
  using P = CudaForward::StepPart;
  const std::pair<const char*, unsigned> variants[] = {
      {"none", 0u},
      {"qkv", P::kQkv},
      {"append", P::kAppend},
      {"attention", P::kAttention},
      {"o_proj", P::kOProj},
      {"gate_up", P::kGateUp},
      {"down", P::kDown},
      {"lm_head", P::kLmHead},
      {"all_gemvs", P::kQkv | P::kOProj | P::kGateUp | P::kDown | P::kLmHead},
      {"all_but_embedding", P::kQkv | P::kAppend | P::kAttention | P::kOProj | P::kGateUp | P::kDown | P::kLmHead}};
  s.set_policy(dense);
  CudaForward& f = s.forward();
  double whole_ms = 0;
  for (const auto& [name, mask] : variants) {
    f.set_step_ablation(mask);
    const DecodeRun r = time_decode(s, token, steps, warmup, host_argmax);
    const double ms = 1e3 * r.seconds / r.steps;
    if (mask == 0) whole_ms = ms;
    j["rows"].push_back({{"kind", "decode_ablation"},
                         {"context", n},
                         {"skipped", name},
                         {"ms_per_step", ms},
                         {"part_ms", whole_ms - ms}});
    std::fprintf(stderr, "decode %lld dense without %s: %.3f ms/step (the part: %.3f ms)\n", (long long)n, name, ms,
                 whole_ms - ms);
    save();
  }
  f.set_step_ablation(0);
}

// The GEMV chains' stage phases in one dense step (CudaForward::set_chain_trace; stamps of
// thread 0 of each CTA, clock64): for the chains of layers 1 .. n-1 (o, gate|up, down, the
// next QKV), the median and the largest over CTAs and layers of each stage's barrier wait,
// input load (RMSNorm / SwiGLU into shared memory), rows, and the stage's whole time from the
// previous stage's end; cycles, and microseconds at the device's peak clock.
template <typename Save>
void chain_trace_rows(CudaSession& s, int32_t& token, int warmup, int64_t n, const AttentionPolicy& dense,
                      nlohmann::json& j, const Save& save) {
  s.set_policy(dense);
  CudaForward& f = s.forward();
  f.set_collect_stats(false);
  f.set_chain_trace(true);
  for (int i = 0; i < warmup + 2; ++i) token = s.decode_greedy(token);  // capture, then traced steps
  const std::vector<long long> t = f.chain_trace();
  f.set_chain_trace(false);
  f.set_collect_stats(true);
  int device = 0, khz = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, device);
  const int S = cuda::kMaxChainStages, P = cuda::kChainStamps;
  const int sms = int(cuda::gemv_chain_trace_words() / (S * P));  // one CTA per SM
  const int launches = int(t.size() / size_t(cuda::gemv_chain_trace_words()));
  const char* names[] = {"o", "gate_up", "down", "qkv"};
  const char* phases[] = {"wait", "input", "rows", "stage"};
  for (int st = 0; st < S; ++st) {
    std::vector<double> v[4];
    for (int l = 1; l + 1 < launches; ++l)
      for (int c = 0; c < sms; ++c) {
        const long long* x = &t[((size_t(l) * sms + c) * S + st) * P];
        if (x[cuda::kStampRowsDone] == 0) continue;
        v[0].push_back(double(x[cuda::kStampReleased] - x[cuda::kStampBeforeWait]));
        v[1].push_back(double(x[cuda::kStampInputReady] - x[cuda::kStampReleased]));
        v[2].push_back(double(x[cuda::kStampRowsDone] - x[cuda::kStampInputReady]));
        const long long* previous_stage = x - P;
        if (st > 0) v[3].push_back(double(x[cuda::kStampRowsDone] - previous_stage[cuda::kStampRowsDone]));
      }
    for (int ph = 0; ph < 4; ++ph) {
      if (v[ph].empty()) continue;
      std::sort(v[ph].begin(), v[ph].end());
      const double med = v[ph][v[ph].size() / 2], mx = v[ph].back();
      const double us = khz > 0 ? 1e3 / khz : 0;
      j["rows"].push_back({{"kind", "chain_trace"}, {"context", n}, {"stage", names[st]}, {"phase", phases[ph]},
                           {"median_cycles", med}, {"max_cycles", mx}, {"median_us_at_peak_clock", med * us},
                           {"max_us_at_peak_clock", mx * us}, {"samples", v[ph].size()}, {"peak_clock_khz", khz}});
      std::fprintf(stderr, "chain %-7s %-5s median %7.0f cycles (%.2f us at %d MHz), max %7.0f\n", names[st],
                   phases[ph], med, med * us, khz / 1000, mx);
    }
  }
  save();
}

int run(int argc, char** argv) {
  CLI::App app{"GPU engine benchmark: prefill and decode tokens/s, KV bytes read"};
  std::string model, out = "engine.json", text_file;
  std::vector<int64_t> contexts = {8192, 32768, 131072, 524288};
  int steps = 64, warmup = 4, batch = 8;
  int64_t batch_context = 8192;
  double budget = 300, bandwidth_gbps = 4490;
  bool ablate = false, host_argmax = false, trace_chain = false;
  app.add_option("-m,--model", model, "GGUF model")->required();
  app.add_option("--out", out, "JSON output");
  app.add_option("--decode-contexts", contexts, "decode contexts (each filled by a prefill)")->delimiter(',');
  app.add_option("--steps", steps, "timed decode steps per context and policy");
  app.add_option("--batch", batch, "sequences in the batched decode row (0: none)");
  app.add_option("--batch-context", batch_context, "longest sequence of the batch (the others shorter)");
  app.add_option("--text", text_file, "text to prefill (default: generated English-like filler)");
  app.add_option("--time-budget", budget, "seconds; contexts whose prefill would not fit are skipped");
  app.add_option("--bandwidth-gbps", bandwidth_gbps, "device read bandwidth for the floors");
  app.add_flag("--ablate", ablate,
               "at the first decode context: dense steps with each part of the step left out (rows "
               "decode_ablation: what each part costs inside the step, by difference)");
  app.add_flag("--trace-chain", trace_chain,
               "at the first decode context: the GEMV chains' stage phases of one dense step (rows chain_trace)");
  app.add_flag("--host-argmax", host_argmax,
               "time decode steps with the logits downloaded and the argmax taken on the host (as runs up to "
               "v6b did), not decode_greedy's argmax on the device");
  CLI11_PARSE(app, argc, argv);
  const auto start = clock_type::now();

  int64_t max_ctx = batch_context;
  for (int64_t c : contexts) max_ctx = std::max(max_ctx, c);
  EngineOptions o;
  o.model_path = model;
  o.device = "cuda";
  o.max_context = max_ctx + 2 * (steps + warmup) + 64;
  o.allow_beyond_trained_context = true;
  const auto t_load = clock_type::now();
  Engine engine(o);
  const double load_s = seconds_since(t_load);
  std::string text;
  if (!text_file.empty()) {
    std::ifstream in(text_file);
    SR_CHECK(bool(in), "cannot read --text {}", text_file);
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  } else {
    text = filler_text(size_t(1) << 20, 7);
  }
  const std::vector<int32_t> text_tokens = engine.tokenizer().encode(text, false);
  SR_CHECK(!text_tokens.empty(), "the text has no tokens");

  const ModelConfig& c = engine.config();
  const double kv_token_bytes = double(c.n_layers) * c.n_head_kv * c.head_dim * 2 * 2;  // K and V, bf16
  AttentionPolicy dense;
  const AttentionPolicy routed = default_sinkrouter_policy();  // the product's default (docs/RESULTS.md)
  // Bytes of weights one decode step reads: every layer's matrices and the output head.
  const double weight_bytes =
      2.0 * (double(c.n_layers) * c.n_embd *
                 (2.0 * c.n_head * c.head_dim + 2.0 * c.n_head_kv * c.head_dim + 3.0 * c.n_ff) +
             double(c.n_vocab) * c.n_embd);
  const double bw = bandwidth_gbps * 1e9;
  nlohmann::json j;
  j["model"] = model;
  j["load_seconds"] = load_s;
  j["weight_bytes_per_step"] = weight_bytes;
  j["kv_bytes_per_token"] = kv_token_bytes;
  j["bandwidth_gbps_for_floors"] = bandwidth_gbps;
  j["routed_policy"] = routed.describe();
  // The decode GEMV and programmatic dependent launch in use (SINKROUTER_GEMV, SINKROUTER_PDL).
  j["gemv"] = cuda::gemv_version_name(cuda::gemv_default_version());
  j["greedy_step"] = host_argmax ? "logits downloaded, argmax on the host" : "decode_greedy (argmax on the device)";
  j["pdl"] = cuda::pdl_enabled();  // both GEMV versions launch under PDL when it is on
  std::fprintf(stderr, "decode GEMV %s, programmatic dependent launch %s\n", j["gemv"].get<std::string>().c_str(),
               j["pdl"].get<bool>() ? "on" : "off");
  j["rows"] = nlohmann::json::array();
  j["skipped"] = nlohmann::json::array();
  auto save = [&] { std::ofstream(out) << j.dump(1) << "\n"; };

  // One untimed prefill first, as the transformers baseline warms up before it times: the
  // prefill rows are then steady-state throughput, without the first launch of each kernel
  // (lazy module loading) or cuBLAS's first choice of algorithms for the chunk's shapes.
  // A full chunk and a partial one where the contexts reach that far (runs v8c and v8e warmed
  // up with 8K tokens: the first context, as the code then capped it), so that both shapes
  // of every kernel have run once.
  {
    const int64_t warm = std::min<int64_t>(int64_t(engine.options().cuda_prefill_chunk) + 1000, max_ctx);
    auto session = engine.new_session(dense);
    const auto t0 = clock_type::now();
    session->prefill(prompt_tokens(text_tokens, warm), {});
    j["prefill_warmup"] = {{"tokens", warm}, {"seconds", seconds_since(t0)}};
    std::fprintf(stderr, "warm-up prefill %lld: %.3f s (untimed in the rows)\n", (long long)warm, seconds_since(t0));
  }
  double last_prefill_s = 0;
  int64_t last_prefill_n = 0;
  for (int64_t n : contexts) {
    // Prefill time grows at most quadratically: skip what would not fit the budget.
    const double predicted = last_prefill_n ? last_prefill_s * double(n) * double(n) / (double(last_prefill_n) * last_prefill_n) : 0;
    const double left = budget - seconds_since(start);
    if (predicted > 0.8 * left) {
      j["skipped"].push_back({{"context", n}, {"reason", fmt::format("predicted prefill {:.0f} s > 80% of the {:.0f} s left", predicted, left)}});
      std::fprintf(stderr, "context %lld skipped: predicted prefill %.0f s, %.0f s left\n", (long long)n, predicted, left);
      save();
      continue;
    }
    auto session = engine.new_session(dense);
    CudaSession& s = static_cast<CudaSession&>(*session);
    const std::vector<int32_t> prompt = prompt_tokens(text_tokens, n);
    const auto t0 = clock_type::now();
    int32_t token = argmax(s.prefill(prompt, {}));
    const double prefill_s = seconds_since(t0);
    last_prefill_s = prefill_s;
    last_prefill_n = n;
    j["rows"].push_back({{"kind", "prefill"}, {"context", n}, {"seconds", prefill_s}, {"tokens_per_s", double(n) / prefill_s}});
    std::fprintf(stderr, "prefill %lld: %.3f s (%.0f tok/s)\n", (long long)n, prefill_s, double(n) / prefill_s);
    save();
    double dense_ms = 0;
    for (const AttentionPolicy& p : {dense, routed}) {
      s.set_policy(p);
      const DecodeRun r = time_decode(s, token, steps, warmup, host_argmax);
      const double ms = 1e3 * r.seconds / r.steps;
      const double fraction = r.stats.bytes_dense ? double(r.stats.bytes_read()) / double(r.stats.bytes_dense) : 1.0;
      const double ctx = double(s.length());
      const double floor_ms = 1e3 * (weight_bytes + kv_token_bytes * ctx * fraction) / bw;
      const double dense_floor_ms = 1e3 * (weight_bytes + kv_token_bytes * ctx) / bw;
      nlohmann::json row = {{"kind", "decode"},
                            {"context", n},
                            {"policy", p.kind == PolicyKind::Dense ? "dense" : "sinkrouter"},
                            {"policy_detail", p.describe()},
                            {"steps", r.steps},
                            {"ms_per_step", ms},
                            {"tokens_per_s", 1e3 / ms},
                            {"kv_read_fraction", fraction},
                            {"blocks_total", r.stats.blocks_total},
                            {"blocks_skipped", r.stats.blocks_skipped},
                            {"skip_rate", r.stats.blocks_total ? double(r.stats.blocks_skipped) / r.stats.blocks_total : 0.0},
                            {"max_delta", r.stats.delta},
                            {"floor_ms", floor_ms},
                            {"ratio_to_floor", ms / floor_ms}};
      if (p.kind == PolicyKind::Dense) {
        dense_ms = ms;
      } else {
        row["speedup_over_dense"] = dense_ms / ms;
        row["floor_predicted_speedup"] = dense_floor_ms / floor_ms;
      }
      std::fprintf(stderr, "decode %lld %s: %.3f ms/step (%.0f tok/s), KV read %.1f%%, floor %.3f ms\n", (long long)n,
                   p.describe().c_str(), ms, 1e3 / ms, 100 * fraction, floor_ms);
      j["rows"].push_back(row);
      save();
    }
    // The attention kernels alone on the KV this model wrote, with one decode step's real
    // queries (the kernel benchmark's planted caches, here on real KV): per layer, dense and
    // the default policy, all layers replayed in one graph.
    CudaForward& f = s.forward();
    f.set_capture_queries(true);
    f.set_collect_stats(false);
    token = argmax(s.decode(token));
    f.set_capture_queries(false);
    f.set_collect_stats(true);
    double dense_us = 0;
    for (const AttentionPolicy& p : {dense, routed}) {
      const CudaForward::AttentionTiming t = f.time_attention(p, 20);
      const double fraction = t.stats.bytes_dense ? double(t.stats.bytes_read()) / double(t.stats.bytes_dense) : 1.0;
      nlohmann::json row = {{"kind", "attention_real_kv"},
                            {"context", n},
                            {"length", s.length()},
                            {"policy", p.kind == PolicyKind::Dense ? "dense" : "sinkrouter"},
                            {"policy_detail", p.describe()},
                            {"us_per_layer", t.us_per_layer},
                            {"kv_read_fraction", fraction},
                            {"blocks_total", t.stats.blocks_total},
                            {"blocks_skipped", t.stats.blocks_skipped},
                            {"floor_us_per_layer", 1e6 * kv_token_bytes / c.n_layers * double(s.length()) * fraction / bw}};
      if (p.kind == PolicyKind::Dense)
        dense_us = t.us_per_layer;
      else
        row["speedup_over_dense"] = dense_us / t.us_per_layer;
      std::fprintf(stderr, "attention alone on real KV, %lld %s: %.2f us per layer, KV read %.1f%%\n", (long long)n,
                   p.describe().c_str(), t.us_per_layer, 100 * fraction);
      j["rows"].push_back(row);
      save();
    }
    if (ablate && n == contexts.front()) ablation_rows(s, token, steps, warmup, host_argmax, n, dense, j, save);
    if (trace_chain && n == contexts.front()) chain_trace_rows(s, token, warmup, n, dense, j, save);
  }

  // A batch of sequences of different lengths (batch_context down to half of it).
  if (batch > 0 && seconds_since(start) < budget) {
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < batch; ++i)
      prompts.push_back(prompt_tokens(text_tokens, batch_context - int64_t(i) * batch_context / (2 * batch)));
    for (const AttentionPolicy& p : {dense, routed}) {
      GenerateOptions g;
      g.max_new_tokens = steps;
      const std::vector<GenerateResult> r = engine.generate_batch(prompts, p, g);
      int64_t generated = 0;
      HeadStats st;
      for (const GenerateResult& x : r) {
        generated += int64_t(x.tokens.size());
        st = accumulate({st, x.stats});
      }
      const double decode_s = r[0].decode_seconds;
      const double steps_done = double(steps - 1);  // the first token comes from the prefill
      j["rows"].push_back({{"kind", "decode_batch"},
                           {"batch", batch},
                           {"context_max", batch_context},
                           {"policy", p.kind == PolicyKind::Dense ? "dense" : "sinkrouter"},
                           {"decode_seconds", decode_s},
                           {"tokens_generated", generated},
                           {"sequence_steps_per_s", steps_done * batch / decode_s},
                           {"kv_read_fraction", st.bytes_dense ? double(st.bytes_read()) / double(st.bytes_dense) : 1.0}});
      std::fprintf(stderr, "batch %d %s: %.0f sequence-steps/s\n", batch, p.describe().c_str(),
                   steps_done * batch / decode_s);
      save();
    }
  }
  j["total_seconds"] = seconds_since(start);
  save();
  return 0;
}

}  // namespace
}  // namespace sinkrouter

int main(int argc, char** argv) { return sinkrouter::bench_main("bench_engine", sinkrouter::run, argc, argv); }
