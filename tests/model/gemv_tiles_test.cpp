// The decode GEMV (qmatmul.h, row_tiles.h) against a float64 reference made from
// dequantize_row() and the dequantised int8 activation, on random Q4_0 / Q4_1 / Q8_0
// matrices with row counts that leave loose rows past the last 16-row tile.
//
// Tolerance, every element: |y - ref| <= 4 (nb + 4) eps32 * S + 1e-30, with
// S = sum_i (|d_w q_i| + |m_w|) |x_i| in float64 and nb the blocks per row: the kernels
// round one scale product and one fma per block (per row, float32), the reference's
// dequantize_row rounds each weight once or twice. Beyond that, the three tile kernels
// (scalar, AVX2, AVX-512 VNNI) must give the same bits: they do the same float operations
// in the same order on exact integer block sums.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "model/qmatmul.h"
#include "model/row_tiles.h"
#include "sinkrouter/core/dtype.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/core/thread_pool.h"

namespace sinkrouter {
namespace {

struct GemvCase {
  GGMLType type;
  int64_t rows, cols;
  std::string name() const {
    return std::string(ggml_type_name(type)) + "_" + std::to_string(rows) + "x" + std::to_string(cols);
  }
};

int64_t block_bytes(GGMLType t) { return t == GGMLType::Q4_0 ? 18 : t == GGMLType::Q4_1 ? 20 : 34; }

void put_f16(uint8_t* p, float v) {
  const uint16_t h = float_to_f16(v);
  std::memcpy(p, &h, 2);
}

// Random GGUF rows: scales of both signs over a few octaves, every quant value possible.
std::vector<uint8_t> random_matrix(const GemvCase& c, std::mt19937_64& rng) {
  const int64_t nb = c.cols / 32, bb = block_bytes(c.type);
  std::vector<uint8_t> m(size_t(c.rows * nb * bb));
  std::uniform_real_distribution<float> mag(0.25f, 4.f), unit(-1.f, 1.f);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int64_t blk = 0; blk < c.rows * nb; ++blk) {
    uint8_t* p = m.data() + blk * bb;
    put_f16(p, (byte(rng) & 1 ? -1.f : 1.f) * mag(rng) * 1e-2f);
    int64_t q0 = 2;
    if (c.type == GGMLType::Q4_1) {
      put_f16(p + 2, unit(rng) * 0.1f);
      q0 = 4;
    }
    for (int64_t i = q0; i < bb; ++i) p[i] = uint8_t(byte(rng));
  }
  return m;
}

std::vector<float> random_activation(int64_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> mag(0.1f, 10.f);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t b = 0; b < n / 32; ++b) {  // blocks of different magnitudes, as activations have
    const float s = mag(rng);
    for (int i = 0; i < 32; ++i) x[size_t(b * 32 + i)] = s * normal(rng);
  }
  return x;
}

QMatrix make_matrix(const GemvCase& c, const std::vector<uint8_t>& data) {
  QMatrix w;
  w.type = c.type;
  w.data = data.data();
  w.rows = c.rows;
  w.cols = c.cols;
  w.row_bytes = ggml_row_bytes(c.type, c.cols);
  w.name = c.name();
  return w;
}

// ref[r] = dequantize_row(W[r]) . (d_x q_x) in float64, and the error scale S[r].
void reference(const QMatrix& w, const Q8Activation& x, std::vector<double>& ref, std::vector<double>& scale) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  ref.assign(size_t(w.rows), 0.0);
  scale.assign(size_t(w.rows), 0.0);
  const int64_t bb = block_bytes(w.type);
  for (int64_t r = 0; r < w.rows; ++r) {
    dequantize_row(w.type, w.row(r), row.data(), w.cols);
    for (int64_t i = 0; i < w.cols; ++i) {
      const int64_t b = i / 32;
      const double xi = double(x.d[size_t(b)]) * x.q[size_t(i)];
      ref[size_t(r)] += double(row[size_t(i)]) * xi;
      uint16_t d, m = 0;
      std::memcpy(&d, w.row(r) + b * bb, 2);
      if (w.type == GGMLType::Q4_1) std::memcpy(&m, w.row(r) + b * bb + 2, 2);
      // |d q| <= |d| * 16 (4-bit) or 128 (8-bit), |m| as stored.
      const double dq = std::fabs(double(f16_to_float(d))) * (w.type == GGMLType::Q8_0 ? 128 : 16);
      scale[size_t(r)] += (dq + std::fabs(double(f16_to_float(m)))) * std::fabs(xi);
    }
  }
}

