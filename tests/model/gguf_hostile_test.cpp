// GGUFFile on truncated, corrupt and hostile input: every case must throw
// sinkrouter::Error with a message naming the file, the key or tensor, the offset and
// what was expected -- never crash, never allocate what a count merely claims.
// Files are made with tests/common/gguf_writer.h and patched at the recorded offsets.
#include <gtest/gtest.h>

#include <fstream>
#include <limits>
#include <random>

#include "common/gguf_writer.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/model/gguf.h"

namespace sinkrouter {
namespace {

using testing::GGUFBuilder;
using testing::GGUFLayout;
using testing::patch_u32;
using testing::patch_u64;
using VT = GGUFValue::Type;

constexpr uint64_t kHuge = uint64_t(1) << 60;

// The error message of opening `bytes`, or "<opened>". Any exception other than
// sinkrouter::Error (bad_alloc, length_error...) escapes and fails the test.
std::string open_error(const std::vector<uint8_t>& bytes, const std::string& name = "bad.gguf") {
  try {
    GGUFFile::from_bytes(bytes.data(), bytes.size(), name);
  } catch (const Error& e) {
    return e.what();
  }
  return "<opened>";
}

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "message: " << (haystack)

GGUFValue nested_i32(int levels) {
  if (levels == 1) return testing::gguf_i32s({1, 2});
  return testing::gguf_array(VT::ARRAY, {nested_i32(levels - 1)});
}

// A small valid model: metadata of several types (strings, arrays, a nested array) and
// tensors of three types. Indices used below: kv 4 = tokens, tensor 1 = "emb".
GGUFBuilder small_model() {
  std::mt19937 rng(11);
  auto random_bytes = [&](size_t n) {
    std::vector<uint8_t> v(n);
    for (uint8_t& b : v) b = uint8_t(rng());
    return v;
  };
  GGUFBuilder b;
  b.kv("general.architecture", testing::gguf_string("llama"))
      .kv("general.alignment", testing::gguf_u32(32))
      .kv("llama.block_count", testing::gguf_u32(1))
      .kv("llama.rope.freq_base", testing::gguf_f32(10000.f))
      .kv("tokenizer.ggml.tokens", testing::gguf_strings({"<s>", "a", "bc"}))
      .kv("tokenizer.ggml.token_type", testing::gguf_i32s({3, 1, 1}))
      .kv("x.nested", nested_i32(3))
      .kv("x.flag", testing::gguf_bool(true))
      .kv("x.f64", testing::gguf_f64(-0.25));
  std::vector<float> norm(7);
  for (float& x : norm) x = std::uniform_real_distribution<float>(0.5f, 1.5f)(rng);
  b.f32_tensor("norm.weight", {7}, norm);
  b.tensor("emb.weight", GGMLType::Q8_0, {32, 3}, random_bytes(3 * 34));
  b.tensor("blk.0.attn_q.weight", GGMLType::Q4_K, {256, 1}, random_bytes(144));
  return b;
}

TEST(GGUFHostile, EmptyFileAndWrongMagic) {
  EXPECT_EQ(open_error({}, "x.gguf"), "x.gguf: empty file (expected a GGUF file, which starts with the magic \"GGUF\")");
  const std::string empty_path = testing::write_temp_file("empty.gguf", {});
  EXPECT_HAS(open_error({}, empty_path), empty_path + ": empty file");
  try {  // through open() and the mmap path too
    GGUFFile::open(empty_path);
    FAIL() << "empty file opened";
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "empty file");
  }
  std::vector<uint8_t> bytes = small_model().build();
  bytes[3] = 'X';
  EXPECT_EQ(open_error(bytes),
            "bad.gguf: not a GGUF file: the magic at offset 0 is 47 47 55 58 (expected 47 47 55 46, \"GGUF\")");
  EXPECT_HAS(open_error({'G', 'G'}), "magic at offset 0 needs 4 bytes but the file ends after 2 (size 2)");
}

TEST(GGUFHostile, VersionsOtherThanTwoAndThree) {
  std::vector<uint8_t> bytes = small_model().build();
  patch_u32(bytes, 4, 1);
  EXPECT_HAS(open_error(bytes), "bad.gguf: header: GGUF version 1 at offset 4 is not supported (expected version 3");
  patch_u32(bytes, 4, 0x03000000u);
  EXPECT_HAS(open_error(bytes), "a big-endian GGUF (expected a little-endian file)");
  patch_u32(bytes, 4, 4);
  EXPECT_HAS(open_error(bytes), "unsupported GGUF version 4 at offset 4 (expected 3)");
}

// Every strict prefix of a valid file must fail cleanly; the whole file must open.
TEST(GGUFHostile, TruncatedAtEveryByteOffset) {
  const std::vector<uint8_t> bytes = small_model().build();
  for (size_t n = 0; n < bytes.size(); ++n) {
    const std::string msg = open_error(std::vector<uint8_t>(bytes.begin(), bytes.begin() + long(n)));
    ASSERT_NE(msg, "<opened>") << "prefix of " << n << " of " << bytes.size() << " bytes opened";
    ASSERT_EQ(msg.rfind("bad.gguf: ", 0), 0u) << msg;
  }
  const GGUFFile f = GGUFFile::from_bytes(bytes.data(), bytes.size());
  EXPECT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.metadata().size(), 9u);

