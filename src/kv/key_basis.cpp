#include "sinkrouter/kv/key_basis.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "sinkrouter/core/error.h"
#include "summary_math.h"

namespace sinkrouter {
namespace {

// Eigenvectors of the symmetric matrix a [n, n] (destroyed) by cyclic Jacobi rotations, in
// float64; returns them as rows of v [n, n], sorted by decreasing eigenvalue.
void symmetric_eigenvectors(std::vector<double>& a, int n, std::vector<double>& v) {
  v.assign(size_t(n) * n, 0.0);
  for (int i = 0; i < n; ++i) v[size_t(i) * n + i] = 1.0;
  auto A = [&](int i, int j) -> double& { return a[size_t(i) * n + j]; };
  for (int sweep = 0; sweep < 60; ++sweep) {
    double off = 0, diag = 0;
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) (i == j ? diag : off) += A(i, j) * A(i, j);
    if (off <= 1e-30 * std::max(diag, 1e-300)) break;
    for (int p = 0; p < n - 1; ++p)
      for (int q = p + 1; q < n; ++q) {
        const double apq = A(p, q);
        if (std::fabs(apq) < 1e-300) continue;
        const double theta = (A(q, q) - A(p, p)) / (2 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < n; ++k) {  // columns p, q
          const double akp = A(k, p), akq = A(k, q);
          A(k, p) = c * akp - s * akq;
          A(k, q) = s * akp + c * akq;
        }
        for (int k = 0; k < n; ++k) {  // rows p, q
          const double apk = A(p, k), aqk = A(q, k);
          A(p, k) = c * apk - s * aqk;
          A(q, k) = s * apk + c * aqk;
        }
        for (int k = 0; k < n; ++k) {  // eigenvector rows
          double& vp = v[size_t(p) * n + k];
          double& vq = v[size_t(q) * n + k];
          const double x = vp, y = vq;
          vp = c * x - s * y;
          vq = s * x + c * y;
        }
      }
  }
  std::vector<int> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return A(x, x) > A(y, y); });
  std::vector<double> sorted(size_t(n) * n);
  for (int r = 0; r < n; ++r)
    std::copy(v.begin() + long(order[size_t(r)]) * n, v.begin() + long(order[size_t(r)] + 1) * n,
              sorted.begin() + long(r) * n);
  v.swap(sorted);
}

// Two passes of modified Gram-Schmidt on the rows, in float64 (Jacobi leaves them
// orthonormal to ~1e-15 already; this removes the drift of many sweeps).
void orthonormalise_rows(std::vector<double>& v, int n) {
  for (int pass = 0; pass < 2; ++pass)
    for (int r = 0; r < n; ++r) {
      double* x = &v[size_t(r) * n];
      for (int p = 0; p < r; ++p) {
        const double* y = &v[size_t(p) * n];
        double d = 0;
        for (int k = 0; k < n; ++k) d += x[k] * y[k];
        for (int k = 0; k < n; ++k) x[k] -= d * y[k];
      }
      double norm = 0;
      for (int k = 0; k < n; ++k) norm += x[k] * x[k];
      norm = std::sqrt(norm);
      SR_CHECK(norm > 1e-6, "fit_key_basis: basis row {} collapsed during orthonormalisation", r);
      for (int k = 0; k < n; ++k) x[k] /= norm;
    }
}

}  // namespace

std::vector<float> fit_key_basis_rows(const float* keys, int64_t n, int D) {
  SR_CHECK(n >= 1, "fit_key_basis: no keys to fit a basis on (expected at least one token)");
  SR_CHECK(D >= 1 && D <= 1024, "fit_key_basis: head_dim {} out of range (1 to 1024)", D);
  std::vector<double> mean(static_cast<size_t>(D), 0.0), cov(size_t(D) * D, 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int d = 0; d < D; ++d) mean[size_t(d)] += keys[t * D + d];
  for (double& m : mean) m /= double(n);
  std::vector<double> x(static_cast<size_t>(D));
  for (int64_t t = 0; t < n; ++t) {
    for (int d = 0; d < D; ++d) x[size_t(d)] = keys[t * D + d] - mean[size_t(d)];
    for (int i = 0; i < D; ++i) {
      const double xi = x[size_t(i)];
      double* row = &cov[size_t(i) * D];
      for (int j = i; j < D; ++j) row[j] += xi * x[size_t(j)];
    }
  }
  for (int i = 0; i < D; ++i)
    for (int j = 0; j < i; ++j) cov[size_t(i) * D + j] = cov[size_t(j) * D + i];
  std::vector<double> v;
  symmetric_eigenvectors(cov, D, v);
  orthonormalise_rows(v, D);
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float(v[i]);
  return out;
}

