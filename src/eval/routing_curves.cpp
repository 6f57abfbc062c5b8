#include "sinkrouter/eval/routing_curves.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "sinkrouter/core/error.h"

namespace sinkrouter::eval {
namespace {

// Loss of one decision (keep[j] per block, shared by the G heads) on one KV-head-step.
void score_decision(const BlockAttention& a, const std::vector<uint8_t>& keep, CurvePoint& p) {
  const int G = a.G, J = a.blocks, D = a.D;
  int64_t kept = 0;
  for (uint8_t k : keep) kept += k;
  p.blocks_read += double(kept);
  p.blocks_total += double(J);
  std::vector<double> o(static_cast<size_t>(D));
  for (int g = 0; g < G; ++g) {
    double missed = 0;
    const double* full = &a.out[size_t(g) * D];
    std::copy(full, full + D, o.begin());
    for (int j = 0; j < J; ++j) {
      if (keep[size_t(j)]) continue;
      missed += a.mass[size_t(g) * J + j];
      const double* part = &a.partial[(size_t(g) * J + j) * D];
      for (int d = 0; d < D; ++d) o[size_t(d)] -= part[d];
    }
    const double kept_mass = std::max(1e-300, 1 - missed);
    double e2 = 0, n2 = 0;
    for (int d = 0; d < D; ++d) {
      const double od = o[size_t(d)] / kept_mass;
      e2 += (od - full[d]) * (od - full[d]);
      n2 += full[d] * full[d];
    }
    const double err = n2 > 0 ? std::sqrt(e2 / n2) : 0.0;
    p.head_steps += 1;
    p.missed_sum += missed;
    p.missed_max = std::max(p.missed_max, missed);
    p.error_sum += err;
    p.error_max = std::max(p.error_max, err);
    p.over_1pct += err > 0.01;
  }
}

void merge(CurvePoint& into, const CurvePoint& p) {
  into.blocks_read += p.blocks_read;
  into.blocks_total += p.blocks_total;
  into.head_steps += p.head_steps;
  into.missed_sum += p.missed_sum;
  into.missed_max = std::max(into.missed_max, p.missed_max);
  into.error_sum += p.error_sum;
  into.error_max = std::max(into.error_max, p.error_max);
  into.over_1pct += p.over_1pct;
}

}  // namespace

const char* estimator_name(int e) {
  static const char* names[kEstimators] = {"bound",      "centre",     "l1x0.5",     "l2x1",       "l2x2",
                                           "l2x3",       "basis-l2x2", "oracle-max", "oracle-mass"};
  SR_CHECK(e >= 0 && e < kEstimators, "routing curves: estimator {} out of range", e);
  return names[e];
}

const std::vector<double>& curve_taus() {
  static const std::vector<double> taus = [] {
    std::vector<double> t;
    for (int i = -32; i <= 24; ++i) t.push_back(std::pow(10.0, i / 4.0));  // 1e-8 .. 1e6
    return t;
  }();
  return taus;
}

const std::vector<double>& curve_fractions() {
  static const std::vector<double> f = {0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55,
                                        0.6,  0.65, 0.7, 0.75, 0.8,  0.85, 0.9, 0.95, 1.0};
  return f;
}

nlohmann::json CurvePoint::to_json() const {
  const double hs = std::max(head_steps, 1.0);
  return {{"read", blocks_total > 0 ? blocks_read / blocks_total : 1.0},
          {"missed_mean", missed_sum / hs},
          {"missed_max", missed_max},
          {"error_mean", error_sum / hs},
          {"error_max", error_max},
          {"over_1pct", over_1pct / hs}};
}

RoutingCurves::RoutingCurves(int n_layers) {
  SR_CHECK(n_layers >= 1, "routing curves: {} layers", n_layers);
  auto init = [](Curves& c) {
    for (auto& x : c.threshold) x.assign(curve_taus().size(), CurvePoint{});
    for (auto& x : c.budget) x.assign(curve_taus().size(), CurvePoint{});
    for (auto& x : c.rank) x.assign(curve_fractions().size(), CurvePoint{});
  };
  init(all_);
  layers_.resize(size_t(n_layers));
  for (auto& l : layers_) init(l);
}

void RoutingCurves::add(int layer, const BlockAttention& a) {
  SR_CHECK(layer >= 0 && layer < int(layers_.size()), "routing curves: layer {} out of range", layer);
  const int G = a.G, J = a.blocks;
  SR_CHECK(a.mass.size() == size_t(G) * J && a.partial.size() == size_t(G) * J * a.D &&
               a.out.size() == size_t(G) * a.D && a.log_term.size() == size_t(kEstimators) * G * J,
           "routing curves: inconsistent block attention ({} heads, {} blocks, head_dim {})", G, J, a.D);
  if (J == 0) return;
  std::vector<uint8_t> keep(static_cast<size_t>(J));
  std::vector<double> score(static_cast<size_t>(J));
  std::vector<int32_t> order(static_cast<size_t>(J));
  const auto& taus = curve_taus();
  for (int e = 0; e < kEstimators; ++e) {
    const double* lt = &a.log_term[size_t(e) * G * J];
    // The group's score of a block: its largest term over the G heads.
    for (int j = 0; j < J; ++j) {
      double m = -INFINITY;
      for (int g = 0; g < G; ++g) m = std::max(m, lt[size_t(g) * J + j]);
      score[size_t(j)] = m;
    }
    for (size_t i = 0; i < taus.size(); ++i) {
      const double lt_tau = std::log(taus[i]);
      for (int j = 0; j < J; ++j) keep[size_t(j)] = score[size_t(j)] > lt_tau;
      CurvePoint p;
      score_decision(a, keep, p);
      merge(all_.threshold[size_t(e)][i], p);
      merge(layers_[size_t(layer)].threshold[size_t(e)][i], p);
    }
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t x, int32_t y) { return score[size_t(x)] > score[size_t(y)]; });
    // Budget: skip from the smallest group score up while every head's sum of estimated
    // terms stays within epsilon.
    for (size_t i = 0; i < taus.size(); ++i) {
      std::fill(keep.begin(), keep.end(), 1);
      std::vector<double> total(size_t(G), 0.0);
      for (int r = J - 1; r >= 0; --r) {
        const int j = order[size_t(r)];
        bool fits = true;
        for (int g = 0; g < G; ++g) fits &= total[size_t(g)] + std::exp(lt[size_t(g) * J + j]) <= taus[i];
        if (!fits) break;
        for (int g = 0; g < G; ++g) total[size_t(g)] += std::exp(lt[size_t(g) * J + j]);
        keep[size_t(j)] = 0;
      }
      CurvePoint p;
      score_decision(a, keep, p);
      merge(all_.budget[size_t(e)][i], p);
      merge(layers_[size_t(layer)].budget[size_t(e)][i], p);
    }
    const auto& fr = curve_fractions();
    for (size_t i = 0; i < fr.size(); ++i) {
      const int64_t k = std::min<int64_t>(J, int64_t(std::ceil(fr[i] * J - 1e-9)));
      std::fill(keep.begin(), keep.end(), 0);
      for (int64_t r = 0; r < k; ++r) keep[size_t(order[size_t(r)])] = 1;
      CurvePoint p;
      score_decision(a, keep, p);
      merge(all_.rank[size_t(e)][i], p);
      merge(layers_[size_t(layer)].rank[size_t(e)][i], p);
    }
  }
}

nlohmann::json RoutingCurves::to_json() const {
  auto curves = [](const Curves& c) {
    nlohmann::json j;
    for (int e = 0; e < kEstimators; ++e) {
      nlohmann::json th = nlohmann::json::array(), bu = nlohmann::json::array(), rk = nlohmann::json::array();
      for (const auto& p : c.threshold[size_t(e)]) th.push_back(p.to_json());
      for (const auto& p : c.budget[size_t(e)]) bu.push_back(p.to_json());
      for (const auto& p : c.rank[size_t(e)]) rk.push_back(p.to_json());
      j[estimator_name(e)] = {{"threshold", th}, {"budget", bu}, {"rank", rk}};
    }
    return j;
  };
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : layers_) layers.push_back(curves(l));
  return {{"taus", curve_taus()}, {"fractions", curve_fractions()}, {"estimators", curves(all_)}, {"layers", layers}};
}

}  // namespace sinkrouter::eval
