// SinkAnalyzer: exact decode attention recomputed in float64 from the query and the
// cache, split by token set; block-score bounds of every kind against the blocks' true
// maxima; prefill sinks and value norms. The report lives in sink_analysis_report.cpp.
#include "sinkrouter/eval/sink_analysis.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kv/summary_math.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/kv/key_basis.h"

namespace sinkrouter::eval {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Rows [0, n) of head h of sequence 0 as float: keys (or values) [n, D].
std::vector<float> gather_rows(const PagedKV& kv, int h, int64_t n, bool values) {
  const int D = kv.head_dim;
  const bool bf = kv.dtype == DType::BF16;
  const uint16_t* pages = static_cast<const uint16_t*>(kv.pages);
  std::vector<float> out(size_t(n) * D);
  for (int64_t t = 0; t < n; ++t) {
    const uint16_t* row = pages + kv.k_offset(0, t, h) + (values ? kv.v_stride() : 0);
    for (int d = 0; d < D; ++d) out[size_t(t) * D + d] = storage_to_float(row[d], bf);
  }
  return out;
}

double norm(const float* x, int D) {
  double s = 0;
  for (int d = 0; d < D; ++d) s += double(x[d]) * x[d];
  return std::sqrt(s);
}

// Blocks skipped by the certified rule: ascending terms, as many as fit in epsilon.
int32_t certified_skips(std::vector<double> terms, double epsilon) {
  std::sort(terms.begin(), terms.end());
  double total = 0;
  int32_t k = 0;
  for (double t : terms) {
    if (total + t > epsilon) break;
    total += t;
    ++k;
  }
  return k;
}

}  // namespace

const char* analysis_bound_name(int kind) {
  static const char* names[kBoundKinds] = {"box", "basis", "min", "ball"};
  SR_CHECK(kind >= 0 && kind < kBoundKinds, "analysis: bound kind {} out of range", kind);
  return names[kind];
}

SinkAnalyzer::SinkAnalyzer(const ModelConfig& config, SinkAnalysisOptions options)
    : cfg_(config), o_(options), curves_(std::max(1, config.n_layers)) {
  SR_CHECK(cfg_.n_layers >= 1 && cfg_.n_head >= 1 && cfg_.n_head_kv >= 1 && cfg_.n_head % cfg_.n_head_kv == 0,
           "analysis: model shape ({} layers, {} heads, {} KV heads) is not usable", cfg_.n_layers, cfg_.n_head,
           cfg_.n_head_kv);
  SR_CHECK(o_.window >= 1 && o_.first_anchors >= 0 && o_.fixed_first >= 0,
           "analysis: window {} must be >= 1 and the anchor counts ({}, {}) >= 0", o_.window, o_.first_anchors,
           o_.fixed_first);
  steps_by_head_.resize(size_t(cfg_.n_layers) * cfg_.n_head);
  gaps_.resize(size_t(cfg_.n_layers) * cfg_.n_head);
  prefill_.resize(size_t(cfg_.n_layers) * cfg_.n_head_kv);
  blocks_.resize(size_t(cfg_.n_layers) * cfg_.n_head_kv);
  prefill_seen_.assign(size_t(cfg_.n_layers), 0);
}

const std::vector<HeadStep>& SinkAnalyzer::head_steps(int layer, int qh) const {
  SR_CHECK(layer >= 0 && layer < cfg_.n_layers && qh >= 0 && qh < cfg_.n_head,
           "analysis: layer {} / head {} out of range", layer, qh);
  return steps_by_head_[size_t(layer) * cfg_.n_head + qh];
}

const PrefillSinks& SinkAnalyzer::prefill_sinks(int layer, int h) const {
  SR_CHECK(layer >= 0 && layer < cfg_.n_layers && h >= 0 && h < cfg_.n_head_kv,
           "analysis: layer {} / KV head {} out of range", layer, h);
  return prefill_[size_t(layer) * cfg_.n_head_kv + h];
}

const std::vector<float>& SinkAnalyzer::gaps(int layer, int qh, int kind) const {
  SR_CHECK(kind >= 0 && kind < kBoundKinds, "analysis: bound kind {} out of range", kind);
  head_steps(layer, qh);
  return gaps_[size_t(layer) * cfg_.n_head + qh][size_t(kind)];
}

