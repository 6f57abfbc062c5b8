// Element-wise pieces of the Llama forward pass on the CPU (float32).
#pragma once

#include <cstdint>
#include <vector>

namespace sinkrouter {

// y = x / sqrt(mean(x^2) + eps) * g, for one row of n values (y may alias x).
void rms_norm(const float* x, const float* g, float eps, int64_t n, float* y);

// Rotary embedding with GGUF's adjacent-pair convention (REFERENCE.md §3): within each
// head of head_dim values, (x[2i], x[2i+1]) rotates by pos * inv_freq[i].
class Rope {
 public:
  // inv_freq[i] = base^(-2i/head_dim) / divisor[i] (divisors: rope_freqs.weight, or none).
  Rope(int head_dim, float base, const std::vector<float>& divisors);
  // x: [n_heads, head_dim] of the token at `pos`.
  void apply(float* x, int n_heads, int64_t pos) const;

 private:
  int head_dim_;
  std::vector<double> inv_freq_;
};

// out[i] = silu(gate[i]) * up[i]
void swiglu(const float* gate, const float* up, int64_t n, float* out);

}  // namespace sinkrouter
