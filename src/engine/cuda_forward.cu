// CudaForward: prefill chunks and graph-captured decode steps of a batch of sequences on
// the device (see cuda_forward.h).
#include "cuda_forward.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>

#include "core/cuda_check.h"
#include "core/cuda_graph.h"
#include "engine/sink_detection.h"
#include "model/cuda_gemv_queue.h"
#include "model/cuda_ops.h"
#include "model/cuda_prefill_attention.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter {

// Device activations, sized for the larger of a prefill chunk and the batch.
struct CudaForward::Buffers {
  std::vector<void*> owned;
  template <typename T>
  T* make(size_t count) {
    T* p = nullptr;
    SR_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T)));
    owned.push_back(p);
    return p;
  }
  ~Buffers() {
    for (void* p : owned) cudaFree(p);
    if (received) cudaFree(received);
    if (host_received) cudaFreeHost(host_received);
    for (cudaEvent_t e : received_ready)
      if (e) cudaEventDestroy(e);
    if (host_tokens) cudaFreeHost(host_tokens);
    if (host_logits) cudaFreeHost(host_logits);
    if (host_next) cudaFreeHost(host_next);
  }
  int32_t* tokens = nullptr;      // [rows]
  float* x = nullptr;             // [rows, E]      the residual stream
  __nv_bfloat16* h = nullptr;     // [rows, E]      normalised: the prefill GEMMs' input
  float* qkv = nullptr;           // [rows, QD + 2 KD]
  __nv_bfloat16* q = nullptr;     // [rows, QD]     prefill queries (RoPE applied)
  float* k = nullptr;             // [rows, KD]     RoPE applied
  float* v = nullptr;             // [rows, KD]
  __nv_bfloat16* att = nullptr;   // [rows, QD]     prefill attention output
  float* gu = nullptr;            // [rows, 2 F]    gate | up
  __nv_bfloat16* act = nullptr;   // [rows, F]      silu(gate) * up
  float* lse = nullptr;           // [rows, QH]
  float* q_layers = nullptr;      // [layers, B, QD] decode queries kept for time_attention (on demand)
  float* q_step = nullptr;        // [B, QD]        decode queries
  float* att_step = nullptr;      // [B, QD]        decode attention output
  float* logits = nullptr;        // [max(B, 1), V]
  unsigned* chain_barriers = nullptr;  // [layers + 1] zeroed: the decode GEMV chains' barrier words
  int32_t* next_ids = nullptr;         // [B]            greedy decoding's argmax
  int32_t* host_next = nullptr;        // pinned [B]
  float* received = nullptr;      // [KV heads, n]  sink detection
  int64_t received_count = 0;
  // Sink detection's downloads: two pinned slots [2][KV heads, n] (layer l in slot l % 2),
  // each with the event recorded after its copy.
  float* host_received = nullptr;
  int64_t host_received_count = 0;  // floats per slot
  cudaEvent_t received_ready[2] = {nullptr, nullptr};
  int32_t* host_tokens = nullptr;  // pinned [B]
  float* host_logits = nullptr;    // pinned [B, V]
};

namespace {
// The LM head (49K rows for SmolLM2) runs on version 1 when the default is Chain: it wants
// V1's thousands of CTAs (the chain's grid of one CTA per SM would take 16 row pairs per
// warp, one after another).
cuda::GemvVersion lm_head_gemv_version() {
  const cuda::GemvVersion v = cuda::gemv_default_version();
  return v == cuda::GemvVersion::Chain ? cuda::GemvVersion::V1 : v;
}

// The CUDA decoder bounds blocks by their min/max box only.
void check_gpu_policy(const AttentionPolicy& p) {
  p.validate();
  SR_CHECK(p.kind != PolicyKind::SinkRouter || p.bound == BoundKind::Box,
           "GPU engine: --bound {} is not implemented by the CUDA decoder (box only); use --bound box, or "
           "--device cpu",
           bound_name(p.bound));
}
}  // namespace

