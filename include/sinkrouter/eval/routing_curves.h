// How well a block-score estimate tells the blocks that matter from those that do not,
// measured on exact attention (sink_analysis.h feeds it): for every estimator, the
// blocks a router would read and what it would lose, at every threshold (sinkrouter's
// fast mode: read a block when R exp(est - m_A) / Z_A > tau for any query head of the
// group), at every budget (skip the blocks of smallest estimated terms while every head's
// sum of them stays <= epsilon: the certified rule on estimates) and at every fixed
// fraction (Quest's rule: the top blocks by estimate).
//
// Loss per query head and step: the attention mass of the skipped blocks, and the
// relative output error ||o - o_routed|| / ||o|| (o_routed renormalised over what is read).
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace sinkrouter::eval {

// Estimators of a block's maximum score from its summaries (c: box centre score,
// w: box half-widths, q the scaled query):
//   bound        the box bound c + sum |q_d| w_d (Quest's score)
//   centre       c
//   l1x0.5       c + 0.5 sum |q_d| w_d            (the router's spread = 0.5)
//   l2xB         c + B sqrt(sum (q_d w_d)^2)      (B = 1, 2, 3: a Gaussian-max estimate)
//   basis-l2x2   the same as l2x2 in the principal key basis
//   oracle-max   the block's true maximum score (what a perfect max summary gives)
//   oracle-mass  the block's true mass (the best any per-block rule can do)
constexpr int kEstimators = 9;
const char* estimator_name(int e);
// Thresholds tau (log-spaced) and read fractions of the curves.
const std::vector<double>& curve_taus();
const std::vector<double>& curve_fractions();

// One (layer, KV head, decode step) of exact attention, per query head g and block j.
struct BlockAttention {
  int G = 0, blocks = 0, D = 0;
  std::vector<double> mass;     // [G, blocks] attention share of the block (anchors excluded)
  std::vector<double> partial;  // [G, blocks, D] sum over the block of p_i v_i (p normalised)
  std::vector<double> out;      // [G, D] the exact output o
  std::vector<double> log_term; // [kEstimators, G, blocks] log(R exp(est - m_A) / Z_A)
};

struct CurvePoint {
  double blocks_read = 0, blocks_total = 0;  // summed over KV-head-steps
  double head_steps = 0;                     // query-head-steps
  double missed_sum = 0, missed_max = 0;     // skipped attention mass
  double error_sum = 0, error_max = 0;       // relative output error
  double over_1pct = 0;                      // query-head-steps with relative error > 1 %
  nlohmann::json to_json() const;
};

class RoutingCurves {
 public:
  explicit RoutingCurves(int n_layers);
  void add(int layer, const BlockAttention& a);
  // {"taus", "fractions", "estimators": {name: {"threshold": [...], "budget": [...],
  // "rank": [...]}}, and the same per layer under "layers"}; budgets use the taus' grid}
  nlohmann::json to_json() const;

 private:
  using Curve = std::vector<CurvePoint>;
  struct Curves {
    std::array<Curve, kEstimators> threshold, budget, rank;
  };
  Curves all_;
  std::vector<Curves> layers_;
};

}  // namespace sinkrouter::eval
