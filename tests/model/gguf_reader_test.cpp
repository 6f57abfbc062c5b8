// GGUFFile on well-formed input: a file written by gguf-py's GGUFWriter (independent of
// our writer; tests/data/gguf/tiny.json says what it holds), and synthetic files from
// tests/common/gguf_writer.h covering every metadata type, nested arrays, v2, the typed
// getters and their errors. Tensor values are compared bit for bit.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include "common/gguf_writer.h"
#include "sinkrouter/core/dtype.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/model/gguf.h"

namespace sinkrouter {
namespace {

using testing::GGUFBuilder;
using VT = GGUFValue::Type;

const std::string kTinyPath = std::string(SINKROUTER_TEST_DATA) + "/gguf/tiny.gguf";

nlohmann::json load_json(const std::string& path) {
  std::ifstream in(path);
  SR_CHECK(in.good(), "{}: missing (tools/make_quant_vectors.py writes it)", path);
  return nlohmann::json::parse(in);
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Compares one metadata value with its description in tiny.json.
void expect_value(const GGUFValue& v, const nlohmann::json& want, const std::string& type, const std::string& key) {
  SCOPED_TRACE(key);
  ASSERT_STREQ(gguf_value_type_name(v.type), type.c_str());
  if (type == "string") {
    EXPECT_EQ(v.as_string(key), want.get<std::string>());
  } else if (type == "bool") {
    EXPECT_EQ(v.as_bool(key), want.get<bool>());
  } else if (type == "f32") {
    EXPECT_EQ(float(v.as_f64(key)), want.get<float>());  // the f32 in the file, exactly
  } else if (type == "f64") {
    EXPECT_EQ(v.as_f64(key), want.get<double>());
  } else if (type == "u64" || type == "u32" || type == "u16" || type == "u8") {
    EXPECT_EQ(v.as_u64(key), want.get<uint64_t>());
  } else if (type != "array") {
    EXPECT_EQ(v.as_i64(key), want.get<int64_t>());
  }
}

TEST(GGUFReader, OpensAFileWrittenByGgufPy) {
  const nlohmann::json want = load_json(std::string(SINKROUTER_TEST_DATA) + "/gguf/tiny.json");
  const GGUFFile f = GGUFFile::open(kTinyPath);
  EXPECT_EQ(f.path(), kTinyPath);
  EXPECT_EQ(f.version(), want["version"].get<uint32_t>());
  EXPECT_EQ(f.alignment(), want["alignment"].get<uint64_t>());
  EXPECT_EQ(f.file_size(), want["file_size"].get<uint64_t>());
  EXPECT_EQ(f.data_offset() % f.alignment(), 0u);

  // Metadata: same keys, same order, same types and values.
  ASSERT_EQ(f.metadata().size(), want["metadata"].size());
  for (size_t k = 0; k < f.metadata().size(); ++k) {
    const auto& [key, value] = f.metadata()[k];
    const nlohmann::json& w = want["metadata"][k];
    ASSERT_EQ(key, w["key"].get<std::string>());
    expect_value(value, w["value"], w["type"].get<std::string>(), key);
    EXPECT_EQ(&f.get(key), &value);
  }
  EXPECT_EQ(f.get("test.strings").as_strings(), want["metadata"][14]["value"].get<std::vector<std::string>>());
  EXPECT_EQ(f.get("test.i32s").as_ints(), want["metadata"][15]["value"].get<std::vector<int64_t>>());
  const std::vector<double> floats = f.get("test.f32s").as_floats();
  const auto want_floats = want["metadata"][16]["value"].get<std::vector<float>>();
  ASSERT_EQ(floats.size(), want_floats.size());
  for (size_t i = 0; i < floats.size(); ++i) EXPECT_EQ(float(floats[i]), want_floats[i]) << i;
  const GGUFValue& nested = f.get("test.nested");
  ASSERT_EQ(nested.array_type, VT::ARRAY);
  const auto want_nested = want["metadata"][17]["value"].get<std::vector<std::vector<int64_t>>>();
  ASSERT_EQ(nested.array.size(), want_nested.size());
  for (size_t i = 0; i < want_nested.size(); ++i) EXPECT_EQ(nested.array[i].as_ints(), want_nested[i]) << i;

  // Tensors: names, types, shapes, sizes, alignment, and every value bit for bit.
  ASSERT_EQ(f.tensors().size(), want["tensors"].size());
  for (size_t k = 0; k < f.tensors().size(); ++k) {
    const GGUFTensorInfo& t = f.tensors()[k];
    const nlohmann::json& w = want["tensors"][k];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, w["name"].get<std::string>());
    EXPECT_EQ(lower(ggml_type_name(t.type)), w["type"].get<std::string>());  // gguf-py: "Q4_K", ggml: "q4_K"
    EXPECT_EQ(uint32_t(t.type), w["type_id"].get<uint32_t>());
    EXPECT_EQ(t.ne, w["ne"].get<std::vector<int64_t>>());
    EXPECT_EQ(t.nbytes, w["nbytes"].get<uint64_t>());
    EXPECT_EQ(t.offset % f.alignment(), 0u);
    EXPECT_EQ(&f.tensor(t.name), &t);
    const auto values = w["values"].get<std::vector<float>>();
    ASSERT_EQ(int64_t(values.size()), t.numel());
    std::vector<float> out(size_t(t.ne[0]));
    const int64_t row_bytes = ggml_row_bytes(t.type, t.ne[0]);
    for (int64_t r = 0; r < t.rows(); ++r) {
      std::fill(out.begin(), out.end(), NAN);
      dequantize_row(t.type, t.data + r * row_bytes, out.data(), t.ne[0]);
      for (int64_t i = 0; i < t.ne[0]; ++i)
        ASSERT_EQ(float_bits(out[size_t(i)]), float_bits(values[size_t(r * t.ne[0] + i)]))
            << "row " << r << " element " << i;
    }
  }
  EXPECT_EQ(f.find_tensor("nope"), nullptr);
}

TEST(GGUFReader, FromBytesMatchesOpenAndCopiesOutliveTheOriginal) {
  std::ifstream in(kTinyPath, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const GGUFFile mapped = GGUFFile::open(kTinyPath);
  std::unique_ptr<GGUFFile> original = std::make_unique<GGUFFile>(GGUFFile::from_bytes(bytes.data(), bytes.size()));
  EXPECT_EQ(original->path(), "<memory>");
  std::fill(bytes.begin(), bytes.end(), 0xAB);  // from_bytes copied: scribbling on the source changes nothing
  const GGUFFile copy = *original;
  original.reset();
  ASSERT_EQ(copy.tensors().size(), mapped.tensors().size());
  for (size_t k = 0; k < copy.tensors().size(); ++k) {
    const GGUFTensorInfo &a = copy.tensors()[k], &b = mapped.tensors()[k];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.offset, b.offset);
    ASSERT_EQ(a.nbytes, b.nbytes);
    EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0) << a.name;
  }
  EXPECT_EQ(copy.get_string("general.architecture", ""), "llama");
}

// Random values of every type, nested arrays two levels deep, written and read back.
TEST(GGUFReader, SyntheticRoundTripOfEveryValueType) {
  std::mt19937_64 rng(7);
  GGUFBuilder b;
  const uint64_t u64 = rng();
  const int64_t i64 = -int64_t(rng() >> 2);
  const float f32 = std::uniform_real_distribution<float>(-1e3f, 1e3f)(rng);
  const double f64 = std::uniform_real_distribution<double>(-1e9, 1e9)(rng);
  b.kv("a.u8", testing::gguf_uint(VT::U8, 251))
      .kv("a.i8", testing::gguf_int(VT::I8, -117))
      .kv("a.u16", testing::gguf_uint(VT::U16, 65531))
      .kv("a.i16", testing::gguf_int(VT::I16, -32001))
      .kv("a.u32", testing::gguf_u32(4000000011u))
      .kv("a.i32", testing::gguf_i32(-2000000011))
      .kv("a.f32", testing::gguf_f32(f32))
      .kv("a.bool", testing::gguf_bool(true))
      .kv("a.string", testing::gguf_string(std::string("nul\0inside", 10)))
      .kv("a.u64", testing::gguf_uint(VT::U64, u64))
      .kv("a.i64", testing::gguf_int(VT::I64, i64))
      .kv("a.f64", testing::gguf_f64(f64))
      .kv("a.empty", testing::gguf_strings({}))
      .kv("a.nested", testing::gguf_array(VT::ARRAY, {testing::gguf_strings({"x", "yz"}),
                                                      testing::gguf_array(VT::ARRAY, {testing::gguf_i32s({-1, 2})})}));
  std::vector<float> w(3 * 5);
  for (float& x : w) x = std::normal_distribution<float>()(rng);
  b.f32_tensor("w", {5, 3}, w);
  b.version = 2;  // v2 has v3's layout: read as well
  const std::vector<uint8_t> bytes = b.build();
  const GGUFFile f = GGUFFile::from_bytes(bytes.data(), bytes.size(), "synthetic.gguf");
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.get("a.u8").as_u64(), 251u);
  EXPECT_EQ(f.get("a.i8").as_i64(), -117);
  EXPECT_EQ(f.get("a.u16").as_u64(), 65531u);
  EXPECT_EQ(f.get("a.i16").as_i64(), -32001);
  EXPECT_EQ(f.get("a.u32").as_u64(), 4000000011u);
  EXPECT_EQ(f.get("a.i32").as_i64(), -2000000011);
  EXPECT_EQ(float(f.get("a.f32").as_f64()), f32);
  EXPECT_TRUE(f.get("a.bool").as_bool());
  EXPECT_EQ(f.get("a.string").as_string(), std::string("nul\0inside", 10));
  EXPECT_EQ(f.get("a.u64").as_u64(), u64);
  EXPECT_EQ(f.get("a.i64").as_i64(), i64);
  EXPECT_EQ(f.get("a.f64").as_f64(), f64);
  EXPECT_TRUE(f.get("a.empty").as_strings().empty());
  const GGUFValue& nested = f.get("a.nested");
  ASSERT_EQ(nested.array.size(), 2u);
  EXPECT_EQ(nested.array[0].as_strings(), (std::vector<std::string>{"x", "yz"}));
  EXPECT_EQ(nested.array[1].array.at(0).as_ints(), (std::vector<int64_t>{-1, 2}));
  const GGUFTensorInfo& t = f.tensor("w");
  EXPECT_EQ(t.numel(), 15);
  EXPECT_EQ(t.rows(), 3);
  EXPECT_EQ(std::memcmp(t.data, w.data(), 60), 0);
}

