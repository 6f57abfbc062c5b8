// CudaSession and batched generation on the device (see cuda_session.h).
#include "cuda_session.h"

#include <chrono>

#include "sinkrouter/core/error.h"

namespace sinkrouter {
namespace {

void check_tokens(const std::vector<int32_t>& tokens, int n_vocab, const char* what) {
  for (int32_t t : tokens)
    SR_CHECK(t >= 0 && t < n_vocab, "{}: token id {} out of range (vocabulary of {})", what, t, n_vocab);
}

void check_no_observer(const AttentionObserver* observer) {
  SR_CHECK(observer == nullptr,
           "GPU engine: attention observers (sinkrouter analyze) run on the CPU engine only; use --device cpu");
}

void check_capacity(int64_t length, int64_t more, const CudaModel& m) {
  SR_CHECK(length + more <= m.capacity,
           "context over capacity: {} tokens in the session + {} new exceed the limit of {} tokens "
           "(the model was trained for {}; raise --max-context, and pass --allow-beyond-trained-context "
           "to go past the trained length)",
           length, more, m.capacity, m.config.context_length);
}

}  // namespace

CudaSession::CudaSession(const CudaModel& m, const AttentionPolicy& policy)
    : m_(m), forward_(m, {m.capacity}, policy), layer_stats_(size_t(m.config.n_layers)) {}

const std::vector<float>& CudaSession::prefill(const std::vector<int32_t>& tokens, const ProgressFn& progress) {
  SR_CHECK(!tokens.empty(), "prefill: no tokens");
  check_no_observer(observer_);
  check_capacity(length(), int64_t(tokens.size()), m_);
  check_tokens(tokens, m_.config.n_vocab, "prefill");
  forward_.prefill(0, tokens.data(), int64_t(tokens.size()), progress, &logits_);
  history_.push_back({true, tokens, forward_.policy()});
  return logits_;
}

const std::vector<float>& CudaSession::decode(int32_t token) {
  step(token, /*greedy=*/false);
  return logits_;
}

int32_t CudaSession::decode_greedy(int32_t token) {
  return step(token, /*greedy=*/true);
}

int32_t CudaSession::step(int32_t token, bool greedy) {
  SR_CHECK(token >= 0 && token < m_.config.n_vocab, "decode: token id {} out of range (vocabulary of {})", token,
           m_.config.n_vocab);
  check_no_observer(observer_);
  check_capacity(length(), 1, m_);
  int32_t next = -1;
  if (greedy) {
    forward_.decode_greedy(&token, &next);
    logits_.clear();  // not downloaded: a later logits() would be stale
  } else {
    forward_.decode(&token, logits_);
  }
  layer_stats_ = forward_.last_layer_stats()[0];
  last_ = accumulate(layer_stats_);
  total_ = accumulate({total_, last_});
  if (history_.empty() || history_.back().prefill) history_.push_back({false, {}, forward_.policy()});
  history_.back().tokens.push_back(token);
  return next;
}

void CudaSession::set_policy(const AttentionPolicy& policy) {
  forward_.set_policy(policy);
  // Decode steps from here on belong to a new run (replayed under this policy by fork).
  if (!history_.empty() && !history_.back().prefill) history_.push_back({true, {}, policy});
}

std::unique_ptr<Session> CudaSession::fork() const {
  auto copy = std::make_unique<CudaSession>(m_, forward_.policy());
  for (const Event& e : history_) {
    if (e.prefill) {
      if (!e.tokens.empty()) copy->prefill(e.tokens, {});
      continue;
    }
    copy->forward_.set_policy(e.policy);
    for (int32_t t : e.tokens) copy->decode(t);
  }
  copy->forward_.set_policy(forward_.policy());
  copy->history_ = history_;
  copy->logits_ = logits_;
  copy->last_ = last_;
  copy->total_ = total_;
  copy->layer_stats_ = layer_stats_;
  return copy;
}

std::vector<GenerateResult> cuda_generate_batch(const CudaModel& model, const Tokenizer& tokenizer,
                                                const std::vector<std::vector<int32_t>>& prompts,
                                                const AttentionPolicy& policy, const GenerateOptions& o) {
  const int B = int(prompts.size());
  SR_CHECK(B >= 1, "generate_batch: no prompts");
  std::vector<int64_t> capacities;
  for (const auto& p : prompts) {
    SR_CHECK(!p.empty(), "generate_batch: an empty prompt");
    check_tokens(p, model.config.n_vocab, "generate_batch");
    check_capacity(int64_t(p.size()), o.max_new_tokens, model);
    capacities.push_back(std::max<int64_t>(1, int64_t(p.size()) + o.max_new_tokens));
  }
  CudaForward f(model, capacities, policy);
  std::vector<GenerateResult> r(static_cast<size_t>(B));
  std::vector<std::vector<float>> logits(static_cast<size_t>(B));
  using clock = std::chrono::steady_clock;
  for (int s = 0; s < B; ++s) {
    r[size_t(s)].prompt_tokens = prompts[size_t(s)];
    const auto t0 = clock::now();
    f.prefill(s, prompts[size_t(s)].data(), int64_t(prompts[size_t(s)].size()), {}, &logits[size_t(s)]);
    r[size_t(s)].prefill_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  }
  std::vector<uint64_t> rng(size_t(B), o.seed * 0x9E3779B97F4A7C15ULL + 1);  // as Engine::generate seeds one
  std::vector<Tokenizer::StreamDecoder> streams;
  for (int s = 0; s < B; ++s) streams.emplace_back(tokenizer);
  std::vector<char> done(size_t(B), 0);
  std::vector<int32_t> feed(static_cast<size_t>(B));
  for (int s = 0; s < B; ++s) feed[size_t(s)] = prompts[size_t(s)].back();
  std::vector<float> all;
  const size_t V = size_t(model.config.n_vocab);
  const auto t1 = clock::now();
  // Greedy decoding takes each step's argmax on the device (CudaForward::decode_greedy).
  const bool greedy = o.temperature <= 0.f;
  std::vector<int32_t> greedy_next(static_cast<size_t>(B));
  for (int i = 0; i < o.max_new_tokens; ++i) {
    int live = 0;
    for (int s = 0; s < B; ++s) {
      GenerateResult& res = r[size_t(s)];
      if (done[size_t(s)]) continue;
      const int32_t next = greedy && i > 0 ? greedy_next[size_t(s)]
                                           : sample_token(logits[size_t(s)], o.temperature, o.top_p, rng[size_t(s)]);
      if (tokenizer.is_end_of_generation(next)) {
        res.stopped_at_eos = true;
        done[size_t(s)] = 1;
        continue;
      }
      res.tokens.push_back(next);
      res.text += streams[size_t(s)].push(next);
      feed[size_t(s)] = next;
      ++live;
    }
    if (live == 0 || i + 1 == o.max_new_tokens) break;
    if (greedy)
      f.decode_greedy(feed.data(), greedy_next.data());
    else
      f.decode(feed.data(), all);
    for (int s = 0; s < B; ++s) {
      if (done[size_t(s)]) continue;
      if (!greedy) logits[size_t(s)].assign(all.begin() + long(size_t(s) * V), all.begin() + long(size_t(s + 1) * V));
      r[size_t(s)].stats = accumulate({r[size_t(s)].stats, accumulate(f.last_layer_stats()[size_t(s)])});
    }
  }
  const double decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  for (int s = 0; s < B; ++s) {
    r[size_t(s)].text += streams[size_t(s)].flush();
    r[size_t(s)].decode_seconds = decode_seconds;
  }
  return r;
}

}  // namespace sinkrouter