class GemvTilesTest : public ::testing::TestWithParam<GemvCase> {};

TEST_P(GemvTilesTest, EveryKernelMatchesTheReferenceAndEachOther) {
  const GemvCase c = GetParam();
  std::mt19937_64 rng(std::hash<std::string>{}(c.name()));
  const std::vector<uint8_t> data = random_matrix(c, rng);
  const QMatrix w = make_matrix(c, data);
  Q8Activation x;
  const std::vector<float> xf = random_activation(c.cols, rng);
  x.quantize(xf.data(), c.cols);
  std::vector<double> ref, scale;
  reference(w, x, ref, scale);
  const double nb = double(c.cols / 32);
  ThreadPool pool(3);

  std::vector<float> scalar_y;
  for (GemvKernel k : {GemvKernel::Scalar, GemvKernel::Avx2, GemvKernel::Avx512Vnni}) {
    if (!gemv_kernel_supported(k)) {
      std::printf("  kernel %s not supported here: skipped\n", gemv_kernel_name(k));
      continue;
    }
    std::vector<float> y(size_t(c.rows), std::numeric_limits<float>::quiet_NaN());  // poisoned
    gemv_with_kernel(w, x, y.data(), pool, k);
    for (int64_t r = 0; r < c.rows; ++r) {
      const double tol = 4 * (nb + 4) * 5.9604645e-8 * scale[size_t(r)] + 1e-30;
      ASSERT_LE(std::fabs(double(y[size_t(r)]) - ref[size_t(r)]), tol)
          << c.name() << " kernel " << gemv_kernel_name(k) << " row " << r << ": got " << y[size_t(r)]
          << ", reference " << ref[size_t(r)];
    }
    if (k == GemvKernel::Scalar) {
      scalar_y = y;
      continue;
    }
    for (int64_t r = 0; r < c.rows; ++r)
      ASSERT_EQ(float_bits(y[size_t(r)]), float_bits(scalar_y[size_t(r)]))
          << c.name() << " kernel " << gemv_kernel_name(k) << " row " << r << " differs from the scalar kernel";
  }
}

// Rows: below one tile, whole tiles, tiles plus loose rows; columns: 1, 3 and 18 blocks.
INSTANTIATE_TEST_SUITE_P(Shapes, GemvTilesTest,
                         ::testing::Values(GemvCase{GGMLType::Q4_1, 53, 96}, GemvCase{GGMLType::Q4_1, 7, 32},
                                           GemvCase{GGMLType::Q4_1, 48, 576}, GemvCase{GGMLType::Q4_1, 35, 1536},
                                           GemvCase{GGMLType::Q4_0, 53, 96}, GemvCase{GGMLType::Q4_0, 33, 576},
                                           GemvCase{GGMLType::Q8_0, 53, 96}, GemvCase{GGMLType::Q8_0, 9, 64},
                                           GemvCase{GGMLType::Q8_0, 67, 576}),
                         [](const auto& info) { return info.param.name(); });

// Extreme quants: every Q8_0 weight -128 or 127 and activations at +-127 stay exact (no
// 16-bit saturation in the AVX2 kernel, no overflow in the unsigned trick of VNNI).
TEST(GemvTiles, ExtremeQ8ValuesDoNotSaturate) {
  const GemvCase c{GGMLType::Q8_0, 32, 64};
  std::mt19937_64 rng(5);
  std::vector<uint8_t> data = random_matrix(c, rng);
  for (int64_t blk = 0; blk < c.rows * 2; ++blk)
    for (int i = 2; i < 34; ++i) data[size_t(blk * 34 + i)] = (rng() & 1) ? 0x80 : 0x7f;
  const QMatrix w = make_matrix(c, data);
  std::vector<float> xf(64);
  for (auto& v : xf) v = (rng() & 1) ? 3.f : -3.f;  // every |q| = 127
  Q8Activation x;
  x.quantize(xf.data(), 64);
  std::vector<double> ref, scale;
  reference(w, x, ref, scale);
  ThreadPool pool(2);
  for (GemvKernel k : {GemvKernel::Scalar, GemvKernel::Avx2, GemvKernel::Avx512Vnni}) {
    if (!gemv_kernel_supported(k)) continue;
    std::vector<float> y(32, std::numeric_limits<float>::quiet_NaN());
    gemv_with_kernel(w, x, y.data(), pool, k);
    for (int r = 0; r < 32; ++r)
      ASSERT_LE(std::fabs(y[size_t(r)] - ref[size_t(r)]), 4 * 6 * 5.9604645e-8 * scale[size_t(r)])
          << gemv_kernel_name(k) << " row " << r;
  }
}