TEST(GGUFReader, TypedGettersAndTheirErrors) {
  GGUFBuilder b;
  b.kv("n.u32", testing::gguf_u32(9))
      .kv("n.neg", testing::gguf_i32(-3))
      .kv("n.big", testing::gguf_uint(VT::U64, ~uint64_t(0)))
      .kv("n.f", testing::gguf_f32(0.5f))
      .kv("n.s", testing::gguf_string("llama"))
      .kv("n.ints", testing::gguf_i32s({4, 5}));
  b.f32_tensor("t", {2}, {1.f, 2.f});
  const std::vector<uint8_t> bytes = b.build();
  const GGUFFile f = GGUFFile::from_bytes(bytes.data(), bytes.size(), "getters.gguf");
  EXPECT_EQ(f.get_u64("n.u32", 1), 9u);
  EXPECT_EQ(f.get_u64("absent", 77), 77u);
  EXPECT_EQ(f.get_f64("n.u32", 0), 9.0);
  EXPECT_EQ(f.get_f64("n.f", 0), 0.5);
  EXPECT_EQ(f.get_f64("absent", 1.25), 1.25);
  EXPECT_EQ(f.get_string("n.s", ""), "llama");
  EXPECT_EQ(f.get_string("absent", "x"), "x");
  EXPECT_TRUE(f.has("n.s"));
  EXPECT_FALSE(f.has("absent"));
  EXPECT_EQ(f.find("absent"), nullptr);
  EXPECT_EQ(f.get("n.ints").as_floats(), (std::vector<double>{4, 5}));

  EXPECT_EQ(error_of([&] { f.get("absent"); }), "getters.gguf: missing metadata key 'absent'");
  EXPECT_EQ(error_of([&] { f.tensor("gone"); }), "getters.gguf: tensor 'gone' is missing");
  EXPECT_EQ(error_of([&] { f.get_string("n.u32", ""); }), "metadata key 'n.u32' has type u32 (expected string)");
  EXPECT_EQ(error_of([&] { f.get_u64("n.neg", 0); }), "metadata key 'n.neg' is -3 (expected a non-negative integer)");
  EXPECT_EQ(error_of([&] { f.get("n.big").as_i64("n.big"); }),
            "metadata key 'n.big' is 18446744073709551615 (expected at most 2^63-1)");
  EXPECT_EQ(error_of([&] { f.get_u64("n.s", 0); }), "metadata key 'n.s' has type string (expected an integer)");
  EXPECT_EQ(error_of([&] { f.get("n.ints").as_strings("n.ints"); }),
            "metadata key 'n.ints' has type array of i32 (expected array of string)");
  EXPECT_EQ(error_of([&] { f.get("n.f").as_bool(); }), "metadata value has type f32 (expected bool)");
}

