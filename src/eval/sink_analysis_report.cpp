// SinkAnalyzer's report: per-head summaries of the step series (means, stability,
// quantiles of the bound gaps, skip fractions), per-KV-head prefill sinks, the whole-model
// summary; analysis.json, heads.csv and steps.csv.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "sinkrouter/core/error.h"
#include "sinkrouter/eval/sink_analysis.h"

namespace sinkrouter::eval {
namespace {

double quantile(std::vector<float> x, double p) {
  if (x.empty()) return std::nan("");
  const size_t i = size_t(std::clamp(p, 0.0, 1.0) * double(x.size() - 1));
  std::nth_element(x.begin(), x.begin() + long(i), x.end());
  return x[i];
}

float anchor_share(const HeadStep& s) { return s.share_pos0 + s.share_first + s.share_detected; }

// Summary of one (layer, query head) over its steps.
struct HeadSummary {
  double share_pos0 = 0, share_first = 0, share_detected = 0, share_window = 0, share_rest = 0;
  double share_fixed_first = 0, anchor_mean = 0, anchor_std = 0, anchor_abs_change = 0, anchor_autocorr = 0;
  double m_a_abs_change = 0, sink_dominated = 0, dominated_flips = 0, out_norm = 0, sink_route_rel_error = 0;
  double top_share = 0;
  int32_t top_pos_mode = -1;
  double top_pos_stable = 0;  // share of steps whose top token (outside the window) is the mode
  std::array<std::array<double, 3>, kBoundKinds> gap{};                                   // p10, p50, p90
  std::array<std::array<double, kSkipTaus.size()>, kBoundKinds + 1> skippable{};         // fractions
  std::array<std::array<double, kSkipEpsilons.size()>, kBoundKinds + 1> certified{};     // fractions
  int64_t blocks = 0;
};

HeadSummary summarize_head(const std::vector<HeadStep>& steps, const std::array<std::vector<float>, kBoundKinds>& gaps,
                           double dominated_share) {
  HeadSummary h;
  const size_t n = steps.size();
  if (n == 0) return h;
  std::map<int32_t, int> top_count;
  for (const HeadStep& s : steps) {
    h.share_pos0 += s.share_pos0;
    h.share_first += s.share_first;
    h.share_detected += s.share_detected;
    h.share_window += s.share_window;
    h.share_rest += s.share_rest;
    h.share_fixed_first += s.share_fixed_first;
    h.anchor_mean += anchor_share(s);
    h.sink_dominated += anchor_share(s) >= dominated_share;
    h.out_norm += s.out_norm;
    h.sink_route_rel_error += s.out_norm > 0 ? s.sink_route_error / s.out_norm : 0;
    h.top_share += s.top_share;
    ++top_count[s.top_pos];
    h.blocks += s.blocks;
    for (size_t k = 0; k <= kBoundKinds; ++k) {
      for (size_t i = 0; i < kSkipTaus.size(); ++i) h.skippable[k][i] += s.skippable[k][i];
      for (size_t i = 0; i < kSkipEpsilons.size(); ++i) h.certified[k][i] += s.certified[k][i];
    }
  }
  const double dn = double(n);
  for (double* x : {&h.share_pos0, &h.share_first, &h.share_detected, &h.share_window, &h.share_rest,
                    &h.share_fixed_first, &h.anchor_mean, &h.sink_dominated, &h.out_norm, &h.sink_route_rel_error,
                    &h.top_share})
    *x /= dn;
  for (auto& row : h.skippable)
    for (double& x : row) x = h.blocks ? x / double(h.blocks) : 0;
  for (auto& row : h.certified)
    for (double& x : row) x = h.blocks ? x / double(h.blocks) : 0;
  auto mode = std::max_element(top_count.begin(), top_count.end(),
                               [](const auto& a, const auto& b) { return a.second < b.second; });
  h.top_pos_mode = mode->first;
  h.top_pos_stable = double(mode->second) / dn;
  double var = 0;
  for (const HeadStep& s : steps) var += (anchor_share(s) - h.anchor_mean) * (anchor_share(s) - h.anchor_mean);
  h.anchor_std = std::sqrt(var / dn);
  if (n >= 2) {
    double cov = 0;
    for (size_t i = 1; i < n; ++i) {
      const double a = anchor_share(steps[i]), b = anchor_share(steps[i - 1]);
      h.anchor_abs_change += std::fabs(a - b);
      h.m_a_abs_change += std::fabs(double(steps[i].m_a) - steps[i - 1].m_a);
      h.dominated_flips += (a >= dominated_share) != (b >= dominated_share);
      cov += (a - h.anchor_mean) * (b - h.anchor_mean);
    }
    h.anchor_abs_change /= double(n - 1);
    h.m_a_abs_change /= double(n - 1);
    h.dominated_flips /= double(n - 1);
    h.anchor_autocorr = var > 0 ? cov / var : 1.0;  // lag-1 autocorrelation (1 for a constant series)
  }
  for (int k = 0; k < kBoundKinds; ++k) {
    h.gap[size_t(k)] = {quantile(gaps[size_t(k)], 0.1), quantile(gaps[size_t(k)], 0.5),
                        quantile(gaps[size_t(k)], 0.9)};
  }
  return h;
}

std::string kind_label(size_t k) { return k == 0 ? std::string("true") : analysis_bound_name(int(k) - 1); }

nlohmann::json to_json(const HeadSummary& h) {
  nlohmann::json j = {{"share_pos0", h.share_pos0},
                      {"share_first", h.share_first},
                      {"share_detected", h.share_detected},
                      {"share_window", h.share_window},
                      {"share_rest", h.share_rest},
                      {"share_fixed_first", h.share_fixed_first},
                      {"anchor_share", h.anchor_mean},
                      {"anchor_share_std", h.anchor_std},
                      {"anchor_share_mean_abs_change", h.anchor_abs_change},
                      {"anchor_share_autocorr", h.anchor_autocorr},
                      {"m_a_mean_abs_change", h.m_a_abs_change},
                      {"sink_dominated", h.sink_dominated},
                      {"sink_dominated_flip_rate", h.dominated_flips},
                      {"out_norm", h.out_norm},
                      {"sink_route_rel_error", h.sink_route_rel_error},
                      {"top_share", h.top_share},
                      {"top_pos_mode", h.top_pos_mode},
                      {"top_pos_stable", h.top_pos_stable}};
  for (int k = 0; k < kBoundKinds; ++k)
    j["gap"][analysis_bound_name(k)] = {{"p10", h.gap[size_t(k)][0]}, {"p50", h.gap[size_t(k)][1]},
                                        {"p90", h.gap[size_t(k)][2]}};
  for (size_t k = 0; k <= kBoundKinds; ++k) {
    for (size_t i = 0; i < kSkipTaus.size(); ++i)
      j["skippable"][kind_label(k)][fmt::format("{:g}", kSkipTaus[i])] = h.skippable[k][i];
    for (size_t i = 0; i < kSkipEpsilons.size(); ++i)
      j["certified"][kind_label(k)][fmt::format("{:g}", kSkipEpsilons[i])] = h.certified[k][i];
  }
  return j;
}

}  // namespace

nlohmann::json SinkAnalyzer::report() const {
  nlohmann::json layers = nlohmann::json::array(), kv_heads = nlohmann::json::array();
  const int G = cfg_.n_head / cfg_.n_head_kv;
  // Whole-model means, weighted by steps (heads) and by blocks (skip fractions).
  std::vector<HeadSummary> all;
  for (int l = 0; l < cfg_.n_layers; ++l) {
    nlohmann::json heads = nlohmann::json::array();
    for (int qh = 0; qh < cfg_.n_head; ++qh) {
      const size_t i = size_t(l) * cfg_.n_head + qh;
      all.push_back(summarize_head(steps_by_head_[i], gaps_[i], o_.dormant_share));
      nlohmann::json j = to_json(all.back());
      j["layer"] = l;
      j["head"] = qh;
      j["kv_head"] = qh / G;
      heads.push_back(j);
    }
    layers.push_back({{"layer", l}, {"heads", heads}});
    for (int h = 0; h < cfg_.n_head_kv; ++h) {
      const PrefillSinks& ps = prefill_[size_t(l) * cfg_.n_head_kv + h];
      nlohmann::json sinks = nlohmann::json::array();
      for (const auto& s : ps.sinks) sinks.push_back({{"pos", s.first}, {"share", s.second}});
      // Variance share of the top 8 principal directions (how anisotropic the keys are).
      double top8 = 0;
      for (size_t d = 0; d < std::min<size_t>(8, ps.basis_variance.size()); ++d) top8 += ps.basis_variance[d];
      kv_heads.push_back({{"layer", l},
                          {"kv_head", h},
                          {"prefill_seen", bool(prefill_seen_[size_t(l)])},
                          {"sinks", sinks},
                          {"only_pos0", ps.sinks.size() == 1 && ps.sinks[0].first == 0},
                          {"v_norm_pos0", ps.v_norm_pos0},
                          {"v_norm_sinks", ps.v_norm_sinks},
                          {"v_norm_others", ps.v_norm_others},
                          {"k_norm_pos0", ps.k_norm_pos0},
                          {"k_norm_others", ps.k_norm_others},
                          {"variance_top8", top8},
                          {"basis_variance", ps.basis_variance}});
    }
  }
  // Summary over the model.
  double dominated = 0, fixed = 0, anchors = 0, detected = 0, pos0 = 0, rest = 0, window = 0;
  for (const HeadSummary& h : all) {
    dominated += h.sink_dominated;
    fixed += h.share_fixed_first;
    anchors += h.anchor_mean;
    detected += h.share_detected;
    pos0 += h.share_pos0;
    rest += h.share_rest;
    window += h.share_window;
  }
  const double nh = double(all.size());
  int only0 = 0, with_sinks = 0, away = 0;
  for (const auto& ps : prefill_) {
    with_sinks += !ps.sinks.empty();
    only0 += ps.sinks.size() == 1 && ps.sinks[0].first == 0;
    for (const auto& s : ps.sinks) away += s.first >= o_.first_anchors;
  }
  nlohmann::json skip, cert, gap;
  for (size_t k = 0; k <= kBoundKinds; ++k) {
    for (size_t i = 0; i < kSkipTaus.size(); ++i) {
      double num = 0, den = 0;
      for (const HeadSummary& h : all) {
        num += h.skippable[k][i] * double(h.blocks);
        den += double(h.blocks);
      }
      skip[kind_label(k)][fmt::format("{:g}", kSkipTaus[i])] = den ? num / den : 0;
    }
    for (size_t i = 0; i < kSkipEpsilons.size(); ++i) {
      double num = 0, den = 0;
      for (const HeadSummary& h : all) {
        num += h.certified[k][i] * double(h.blocks);
        den += double(h.blocks);
      }
      cert[kind_label(k)][fmt::format("{:g}", kSkipEpsilons[i])] = den ? num / den : 0;
    }
  }
  for (int k = 0; k < kBoundKinds; ++k) {
    std::vector<float> all_gaps;
    for (const auto& g : gaps_) all_gaps.insert(all_gaps.end(), g[size_t(k)].begin(), g[size_t(k)].end());
    gap[analysis_bound_name(k)] = {{"p10", quantile(all_gaps, 0.1)}, {"p50", quantile(all_gaps, 0.5)},
                                   {"p90", quantile(all_gaps, 0.9)}};
  }
  const nlohmann::json summary = {
      {"steps", steps_},
      {"heads", int(all.size())},
      {"sink_dominated_head_steps", nh ? dominated / nh : 0},
      {"share_pos0", nh ? pos0 / nh : 0},
      {"share_anchors", nh ? anchors / nh : 0},
      {"share_detected", nh ? detected / nh : 0},
      {"share_window", nh ? window / nh : 0},
      {"share_rest", nh ? rest / nh : 0},
      {"share_fixed_first", nh ? fixed / nh : 0},
      {"kv_heads", int(prefill_.size())},
      {"kv_heads_with_sinks", with_sinks},
      {"kv_heads_only_pos0", only0},
      {"sinks_beyond_first_anchors", away},
      {"skippable", skip},
      {"certified", cert},
      {"gap", gap}};
  const nlohmann::json config = {{"n_layers", cfg_.n_layers},      {"n_head", cfg_.n_head},
                                 {"n_head_kv", cfg_.n_head_kv},    {"head_dim", cfg_.head_dim},
                                 {"window", o_.window},            {"first_anchors", o_.first_anchors},
                                 {"fixed_first", o_.fixed_first},  {"sink_share", o_.sink_share},
                                 {"dormant_share", o_.dormant_share}, {"skip_taus", kSkipTaus},
                                 {"skip_epsilons", kSkipEpsilons}};
  return {{"config", config}, {"summary", summary}, {"layers", layers}, {"kv_heads", kv_heads},
          {"curves", curves_.to_json()}};
}

void SinkAnalyzer::write(const std::string& dir) const {
  std::filesystem::create_directories(dir);
  const nlohmann::json r = report();
  {
    std::ofstream f(dir + "/analysis.json");
    SR_CHECK(f.good(), "analysis: cannot write {}/analysis.json", dir);
    f << r.dump(1) << "\n";
  }
  {
    std::ofstream f(dir + "/heads.csv");
    SR_CHECK(f.good(), "analysis: cannot write {}/heads.csv", dir);
    f << "layer,head,kv_head,share_pos0,share_first,share_detected,share_window,share_rest,share_fixed_first,"
         "anchor_share,anchor_share_std,anchor_share_mean_abs_change,anchor_share_autocorr,m_a_mean_abs_change,"
         "sink_dominated,sink_dominated_flip_rate,out_norm,sink_route_rel_error,top_pos_mode,top_pos_stable";
    for (int k = 0; k < kBoundKinds; ++k) f << ",gap_p50_" << analysis_bound_name(k);
    for (size_t k = 0; k <= kBoundKinds; ++k) f << ",skippable_1e-3_" << kind_label(k);
    for (size_t k = 0; k <= kBoundKinds; ++k) f << ",certified_1e-3_" << kind_label(k);
    f << "\n";
    for (const auto& layer : r["layers"])
      for (const auto& h : layer["heads"]) {
        f << fmt::format("{},{},{}", h["layer"].get<int>(), h["head"].get<int>(), h["kv_head"].get<int>());
        for (const char* key : {"share_pos0", "share_first", "share_detected", "share_window", "share_rest",
                                "share_fixed_first", "anchor_share", "anchor_share_std",
                                "anchor_share_mean_abs_change", "anchor_share_autocorr", "m_a_mean_abs_change",
                                "sink_dominated", "sink_dominated_flip_rate", "out_norm", "sink_route_rel_error"})
          f << fmt::format(",{:.6g}", h[key].get<double>());
        f << fmt::format(",{},{:.4g}", h["top_pos_mode"].get<int>(), h["top_pos_stable"].get<double>());
        for (int k = 0; k < kBoundKinds; ++k) f << fmt::format(",{:.4g}", h["gap"][analysis_bound_name(k)]["p50"].get<double>());
        for (size_t k = 0; k <= kBoundKinds; ++k) f << fmt::format(",{:.4g}", h["skippable"][kind_label(k)]["0.001"].get<double>());
        for (size_t k = 0; k <= kBoundKinds; ++k) f << fmt::format(",{:.4g}", h["certified"][kind_label(k)]["0.001"].get<double>());
        f << "\n";
      }
  }
  {
    std::ofstream f(dir + "/steps.csv");
    SR_CHECK(f.good(), "analysis: cannot write {}/steps.csv", dir);
    f << "layer,head,step,share_pos0,anchor_share,share_window,m_a,out_norm,sink_route_error,top_pos,top_share\n";
    for (int l = 0; l < cfg_.n_layers; ++l)
      for (int qh = 0; qh < cfg_.n_head; ++qh) {
        const auto& steps = steps_by_head_[size_t(l) * cfg_.n_head + qh];
        for (size_t t = 0; t < steps.size(); ++t) {
          const HeadStep& s = steps[t];
          f << fmt::format("{},{},{},{:.6g},{:.6g},{:.6g},{:.6g},{:.6g},{:.6g},{},{:.6g}\n", l, qh, t, s.share_pos0,
                           anchor_share(s), s.share_window, s.m_a, s.out_norm, s.sink_route_error, s.top_pos,
                           s.top_share);
        }
      }
  }
}

}  // namespace sinkrouter::eval
