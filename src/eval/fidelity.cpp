#include "sinkrouter/eval/fidelity.h"

#include <algorithm>
#include <cmath>

#include "sinkrouter/core/error.h"

namespace sinkrouter::eval {
namespace {

void check_finite(const std::vector<float>& logits, const char* what) {
  SR_CHECK(!logits.empty(), "fidelity: {} logits are empty", what);
  for (size_t i = 0; i < logits.size(); ++i)
    SR_CHECK(std::isfinite(logits[i]), "fidelity: {} logit {} is {} (expected finite logits)", what, i, logits[i]);
}

// max and log sum exp(x - max), float64.
std::pair<double, double> log_norm(const std::vector<float>& x) {
  double m = x[0];
  for (float v : x) m = std::max(m, double(v));
  double s = 0;
  for (float v : x) s += std::exp(double(v) - m);
  return {m, std::log(s)};
}

}  // namespace

int64_t argmax(const std::vector<float>& logits) {
  SR_CHECK(!logits.empty(), "argmax of empty logits");
  return int64_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

double log_prob(const std::vector<float>& logits, int64_t target) {
  check_finite(logits, "the");
  SR_CHECK(target >= 0 && target < int64_t(logits.size()), "fidelity: target token {} outside the vocabulary of {}",
           target, logits.size());
  const auto [m, lse] = log_norm(logits);
  return double(logits[size_t(target)]) - m - lse;
}

double kl_divergence(const std::vector<float>& p_logits, const std::vector<float>& q_logits) {
  check_finite(p_logits, "dense");
  check_finite(q_logits, "policy");
  SR_CHECK(p_logits.size() == q_logits.size(), "fidelity: dense logits have {} entries, policy logits {}",
           p_logits.size(), q_logits.size());
  const auto [pm, plse] = log_norm(p_logits);
  const auto [qm, qlse] = log_norm(q_logits);
  double kl = 0;
  for (size_t i = 0; i < p_logits.size(); ++i) {
    const double lp = double(p_logits[i]) - pm - plse, lq = double(q_logits[i]) - qm - qlse;
    kl += std::exp(lp) * (lp - lq);
  }
  return std::max(0.0, kl);  // rounding can leave -1e-17 for identical inputs
}

double FidelityBucket::ppl_dense() const { return steps ? std::exp(nll_dense_sum / double(steps)) : 0.0; }
double FidelityBucket::ppl_policy() const { return steps ? std::exp(nll_policy_sum / double(steps)) : 0.0; }

FidelityAccumulator::FidelityAccumulator(std::vector<int64_t> edges) {
  SR_CHECK(edges.size() >= 2, "fidelity buckets: need at least two edges, got {}", edges.size());
  for (size_t i = 0; i + 1 < edges.size(); ++i) {
    SR_CHECK(edges[i] < edges[i + 1], "fidelity buckets: edges must increase ({} then {})", edges[i], edges[i + 1]);
    FidelityBucket b;
    b.begin = edges[i];
    b.end = edges[i + 1];
    buckets_.push_back(b);
  }
}

void FidelityAccumulator::add(int64_t position, const std::vector<float>& dense_logits,
                              const std::vector<float>& policy_logits, int32_t next_token) {
  auto it = std::find_if(buckets_.begin(), buckets_.end(),
                         [&](const FidelityBucket& b) { return position >= b.begin && position < b.end; });
  SR_CHECK(it != buckets_.end(), "fidelity: position {} is outside the buckets [{}, {})", position,
           buckets_.front().begin, buckets_.back().end);
  const double kl = kl_divergence(dense_logits, policy_logits);
  it->steps += 1;
  it->top1_agree += argmax(dense_logits) == argmax(policy_logits);
  it->kl_sum += kl;
  it->kl_max = std::max(it->kl_max, kl);
  it->nll_dense_sum -= log_prob(dense_logits, next_token);
  it->nll_policy_sum -= log_prob(policy_logits, next_token);
}

void FidelityAccumulator::merge(const FidelityAccumulator& other) {
  SR_CHECK(other.buckets_.size() == buckets_.size(), "fidelity: merging {} buckets into {}", other.buckets_.size(),
           buckets_.size());
  for (size_t i = 0; i < buckets_.size(); ++i) {
    FidelityBucket& a = buckets_[i];
    const FidelityBucket& b = other.buckets_[i];
    SR_CHECK(a.begin == b.begin && a.end == b.end, "fidelity: merging buckets with different edges");
    a.steps += b.steps;
    a.top1_agree += b.top1_agree;
    a.kl_sum += b.kl_sum;
    a.kl_max = std::max(a.kl_max, b.kl_max);
    a.nll_dense_sum += b.nll_dense_sum;
    a.nll_policy_sum += b.nll_policy_sum;
  }
}

FidelityBucket FidelityAccumulator::total() const {
  FidelityBucket t;
  t.begin = buckets_.front().begin;
  t.end = buckets_.back().end;
  for (const auto& b : buckets_) {
    t.steps += b.steps;
    t.top1_agree += b.top1_agree;
    t.kl_sum += b.kl_sum;
    t.kl_max = std::max(t.kl_max, b.kl_max);
    t.nll_dense_sum += b.nll_dense_sum;
    t.nll_policy_sum += b.nll_policy_sum;
  }
  return t;
}

nlohmann::json FidelityAccumulator::to_json() const {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& b : buckets_)
    arr.push_back({{"begin", b.begin}, {"end", b.end}, {"steps", b.steps}, {"top1_agree", b.top1_agree},
                   {"kl_sum", b.kl_sum}, {"kl_max", b.kl_max}, {"nll_dense_sum", b.nll_dense_sum},
                   {"nll_policy_sum", b.nll_policy_sum}, {"top1_agreement", b.top1_agreement()},
                   {"kl_mean", b.kl_mean()}, {"ppl_dense", b.ppl_dense()}, {"ppl_policy", b.ppl_policy()}});
  return arr;
}

FidelityAccumulator FidelityAccumulator::from_json(const nlohmann::json& j) {
  SR_CHECK(j.is_array() && !j.empty(), "fidelity buckets JSON: expected a non-empty array");
  std::vector<int64_t> edges;
  for (const auto& b : j) edges.push_back(b.at("begin").get<int64_t>());
  edges.push_back(j.back().at("end").get<int64_t>());
  FidelityAccumulator acc(edges);
  for (size_t i = 0; i < j.size(); ++i) {
    FidelityBucket& b = acc.buckets_[i];
    b.steps = j[i].at("steps");
    b.top1_agree = j[i].at("top1_agree");
    b.kl_sum = j[i].at("kl_sum");
    b.kl_max = j[i].at("kl_max");
    b.nll_dense_sum = j[i].at("nll_dense_sum");
    b.nll_policy_sum = j[i].at("nll_policy_sum");
  }
  return acc;
}

std::vector<int64_t> even_bucket_edges(int64_t begin, int64_t end, int n) {
  SR_CHECK(end > begin && n >= 1, "fidelity buckets: cannot split [{}, {}) into {}", begin, end, n);
  n = int(std::min<int64_t>(n, end - begin));
  std::vector<int64_t> e;
  for (int i = 0; i <= n; ++i) e.push_back(begin + (end - begin) * i / n);
  return e;
}

const std::vector<std::string>& fidelity_documents() {
  static const std::vector<std::string> docs = {"mobydick", "huckfinn", "sherlock", "opticks"};
  return docs;
}

}  // namespace sinkrouter::eval