TEST(GGUFReader, DisplayShortensLongArraysAndEscapesStrings) {
  std::vector<int32_t> many(1000);
  for (size_t i = 0; i < many.size(); ++i) many[i] = int32_t(i * 3);
  EXPECT_EQ(testing::gguf_i32s(many).to_display(4), "[0, 3, 6, 9, ... (1000 items)]");
  EXPECT_EQ(testing::gguf_i32s({1, 2}).to_display(4), "[1, 2]");
  EXPECT_EQ(testing::gguf_strings({"a\"b", "\n\x01"}).to_display(), "[\"a\\\"b\", \"\\n\\x01\"]");
  EXPECT_EQ(testing::gguf_f32(1e-5f).to_display(), "1e-05");
  EXPECT_EQ(testing::gguf_bool(false).to_display(), "false");
  const std::string display = testing::gguf_string(std::string(500, 'z')).to_display();
  EXPECT_EQ(display, "\"" + std::string(160, 'z') + "\"... (500 bytes)");
}

TEST(GGUFReader, UnsupportedTensorTypeStillOpens) {
  GGUFBuilder b;
  b.tensor("iq", GGMLType(16), {256, 2}, std::vector<uint8_t>(2 * 66, 0x5A));  // iq2_xxs
  b.f32_tensor("ok", {3}, {1.f, -2.f, 3.5f});
  const std::vector<uint8_t> bytes = b.build();
  const GGUFFile f = GGUFFile::from_bytes(bytes.data(), bytes.size(), "iq.gguf");
  const GGUFTensorInfo& t = f.tensor("iq");
  EXPECT_EQ(ggml_type_name(t.type), "iq2_xxs");
  EXPECT_EQ(t.nbytes, 132u);
  std::vector<float> out(256);
  EXPECT_NE(error_of([&] { dequantize_row(t.type, t.data, out.data(), 256); })
                .find("dequantize_row: ggml type iq2_xxs (id 16) is not supported"),
            std::string::npos);
  dequantize_row(f.tensor("ok").type, f.tensor("ok").data, out.data(), 3);
  EXPECT_EQ(out[1], -2.f);
}

