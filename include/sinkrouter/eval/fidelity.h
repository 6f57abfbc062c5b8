// Teacher-forced fidelity to dense attention. A document window of N tokens is fed to two
// sessions, one dense and one under the policy; at every teacher-forced decode step both
// produce next-token logits [n_vocab], compared here:
//   top-1 agreement   argmax(dense) == argmax(policy)
//   KL(dense||policy) sum_i p_i (log p_i - log q_i), p = softmax(dense), q = softmax(policy)
//   perplexity        exp(mean NLL of the true next token), for dense and for the policy
// reported per position bucket (the decode step's position in the window). All sums are
// float64; logits must be finite.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace sinkrouter::eval {

int64_t argmax(const std::vector<float>& logits);  // the first maximum on ties
// log softmax(logits)[target], float64.
double log_prob(const std::vector<float>& logits, int64_t target);
double kl_divergence(const std::vector<float>& p_logits, const std::vector<float>& q_logits);

struct FidelityBucket {
  int64_t begin = 0, end = 0;  // positions [begin, end)
  int64_t steps = 0;
  int64_t top1_agree = 0;
  double kl_sum = 0, kl_max = 0;
  double nll_dense_sum = 0, nll_policy_sum = 0;

  double top1_agreement() const { return steps ? double(top1_agree) / double(steps) : 0.0; }
  double kl_mean() const { return steps ? kl_sum / double(steps) : 0.0; }
  double ppl_dense() const;
  double ppl_policy() const;
};

// Accumulates steps into buckets given by increasing edges e0 < e1 < ... : bucket k is
// [e_k, e_{k+1}); a position outside [e0, e_last) is an Error.
class FidelityAccumulator {
 public:
  explicit FidelityAccumulator(std::vector<int64_t> edges);
  // One teacher-forced step at `position`: logits predicting the token `next_token`.
  void add(int64_t position, const std::vector<float>& dense_logits, const std::vector<float>& policy_logits,
           int32_t next_token);
  // Adds another accumulator's counts (same edges).
  void merge(const FidelityAccumulator& other);
  const std::vector<FidelityBucket>& buckets() const { return buckets_; }
  FidelityBucket total() const;
  nlohmann::json to_json() const;
  static FidelityAccumulator from_json(const nlohmann::json& j);

 private:
  std::vector<FidelityBucket> buckets_;
};

// Edges splitting [begin, end) into `n` buckets of near-equal size.
std::vector<int64_t> even_bucket_edges(int64_t begin, int64_t end, int n);

// The documents of data/texts/ (Moby-Dick, Huckleberry Finn, Sherlock Holmes, Opticks).
const std::vector<std::string>& fidelity_documents();

}  // namespace sinkrouter::eval