  // The same over gguf-py's file, whose last tensor is followed by padding: every prefix
  // that cuts into the header, metadata, tensor infos or tensor data fails; the trailing
  // padding is optional.
  std::ifstream in(std::string(SINKROUTER_TEST_DATA) + "/gguf/tiny.gguf", std::ios::binary);
  const std::vector<uint8_t> tiny((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const GGUFFile t = GGUFFile::from_bytes(tiny.data(), tiny.size());
  uint64_t data_end = 0;
  for (const GGUFTensorInfo& info : t.tensors()) data_end = std::max(data_end, info.offset + info.nbytes);
  data_end += t.data_offset();
  ASSERT_LT(data_end, tiny.size());  // there is padding to test
  for (size_t n = 0; n < tiny.size(); ++n) {
    const std::string msg = open_error(std::vector<uint8_t>(tiny.begin(), tiny.begin() + long(n)));
    if (n < data_end)
      ASSERT_EQ(msg.rfind("bad.gguf: ", 0), 0u) << "prefix of " << n << " bytes: " << msg;
    else
      ASSERT_EQ(msg, "<opened>") << "prefix of " << n << " bytes";
  }
}

TEST(GGUFHostile, HugeCountsAreRejectedBeforeAllocating) {
  GGUFLayout lay;
  const std::vector<uint8_t> good = small_model().build(&lay);
  std::vector<uint8_t> bytes = good;
  patch_u64(bytes, 16, kHuge);
  EXPECT_HAS(open_error(bytes), "bad.gguf: header: metadata count 1152921504606846976 at offset 16 cannot fit in");
  bytes = good;
  patch_u64(bytes, 8, kHuge);
  EXPECT_HAS(open_error(bytes), "bad.gguf: header: tensor count 1152921504606846976 at offset 8 cannot fit in");
  bytes = good;
  patch_u64(bytes, 8, 4);  // one tensor more than there is: its info runs into the data section
  EXPECT_HAS(open_error(bytes), "bad.gguf: tensor");
  bytes = good;
  const size_t count_at = lay.kvs[4].value_at + 4;  // tokens: u32 element type, then u64 count
  patch_u64(bytes, count_at, kHuge);
  EXPECT_HAS(open_error(bytes), fmt::format("bad.gguf: metadata key 'tokenizer.ggml.tokens': array of {} string "
                                            "elements at offset {} needs at least 8 bytes each",
                                            kHuge, lay.kvs[4].value_at));
  patch_u64(bytes, count_at, ~uint64_t(0));
  EXPECT_HAS(open_error(bytes), "array of 18446744073709551615 string elements");
}

TEST(GGUFHostile, ArrayElementBudget) {
  // 2^24 + 1 one-byte elements fit in the file but exceed the metadata element limit.
  GGUFBuilder b;
  b.kv("big", testing::gguf_array(VT::U8, {}));
  GGUFLayout lay;
  std::vector<uint8_t> bytes = b.build(&lay);
  const uint64_t n = (uint64_t(1) << 24) + 1;
  patch_u64(bytes, lay.kvs[0].value_at + 4, n);
  bytes.resize(bytes.size() + n, 7);
  EXPECT_HAS(open_error(bytes), "metadata key 'big': array of 16777217 elements at offset");
  EXPECT_HAS(open_error(bytes), "exceeds the limit of 16777216 array elements");
}

TEST(GGUFHostile, HugeStringLengths) {
  GGUFLayout lay;
  const std::vector<uint8_t> good = small_model().build(&lay);
  std::vector<uint8_t> bytes = good;
  patch_u64(bytes, lay.kvs[0].key_at, uint64_t(1) << 63);  // key length
  EXPECT_HAS(open_error(bytes), fmt::format("bad.gguf: metadata entry 0 of 9: key at offset {} is {} bytes long "
                                            "(expected at most 65535)", lay.kvs[0].key_at, uint64_t(1) << 63));
  bytes = good;
  patch_u64(bytes, lay.kvs[0].value_at, ~uint64_t(0));  // the architecture string's length
  EXPECT_HAS(open_error(bytes), fmt::format("metadata key 'general.architecture': string value at offset {} is "
                                            "18446744073709551615 bytes long but only",
                                            lay.kvs[0].value_at));
  bytes = good;
  patch_u64(bytes, lay.tensors[1].info_at, 1000);  // tensor name length
  EXPECT_HAS(open_error(bytes), fmt::format("tensor info 1 of 3: tensor name at offset {} is 1000 bytes long "
                                            "(expected at most 256)", lay.tensors[1].info_at));
  bytes = good;
  patch_u64(bytes, lay.tensors[1].info_at, 200);  // long but allowed: runs into the following fields instead
  EXPECT_HAS(open_error(bytes), "bad.gguf: tensor");
}

TEST(GGUFHostile, BadMetadataTypeIds) {
  GGUFLayout lay;
  const std::vector<uint8_t> good = small_model().build(&lay);
  for (uint32_t bad : {13u, 99u, 0xFFFFFFFFu}) {
    std::vector<uint8_t> bytes = good;
    patch_u32(bytes, lay.kvs[2].type_at, bad);
    EXPECT_HAS(open_error(bytes), fmt::format("metadata key 'llama.block_count': value type {} at offset {} is not "
                                              "a GGUF value type (expected 0 to 12)", bad, lay.kvs[2].type_at));
    bytes = good;
    patch_u32(bytes, lay.kvs[5].value_at, bad);  // token_type's element type
    EXPECT_HAS(open_error(bytes), fmt::format("array element type {} at offset {}", bad, lay.kvs[5].value_at));
  }
  std::vector<uint8_t> bytes = good;
  bytes[lay.kvs[7].value_at] = 2;  // bool
  EXPECT_HAS(open_error(bytes), fmt::format("metadata key 'x.flag': bool value 2 at offset {} (expected 0 or 1)",
                                            lay.kvs[7].value_at));
}

TEST(GGUFHostile, AlignmentMustBeAU32PowerOfTwo) {
  GGUFLayout lay;
  for (uint32_t bad : {0u, 3u, 48u}) {
    GGUFBuilder b = small_model();
    b.metadata[1].second = testing::gguf_u32(bad);
    const std::vector<uint8_t> bytes = b.build(&lay);
    EXPECT_EQ(open_error(bytes), fmt::format("bad.gguf: metadata key 'general.alignment' at offset {} is {} "
                                             "(expected a power of two)", lay.kvs[1].key_at, bad));
  }
  GGUFBuilder b = small_model();
  b.metadata[1].second = testing::gguf_uint(VT::U64, 32);
  const std::vector<uint8_t> bytes = b.build(&lay);
  EXPECT_EQ(open_error(bytes), fmt::format("bad.gguf: metadata key 'general.alignment' at offset {} has type u64 "
                                           "(expected u32)", lay.kvs[1].key_at));
}

TEST(GGUFHostile, BadTensorTypesAndShapes) {
  GGUFLayout lay;
  const std::vector<uint8_t> good = small_model().build(&lay);
  const auto& emb = lay.tensors[1];
  for (uint32_t bad : {31u, 99u, 0x80000000u}) {
    std::vector<uint8_t> bytes = good;
    patch_u32(bytes, emb.type_at, bad);
    EXPECT_HAS(open_error(bytes), fmt::format("bad.gguf: tensor 'emb.weight': ggml type id {} at offset {} has no "
                                              "known block layout", bad, emb.type_at));
  }
  for (uint32_t bad : {0u, 5u, 0xFFFFFFFFu}) {
    std::vector<uint8_t> bytes = good;
    patch_u32(bytes, emb.n_dims_at, bad);
    EXPECT_HAS(open_error(bytes), fmt::format("tensor 'emb.weight': n_dims {} at offset {} (expected 1 to 4)", bad,
                                              emb.n_dims_at));
  }
  std::vector<uint8_t> bytes = good;
  patch_u64(bytes, emb.ne_at + 8, 0);
  EXPECT_HAS(open_error(bytes), fmt::format("tensor 'emb.weight': ne[1] = 0 at offset {} (expected 1 to 2^63-1)",
                                            emb.ne_at + 8));
  patch_u64(bytes, emb.ne_at + 8, uint64_t(1) << 63);
  EXPECT_HAS(open_error(bytes), "ne[1] = 9223372036854775808");
  bytes = good;
  patch_u64(bytes, emb.ne_at, 48);  // q8_0 blocks are 32 values
  EXPECT_HAS(open_error(bytes), "tensor 'emb.weight': ne[0] = 48 is not a multiple of the q8_0 block size 32");

  // Shapes whose element count or byte count overflows 64 bits.
  GGUFBuilder b;
  b.tensors.push_back({"big", {uint64_t(1) << 32, uint64_t(1) << 32}, uint32_t(GGMLType::F32), {}, {}});
  EXPECT_HAS(open_error(b.build()), "tensor 'big': shape [4294967296, 4294967296]... at offset");
  EXPECT_HAS(open_error(b.build()), "has more than 2^63-1 elements");
  b.tensors[0].ne = {uint64_t(1) << 61};
  b.tensors[0].type = uint32_t(GGMLType::F64);
  EXPECT_HAS(open_error(b.build()), "tensor 'big': f64 [2305843009213693952] tensor data size overflows 64 bits");
  // Shapes that are valid but far larger than the file.
  b.tensors[0].ne = {uint64_t(1) << 40, 3};
  b.tensors[0].type = uint32_t(GGMLType::F16);
  EXPECT_HAS(open_error(b.build()), "tensor 'big' data [offset 96, 6597069766656 bytes] runs past the end of the file");
}

TEST(GGUFHostile, MisalignedOffsetAndDataPastTheEnd) {
  GGUFLayout lay;
  const std::vector<uint8_t> good = small_model().build(&lay);
  const auto& emb = lay.tensors[1];
  std::vector<uint8_t> bytes = good;
  patch_u64(bytes, emb.offset_at, 40);
  EXPECT_EQ(open_error(bytes), "bad.gguf: tensor 'emb.weight': data offset 40 is not a multiple of the alignment 32");
  patch_u64(bytes, emb.offset_at, 1 << 20);
  EXPECT_EQ(open_error(bytes), fmt::format("bad.gguf: tensor 'emb.weight' data [offset {}, 102 bytes] runs past the "
                                           "end of the file (size {})", lay.data_start + (1 << 20), good.size()));
  patch_u64(bytes, emb.offset_at, ~uint64_t(31));  // aligned, but data_start + offset wraps around
  EXPECT_EQ(open_error(bytes), fmt::format("bad.gguf: tensor 'emb.weight' data [offset {} + {}, 102 bytes] runs past "
                                           "the end of the file (size {})", lay.data_start, ~uint64_t(31), good.size()));
  bytes = good;
  bytes.pop_back();  // the last tensor loses its last byte
  EXPECT_EQ(open_error(bytes), fmt::format("bad.gguf: tensor 'blk.0.attn_q.weight' data [offset {}, 144 bytes] runs "
                                           "past the end of the file (size {})", lay.tensors[2].data_at, bytes.size()));
}

TEST(GGUFHostile, DuplicateAndEmptyNames) {
  GGUFBuilder b = small_model();
  b.metadata[3].first = "llama.block_count";
  GGUFLayout lay;
  std::vector<uint8_t> bytes = b.build(&lay);
  EXPECT_EQ(open_error(bytes), fmt::format("bad.gguf: metadata key 'llama.block_count': duplicate key at offset {} "
                                           "(first defined at offset {})", lay.kvs[3].key_at, lay.kvs[2].key_at));
  b = small_model();
  b.tensors[2].name = "emb.weight";
  bytes = b.build(&lay);
  EXPECT_EQ(open_error(bytes), fmt::format("bad.gguf: tensor 'emb.weight': duplicate tensor name at offset {} "
                                           "(first defined at offset {})", lay.tensors[2].info_at,
                                           lay.tensors[1].info_at));
  b = small_model();
  b.metadata[0].first = "";
  EXPECT_HAS(open_error(b.build(&lay)), "metadata entry 0 of 9: empty key at offset 24");
  b = small_model();
  b.tensors[0].name = "";
  EXPECT_HAS(open_error(b.build(&lay)), fmt::format("tensor info 0 of 3: empty tensor name at offset {}",
                                                    lay.tensors[0].info_at));
}

TEST(GGUFHostile, NestedArraysAreBoundedInDepth) {
  GGUFBuilder b;
  b.kv("deep", nested_i32(8));  // 8 levels of arrays: read
  const std::vector<uint8_t> ok = b.build();
  const GGUFFile f = GGUFFile::from_bytes(ok.data(), ok.size());
  const GGUFValue* v = &f.get("deep");
  for (int level = 1; level < 8; ++level) v = &v->array.at(0);
  EXPECT_EQ(v->as_ints(), (std::vector<int64_t>{1, 2}));
  b.metadata[0].second = nested_i32(9);  // 9 levels: refused (bounded recursion)
  EXPECT_HAS(open_error(b.build()), "bad.gguf: metadata key 'deep': arrays nested more than 8 levels deep at offset");
  // A hostile file claiming 2^60 nested arrays, each claiming 2^60 more.
  testing::ByteWriter w;
  w.raw("GGUF", 4);
  w.u32(3);
  w.u64(0);
  w.u64(1);
  w.str("x");
  w.u32(uint32_t(VT::ARRAY));
  for (int k = 0; k < 100; ++k) {
    w.u32(uint32_t(VT::ARRAY));
    w.u64(kHuge);
  }
  EXPECT_HAS(open_error(w.bytes()), "array of 1152921504606846976 array elements at offset 37 needs at least 12 bytes");
}

// Random corruption of a valid file: whatever happens, it is an Error or a clean open.
TEST(GGUFHostile, RandomByteCorruptionNeverCrashes) {
  const std::vector<uint8_t> good = small_model().build();
  std::mt19937_64 rng(2024);
  int opened = 0, failed = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<uint8_t> bytes = good;
    const int flips = 1 + int(rng() % 4);
    for (int k = 0; k < flips; ++k) bytes[rng() % bytes.size()] = uint8_t(rng());
    const std::string msg = open_error(bytes);
    (msg == "<opened>" ? opened : failed)++;
    if (msg != "<opened>") ASSERT_EQ(msg.rfind("bad.gguf: ", 0), 0u) << msg;
  }
  EXPECT_GT(failed, 0);
  EXPECT_GT(opened, 0);  // flips inside tensor data are harmless
}

}  // namespace
}  // namespace sinkrouter