// gemv_many gives the bits of separate gemv calls.
TEST(GemvTiles, ManyTargetsEqualSeparateCalls) {
  std::mt19937_64 rng(11);
  const GemvCase a{GGMLType::Q4_1, 80, 192}, b{GGMLType::Q4_1, 21, 192}, c{GGMLType::Q8_0, 48, 192};
  const auto da = random_matrix(a, rng), db = random_matrix(b, rng), dc = random_matrix(c, rng);
  const QMatrix wa = make_matrix(a, da), wb = make_matrix(b, db), wc = make_matrix(c, dc);
  const std::vector<float> xf = random_activation(192, rng);
  Q8Activation x;
  x.quantize(xf.data(), 192);
  ThreadPool pool(2);
  std::vector<float> ya(80), yb(21), yc(48), sa(80), sb(21), sc(48);
  gemv_many({{&wa, ya.data()}, {&wb, yb.data()}, {&wc, yc.data()}}, x, pool);
  gemv(wa, x, sa.data(), pool);
  gemv(wb, x, sb.data(), pool);
  gemv(wc, x, sc.data(), pool);
  for (size_t i = 0; i < ya.size(); ++i) ASSERT_EQ(float_bits(ya[i]), float_bits(sa[i])) << "a row " << i;
  for (size_t i = 0; i < yb.size(); ++i) ASSERT_EQ(float_bits(yb[i]), float_bits(sb[i])) << "b row " << i;
  for (size_t i = 0; i < yc.size(); ++i) ASSERT_EQ(float_bits(yc[i]), float_bits(sc[i])) << "c row " << i;
}

// The packing moves bytes only: unpacking a tile by its documented layout gives the rows.
TEST(GemvTiles, PackingFollowsTheDocumentedLayout) {
  std::mt19937_64 rng(3);
  const GemvCase c{GGMLType::Q4_1, 37, 64};
  const auto data = random_matrix(c, rng);
  const RowTiles t = pack_row_tiles(c.type, data.data(), c.rows, c.cols, ggml_row_bytes(c.type, c.cols));
  ASSERT_EQ(t.tiles, 2);
  ASSERT_EQ(t.blocks, 2);
  ASSERT_EQ(t.block_bytes, 320);
  for (int64_t tile = 0; tile < t.tiles; ++tile)
    for (int64_t b = 0; b < t.blocks; ++b)
      for (int r = 0; r < 16; ++r) {
        const uint8_t* src = data.data() + (tile * 16 + r) * 40 + b * 20;
        const uint8_t* blk = t.tile(tile) + b * 320;
        ASSERT_EQ(std::memcmp(blk + 2 * r, src, 2), 0) << "d of row " << tile * 16 + r;
        ASSERT_EQ(std::memcmp(blk + 32 + 2 * r, src + 2, 2), 0) << "m of row " << tile * 16 + r;
        for (int j = 0; j < 4; ++j)
          ASSERT_EQ(std::memcmp(blk + 64 + 64 * j + 4 * r, src + 4 + 4 * j, 4), 0)
              << "quant group " << j << " of row " << tile * 16 + r;
      }
}

TEST(GemvTiles, BadInputsGetClearErrors) {
  std::vector<uint8_t> data(16 * 4 * 32);
  try {
    pack_row_tiles(GGMLType::F32, data.data(), 16, 32, 128);
    FAIL() << "f32 packed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has no tile layout"), std::string::npos) << e.what();
  }
  try {
    pack_row_tiles(GGMLType::Q4_1, data.data(), 16, 48, 30);
    FAIL() << "48 columns packed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a positive multiple of 32"), std::string::npos) << e.what();
  }
  const GemvCase c{GGMLType::Q4_1, 16, 64};
  std::mt19937_64 rng(9);
  const auto m = random_matrix(c, rng);
  const QMatrix w = make_matrix(c, m);
  Q8Activation x;
  const std::vector<float> xf = random_activation(32, rng);
  x.quantize(xf.data(), 32);
  ThreadPool pool(1);
  std::vector<float> y(16);
  try {
    gemv(w, x, y.data(), pool);
    FAIL() << "short input accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("input has 32 values (expected 64)"), std::string::npos) << e.what();
  }
  try {
    gemv_tiles(w.tiles(), x, 0, 1, y.data(), GemvKernel::Scalar);
    FAIL() << "short input accepted by gemv_tiles";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("32 quantised values (expected 64)"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sinkrouter
