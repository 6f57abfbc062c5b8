#include "llama_ops.h"

#include <cmath>

namespace sinkrouter {

void rms_norm(const float* x, const float* g, float eps, int64_t n, float* y) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  const float inv = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * inv * g[i];
}

Rope::Rope(int head_dim, float base, const std::vector<float>& divisors) : head_dim_(head_dim) {
  for (int i = 0; i < head_dim / 2; ++i) {
    double f = std::pow(double(base), -2.0 * i / head_dim);
    if (!divisors.empty()) f /= double(divisors[size_t(i)]);
    inv_freq_.push_back(f);
  }
}

void Rope::apply(float* x, int n_heads, int64_t pos) const {
  for (int i = 0; i < head_dim_ / 2; ++i) {
    // The angle in double: positions reach 2^19 and beyond.
    const double a = double(pos) * inv_freq_[size_t(i)];
    const float c = float(std::cos(a)), s = float(std::sin(a));
    for (int h = 0; h < n_heads; ++h) {
      float* p = x + int64_t(h) * head_dim_ + 2 * i;
      const float x0 = p[0], x1 = p[1];
      p[0] = x0 * c - x1 * s;
      p[1] = x0 * s + x1 * c;
    }
  }
}

void swiglu(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
}

}  // namespace sinkrouter