CudaForward::CudaForward(const CudaModel& m, const std::vector<int64_t>& capacities, const AttentionPolicy& policy)
    : m_(m), policy_(policy), capacities_(capacities), lengths_(capacities.size(), 0) {
  check_gpu_policy(policy_);
  SR_CHECK(!capacities.empty(), "GPU engine: a batch needs at least one sequence");
  const ModelConfig& c = m.config;
  const EngineOptions& o = m.options;
  const int B = int(capacities.size()), H = c.n_head_kv;
  KVCacheConfig kc;
  kc.num_kv_heads = H;
  kc.head_dim = c.head_dim;
  kc.dtype = DType::BF16;
  kc.page_size = o.page_size;
  kc.block_size = o.block_size;
  kc.default_anchors = o.first_anchors;
  kc.max_anchors = o.first_anchors + o.detected_sinks;
  for (int l = 0; l < c.n_layers; ++l) caches_.emplace_back(kc, capacities);
  detected_.assign(size_t(c.n_layers), std::vector<std::vector<int32_t>>(size_t(B) * H));
  layer_stats_.assign(size_t(B), std::vector<HeadStats>(size_t(c.n_layers)));

  const int64_t max_cap = *std::max_element(capacities.begin(), capacities.end());
  chunk_ = std::min<int64_t>(std::max(o.cuda_prefill_chunk, 1), max_cap);
  const size_t rows = size_t(std::max<int64_t>(chunk_, B));
  const size_t E = size_t(c.n_embd), QD = size_t(m.q_dim), KD = size_t(m.kv_dim), F = size_t(c.n_ff);
  const size_t V = size_t(c.n_vocab), QH = size_t(c.n_head);
  buf_ = std::make_unique<Buffers>();
  Buffers& b = *buf_;
  b.tokens = b.make<int32_t>(rows);
  b.x = b.make<float>(rows * E);
  b.h = b.make<__nv_bfloat16>(rows * E);
  b.qkv = b.make<float>(rows * (QD + 2 * KD));
  b.q = b.make<__nv_bfloat16>(rows * QD);
  b.k = b.make<float>(rows * KD);
  b.v = b.make<float>(rows * KD);
  b.att = b.make<__nv_bfloat16>(rows * QD);
  b.gu = b.make<float>(rows * 2 * F);
  b.act = b.make<__nv_bfloat16>(rows * F);
  b.lse = b.make<float>(rows * QH);
  b.q_step = b.make<float>(size_t(B) * QD);
  b.att_step = b.make<float>(size_t(B) * QD);
  b.logits = b.make<float>(size_t(B) * V);
  b.chain_barriers = b.make<unsigned>(size_t(c.n_layers) + 1);
  SR_CUDA_CHECK(cudaMemset(b.chain_barriers, 0, (size_t(c.n_layers) + 1) * sizeof(unsigned)));
  SR_CUDA_CHECK(cudaMallocHost(&b.host_tokens, size_t(B) * sizeof(int32_t)));
  SR_CUDA_CHECK(cudaMallocHost(&b.host_logits, size_t(B) * V * sizeof(float)));
  b.next_ids = b.make<int32_t>(size_t(B));
  SR_CUDA_CHECK(cudaMallocHost(&b.host_next, size_t(B) * sizeof(int32_t)));
  // A blocking stream: it stays ordered with the legacy-stream copies and memsets the KV
  // caches and decoders make on the host's behalf (anchors, workspaces).
  SR_CUDA_CHECK(cudaStreamCreate(&stream_));
  const char* attention = std::getenv("SINKROUTER_PREFILL_ATTENTION");
  if (attention != nullptr && *attention != '\0') prefill_attention_ = prefill_attention_kernel_from_name(attention);
  SR_CUDA_CHECK(cudaDeviceSynchronize());
}

