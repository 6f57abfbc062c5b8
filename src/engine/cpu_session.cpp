#include "cpu_session.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "model/prefill_attention.h"
#include "model/qmatmul.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/kv/key_basis.h"

namespace sinkrouter {

namespace {
// Sink detection: keys receiving at least this share of the attention of the prompt's
// last queries become anchors (up to EngineOptions::detected_sinks per head).
constexpr float kSinkShare = 0.02f;
constexpr int kObservedQueries = 32;

void add_into(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}
}  // namespace

CpuSession::CpuSession(const CpuModel& m, const AttentionPolicy& policy) : m_(m), policy_(policy) {
  policy_.validate();
  const ModelConfig& c = m.config;
  KVCacheConfig kc;
  kc.num_kv_heads = c.n_head_kv;
  kc.head_dim = c.head_dim;
  kc.dtype = m.options.kv_dtype;
  kc.page_size = m.options.page_size;
  kc.block_size = m.options.block_size;
  kc.num_pages = (m.capacity + kc.page_size - 1) / kc.page_size;
  kc.default_anchors = m.options.first_anchors;
  kc.max_anchors = m.options.first_anchors + m.options.detected_sinks;
  for (int l = 0; l < c.n_layers; ++l) {
    caches_.push_back(std::make_unique<PagedKVCache>(kc));
    seq_.push_back(caches_.back()->create_sequence());
  }
  layer_stats_.assign(size_t(c.n_layers), HeadStats{});
}

std::unique_ptr<Session> CpuSession::fork() const {
  auto copy = std::make_unique<CpuSession>(m_, policy_);
  for (size_t l = 0; l < caches_.size(); ++l) *copy->caches_[l] = *caches_[l];
  copy->seq_ = seq_;
  copy->length_ = length_;
  copy->logits_ = logits_;
  copy->last_ = last_;
  copy->total_ = total_;
  copy->layer_stats_ = layer_stats_;
  return copy;
}

void CpuSession::set_policy(const AttentionPolicy& policy) {
  policy.validate();
  policy_ = policy;
}

void CpuSession::check_capacity(int64_t more) const {
  SR_CHECK(length_ + more <= m_.capacity,
           "context over capacity: {} tokens in the session + {} new exceed the limit of {} tokens "
           "(the model was trained for {}; raise --max-context, and pass --allow-beyond-trained-context "
           "to go past the trained length)",
           length_, more, m_.capacity, m_.config.context_length);
}

const std::vector<float>& CpuSession::prefill(const std::vector<int32_t>& tokens, const ProgressFn& progress) {
  SR_CHECK(!tokens.empty(), "prefill: no tokens");
  check_capacity(int64_t(tokens.size()));
  for (int32_t t : tokens)
    SR_CHECK(t >= 0 && t < m_.config.n_vocab, "prefill: token id {} out of range (vocabulary of {})", t,
             m_.config.n_vocab);
  const int64_t chunk = std::max(1, m_.options.prefill_chunk);
  const int64_t n = int64_t(tokens.size());
  for (int64_t i = 0; i < n; i += chunk) {
    const int64_t c = std::min(chunk, n - i);
    prefill_chunk(tokens.data() + i, c, i + c == n);
    if (progress) progress(i + c, n);
  }
  return logits_;
}

void CpuSession::prefill_chunk(const int32_t* tokens, int64_t c, bool last_chunk) {
  const ModelConfig& cfg = m_.config;
  const LlamaWeights& w = m_.weights;
  ThreadPool& pool = *m_.pool;
  const int64_t E = cfg.n_embd, QD = int64_t(cfg.n_head) * cfg.head_dim, KD = int64_t(cfg.n_head_kv) * cfg.head_dim;
  const int64_t p0 = length_;
  std::vector<float> x(c * E), h(c * E), q(c * QD), k(c * KD), v(c * KD), att(c * QD), proj(c * E),
      gate(c * cfg.n_ff), up(c * cfg.n_ff);
  for (int64_t i = 0; i < c; ++i) dequantize_matrix_row(w.token_embd, tokens[i], &x[size_t(i * E)]);
  const float scale = 1.f / std::sqrt(float(cfg.head_dim));
  for (int l = 0; l < cfg.n_layers; ++l) {
    const LayerWeights& L = w.layers[size_t(l)];
    for (int64_t i = 0; i < c; ++i) rms_norm(&x[size_t(i * E)], L.attn_norm.data(), cfg.rms_eps, E, &h[size_t(i * E)]);
    gemm(L.wq, h.data(), c, q.data(), pool);
    gemm(L.wk, h.data(), c, k.data(), pool);
    gemm(L.wv, h.data(), c, v.data(), pool);
    for (int64_t i = 0; i < c; ++i) {
      m_.rope->apply(&q[size_t(i * QD)], cfg.n_head, p0 + i);
      m_.rope->apply(&k[size_t(i * KD)], cfg.n_head_kv, p0 + i);
    }
    PagedKVCache& cache = *caches_[size_t(l)];
    cache.append(seq_[size_t(l)], TensorView(k.data(), DType::F32, {c, cfg.n_head_kv, cfg.head_dim}),
                 TensorView(v.data(), DType::F32, {c, cfg.n_head_kv, cfg.head_dim}));
    const PagedKVBatch batch = cache.batch({seq_[size_t(l)]});
    std::vector<float> received;
    const bool detect = last_chunk && (m_.options.detected_sinks > 0 || observer_);
    prefill_attention_cpu(q.data(), c, p0, batch.view, cfg.n_head, scale, att.data(), pool,
                          detect ? kObservedQueries : 0, detect ? &received : nullptr);
    gemm(L.wo, att.data(), c, proj.data(), pool);
    add_into(x.data(), proj.data(), c * E);
    for (int64_t i = 0; i < c; ++i) rms_norm(&x[size_t(i * E)], L.ffn_norm.data(), cfg.rms_eps, E, &h[size_t(i * E)]);
    gemm(L.w_gate, h.data(), c, gate.data(), pool);
    gemm(L.w_up, h.data(), c, up.data(), pool);
    swiglu(gate.data(), up.data(), c * cfg.n_ff, gate.data());
    gemm(L.w_down, gate.data(), c, proj.data(), pool);
    add_into(x.data(), proj.data(), c * E);
    if (detect && observer_) observer_->on_prefill_end(l, batch.view, received);
    if (detect && m_.options.detected_sinks > 0) detect_sinks(l, received);
  }
  length_ += c;
  if (last_chunk && needs_key_basis(policy_)) ensure_key_basis();
  if (last_chunk) {
    rms_norm(&x[size_t((c - 1) * E)], w.output_norm.data(), cfg.rms_eps, E, h.data());
    logits_.resize(size_t(cfg.n_vocab));
    Q8Activation in;
    if (m_.options.matmul == "f32")
      in.set_float(h.data(), E);
    else
      in.quantize(h.data(), E);
    gemv(w.output, in, logits_.data(), pool);
  }
}

void CpuSession::detect_sinks(int layer, const std::vector<float>& received) {
  const int H = m_.config.n_head_kv;
  const int64_t n = int64_t(received.size()) / H;
  for (int h = 0; h < H; ++h) {
    const float* r = &received[size_t(h) * size_t(n)];
    std::vector<int32_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    const auto& existing = caches_[size_t(layer)]->anchors(seq_[size_t(layer)], h);
    std::vector<int32_t> chosen;
    std::partial_sort(order.begin(), order.begin() + std::min<int64_t>(n, 64), order.end(),
                      [&](int32_t a, int32_t b) { return r[a] > r[b]; });
    for (int64_t i = 0; i < std::min<int64_t>(n, 64) && int(chosen.size()) < m_.options.detected_sinks; ++i) {
      const int32_t p = order[size_t(i)];
      if (r[p] < kSinkShare) break;
      if (std::find(existing.begin(), existing.end(), p) == existing.end()) chosen.push_back(p);
    }
    caches_[size_t(layer)]->register_anchors(seq_[size_t(layer)], h, chosen);
  }
}

bool CpuSession::needs_key_basis(const AttentionPolicy& p) {
  return p.kind == PolicyKind::SinkRouter && p.bound != BoundKind::Box;
}

// The principal basis of each layer's keys, fitted once on what the cache holds (the
// prompt's keys, when called at the end of a prefill or at the first routed step).
void CpuSession::ensure_key_basis() {
  for (size_t l = 0; l < caches_.size(); ++l) {
    PagedKVCache& cache = *caches_[l];
    if (cache.has_key_basis() || cache.length(seq_[l]) == 0) continue;
    cache.set_key_basis(fit_key_basis(cache.batch({seq_[l]}).view, 0));
  }
}

const std::vector<float>& CpuSession::decode(int32_t token) {
  SR_CHECK(token >= 0 && token < m_.config.n_vocab, "decode: token id {} out of range (vocabulary of {})", token,
           m_.config.n_vocab);
  check_capacity(1);
  const ModelConfig& cfg = m_.config;
  const LlamaWeights& w = m_.weights;
  ThreadPool& pool = *m_.pool;
  const int64_t E = cfg.n_embd, QD = int64_t(cfg.n_head) * cfg.head_dim, KD = int64_t(cfg.n_head_kv) * cfg.head_dim;
  std::vector<float> x(E), h(E), q(QD), k(KD), v(KD), att(QD), proj(E), gate(cfg.n_ff), up(cfg.n_ff);
  dequantize_matrix_row(w.token_embd, token, x.data());
  const float scale = 1.f / std::sqrt(float(cfg.head_dim));
  Q8Activation qa;
  const bool exact = m_.options.matmul == "f32";
  // One quantised input shared by the matrices that read it; in f32 mode the generic
  // float path runs (Q8Activation::keep_float).
  auto load_input = [&](const float* v, int64_t n) {
    if (exact)
      qa.set_float(v, n);
    else
      qa.quantize(v, n);
  };
  last_ = HeadStats{};
  if (needs_key_basis(policy_)) ensure_key_basis();
  for (int l = 0; l < cfg.n_layers; ++l) {
    const LayerWeights& L = w.layers[size_t(l)];
    rms_norm(x.data(), L.attn_norm.data(), cfg.rms_eps, E, h.data());
    load_input(h.data(), E);
    // One parallel region per shared input (Q, K, V; then gate, up): fewer hand-offs.
    gemv_many({{&L.wq, q.data()}, {&L.wk, k.data()}, {&L.wv, v.data()}}, qa, pool);
    m_.rope->apply(q.data(), cfg.n_head, length_);
    m_.rope->apply(k.data(), cfg.n_head_kv, length_);
    PagedKVCache& cache = *caches_[size_t(l)];
    cache.append(seq_[size_t(l)], TensorView(k.data(), DType::F32, {1, cfg.n_head_kv, cfg.head_dim}),
                 TensorView(v.data(), DType::F32, {1, cfg.n_head_kv, cfg.head_dim}));
    const PagedKVBatch batch = cache.batch({seq_[size_t(l)]});
    const TensorView qv(q.data(), DType::F32, {1, cfg.n_head, cfg.head_dim});
    RoutePlan plan = plan_decode(qv, batch.view, policy_, scale, pool.size(), &pool);
    decode_cpu(qv, batch.view, plan, TensorView(att.data(), DType::F32, {1, cfg.n_head, cfg.head_dim}), pool);
    if (observer_) observer_->on_decode(l, qv, batch.view, plan);
    layer_stats_[size_t(l)] = accumulate(plan.stats);
    last_ = accumulate({last_, layer_stats_[size_t(l)]});
    load_input(att.data(), QD);
    gemv(L.wo, qa, proj.data(), pool);
    add_into(x.data(), proj.data(), E);
    rms_norm(x.data(), L.ffn_norm.data(), cfg.rms_eps, E, h.data());
    load_input(h.data(), E);
    gemv_many({{&L.w_gate, gate.data()}, {&L.w_up, up.data()}}, qa, pool);
    swiglu(gate.data(), up.data(), cfg.n_ff, gate.data());
    load_input(gate.data(), cfg.n_ff);
    gemv(L.w_down, qa, proj.data(), pool);
    add_into(x.data(), proj.data(), E);
  }
  ++length_;
  total_ = accumulate({total_, last_});
  rms_norm(x.data(), w.output_norm.data(), cfg.rms_eps, E, h.data());
  logits_.resize(size_t(cfg.n_vocab));
  load_input(h.data(), E);
  gemv(w.output, qa, logits_.data(), pool);
  return logits_;
}

}  // namespace sinkrouter