void SinkAnalyzer::on_prefill_end(int layer, const PagedKV& kv, const std::vector<float>& received) {
  SR_CHECK(layer >= 0 && layer < cfg_.n_layers, "analysis: layer {} out of range", layer);
  const int H = kv.num_kv_heads, D = kv.head_dim;
  const int64_t n = kv.seq_len(0);
  SR_CHECK(int64_t(received.size()) == int64_t(H) * n, "analysis: received attention has {} entries, expected {}",
           received.size(), int64_t(H) * n);
  prefill_seen_[size_t(layer)] = 1;
  for (int h = 0; h < H; ++h) {
    PrefillSinks& ps = prefill_[size_t(layer) * H + h];
    const float* r = &received[size_t(h) * n];
    ps.sinks.clear();
    for (int64_t t = 0; t < n; ++t)
      if (r[t] >= o_.sink_share) ps.sinks.push_back({int32_t(t), r[t]});
    std::sort(ps.sinks.begin(), ps.sinks.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    const std::vector<float> k = gather_rows(kv, h, n, false), v = gather_rows(kv, h, n, true);
    std::vector<uint8_t> is_sink(size_t(n), 0);
    for (const auto& s : ps.sinks) is_sink[size_t(s.first)] = 1;
    double vs = 0, vo = 0, ko = 0;
    int64_t ns = 0, no = 0;
    for (int64_t t = 1; t < n; ++t) {
      const double vn = norm(&v[size_t(t) * D], D), kn = norm(&k[size_t(t) * D], D);
      if (is_sink[size_t(t)]) {
        vs += vn;
        ++ns;
      } else {
        vo += vn;
        ko += kn;
        ++no;
      }
    }
    ps.v_norm_pos0 = float(norm(v.data(), D));
    ps.k_norm_pos0 = float(norm(k.data(), D));
    ps.v_norm_sinks = ns ? float(vs / double(ns)) : 0.f;
    ps.v_norm_others = no ? float(vo / double(no)) : 0.f;
    ps.k_norm_others = no ? float(ko / double(no)) : 0.f;
    // The principal basis of this head's keys, and how concentrated their variance is.
    AnalysisBlocks& bc = blocks_[size_t(layer) * H + h];
    bc = AnalysisBlocks{};
    bc.basis = fit_key_basis_rows(k.data(), n, D);
    std::vector<double> var(size_t(D), 0.0), mean(size_t(D), 0.0), rot(static_cast<size_t>(D));
    for (int64_t t = 0; t < n; ++t) {
      rotate(bc.basis.data(), &k[size_t(t) * D], D, rot.data());
      for (int d = 0; d < D; ++d) {
        mean[size_t(d)] += rot[size_t(d)];
        var[size_t(d)] += rot[size_t(d)] * rot[size_t(d)];
      }
    }
    double total = 0;
    for (int d = 0; d < D; ++d) {
      mean[size_t(d)] /= double(n);
      var[size_t(d)] = std::max(0.0, var[size_t(d)] / double(n) - mean[size_t(d)] * mean[size_t(d)]);
      total += var[size_t(d)];
    }
    ps.basis_variance.assign(size_t(D), 0.f);
    for (int d = 0; d < D; ++d) ps.basis_variance[size_t(d)] = total > 0 ? float(var[size_t(d)] / total) : 0.f;
  }
}

void SinkAnalyzer::ensure_blocks(int layer, int h, const PagedKV& kv, int64_t nbr) {
  AnalysisBlocks& bc = blocks_[size_t(layer) * kv.num_kv_heads + h];
  const int D = kv.head_dim, R = kv.block_size;
  const bool bf = kv.dtype == DType::BF16;
  if (bc.basis.empty()) {  // no prefill seen (decode from scratch): fit on what is cached
    const std::vector<float> k = gather_rows(kv, h, kv.seq_len(0), false);
    bc.basis = fit_key_basis_rows(k.data(), kv.seq_len(0), D);
  }
  if (bc.done >= nbr) return;
  bc.rot_lo.resize(size_t(nbr) * D);
  bc.rot_hi.resize(size_t(nbr) * D);
  bc.centre.resize(size_t(nbr) * D);
  bc.radius.resize(size_t(nbr));
  const uint16_t* pages = static_cast<const uint16_t*>(kv.pages);
  std::vector<float> key(static_cast<size_t>(D));
  std::vector<double> rot(static_cast<size_t>(D));
  std::vector<uint16_t> summary(size_t(2) * D);
  for (int64_t j = bc.done; j < nbr; ++j) {
    std::vector<double> c(size_t(D), 0.0);
    for (int64_t t = j * R; t < (j + 1) * R; ++t) {
      const uint16_t* row = pages + kv.k_offset(0, t, h);
      for (int d = 0; d < D; ++d) key[size_t(d)] = storage_to_float(row[d], bf);
      rotate(bc.basis.data(), key.data(), D, rot.data());
      update_rotated_summary(rot.data(), D, bf, t == j * R, summary.data());
      for (int d = 0; d < D; ++d) c[size_t(d)] += key[size_t(d)];
    }
    for (int d = 0; d < D; ++d) {
      bc.rot_lo[size_t(j) * D + d] = storage_to_float(summary[size_t(d)], bf);
      bc.rot_hi[size_t(j) * D + d] = storage_to_float(summary[size_t(D + d)], bf);
      bc.centre[size_t(j) * D + d] = float(c[size_t(d)] / R);
    }
    double r = 0;
    for (int64_t t = j * R; t < (j + 1) * R; ++t) {
      const uint16_t* row = pages + kv.k_offset(0, t, h);
      double e = 0;
      for (int d = 0; d < D; ++d) {
        const double x = double(storage_to_float(row[d], bf)) - bc.centre[size_t(j) * D + d];
        e += x * x;
      }
      r = std::max(r, std::sqrt(e));
    }
    bc.radius[size_t(j)] = float(r * (1 + 1e-6));
  }
  bc.done = nbr;
}

void SinkAnalyzer::on_decode(int layer, const TensorView& q, const PagedKV& kv, const RoutePlan& plan) {
  SR_CHECK(layer >= 0 && layer < cfg_.n_layers, "analysis: layer {} out of range", layer);
  SR_CHECK(kv.batch == 1, "analysis: one sequence at a time, got a batch of {}", kv.batch);
  const int H = kv.num_kv_heads, D = kv.head_dim, R = kv.block_size, G = int(q.shape[1]) / H;
  SR_CHECK(H == cfg_.n_head_kv && G * H == cfg_.n_head, "analysis: the cache has {} KV heads and q {} heads, "
           "expected {} and {}", H, q.shape[1], cfg_.n_head_kv, cfg_.n_head);
  const int64_t n = kv.seq_len(0);
  const int64_t ws = std::max<int64_t>(0, n - o_.window) / R * R, nbr = ws / R;
  const double scale = plan.scale > 0 ? double(plan.scale) : 1.0 / std::sqrt(double(D));
  const bool bf = kv.dtype == DType::BF16;
  if (layer == 0) ++steps_;
  for (int h = 0; h < H; ++h) {
    ensure_blocks(layer, h, kv, nbr);
    const AnalysisBlocks& bc = blocks_[size_t(layer) * H + h];
    const std::vector<float> k = gather_rows(kv, h, n, false), v = gather_rows(kv, h, n, true);
    // Token sets: 0 pos0, 1 other first anchors, 2 detected anchors, 3 window, 4 rest.
    std::vector<uint8_t> cat(size_t(n), 4);
    const int32_t* ap = kv.anchor_pos + int64_t(h) * kv.max_anchors;
    for (int i = 0; i < kv.anchor_count[h]; ++i)
      if (ap[i] < ws) cat[size_t(ap[i])] = ap[i] == 0 ? 0 : ap[i] < o_.first_anchors ? 1 : 2;
    for (int64_t t = ws; t < n; ++t) cat[size_t(t)] = 3;
    // Box summaries of the routable blocks, as the cache keeps them.
    std::vector<float> lo(size_t(nbr) * D), hi(size_t(nbr) * D);
    const uint16_t* summ = static_cast<const uint16_t*>(kv.summaries);
    for (int64_t j = 0; j < nbr; ++j)
      for (int d = 0; d < D; ++d) {
        lo[size_t(j) * D + d] = storage_to_float(summ[kv.summary_offset(0, j, h) + d], bf);
        hi[size_t(j) * D + d] = storage_to_float(summ[kv.summary_offset(0, j, h) + D + d], bf);
      }
    BlockAttention ba;
    ba.G = G;
    ba.blocks = int(nbr);
    ba.D = D;
    ba.mass.assign(size_t(G) * nbr, 0.0);
    ba.partial.assign(size_t(G) * nbr * D, 0.0);
    ba.out.assign(size_t(G) * D, 0.0);
    ba.log_term.assign(size_t(kEstimators) * G * nbr, -kInf);
    for (int g = 0; g < G; ++g) {
      const int qh = h * G + g;
      std::vector<double> qs(static_cast<size_t>(D)), qrot(static_cast<size_t>(D));
      for (int d = 0; d < D; ++d) qs[size_t(d)] = double(q.load(q.offset(0, qh, d))) * scale;
      double qnorm = 0;
      for (double x : qs) qnorm += x * x;
      qnorm = std::sqrt(qnorm);
      for (int r = 0; r < D; ++r) {
        double s = 0;
        for (int d = 0; d < D; ++d) s += double(bc.basis[size_t(r) * D + d]) * qs[size_t(d)];
        qrot[size_t(r)] = s;
      }
      std::vector<double> s(static_cast<size_t>(n));
      double mx = -kInf, ma = -kInf;
      for (int64_t t = 0; t < n; ++t) {
        double dot = 0;
        for (int d = 0; d < D; ++d) dot += qs[size_t(d)] * k[size_t(t) * D + d];
        s[size_t(t)] = dot;
        mx = std::max(mx, dot);
        if (cat[size_t(t)] != 4) ma = std::max(ma, dot);
      }
      double z = 0, za = 0;
      std::array<double, 5> share{};
      double fixed = 0;
      std::vector<double> o(size_t(D), 0.0), oa(size_t(D), 0.0);
      HeadStep st;
      double top = 0;
      for (int64_t t = 0; t < n; ++t) {
        const double p = std::exp(s[size_t(t)] - mx);
        z += p;
        share[cat[size_t(t)]] += p;
        if (t < o_.fixed_first) fixed += p;
        if (cat[size_t(t)] != 3 && p > top) {
          top = p;
          st.top_pos = int32_t(t);
        }
        const float* vt = &v[size_t(t) * D];
        for (int d = 0; d < D; ++d) o[size_t(d)] += p * vt[d];
        if (cat[size_t(t)] != 4) {
          za += p;
          for (int d = 0; d < D; ++d) oa[size_t(d)] += p * vt[d];
        } else if (t < ws) {  // a routable block's token: its part of the output
          double* part = &ba.partial[(size_t(g) * nbr + size_t(t / R)) * D];
          for (int d = 0; d < D; ++d) part[d] += p * vt[d];
          ba.mass[size_t(g) * nbr + size_t(t / R)] += p;
        }
      }
      for (int64_t j = 0; j < nbr; ++j) {
        ba.mass[size_t(g) * nbr + j] /= z;
        for (int d = 0; d < D; ++d) ba.partial[(size_t(g) * nbr + j) * D + d] /= z;
      }
      for (int d = 0; d < D; ++d) ba.out[size_t(g) * D + d] = o[size_t(d)] / z;
      st.share_pos0 = float(share[0] / z);
      st.share_first = float(share[1] / z);
      st.share_detected = float(share[2] / z);
      st.share_window = float(share[3] / z);
      st.share_rest = float(share[4] / z);
      st.share_fixed_first = float(fixed / z);
      st.top_share = float(top / z);
      st.m_a = float(ma);
      double on = 0, err = 0;
      for (int d = 0; d < D; ++d) {
        const double od = o[size_t(d)] / z, oad = oa[size_t(d)] / za;
        on += od * od;
        err += (od - oad) * (od - oad);
      }
      st.out_norm = float(std::sqrt(on));
      st.sink_route_error = float(std::sqrt(err));
      // Blocks: true max and mass (anchors excluded, as the router attends them apart)
      // against the sink signal Z_A = sum over anchors and window of exp(s - m_A).
      const double z_a = za * std::exp(mx - ma);
      st.blocks = int32_t(nbr);
      std::array<std::vector<double>, kBoundKinds + 1> terms;
      for (auto& t : terms) t.resize(size_t(nbr));
      auto& gaps = gaps_[size_t(layer) * cfg_.n_head + qh];
      for (int64_t j = 0; j < nbr; ++j) {
        double bmax = -kInf, mass = 0;
        for (int64_t t = j * R; t < (j + 1) * R; ++t) {
          bmax = std::max(bmax, s[size_t(t)]);
          if (cat[size_t(t)] == 4) mass += std::exp(s[size_t(t)] - ma);
        }
        const float* l = &lo[size_t(j) * D];
        const float* u = &hi[size_t(j) * D];
        const float* rl = &bc.rot_lo[size_t(j) * D];
        const float* ru = &bc.rot_hi[size_t(j) * D];
        const float* c = &bc.centre[size_t(j) * D];
        double box = 0, basis = 0, cdot = 0;
        for (int d = 0; d < D; ++d) {
          box += std::max(qs[size_t(d)] * l[d], qs[size_t(d)] * u[d]);
          basis += std::max(qrot[size_t(d)] * rl[d], qrot[size_t(d)] * ru[d]);
          cdot += qs[size_t(d)] * c[d];
        }
        const double bounds[kBoundKinds] = {box, basis, std::min(box, basis), cdot + qnorm * bc.radius[size_t(j)]};
        terms[0][size_t(j)] = mass / z_a;
        // Estimators of the block's max score (routing_curves.h), as log mass terms.
        double centre = 0, l1 = 0, l2 = 0, bcentre = 0, bl2 = 0;
        for (int d = 0; d < D; ++d) {
          const double qd = qs[size_t(d)], w = 0.5 * (double(u[d]) - l[d]);
          centre += qd * 0.5 * (double(u[d]) + l[d]);
          l1 += std::fabs(qd) * w;
          l2 += qd * w * qd * w;
          const double rd = qrot[size_t(d)], rw = 0.5 * (double(ru[d]) - rl[d]);
          bcentre += rd * 0.5 * (double(ru[d]) + rl[d]);
          bl2 += rd * rw * rd * rw;
        }
        l2 = std::sqrt(l2);
        bl2 = std::sqrt(bl2);
        const double est[kEstimators] = {centre + l1,       centre,          centre + 0.5 * l1,
                                         centre + l2,       centre + 2 * l2, centre + 3 * l2,
                                         bcentre + 2 * bl2, bmax,            0.0};
        const double base = std::log(double(R)) - ma - std::log(z_a);
        for (int e = 0; e + 1 < kEstimators; ++e)
          ba.log_term[(size_t(e) * G + g) * nbr + size_t(j)] = base + est[e];
        ba.log_term[(size_t(kEstimators - 1) * G + g) * nbr + size_t(j)] = mass > 0 ? std::log(mass / z_a) : -kInf;
        for (int kind = 0; kind < kBoundKinds; ++kind) {
          gaps[size_t(kind)].push_back(float(bounds[kind] - bmax));
          terms[size_t(kind) + 1][size_t(j)] = double(R) * std::exp(bounds[kind] - ma) / z_a;
        }
      }
      for (size_t kind = 0; kind < terms.size(); ++kind) {
        for (size_t i = 0; i < kSkipTaus.size(); ++i)
          st.skippable[kind][i] = int32_t(std::count_if(terms[kind].begin(), terms[kind].end(),
                                                        [&](double x) { return x <= kSkipTaus[i]; }));
        for (size_t i = 0; i < kSkipEpsilons.size(); ++i)
          st.certified[kind][i] = certified_skips(terms[kind], kSkipEpsilons[i]);
      }
      steps_by_head_[size_t(layer) * cfg_.n_head + qh].push_back(st);
    }
    curves_.add(layer, ba);
  }
}

}  // namespace sinkrouter::eval
