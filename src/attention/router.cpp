// plan_decode: the router. For every (sequence, KV head) it computes the sink signal over
// anchors and window, bounds every routable block's scores from its key summary, decides
// which blocks are read, emits the spans to read and the certificate, and cuts the spans
// into balanced Split-K partitions. DESIGN.md section 2 gives the math.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "cpu_math.h"
#include "sinkrouter/attention/decode.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/kv/key_basis.h"

namespace sinkrouter {

HeadStats accumulate(const std::vector<HeadStats>& stats) {
  HeadStats t;
  for (const HeadStats& s : stats) {
    t.bytes_summary += s.bytes_summary;
    t.bytes_anchor_window += s.bytes_anchor_window;
    t.bytes_blocks += s.bytes_blocks;
    t.bytes_dense += s.bytes_dense;
    t.blocks_total += s.blocks_total;
    t.blocks_skipped += s.blocks_skipped;
    t.delta = std::max(t.delta, s.delta);
    t.output_error_bound = std::max(t.output_error_bound, s.output_error_bound);
    t.sink_route = t.sink_route || s.sink_route;
  }
  return t;
}

void check_decode_shapes(const TensorView& q, const PagedKV& kv, const TensorView* out,
                         bool reference) {
  SR_CHECK(kv.dtype == DType::BF16 || kv.dtype == DType::F16,
           "decode: KV dtype {} is not supported (expected bf16 or f16)", dtype_name(kv.dtype));
  SR_CHECK(kv.head_dim == 64 || kv.head_dim == 128,
           "decode: head_dim {} is not supported (expected 64 or 128)", kv.head_dim);
  SR_CHECK(kv.num_kv_heads >= 1, "decode: num_kv_heads is {} (expected at least 1)", kv.num_kv_heads);
  SR_CHECK(kv.page_size >= 1 && kv.page_size <= 256,
           "decode: page_size {} out of range (expected 1 to 256)", kv.page_size);
  SR_CHECK(kv.block_size >= 1 && kv.block_size <= 4096,
           "decode: block_size {} out of range (expected 1 to 4096)", kv.block_size);
  check_tensor(q, "decode: q", {DType::F32, DType::BF16, DType::F16}, {kv.batch, -1, kv.head_dim});
  SR_CHECK(q.shape[1] >= kv.num_kv_heads && q.shape[1] % kv.num_kv_heads == 0,
           "decode: {} query heads are not a multiple of {} KV heads", q.shape[1], kv.num_kv_heads);
  SR_CHECK(q.shape[1] / kv.num_kv_heads <= 64, "decode: GQA group size {} exceeds 64",
           q.shape[1] / kv.num_kv_heads);
  if (out) {
    if (reference)
      check_tensor(*out, "decode: out", {DType::F64}, {kv.batch, q.shape[1], kv.head_dim});
    else
      check_tensor(*out, "decode: out", {DType::F32, DType::BF16, DType::F16},
                   {kv.batch, q.shape[1], kv.head_dim});
  }
  for (int b = 0; b < kv.batch; ++b) {
    const int32_t pages = kv.indptr[b + 1] - kv.indptr[b];
    SR_CHECK(pages >= 1 && kv.last_page_len[b] >= 1 && kv.last_page_len[b] <= kv.page_size,
             "decode: sequence {} is empty or its last_page_len {} is out of range (1 to {})", b,
             kv.last_page_len[b], kv.page_size);
  }
}

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// x rounded up to float: a tiny positive bound must not underflow to 0.
float float_up(double x) {
  float f = float(x);
  if (double(f) < x) f = std::nextafter(f, std::numeric_limits<float>::infinity());
  return f;
}

struct HeadPlan {
  std::vector<Span> spans;
  std::vector<int32_t> split_begin;
};

// Scores of the listed tokens for the G query heads, each lowered by its rounding-error
// bound, so that the sink sum computed from them is a lower bound of the true one.
void sink_signal(const float* qf, int G, int D, const PagedKV& kv, int b, int h,
                 const std::vector<int32_t>& tokens, double* m_out, double* z_out) {
  const bool bf = kv.dtype == DType::BF16;
  const uint16_t* pages = static_cast<const uint16_t*>(kv.pages);
  std::vector<float> k(static_cast<size_t>(D), 0.f), s(tokens.size() * size_t(G));
  std::vector<float> absq(static_cast<size_t>(D));
  for (size_t i = 0; i < tokens.size(); ++i) {
    cpu::row_to_float(pages + kv.k_offset(b, tokens[i], h), bf, k.data(), D);
    for (int g = 0; g < G; ++g) {
      const float* q = qf + size_t(g) * D;
      float dot = 0, mag = 0;
      for (int d = 0; d < D; ++d) {
        dot += q[d] * k[size_t(d)];
        mag += std::fabs(q[d] * k[size_t(d)]);
      }
      s[i * size_t(G) + size_t(g)] = dot - cpu::dot_error_factor(D) * mag;
    }
  }
  for (int g = 0; g < G; ++g) {
    double m = -std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < tokens.size(); ++i) m = std::max(m, double(s[i * size_t(G) + size_t(g)]));
    double z = 0;
    for (size_t i = 0; i < tokens.size(); ++i) z += std::exp(double(s[i * size_t(G) + size_t(g)]) - m);
    m_out[g] = m;
    z_out[g] = z * (1.0 - 1e-12);
  }
}