TEST(GGUFReader, CustomAlignmentPlacesTheDataSection) {
  GGUFBuilder b;
  b.alignment = 256;
  b.kv("general.alignment", testing::gguf_u32(256));
  b.f32_tensor("a", {3}, {1, 2, 3});
  b.f32_tensor("b", {5}, {4, 5, 6, 7, 8});
  testing::GGUFLayout layout;
  const std::vector<uint8_t> bytes = b.build(&layout);
  const GGUFFile f = GGUFFile::from_bytes(bytes.data(), bytes.size());
  EXPECT_EQ(f.alignment(), 256u);
  EXPECT_EQ(layout.data_start % 256, 0u);
  EXPECT_EQ(f.tensor("b").offset, 256u);
  EXPECT_EQ(f.tensor("b").data - f.tensor("a").data, 256);
  float v;
  std::memcpy(&v, f.tensor("b").data + 16, 4);
  EXPECT_EQ(v, 8.f);
}

TEST(GGUFReader, OpenReportsMissingFilesAndDirectories) {
  EXPECT_NE(error_of([] { GGUFFile::open("/nonexistent/x.gguf"); }).find("/nonexistent/x.gguf: cannot open: No such file"),
            std::string::npos);
  EXPECT_NE(error_of([] { GGUFFile::open(SINKROUTER_TEST_DATA); }).find("not a regular file"), std::string::npos);
}

}  // namespace
}  // namespace sinkrouter
