// dequantize_row() against gguf-py (ggml's Python package): tests/data/quants/<type>.bin
// hold raw rows and gguf.quants.dequantize's output (tools/make_quant_vectors.py).
// Tolerance: exact, bit for bit, on every element (both follow ggml's float operation
// order; quants.cpp disables FMA contraction so that they can). Both the fast kernels
// (dequantize_row) and the scalar reference (detail::dequantize_row_scalar) are checked.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <vector>

#include "model/quants.h"
#include "sinkrouter/core/dtype.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/model/gguf.h"

namespace sinkrouter {
namespace {

struct QuantVectors {
  uint32_t type_id = 0;
  uint32_t rows = 0, values = 0, row_bytes = 0;
  std::vector<uint8_t> raw;     // rows * row_bytes
  std::vector<float> expected;  // rows * values
};

QuantVectors load_vectors(const std::string& name) {
  const std::string path = std::string(SINKROUTER_TEST_DATA) + "/quants/" + name + ".bin";
  std::ifstream in(path, std::ios::binary);
  SR_CHECK(in.good(), "{}: missing (tools/make_quant_vectors.py writes it)", path);
  char magic[4];
  uint32_t header[5];  // format, ggml type id, rows, values per row, bytes per row
  in.read(magic, 4);
  in.read(reinterpret_cast<char*>(header), sizeof header);
  SR_CHECK(in.good() && std::memcmp(magic, "SRQV", 4) == 0 && header[0] == 1,
           "{}: not a format-1 SRQV quant vector file", path);
  QuantVectors v;
  v.type_id = header[1];
  v.rows = header[2];
  v.values = header[3];
  v.row_bytes = header[4];
  v.raw.resize(size_t(v.rows) * v.row_bytes);
  v.expected.resize(size_t(v.rows) * v.values);
  in.read(reinterpret_cast<char*>(v.raw.data()), std::streamsize(v.raw.size()));
  in.read(reinterpret_cast<char*>(v.expected.data()), std::streamsize(v.expected.size() * 4));
  SR_CHECK(in.good() && in.peek() == EOF, "{}: size does not match its header", path);
  return v;
}

// Index of the first element whose bits differ, or -1.
int64_t first_mismatch(const float* got, const float* want, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (float_bits(got[i]) != float_bits(want[i])) return i;
  return -1;
}

struct QuantCase {
  const char* file;
  GGMLType type;
};

void PrintTo(const QuantCase& c, std::ostream* os) { *os << c.file; }

class QuantVectorsTest : public ::testing::TestWithParam<QuantCase> {};

TEST_P(QuantVectorsTest, EveryElementMatchesGgufPyBitForBit) {
  const QuantCase c = GetParam();
  const QuantVectors v = load_vectors(c.file);
  ASSERT_EQ(v.type_id, uint32_t(c.type));
  ASSERT_TRUE(ggml_type_supported(c.type));
  // Row size from gguf-py's writer agrees with our block table.
  ASSERT_EQ(ggml_row_bytes(c.type, v.values), int64_t(v.row_bytes)) << c.file;
  ASSERT_EQ(v.values % ggml_block_values(c.type), 0u);

  std::vector<float> out(v.values);
  for (uint32_t r = 0; r < v.rows; ++r) {
    std::fill(out.begin(), out.end(), std::numeric_limits<float>::quiet_NaN());  // poison
    dequantize_row(c.type, v.raw.data() + size_t(r) * v.row_bytes, out.data(), v.values);
    const float* want = v.expected.data() + size_t(r) * v.values;
    const int64_t bad = first_mismatch(out.data(), want, v.values);
    EXPECT_EQ(bad, -1) << c.file << " row " << r << " element " << bad << ": got " << out[size_t(bad)] << " want "
                       << want[bad];
  }

  // The scalar reference kernels (what runs without AVX2/F16C) must agree as well.
  for (uint32_t r = 0; r < v.rows; ++r) {
    std::fill(out.begin(), out.end(), std::numeric_limits<float>::quiet_NaN());
    detail::dequantize_row_scalar(c.type, v.raw.data() + size_t(r) * v.row_bytes, out.data(), v.values);
    const float* want = v.expected.data() + size_t(r) * v.values;
    const int64_t bad = first_mismatch(out.data(), want, v.values);
    EXPECT_EQ(bad, -1) << c.file << " (scalar) row " << r << " element " << bad;
  }

  // All rows in one call (many blocks), from a deliberately misaligned source pointer.
  std::vector<uint8_t> shifted(v.raw.size() + 1);
  std::memcpy(shifted.data() + 1, v.raw.data(), v.raw.size());
  std::vector<float> all(v.expected.size(), std::numeric_limits<float>::quiet_NaN());
  dequantize_row(c.type, shifted.data() + 1, all.data(), int64_t(all.size()));
  EXPECT_EQ(first_mismatch(all.data(), v.expected.data(), int64_t(all.size())), -1) << c.file << " (one call)";
}

INSTANTIATE_TEST_SUITE_P(
    AllSupportedTypes, QuantVectorsTest,
    ::testing::Values(QuantCase{"f32", GGMLType::F32}, QuantCase{"f16", GGMLType::F16},
                      QuantCase{"bf16", GGMLType::BF16}, QuantCase{"q4_0", GGMLType::Q4_0},
                      QuantCase{"q4_1", GGMLType::Q4_1}, QuantCase{"q5_0", GGMLType::Q5_0},
                      QuantCase{"q5_1", GGMLType::Q5_1}, QuantCase{"q8_0", GGMLType::Q8_0},
                      QuantCase{"q2_k", GGMLType::Q2_K}, QuantCase{"q3_k", GGMLType::Q3_K},
                      QuantCase{"q4_k", GGMLType::Q4_K}, QuantCase{"q5_k", GGMLType::Q5_K},
                      QuantCase{"q6_k", GGMLType::Q6_K}),
    [](const ::testing::TestParamInfo<QuantCase>& info) { return std::string(info.param.file); });

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(GGMLTypes, UnsupportedTypesAreSizedButNotDequantised) {
  // Sizes the reader needs to open such files (ggml-common.h block structs).
  struct Known {
    GGMLType type;
    const char* name;
    int64_t values, bytes;
  };
  for (const Known& k : {Known{GGMLType::Q8_1, "q8_1", 32, 36}, Known{GGMLType::Q8_K, "q8_K", 256, 292},
                         Known{GGMLType(16), "iq2_xxs", 256, 66}, Known{GGMLType::I8, "i8", 1, 1},
                         Known{GGMLType::F64, "f64", 1, 8}}) {
    SCOPED_TRACE(k.name);
    EXPECT_EQ(ggml_type_name(k.type), k.name);
    EXPECT_FALSE(ggml_type_supported(k.type));
    EXPECT_EQ(ggml_block_values(k.type), k.values);
    EXPECT_EQ(ggml_block_bytes(k.type), k.bytes);
    std::vector<uint8_t> block(size_t(k.bytes), 1);
    std::vector<float> out(size_t(k.values));
    const std::string msg = error_of([&] { dequantize_row(k.type, block.data(), out.data(), k.values); });
    EXPECT_NE(msg.find(std::string("ggml type ") + k.name), std::string::npos) << msg;
    EXPECT_NE(msg.find("not supported"), std::string::npos) << msg;
  }
}

TEST(GGMLTypes, UnknownIdsAndBadRowLengthsAreErrors) {
  EXPECT_EQ(ggml_type_name(GGMLType(17)), "iq2_xs");
  EXPECT_EQ(ggml_type_name(GGMLType(99)), "type 99");
  EXPECT_FALSE(ggml_type_supported(GGMLType(99)));
  EXPECT_NE(error_of([] { ggml_block_bytes(GGMLType(99)); }).find("ggml type id 99 has no known block layout"),
            std::string::npos);
  EXPECT_NE(error_of([] { ggml_row_bytes(GGMLType::Q4_K, 300); })
                .find("a row of 300 values is not a multiple of the q4_K block size 256"),
            std::string::npos);
  EXPECT_NE(error_of([] { ggml_row_bytes(GGMLType::Q8_0, -32); }).find("-32 values"), std::string::npos);
  EXPECT_NE(error_of([] { ggml_row_bytes(GGMLType::F64, std::numeric_limits<int64_t>::max()); }).find("overflows"),
            std::string::npos);
  std::vector<uint8_t> block(18, 3);
  float out[48];
  EXPECT_NE(error_of([&] { dequantize_row(GGMLType::Q4_0, block.data(), out, 48); })
                .find("48 values is not a multiple of the q4_0 block size 32"),
            std::string::npos);
  EXPECT_EQ(ggml_row_bytes(GGMLType::Q6_K, 512), 420);
  EXPECT_EQ(ggml_row_bytes(GGMLType::BF16, 7), 14);
}

TEST(GGMLTypes, SupportedListMatchesTheFlag) {
  const std::string list = detail::supported_type_list();
  for (uint32_t id = 0; id < 64; ++id) {
    const detail::GGMLTypeTraits* t = detail::find_ggml_type(id);
    if (t == nullptr) continue;
    const bool listed = (", " + list + ",").find(", " + std::string(t->name) + ",") != std::string::npos;
    EXPECT_EQ(listed, t->dequantize) << t->name;
    EXPECT_EQ(ggml_type_supported(GGMLType(id)), t->dequantize) << t->name;
  }
}

}  // namespace
}  // namespace sinkrouter