// Score bounds of the routable blocks of one (sequence, KV head) for its G query heads:
// the box bound (float, raised by its rounding-error bound), the rotated-box bound in the
// key basis (float64 with its slack, kv/key_basis.h), or the smaller of the two; and the
// fast mode's estimate from the same boxes.
class BlockBounds {
 public:
  BlockBounds(const float* qf, int G, int D, const PagedKV& kv, int b, int h, bool box, bool basis)
      : qf_(qf), G_(G), D_(D), kv_(kv), b_(b), h_(h), box_(box), basis_(basis), bf_(kv.dtype == DType::BF16),
        lo_(size_t(D)), hi_(size_t(D)), blo_(size_t(D)), bhi_(size_t(D)) {
    // |q_g|_1 of each head, for the box bound's rounding allowance (cpu::box_max_dot).
    if (box_)
      for (int g = 0; g < G; ++g) l1_.push_back(cpu::l1_norm_in_order(qf + size_t(g) * D, D));
    if (basis_) {
      qrot_.resize(size_t(G) * D);
      qnorm_.resize(size_t(G));
      const float* P = kv.key_basis + size_t(h) * D * D;
      for (int g = 0; g < G; ++g) {
        rotate(P, qf + size_t(g) * D, D, &qrot_[size_t(g) * D]);
        double n2 = 0;
        for (int d = 0; d < D; ++d) n2 += double(qf[size_t(g) * D + d]) * qf[size_t(g) * D + d];
        qnorm_[size_t(g)] = std::sqrt(n2) * (1 + 1e-12);
      }
    }
  }
  void load(int64_t j) {
    if (box_) {
      const uint16_t* row = static_cast<const uint16_t*>(kv_.summaries) + kv_.summary_offset(b_, j, h_);
      cpu::row_to_float(row, bf_, lo_.data(), D_);
      cpu::row_to_float(row + D_, bf_, hi_.data(), D_);
      end_max_ = cpu::box_end_max(lo_.data(), hi_.data(), D_);  // the same for every head
    }
    if (basis_) {
      const uint16_t* row = static_cast<const uint16_t*>(kv_.basis_summaries) + kv_.summary_offset(b_, j, h_);
      cpu::row_to_float(row, bf_, blo_.data(), D_);
      cpu::row_to_float(row + D_, bf_, bhi_.data(), D_);
    }
  }
  // The bound u of head g's scores in the loaded block; with `estimate`, also the fast
  // mode's estimate of its largest score (policy.h, EstimateKind), never above u.
  double bound(int g, const AttentionPolicy* policy, double* estimate) const {
    double u = std::numeric_limits<double>::infinity(), e = u;
    if (box_) {
      const float* q = qf_ + size_t(g) * D_;
      const float s = cpu::box_max_dot(q, lo_.data(), hi_.data(), D_);
      u = double(s) + cpu::dot_error_factor(D_) * (l1_[size_t(g)] * end_max_);
      if (estimate) e = box_estimate(q, lo_.data(), hi_.data(), *policy);
    }
    if (basis_) {
      const double* q = &qrot_[size_t(g) * D_];
      const double ub = rotated_box_bound(q, qnorm_[size_t(g)], blo_.data(), bhi_.data(), D_, kv_.basis_error);
      u = std::min(u, ub);
      if (estimate) e = std::min(e, box_estimate(q, blo_.data(), bhi_.data(), *policy));
    }
    if (estimate) *estimate = std::min(e, u);
    return u;
  }