std::vector<float> fit_key_basis(const PagedKV& kv, int b) {
  SR_CHECK(kv.dtype == DType::BF16 || kv.dtype == DType::F16,
           "fit_key_basis: KV dtype {} is not supported (expected bf16 or f16)", dtype_name(kv.dtype));
  SR_CHECK(b >= 0 && b < kv.batch, "fit_key_basis: sequence {} out of range (batch of {})", b, kv.batch);
  const int H = kv.num_kv_heads, D = kv.head_dim;
  const int64_t n = kv.seq_len(b);
  const bool bf = kv.dtype == DType::BF16;
  const uint16_t* pages = static_cast<const uint16_t*>(kv.pages);
  std::vector<float> basis(size_t(H) * D * D), keys(size_t(n) * D);
  for (int h = 0; h < H; ++h) {
    for (int64_t t = 0; t < n; ++t)
      for (int d = 0; d < D; ++d) keys[size_t(t * D + d)] = storage_to_float(pages[kv.k_offset(b, t, h) + d], bf);
    const std::vector<float> p = fit_key_basis_rows(keys.data(), n, D);
    std::copy(p.begin(), p.end(), basis.begin() + long(h) * D * D);
  }
  return basis;
}

double basis_error(const float* basis, int heads, int D) {
  double worst = 0;
  for (int h = 0; h < heads; ++h) {
    const float* P = basis + size_t(h) * D * D;
    double fro = 0;
    for (int i = 0; i < D; ++i)
      for (int j = 0; j < D; ++j) {
        double ptp = 0;  // (P^T P)_ij = sum_r P_ri P_rj
        for (int r = 0; r < D; ++r) ptp += double(P[size_t(r) * D + i]) * double(P[size_t(r) * D + j]);
        const double e = (i == j ? 1.0 : 0.0) - ptp;
        fro += e * e;
      }
    worst = std::max(worst, std::sqrt(fro));
  }
  // The float64 sums above are exact to ~1e-15; pad so that e stays an upper bound.
  return worst * (1 + 1e-6) + 1e-12;
}

void rotate(const float* P, const float* x, int D, double* rot) {
  for (int r = 0; r < D; ++r) {
    double s = 0;
    const float* row = P + size_t(r) * D;
#pragma omp simd reduction(+ : s)
    for (int d = 0; d < D; ++d) s += double(row[d]) * double(x[d]);
    rot[r] = s;
  }
}

double rotated_box_bound(const double* qrot, double q_norm, const float* lo, const float* hi, int D, double e) {
  double u = 0, mag = 0, k2 = 0, k1 = 0;
  for (int d = 0; d < D; ++d) {
    const double a = qrot[d] * double(hi[d]), b = qrot[d] * double(lo[d]);
    const double m = a > b ? a : b;
    u += m;
    mag += std::fabs(m);
    const double kmax = std::max(std::fabs(double(lo[d])), std::fabs(double(hi[d])));
    k2 += kmax * kmax;
    k1 += kmax;
  }
  // q . k = (Pq).(Pk) + q^T E k with |q^T E k| <= e ||q|| ||k|| and ||k|| <= ||Pk|| / sqrt(1 - e).
  const double slack = e < 1 ? e * q_norm * std::sqrt(k2) / std::sqrt(1 - e) : 1e300;
  // Rounding: qrot's entries are float64 sums of D products, each off by at most
  // ~D * 2^-53 * ||q|| (rows of P have norm ~1); the sum above by ~D * 2^-53 * mag.
  return u + slack + 1e-12 * mag + 1e-12 * q_norm * k1;
}

}  // namespace sinkrouter
