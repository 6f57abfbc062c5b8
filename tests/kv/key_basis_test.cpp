// The principal key basis and the rotated-box bound: the fitted basis is orthonormal and
// finds planted directions; the rotated box bounds every score of its block, for fitted,
// random and slightly non-orthonormal bases; the cache keeps rotated boxes equal to a
// rebuild from scratch as tokens are appended; bad bases get clear errors.
#include "sinkrouter/kv/key_basis.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kv/summary_math.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/kv/paged_kv_cache.h"
#include "sinkrouter/kv/synthetic_kv.h"

namespace sinkrouter {
namespace {

void expect_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// A random orthonormal D x D matrix (rows), float64 Gram-Schmidt of Gaussian rows.
std::vector<double> random_orthonormal(int D, std::mt19937_64& rng) {
  std::normal_distribution<double> n(0, 1);
  std::vector<double> m(size_t(D) * D);
  for (double& x : m) x = n(rng);
  for (int r = 0; r < D; ++r) {
    double* x = &m[size_t(r) * D];
    for (int p = 0; p < r; ++p) {
      const double* y = &m[size_t(p) * D];
      double d = 0;
      for (int k = 0; k < D; ++k) d += x[k] * y[k];
      for (int k = 0; k < D; ++k) x[k] -= d * y[k];
    }
    double s = 0;
    for (int k = 0; k < D; ++k) s += x[k] * x[k];
    for (int k = 0; k < D; ++k) x[k] /= std::sqrt(s);
  }
  return m;
}

// Keys with variance sigma_r^2 = exp(-decay * r / D) along the rows of a hidden rotation.
std::vector<float> anisotropic_keys(int64_t n, int D, const std::vector<double>& rot, double decay,
                                    std::mt19937_64& rng) {
  std::normal_distribution<double> g(0, 1);
  std::vector<float> k(size_t(n) * D);
  std::vector<double> z(static_cast<size_t>(D));
  for (int64_t t = 0; t < n; ++t) {
    for (int r = 0; r < D; ++r) z[size_t(r)] = g(rng) * std::exp(-0.5 * decay * r / D) + 0.3;
    for (int d = 0; d < D; ++d) {
      double s = 0;
      for (int r = 0; r < D; ++r) s += rot[size_t(r) * D + d] * z[size_t(r)];
      k[size_t(t) * D + d] = float(s);
    }
  }
  return k;
}

TEST(KeyBasis, FitIsOrthonormalSortedAndFindsThePlantedDirections) {
  for (int D : {64, 128}) {
    std::mt19937_64 rng(7 + D);
    const std::vector<double> hidden = random_orthonormal(D, rng);
    const int64_t n = 3001;  // odd, more than D
    const std::vector<float> k = anisotropic_keys(n, D, hidden, 12.0, rng);
    const std::vector<float> P = fit_key_basis_rows(k.data(), n, D);
    ASSERT_EQ(P.size(), size_t(D) * D);
    // Orthonormal: every entry of P P^T within 1e-6 of the identity.
    for (int i = 0; i < D; ++i)
      for (int j = 0; j < D; ++j) {
        double s = 0;
        for (int d = 0; d < D; ++d) s += double(P[size_t(i) * D + d]) * P[size_t(j) * D + d];
        ASSERT_NEAR(s, i == j ? 1.0 : 0.0, 1e-6) << "D " << D << " (" << i << ", " << j << ")";
      }
    EXPECT_LT(basis_error(P.data(), 1, D), 1e-5);
    // Variance along the rows does not increase (strongest first), up to sampling noise.
    std::vector<double> var(size_t(D), 0.0), rot(static_cast<size_t>(D)), mean(size_t(D), 0.0);
    for (int64_t t = 0; t < n; ++t) {
      rotate(P.data(), &k[size_t(t) * D], D, rot.data());
      for (int r = 0; r < D; ++r) {
        var[size_t(r)] += rot[size_t(r)] * rot[size_t(r)];
        mean[size_t(r)] += rot[size_t(r)];
      }
    }
    for (int r = 0; r < D; ++r) var[size_t(r)] = var[size_t(r)] / n - std::pow(mean[size_t(r)] / n, 2);
    for (int r = 1; r < D; ++r) EXPECT_LE(var[size_t(r)], var[size_t(r - 1)] * (1 + 1e-9)) << "row " << r;
    // The strongest planted direction is found: |<p_0, hidden_0>| close to 1.
    double dot = 0;
    for (int d = 0; d < D; ++d) dot += P[size_t(d)] * hidden[size_t(d)];
    EXPECT_GT(std::fabs(dot), 0.95) << "D " << D;
  }
}

// The rotated box of a block, rounded outward to the storage type, bounds q . k for every
// key of the block, in float64, for fitted, random and perturbed (non-orthonormal) bases.
TEST(KeyBasis, RotatedBoxBoundsEveryScoreOnRandomCases) {
  std::mt19937_64 rng(99);
  std::uniform_int_distribution<int> pick(0, 1 << 20);
  std::normal_distribution<double> g(0, 1);
  // Bases: random rotations, every third one perturbed by ~1e-4 / sqrt(D) per entry (so
  // that the slack for a non-orthonormal P is exercised), for D = 64 and 128.
  struct Basis {
    int D;
    std::vector<float> P;
    double e;
  };
  std::vector<Basis> bases;
  for (int i = 0; i < 12; ++i) {
    const int D = i % 4 == 3 ? 128 : 64;
    const std::vector<double> rot64 = random_orthonormal(D, rng);
    std::vector<float> P(rot64.size());
    const double perturb = i % 3 == 0 ? 1e-4 : 0.0;
    for (size_t k = 0; k < P.size(); ++k) P[k] = float(rot64[k] + perturb * g(rng) / std::sqrt(double(D)));
    const double e = basis_error(P.data(), 1, D);
    ASSERT_LT(e, 1e-2);
    if (perturb > 0) ASSERT_GT(e, 1e-5);
    bases.push_back({D, P, e});
  }
  for (int c = 0; c < 10000; ++c) {
    const Basis& B = bases[size_t(pick(rng)) % bases.size()];
    const int D = B.D;
    const std::vector<float>& P = B.P;
    const double e = B.e;
    const bool bf = pick(rng) % 2;
    const int R = 1 + pick(rng) % 33;
    const double scale = std::pow(10.0, -1 + 3 * (pick(rng) % 100) / 100.0);
    std::vector<uint16_t> keys(size_t(R) * D), summary(size_t(2) * D);
    std::vector<float> kf(static_cast<size_t>(D));
    std::vector<double> kr(static_cast<size_t>(D));
    for (int t = 0; t < R; ++t) {
      for (int d = 0; d < D; ++d) {
        keys[size_t(t) * D + d] = round_to_storage(float(scale * g(rng) * (d < 4 ? 20 : 1)), bf);
        kf[size_t(d)] = storage_to_float(keys[size_t(t) * D + d], bf);
      }
      rotate(P.data(), kf.data(), D, kr.data());
      update_rotated_summary(kr.data(), D, bf, t == 0, summary.data());
    }
    std::vector<float> lo(static_cast<size_t>(D)), hi(static_cast<size_t>(D)), q(static_cast<size_t>(D));
    for (int d = 0; d < D; ++d) {
      lo[size_t(d)] = storage_to_float(summary[size_t(d)], bf);
      hi[size_t(d)] = storage_to_float(summary[size_t(D + d)], bf);
      q[size_t(d)] = float(g(rng) * (pick(rng) % 4 == 0 ? 30 : 1));
    }
    std::vector<double> qr(static_cast<size_t>(D));
    rotate(P.data(), q.data(), D, qr.data());
    double qn = 0;
    for (float x : q) qn += double(x) * x;
    qn = std::sqrt(qn) * (1 + 1e-12);
    const double u = rotated_box_bound(qr.data(), qn, lo.data(), hi.data(), D, e);
    for (int t = 0; t < R; ++t) {
      double s = 0;
      for (int d = 0; d < D; ++d) s += double(q[size_t(d)]) * storage_to_float(keys[size_t(t) * D + d], bf);
      ASSERT_LE(s, u) << "case " << c << " token " << t << " D " << D << " e " << e;
    }
  }
}

TEST(KeyBasis, CacheKeepsRotatedBoxesAsTokensArrive) {
  std::mt19937_64 rng(5);
  const int H = 3, D = 64;
  KVCacheConfig cfg;
  cfg.num_kv_heads = H;
  cfg.head_dim = D;
  cfg.page_size = 16;
  cfg.block_size = 32;
  cfg.num_pages = 40;
  PagedKVCache cache(cfg);
  const int seq = cache.create_sequence();
  auto append = [&](int64_t n) {
    HostTensor k(DType::F32, {n, H, D}), v(DType::F32, {n, H, D});
    fill_normal(k.view(), rng, 2.f);
    fill_normal(v.view(), rng);
    cache.append(seq, k.view(), v.view());
  };
  append(301);
  std::vector<float> basis = fit_key_basis(cache.batch({seq}).view, 0);
  cache.set_key_basis(basis);
  append(77);  // more tokens after the basis is set, crossing block boundaries
  const PagedKVBatch after = cache.batch({seq});
  ASSERT_TRUE(after.view.has_key_basis());
  // A second cache given the same basis after all tokens are in must hold the same boxes.
  PagedKVCache rebuilt = cache;
  rebuilt.set_key_basis({});
  EXPECT_FALSE(rebuilt.batch({seq}).view.has_key_basis());
  rebuilt.set_key_basis(basis);
  const PagedKVBatch again = rebuilt.batch({seq});
  const int64_t n = cache.length(seq), blocks = (n + 31) / 32;
  const uint16_t* a = static_cast<const uint16_t*>(after.view.basis_summaries);
  const uint16_t* b = static_cast<const uint16_t*>(again.view.basis_summaries);
  for (int64_t j = 0; j < blocks; ++j)
    for (int h = 0; h < H; ++h)
      for (int d = 0; d < 2 * D; ++d)
        ASSERT_EQ(a[after.view.summary_offset(0, j, h) + d], b[again.view.summary_offset(0, j, h) + d])
            << "block " << j << " head " << h << " entry " << d;
  // And every rotated key of each block lies inside its box.
  for (int64_t t = 0; t < n; ++t)
    for (int h = 0; h < H; ++h) {
      std::vector<float> key(static_cast<size_t>(D));
      for (int d = 0; d < D; ++d)
        key[size_t(d)] = storage_to_float(static_cast<const uint16_t*>(after.view.pages)[after.view.k_offset(0, t, h) + d],
                                          true);
      std::vector<double> rot(static_cast<size_t>(D));
      rotate(&basis[size_t(h) * D * D], key.data(), D, rot.data());
      const uint16_t* box = a + after.view.summary_offset(0, t / 32, h);
      for (int d = 0; d < D; ++d) {
        ASSERT_GE(rot[size_t(d)], storage_to_float(box[d], true)) << t << " " << h << " " << d;
        ASSERT_LE(rot[size_t(d)], storage_to_float(box[D + d], true)) << t << " " << h << " " << d;
      }
    }
}

TEST(KeyBasis, BadBasesAndInputsAreClearErrors) {
  std::mt19937_64 rng(6);
  SyntheticKVSpec spec;
  spec.lengths = {50};
  auto r = make_synthetic_kv(spec, rng);
  expect_error([&] { r.cache->set_key_basis(std::vector<float>(7, 1.f)); },
               "basis has 7 floats, expected num_kv_heads * head_dim^2");
  std::vector<float> scaled(size_t(spec.num_kv_heads) * 64 * 64, 0.f);
  for (int h = 0; h < spec.num_kv_heads; ++h)
    for (int d = 0; d < 64; ++d) scaled[size_t(h) * 64 * 64 + size_t(d) * 64 + d] = 1.01f;
  expect_error([&] { r.cache->set_key_basis(scaled); }, "the basis is not orthonormal");
  expect_error([&] { fit_key_basis_rows(nullptr, 0, 64); }, "no keys to fit a basis on");
  expect_error([&] { fit_key_basis(r.batch.view, 3); }, "sequence 3 out of range");
}

}  // namespace
}  // namespace sinkrouter