 private:
  template <typename Q>
  double box_estimate(const Q* q, const float* lo, const float* hi, const AttentionPolicy& p) const {
    double c = 0, l1 = 0, l2 = 0;
    for (int d = 0; d < D_; ++d) {
      const double qd = double(q[d]), w = 0.5 * (double(hi[d]) - double(lo[d]));
      c += qd * 0.5 * (double(hi[d]) + double(lo[d]));
      l1 += std::fabs(qd) * w;
      l2 += qd * w * qd * w;
    }
    return c + p.spread * (p.estimate == EstimateKind::Gauss ? std::sqrt(l2) : l1);
  }

  const float* qf_;
  int G_, D_;
  const PagedKV& kv_;
  int b_, h_;
  bool box_, basis_, bf_;
  std::vector<float> lo_, hi_, blo_, bhi_, l1_;
  float end_max_ = 0;  // box_end_max of the loaded block
  std::vector<double> qrot_, qnorm_;
};

// Cuts the spans of one (sequence, KV head) into `splits` groups of nearly equal tokens.
std::vector<int32_t> balance_splits(const std::vector<Span>& spans, int splits) {
  int64_t total = 0;
  for (const Span& s : spans) total += s.end - s.begin;
  std::vector<int32_t> begin{0};
  int64_t seen = 0;
  for (size_t i = 0; i < spans.size(); ++i) {
    const int64_t target = total * int64_t(begin.size()) / splits;
    // Cut only between routing blocks, so that a block's V decision (blasst) is one split's.
    const bool block_boundary = i > 0 && spans[i].block != spans[i - 1].block;
    if (int(begin.size()) < splits && seen >= target && block_boundary && begin.back() != int32_t(i))
      begin.push_back(int32_t(i));
    seen += spans[i].end - spans[i].begin;
  }
  begin.push_back(int32_t(spans.size()));
  return begin;
}

}  // namespace