CudaForward::~CudaForward() {
  if (stream_) cudaStreamSynchronize(stream_);
  if (chain_trace_) cudaFree(chain_trace_);
  if (graph_) cudaGraphExecDestroy(graph_);
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaForward::set_policy(const AttentionPolicy& policy) {
  check_gpu_policy(policy);
  policy_ = policy;
  decoders_.clear();
  drop_graph();
}

void CudaForward::set_step_ablation(unsigned skipped) {
  ablated_ = skipped;
  drop_graph();
}

void CudaForward::set_chain_trace(bool on) {
  drop_graph();
  SR_CUDA_CHECK(cudaDeviceSynchronize());
  if (chain_trace_) SR_CUDA_CHECK(cudaFree(chain_trace_));
  chain_trace_ = nullptr;
  if (!on) return;
  const size_t words = size_t(m_.config.n_layers + 1) * size_t(cuda::gemv_chain_trace_words());
  SR_CUDA_CHECK(cudaMalloc(&chain_trace_, words * sizeof(long long)));
  SR_CUDA_CHECK(cudaMemset(chain_trace_, 0, words * sizeof(long long)));
}

std::vector<long long> CudaForward::chain_trace() const {
  SR_CHECK(chain_trace_ != nullptr, "chain_trace: tracing is off (set_chain_trace(true) first)");
  std::vector<long long> v(size_t(m_.config.n_layers + 1) * size_t(cuda::gemv_chain_trace_words()));
  SR_CUDA_CHECK(cudaStreamSynchronize(stream_));
  SR_CUDA_CHECK(cudaMemcpy(v.data(), chain_trace_, v.size() * sizeof(long long), cudaMemcpyDeviceToHost));
  return v;
}

void CudaForward::drop_graph() {
  if (!graph_) return;
  SR_CUDA_CHECK(cudaStreamSynchronize(stream_));
  SR_CUDA_CHECK(cudaGraphExecDestroy(graph_));
  graph_ = nullptr;
}

void CudaForward::prefill(int s, const int32_t* tokens, int64_t n, const ProgressFn& progress,
                          std::vector<float>* logits) {
  SR_CHECK(s >= 0 && s < batch(), "GPU prefill: sequence {} out of range (batch of {})", s, batch());
  SR_CHECK(n >= 1, "prefill: no tokens");
  SR_CHECK(lengths_[size_t(s)] + n <= capacities_[size_t(s)],
           "context over capacity: {} tokens in the sequence + {} new exceed its capacity of {} tokens",
           lengths_[size_t(s)], n, capacities_[size_t(s)]);
  for (int64_t i = 0; i < n; i += chunk_) {
    const int64_t c = std::min(chunk_, n - i);
    const bool last = i + c == n;
    prefill_chunk(s, tokens + i, c, last && m_.options.detected_sinks > 0, last ? logits : nullptr);
    if (progress) {
      SR_CUDA_CHECK(cudaStreamSynchronize(stream_));  // report finished work, not queued work
      progress(i + c, n);
    }
  }
  SR_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaForward::prefill_chunk(int s, const int32_t* tokens, int64_t c, bool detect, std::vector<float>* logits) {
  const ModelConfig& cf = m_.config;
  const int E = cf.n_embd, QD = m_.q_dim, KD = m_.kv_dim, F = cf.n_ff;
  const int QKV = QD + 2 * KD;
  const int64_t p0 = lengths_[size_t(s)];
  Buffers& b = *buf_;
  SR_CUDA_CHECK(cudaMemcpyAsync(b.tokens, tokens, size_t(c) * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  cuda::embed_rows(m_.token_embd, b.tokens, c, E, b.x, stream_);
  const float scale = 1.f / std::sqrt(float(cf.head_dim));
  std::vector<std::vector<std::vector<int32_t>>> chosen(detect ? size_t(cf.n_layers) : 0);  // [layer][head]
  for (int l = 0; l < cf.n_layers; ++l) {
    const CudaLayerWeights& L = m_.layers[size_t(l)];
    cuda::rms_norm_bf16(b.x, L.attn_norm, cf.rms_eps, c, E, b.h, stream_);
    cuda::gemm_bf16(m_.cublas, L.wqkv, QKV, E, b.h, c, b.qkv, 0.f, stream_);
    cuda::rope_split(b.qkv, c, QD, KD, p0, m_.rope, b.q, b.k, b.v, stream_);
    caches_[size_t(l)].append(s, b.k, b.v, c, DType::F32, stream_);
    PrefillAttentionArgs a;
    a.kv = caches_[size_t(l)].view(s, 1).kv;
    a.q = b.q;
    a.out = b.att;
    a.lse = detect ? b.lse : nullptr;
    a.c = c;
    a.p0 = p0;
    a.n_head = cf.n_head;
    a.scale = scale;
    prefill_attention_cuda(a, stream_, prefill_attention_);
    if (detect) enqueue_received(l, p0 + c, a);
    cuda::gemm_bf16(m_.cublas, L.wo, E, QD, b.att, c, b.x, 1.f, stream_);
    cuda::rms_norm_bf16(b.x, L.ffn_norm, cf.rms_eps, c, E, b.h, stream_);
    cuda::gemm_bf16(m_.cublas, L.w_gate_up, 2 * F, E, b.h, c, b.gu, 0.f, stream_);
    cuda::swiglu_bf16(b.gu, c, F, b.act, stream_);
    cuda::gemm_bf16(m_.cublas, L.w_down, E, F, b.act, c, b.x, 1.f, stream_);
    // The previous layer's choice on the host while the device runs this one.
    if (detect && l > 0) chosen[size_t(l - 1)] = choose_sinks(l - 1, s, p0 + c);
  }
  if (detect) {
    chosen.back() = choose_sinks(cf.n_layers - 1, s, p0 + c);
    register_sinks(s, chosen);
  }
  lengths_[size_t(s)] += c;
  if (logits) {
    cuda::GemvArgs g;
    g.w = m_.output;
    g.out = cf.n_vocab;
    g.in = E;
    g.tokens = 1;
    g.x = b.x + (c - 1) * E;
    g.ldx = E;
    g.gain = m_.output_norm;
    g.eps = cf.rms_eps;
    g.y = b.logits;
    g.ldy = cf.n_vocab;
    cuda::gemv(g, cuda::GemvIn::RmsNorm, cuda::GemvOut::Store, stream_, lm_head_gemv_version());
    download_logits(1, *logits);
  }
}

// Sink detection, at the end of a prefill call, overlapped with the layers that follow:
// per layer the attention the keys of the sequence (n tokens) receive from the chunk's last
// queries, per KV head, goes to a pinned slot (enqueue_received); the host picks the layer's
// largest shares (sink_detection.h) once that copy is done, while the device runs the next
// layer (choose_sinks); after the last layer every choice is registered (register_sinks).
// Layer l's copy reuses slot l % 2 only once the host is done with layer l - 2: that choice
// is made before layer l is enqueued.
void CudaForward::enqueue_received(int layer, int64_t n, const PrefillAttentionArgs& a) {
  const int H = m_.config.n_head_kv;
  Buffers& b = *buf_;
  if (b.received_count < int64_t(H) * n) {  // layer 0: nothing of this prefill is in flight
    if (b.received) SR_CUDA_CHECK(cudaFree(b.received));
    b.received = nullptr;
    b.received_count = int64_t(H) * n;
    SR_CUDA_CHECK(cudaMalloc(&b.received, size_t(b.received_count) * sizeof(float)));
  }
  if (b.host_received_count < int64_t(H) * n) {
    if (b.host_received) SR_CUDA_CHECK(cudaFreeHost(b.host_received));
    b.host_received = nullptr;
    b.host_received_count = int64_t(H) * n;
    SR_CUDA_CHECK(cudaMallocHost(&b.host_received, 2 * size_t(b.host_received_count) * sizeof(float)));
  }
  for (cudaEvent_t& e : b.received_ready)
    if (!e) SR_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  attention_received_cuda(a, int(std::min<int64_t>(kSinkObservedQueries, a.c)), b.received, stream_);
  float* slot = b.host_received + size_t(layer % 2) * size_t(b.host_received_count);
  SR_CUDA_CHECK(cudaMemcpyAsync(slot, b.received, size_t(H) * size_t(n) * sizeof(float), cudaMemcpyDeviceToHost,
                                stream_));
  SR_CUDA_CHECK(cudaEventRecord(b.received_ready[layer % 2], stream_));
}

std::vector<std::vector<int32_t>> CudaForward::choose_sinks(int layer, int s, int64_t n) {
  const int H = m_.config.n_head_kv;
  const EngineOptions& o = m_.options;
  Buffers& b = *buf_;
  SR_CUDA_CHECK(cudaEventSynchronize(b.received_ready[layer % 2]));
  const float* received = b.host_received + size_t(layer % 2) * size_t(b.host_received_count);
  const int max_anchors = o.first_anchors + o.detected_sinks;
  std::vector<std::vector<int32_t>> chosen(static_cast<size_t>(H));
  for (int h = 0; h < H; ++h) {
    const std::vector<int32_t>& mine = detected_[size_t(layer)][size_t(s) * H + size_t(h)];
    std::vector<int32_t> existing;  // what the cache holds: the first tokens, then detected ones
    for (int32_t p = 0; p < std::min<int64_t>(o.first_anchors, n); ++p) existing.push_back(p);
    existing.insert(existing.end(), mine.begin(), mine.end());
    const int room = std::max(0, max_anchors - int(existing.size()));
    chosen[size_t(h)] = select_sinks(&received[size_t(h) * size_t(n)], n, existing, std::min(o.detected_sinks, room));
  }
  return chosen;
}

void CudaForward::register_sinks(int s, const std::vector<std::vector<std::vector<int32_t>>>& chosen) {
  const int H = m_.config.n_head_kv;
  for (size_t l = 0; l < chosen.size(); ++l) {
    bool any = false;
    for (const auto& c : chosen[l]) any = any || !c.empty();
    if (!any) continue;
    caches_[l].register_anchors(s, chosen[l]);
    for (int h = 0; h < H; ++h) {
      std::vector<int32_t>& mine = detected_[l][size_t(s) * H + size_t(h)];
      mine.insert(mine.end(), chosen[l][size_t(h)].begin(), chosen[l][size_t(h)].end());
    }
  }
  SR_CUDA_CHECK(cudaDeviceSynchronize());  // the anchors' uploads are complete before any kernel reads them
}

void CudaForward::make_decoders() {
  const ModelConfig& cf = m_.config;
  const float scale = 1.f / std::sqrt(float(cf.head_dim));
  decoders_.clear();
  for (int l = 0; l < cf.n_layers; ++l)
    decoders_.push_back(std::make_unique<CudaDecoder>(caches_[size_t(l)].view(), cf.n_head, policy_, scale));
  SR_CUDA_CHECK(cudaDeviceSynchronize());  // their workspaces were cleared on the legacy stream
}

void CudaForward::enqueue_decode_step() {
  const ModelConfig& cf = m_.config;
  const int B = batch(), E = cf.n_embd, QD = m_.q_dim, KD = m_.kv_dim, F = cf.n_ff;
  Buffers& b = *buf_;
  // Under GEMV version Chain the GEMVs from one layer's attention output to the next
  // layer's q / k / v (o, gate|up, down, QKV) run as one launch: flushed before the append.
  const cuda::GemvVersion gemv_version = cuda::gemv_default_version();
  cuda::GemvQueue gemvs(gemv_version, b.chain_barriers, cf.n_layers + 1, stream_);
  if (chain_trace_) gemvs.set_trace(chain_trace_, cuda::gemv_chain_trace_words());
  cuda::embed_rows(m_.token_embd, b.tokens, B, E, b.x, stream_);
  for (int l = 0; l < cf.n_layers; ++l) {
    const CudaLayerWeights& L = m_.layers[size_t(l)];
    DeviceKVCache& cache = caches_[size_t(l)];
    const DeviceKV view = cache.view();

    cuda::GemvArgs qkv;  // q, k, v of every sequence, rotated by its current length
    qkv.w = L.wqkv;
    qkv.out = QD + 2 * KD;
    qkv.in = E;
    qkv.tokens = B;
    qkv.x = b.x;
    qkv.ldx = E;
    qkv.gain = L.attn_norm;
    qkv.eps = cf.rms_eps;
    qkv.q_out = b.q_step;
    qkv.k_out = b.k;
    qkv.v_out = b.v;
    qkv.q_dim = QD;
    qkv.kv_dim = KD;
    qkv.positions = view.seq_lens;  // read before this layer's append advances them
    qkv.rope = m_.rope;
    if (!(ablated_ & kQkv)) gemvs.push(qkv, cuda::GemvIn::RmsNorm, cuda::GemvOut::QkvRope);
    gemvs.flush();
    if (capture_queries_)
      SR_CUDA_CHECK(cudaMemcpyAsync(b.q_layers + size_t(l) * B * QD, b.q_step, size_t(B) * QD * sizeof(float),
                                    cudaMemcpyDeviceToDevice, stream_));
    if (!(ablated_ & kAppend)) cache.append_step(b.k, b.v, DType::F32, stream_);
    if (!(ablated_ & kAttention)) decoders_[size_t(l)]->run(cache.view(), b.q_step, DType::F32, b.att_step, DType::F32, stream_);

    cuda::GemvArgs o;  // x += Wo att
    o.w = L.wo;
    o.out = E;
    o.in = QD;
    o.tokens = B;
    o.x = b.att_step;
    o.ldx = QD;
    o.y = b.x;
    o.ldy = E;
    if (!(ablated_ & kOProj)) gemvs.push(o, cuda::GemvIn::Plain, cuda::GemvOut::Accumulate);

    cuda::GemvArgs gu;  // gate | up of rms_norm(x)
    gu.w = L.w_gate_up;
    gu.out = 2 * F;
    gu.in = E;
    gu.tokens = B;
    gu.x = b.x;
    gu.ldx = E;
    gu.gain = L.ffn_norm;
    gu.eps = cf.rms_eps;
    gu.y = b.gu;
    gu.ldy = 2 * F;
    if (!(ablated_ & kGateUp)) gemvs.push(gu, cuda::GemvIn::RmsNorm, cuda::GemvOut::Store);

    cuda::GemvArgs down;  // x += Wdown (silu(gate) * up)
    down.w = L.w_down;
    down.out = E;
    down.in = F;
    down.tokens = B;
    down.x = b.gu;
    down.ldx = 2 * F;
    down.y = b.x;
    down.ldy = E;
    if (!(ablated_ & kDown)) gemvs.push(down, cuda::GemvIn::SwiGlu, cuda::GemvOut::Accumulate);
  }
  cuda::GemvArgs out;
  out.w = m_.output;
  out.out = cf.n_vocab;
  out.in = E;
  out.tokens = B;
  out.x = b.x;
  out.ldx = E;
  out.gain = m_.output_norm;
  out.eps = cf.rms_eps;
  out.y = b.logits;
  out.ldy = cf.n_vocab;
  gemvs.flush();
  if (!(ablated_ & kLmHead)) cuda::gemv(out, cuda::GemvIn::RmsNorm, cuda::GemvOut::Store, stream_, lm_head_gemv_version());
}

void CudaForward::run_step(const int32_t* tokens) {
  const int B = batch();
  for (int s = 0; s < B; ++s) {
    SR_CHECK(lengths_[size_t(s)] < capacities_[size_t(s)],
             "context over capacity: sequence {} already holds {} tokens, its capacity", s, lengths_[size_t(s)]);
    SR_CHECK(tokens[s] >= 0 && tokens[s] < m_.config.n_vocab, "decode: token id {} out of range (vocabulary of {})",
             tokens[s], m_.config.n_vocab);
  }
  if (decoders_.empty()) make_decoders();
  Buffers& b = *buf_;
  std::memcpy(b.host_tokens, tokens, size_t(B) * sizeof(int32_t));
  SR_CUDA_CHECK(cudaMemcpyAsync(b.tokens, b.host_tokens, size_t(B) * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  if (use_graph_) {
    if (!graph_) graph_ = cuda::capture_graph(stream_, [&] { enqueue_decode_step(); });
    SR_CUDA_CHECK(cudaGraphLaunch(graph_, stream_));
  } else {
    enqueue_decode_step();
  }
}

void CudaForward::after_step() {
  const int B = batch();
  for (int64_t& n : lengths_) ++n;
  queries_captured_ = capture_queries_;
  if (collect_stats_) {
    const int H = m_.config.n_head_kv;
    for (size_t l = 0; l < decoders_.size(); ++l) {
      const std::vector<HeadStats> st = decoders_[l]->download_stats();  // [B * H]
      for (int s = 0; s < B; ++s)
        layer_stats_[size_t(s)][l] = accumulate(std::vector<HeadStats>(st.begin() + s * H, st.begin() + (s + 1) * H));
    }
  }
}

void CudaForward::decode(const int32_t* tokens, std::vector<float>& logits) {
  run_step(tokens);
  download_logits(batch(), logits);
  after_step();
}

void CudaForward::decode_greedy(const int32_t* tokens, int32_t* next) {
  run_step(tokens);
  Buffers& b = *buf_;
  const int B = batch();
  cuda::argmax_rows(b.logits, B, m_.config.n_vocab, b.next_ids, stream_);
  SR_CUDA_CHECK(cudaMemcpyAsync(b.host_next, b.next_ids, size_t(B) * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
  SR_CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::memcpy(next, b.host_next, size_t(B) * sizeof(int32_t));
  after_step();
}

void CudaForward::set_capture_queries(bool on) {
  if (on == capture_queries_) return;
  if (on && buf_->q_layers == nullptr)
    buf_->q_layers = buf_->make<float>(size_t(m_.config.n_layers) * size_t(batch()) * size_t(m_.q_dim));
  capture_queries_ = on;
  drop_graph();  // the step's graph has (or lacks) the copies: capture it again
}

CudaForward::AttentionTiming CudaForward::time_attention(const AttentionPolicy& policy, int reps) {
  check_gpu_policy(policy);
  SR_CHECK(queries_captured_, "time_attention: no decode step has captured its queries (set_capture_queries)");
  SR_CHECK(reps >= 1, "time_attention: reps {} must be at least 1", reps);
  const ModelConfig& cf = m_.config;
  const float scale = 1.f / std::sqrt(float(cf.head_dim));
  const size_t BQ = size_t(batch()) * size_t(m_.q_dim);
  std::vector<std::unique_ptr<CudaDecoder>> decoders;
  for (int l = 0; l < cf.n_layers; ++l)
    decoders.push_back(std::make_unique<CudaDecoder>(caches_[size_t(l)].view(), cf.n_head, policy, scale));
  SR_CUDA_CHECK(cudaDeviceSynchronize());  // the decoders' workspaces were cleared on the legacy stream
  Buffers& b = *buf_;
  cudaGraphExec_t exec = cuda::capture_graph(stream_, [&] {
    for (int l = 0; l < cf.n_layers; ++l)  // the output goes to the step's scratch (att_step)
      decoders[size_t(l)]->run(caches_[size_t(l)].view(), b.q_layers + size_t(l) * BQ, DType::F32, b.att_step,
                               DType::F32, stream_);
  });
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  SR_CUDA_CHECK(cudaEventCreate(&e0));
  SR_CUDA_CHECK(cudaEventCreate(&e1));
  for (int i = 0; i < 2; ++i) SR_CUDA_CHECK(cudaGraphLaunch(exec, stream_));  // warm-up
  SR_CUDA_CHECK(cudaEventRecord(e0, stream_));
  for (int i = 0; i < reps; ++i) SR_CUDA_CHECK(cudaGraphLaunch(exec, stream_));
  SR_CUDA_CHECK(cudaEventRecord(e1, stream_));
  SR_CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  SR_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaGraphExecDestroy(exec);
  AttentionTiming t;
  t.us_per_layer = 1e3 * double(ms) / reps / cf.n_layers;
  std::vector<HeadStats> all;
  for (const auto& d : decoders) {
    const std::vector<HeadStats> s = d->download_stats();
    all.insert(all.end(), s.begin(), s.end());
  }
  t.stats = accumulate(all);
  return t;
}

void CudaForward::download_logits(int rows, std::vector<float>& logits) {
  Buffers& b = *buf_;
  const size_t count = size_t(rows) * size_t(m_.config.n_vocab);
  SR_CUDA_CHECK(cudaMemcpyAsync(b.host_logits, b.logits, count * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  SR_CUDA_CHECK(cudaStreamSynchronize(stream_));
  logits.assign(b.host_logits, b.host_logits + count);
}

}  // namespace sinkrouter
