// float64 references. decode_reference() reads exactly the plan's spans (so it checks the
// fast path and the kernels, not the routing); decode_exact() reads every token and
// measures the true softmax mass the plan skipped (so it checks the certificate).
#include <cmath>
#include <limits>
#include <vector>

#include "sinkrouter/attention/decode.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter {
namespace {

double load_kv(const PagedKV& kv, int64_t offset) {
  const uint16_t x = static_cast<const uint16_t*>(kv.pages)[offset];
  return kv.dtype == DType::BF16 ? double(to_float(bf16{x})) : double(f16_to_float(x));
}

// Scores of every token of (b, h) for query head g: s_t = scale * q . k_t in float64.
std::vector<double> all_scores(const TensorView& q, const PagedKV& kv, float scale, int b, int h,
                               int qh) {
  const int64_t n = kv.seq_len(b);
  std::vector<double> s(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) {
    double dot = 0;
    const int64_t ko = kv.k_offset(b, t, h);
    for (int d = 0; d < kv.head_dim; ++d) dot += double(q.load(q.offset(b, qh, d))) * load_kv(kv, ko + d);
    s[size_t(t)] = dot * double(float(scale));
  }
  return s;
}

// Which tokens of (b, h) the plan reads (K and V) for the whole group: blasst's V decision
// is remade in float64 with the plan's threshold and sink maxima.
std::vector<uint8_t> tokens_read(const TensorView& q, const PagedKV& kv, const RoutePlan& plan, int b,
                                 int h) {
  const int64_t n = kv.seq_len(b);
  const int G = plan.group, QH = G * kv.num_kv_heads;
  std::vector<uint8_t> read(static_cast<size_t>(n), 0);
  std::vector<std::vector<double>> s;
  if (plan.policy.kind == PolicyKind::Blasst)
    for (int g = 0; g < G; ++g) s.push_back(all_scores(q, kv, plan.scale, b, h, h * G + g));
  const int bh = b * kv.num_kv_heads + h;
  for (int32_t i = plan.span_indptr[size_t(bh)]; i < plan.span_indptr[size_t(bh) + 1]; ++i) {
    const Span& sp = plan.spans[size_t(i)];
    bool take = true;
    if (sp.kind == SpanKind::KeysOnly) {
      const double log_thr = plan.policy.blasst_threshold > 0 ? std::log(plan.policy.blasst_threshold)
                                                              : -std::numeric_limits<double>::infinity();
      bool skip = true;
      for (int g = 0; g < G; ++g) {
        const double thr = double(plan.sink_max[size_t(b) * QH + size_t(h) * G + g]) + log_thr;
        for (int32_t t = sp.begin; t < sp.end; ++t) skip &= s[size_t(g)][size_t(t)] < thr;
      }
      take = !skip;
    }
    if (take)
      for (int32_t t = sp.begin; t < sp.end; ++t) read[size_t(t)] = 1;
  }
  return read;
}

// Softmax-weighted sum of V over the tokens with mask[t] set, in float64.
void attend(const PagedKV& kv, int b, int h, const std::vector<double>& s, const std::vector<uint8_t>* mask,
            double* out) {
  const int D = kv.head_dim;
  double m = -std::numeric_limits<double>::infinity();
  for (size_t t = 0; t < s.size(); ++t)
    if (!mask || (*mask)[t]) m = std::max(m, s[t]);
  double l = 0;
  std::vector<double> acc(static_cast<size_t>(D), 0.0);
  for (size_t t = 0; t < s.size(); ++t) {
    if (mask && !(*mask)[t]) continue;
    const double p = std::exp(s[t] - m);
    l += p;
    const int64_t vo = kv.k_offset(b, int64_t(t), h) + kv.v_stride();
    for (int d = 0; d < D; ++d) acc[size_t(d)] += p * load_kv(kv, vo + d);
  }
  for (int d = 0; d < D; ++d) out[d] = l > 0 ? acc[size_t(d)] / l : 0.0;
}

}  // namespace

void decode_reference(const TensorView& q, const PagedKV& kv, const RoutePlan& plan,
                      const TensorView& out) {
  check_decode_shapes(q, kv, &out, true);
  const int H = kv.num_kv_heads, G = plan.group;
  for (int b = 0; b < kv.batch; ++b)
    for (int h = 0; h < H; ++h) {
      const std::vector<uint8_t> mask = tokens_read(q, kv, plan, b, h);
      for (int g = 0; g < G; ++g) {
        const std::vector<double> s = all_scores(q, kv, plan.scale, b, h, h * G + g);
        attend(kv, b, h, s, &mask, out.ptr<double>() + out.offset(b, h * G + g, 0));
      }
    }
}

void decode_exact(const TensorView& q, const PagedKV& kv, float scale, const TensorView& out,
                  const RoutePlan* plan, std::vector<double>* skipped_mass) {
  check_decode_shapes(q, kv, &out, true);
  const int H = kv.num_kv_heads, QH = int(q.shape[1]), G = QH / H;
  if (skipped_mass) skipped_mass->assign(size_t(kv.batch) * QH, 0.0);
  for (int b = 0; b < kv.batch; ++b)
    for (int h = 0; h < H; ++h) {
      std::vector<uint8_t> mask;
      if (plan) mask = tokens_read(q, kv, *plan, b, h);
      for (int g = 0; g < G; ++g) {
        const std::vector<double> s = all_scores(q, kv, scale, b, h, h * G + g);
        attend(kv, b, h, s, nullptr, out.ptr<double>() + out.offset(b, h * G + g, 0));
        if (plan && skipped_mass) {
          double m = -std::numeric_limits<double>::infinity();
          for (double x : s) m = std::max(m, x);
          double total = 0, skipped = 0;
          for (size_t t = 0; t < s.size(); ++t) {
            const double p = std::exp(s[t] - m);
            total += p;
            if (!mask[t]) skipped += p;
          }
          (*skipped_mass)[size_t(b) * QH + size_t(h) * G + size_t(g)] = skipped / total;
        }
      }
    }
}

}  // namespace sinkrouter