RoutePlan plan_decode(const TensorView& q, const PagedKV& kv, const AttentionPolicy& policy,
                      float scale, int num_workers, ThreadPool* pool) {
  check_decode_shapes(q, kv, nullptr, false);
  policy.validate();
  const PolicyKind kind = policy.kind;
  const bool needs_summaries = kind == PolicyKind::SinkRouter || kind == PolicyKind::Quest ||
                               kind == PolicyKind::Streaming;
  SR_CHECK(!needs_summaries || kv.has_summaries(),
           "decode: policy {} needs block summaries, but the KV cache has none (call build_summaries)",
           policy_name(kind));

  const int B = kv.batch, H = kv.num_kv_heads, D = kv.head_dim, R = kv.block_size;
  const int QH = int(q.shape[1]), G = QH / H;
  RoutePlan plan;
  plan.policy = policy;
  plan.batch = B;
  plan.num_kv_heads = H;
  plan.group = G;
  plan.head_dim = D;
  plan.scale = scale;
  plan.sink_max.assign(size_t(B) * QH, 0.f);
  plan.sink_sum.assign(size_t(B) * QH, 0.f);
  plan.delta.assign(size_t(B) * QH, 0.f);
  plan.skipped_v_bound.assign(size_t(B) * QH, 0.f);
  plan.stats.assign(size_t(B) * H, HeadStats{});

  // Split-K sizing: enough work items for every worker, no split under kMinSplitTokens.
  constexpr int64_t kMinSplitTokens = 512;
  const int64_t target_items = 4LL * std::max(1, num_workers);
  const int64_t tb = kv.token_bytes();

  std::vector<HeadPlan> heads(size_t(B) * H);
  auto route_one = [&](int64_t bh) {
    const int b = int(bh / H), h = int(bh % H);
    const int64_t n = kv.seq_len(b);
    HeadStats& st = plan.stats[size_t(bh)];
    HeadPlan& hp = heads[size_t(bh)];
    st.bytes_dense = n * tb;

    // Queries of this group in float, pre-scaled: scores are q' . k.
    std::vector<float> qf(size_t(G) * D);
    for (int g = 0; g < G; ++g)
      for (int d = 0; d < D; ++d) qf[size_t(g) * D + d] = q.load(q.offset(b, h * G + g, d)) * scale;

    const int64_t nblocks = (n + R - 1) / R;
    if (kind == PolicyKind::Dense) {
      for (int64_t j = 0; j < nblocks; ++j)
        hp.spans.push_back({int32_t(j * R), int32_t(std::min<int64_t>(n, (j + 1) * R)), int32_t(j),
                            SpanKind::Block});
      st.bytes_blocks = n * tb;
      st.blocks_total = int32_t(nblocks);
    } else {
      const int64_t window_start = std::max<int64_t>(0, n - policy.window) / R * R;
      const int64_t nbr = window_start / R;  // routable blocks
      // Anchors outside the window.
      std::vector<int32_t> anchors;
      if (kind == PolicyKind::SinkRouter || kind == PolicyKind::Blasst) {
        const int32_t* a = kv.anchor_pos + (int64_t(b) * H + h) * kv.max_anchors;
        for (int i = 0; i < kv.anchor_count[b * H + h]; ++i)
          if (a[i] < window_start) anchors.push_back(a[i]);
      } else if (kind == PolicyKind::Streaming) {
        for (int64_t p = 0; p < std::min<int64_t>(policy.sink_tokens, window_start); ++p)
          anchors.push_back(int32_t(p));
      }
      // Sink signal over anchors and window.
      std::vector<int32_t> sig_tokens = anchors;
      for (int64_t t = window_start; t < n; ++t) sig_tokens.push_back(int32_t(t));
      std::vector<double> m(static_cast<size_t>(G)), z(static_cast<size_t>(G));
      sink_signal(qf.data(), G, D, kv, b, h, sig_tokens, m.data(), z.data());
      for (int g = 0; g < G; ++g) {
        plan.sink_max[size_t(b) * QH + size_t(h) * G + g] = float(m[size_t(g)]);
        plan.sink_sum[size_t(b) * QH + size_t(h) * G + g] = float(z[size_t(g)]);
      }

      // Per-block bound terms b_jg = R * exp(u_jg - m_g) / Z_g (an upper bound on the
      // block's share of the softmax mass, against the always-read set), and the fast
      // mode's estimated terms e_jg (= b_jg when spread is 1).
      std::vector<double> bterm(size_t(nbr) * G, 0.0), eterm;
      std::vector<float> ubound(static_cast<size_t>(nbr), kNegInf);  // max over g of u_jg (quest's score)
      if (needs_summaries) {
        const bool router = kind == PolicyKind::SinkRouter;
        const bool use_box = !router || policy.bound != BoundKind::Basis;
        const bool use_basis = router && policy.bound != BoundKind::Box;
        const bool estimate = policy.fast_estimates();
        SR_CHECK(!use_basis || kv.has_key_basis(),
                 "decode: bound '{}' needs a key basis in the KV cache (PagedKVCache::set_key_basis; the engine "
                 "fits one on the prompt's keys)", bound_name(policy.bound));
        BlockBounds bb(qf.data(), G, D, kv, b, h, use_box, use_basis);
        if (estimate) eterm.assign(size_t(nbr) * G, 0.0);
        for (int64_t j = 0; j < nbr; ++j) {
          bb.load(j);
          for (int g = 0; g < G; ++g) {
            double est;
            const double u = bb.bound(g, &policy, estimate ? &est : nullptr);
            ubound[size_t(j)] = std::max(ubound[size_t(j)], float(u));
            bterm[size_t(j) * G + g] = double(R) * std::exp(u - m[size_t(g)]) / z[size_t(g)];
            if (estimate) eterm[size_t(j) * G + g] = double(R) * std::exp(est - m[size_t(g)]) / z[size_t(g)];
          }
        }
      }
      const std::vector<double>& fast_term = eterm.empty() ? bterm : eterm;

      // Which routable blocks are read.
      std::vector<uint8_t> keep(static_cast<size_t>(nbr), 0);
      if (kind == PolicyKind::Blasst) {
        std::fill(keep.begin(), keep.end(), 1);
      } else if (kind == PolicyKind::Quest) {
        const int64_t k = std::max<int64_t>(0, (policy.quest_budget - (n - window_start)) / R);
        std::vector<int32_t> order(static_cast<size_t>(nbr));
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(),
                         [&](int32_t x, int32_t y) { return ubound[size_t(x)] > ubound[size_t(y)]; });
        for (int64_t i = 0; i < std::min(k, nbr); ++i) keep[size_t(order[size_t(i)])] = 1;
      } else if (kind == PolicyKind::SinkRouter) {
        if (policy.mode == RouterMode::Fast) {
          for (int64_t j = 0; j < nbr; ++j)
            for (int g = 0; g < G; ++g)
              if (fast_term[size_t(j) * G + g] > policy.tau) keep[size_t(j)] = 1;
        } else {
          // Certified: skip the longest prefix of blocks, in ascending order of their
          // largest bound term, that keeps every head's total under epsilon.
          std::vector<double> cost(static_cast<size_t>(nbr), 0.0);
          for (int64_t j = 0; j < nbr; ++j)
            for (int g = 0; g < G; ++g) cost[size_t(j)] = std::max(cost[size_t(j)], bterm[size_t(j) * G + g]);
          std::vector<int32_t> order(static_cast<size_t>(nbr));
          std::iota(order.begin(), order.end(), 0);
          std::stable_sort(order.begin(), order.end(),
                           [&](int32_t x, int32_t y) { return cost[size_t(x)] < cost[size_t(y)]; });
          std::fill(keep.begin(), keep.end(), 1);
          std::vector<double> total(static_cast<size_t>(G), 0.0);
          for (int32_t j : order) {
            bool fits = true;
            for (int g = 0; g < G; ++g) fits &= total[size_t(g)] + bterm[size_t(j) * G + g] <= policy.epsilon;
            if (!fits) break;
            for (int g = 0; g < G; ++g) total[size_t(g)] += bterm[size_t(j) * G + g];
            keep[size_t(j)] = 0;
          }
        }
      }  // Streaming keeps none.

      // Certificate over the skipped blocks (not for blasst: its V decisions are made at run).
      if (kind != PolicyKind::Blasst) {
        for (int g = 0; g < G; ++g) {
          double dsum = 0, vsum = 0;
          for (int64_t j = 0; j < nbr; ++j)
            if (!keep[size_t(j)]) {
              dsum += bterm[size_t(j) * G + g];
              vsum += bterm[size_t(j) * G + g] * kv.block_value_norm(b, j, h);
            }
          const size_t qi = size_t(b) * QH + size_t(h) * G + size_t(g);
          plan.delta[qi] = float_up(dsum * (1 + 1e-6));
          plan.skipped_v_bound[qi] = float_up(vsum * (1 + 1e-6));
          st.delta = std::max(st.delta, plan.delta[qi]);
        }
      }

      // Spans in position order: anchors and kept blocks, then the window.
      size_t ai = 0;
      int64_t kept_tokens = 0;
      const SpanKind block_kind = kind == PolicyKind::Blasst ? SpanKind::KeysOnly : SpanKind::Block;
      for (int64_t j = 0; j < nbr; ++j) {
        int64_t t = j * R;
        const int64_t end = (j + 1) * R;
        while (t < end) {
          const int64_t next_anchor = ai < anchors.size() ? anchors[ai] : end;
          const int64_t stop = std::min(end, next_anchor);
          if (stop > t && keep[size_t(j)]) {
            hp.spans.push_back({int32_t(t), int32_t(stop), int32_t(j), block_kind});
            kept_tokens += stop - t;
          }
          if (stop < end) {  // an anchor at `stop`
            hp.spans.push_back({int32_t(stop), int32_t(stop + 1), int32_t(j), SpanKind::Anchor});
            ++ai;
            t = stop + 1;
          } else {
            t = end;
          }
        }
      }
      for (int64_t j = window_start / R; j < nblocks; ++j)
        hp.spans.push_back({int32_t(j * R), int32_t(std::min<int64_t>(n, (j + 1) * R)), int32_t(j),
                            SpanKind::Window});

      st.blocks_total = int32_t(nbr);
      int32_t kept_blocks = 0;
      for (uint8_t k : keep) kept_blocks += k;
      st.blocks_skipped = kind == PolicyKind::Blasst ? 0 : int32_t(nbr) - kept_blocks;
      st.sink_route = kind == PolicyKind::SinkRouter && nbr > 0 && kept_blocks == 0;
      // Summaries: one key box (two with bound = min) and the value-norm maximum per block.
      const int64_t boxes = kind == PolicyKind::SinkRouter && policy.bound == BoundKind::Min ? 2 : 1;
      st.bytes_summary = (kind == PolicyKind::SinkRouter || kind == PolicyKind::Quest)
                             ? nbr * (kv.summary_bytes() + (boxes - 1) * (kv.summary_bytes() - 4)) : 0;
      st.bytes_anchor_window = (int64_t(anchors.size()) + (n - window_start)) * tb;
      // blasst reads every key here; the values it reads are added by the run.
      st.bytes_blocks = kind == PolicyKind::Blasst ? kept_tokens * tb / 2 : kept_tokens * tb;
    }

    int64_t tokens = 0;
    for (const Span& s : hp.spans) tokens += s.end - s.begin;
    const int64_t want = std::max<int64_t>(1, (target_items + int64_t(B) * H - 1) / (int64_t(B) * H));
    const int64_t splits = std::max<int64_t>(1, std::min(want, tokens / kMinSplitTokens));
    hp.split_begin = balance_splits(hp.spans, int(splits));
  };
  if (pool)
    pool->parallel_for(int64_t(B) * H, route_one);
  else
    for (int64_t bh = 0; bh < int64_t(B) * H; ++bh) route_one(bh);

  plan.span_indptr.push_back(0);
  plan.split_indptr.push_back(0);
  for (HeadPlan& hp : heads) {
    const int32_t base = int32_t(plan.spans.size());
    plan.spans.insert(plan.spans.end(), hp.spans.begin(), hp.spans.end());
    plan.span_indptr.push_back(int32_t(plan.spans.size()));
    for (size_t s = 0; s + 1 < hp.split_begin.size(); ++s) plan.split_begin.push_back(base + hp.split_begin[s]);
    plan.split_indptr.push_back(int32_t(plan.split_begin.size()));
  }
  // Sentinel so that split s ends where split s+1 begins, also for the last split.
  plan.split_begin.push_back(int32_t(plan.spans.size()));
  return plan;
}

}  // namespace sinkrouter
