// The real default model, models/SmolLM2-135M-Instruct.Q4_1.gguf (tools/fetch_model.sh;
// `make` fetches it before the tests): hyper-parameters, tensor types and shapes, and
// dequantised rows compared with gguf-py's (tests/data/gguf/smollm2_rows.json, made by
// tools/make_quant_vectors.py). Skipped, saying so, when the file is absent.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "sinkrouter/core/dtype.h"
#include "sinkrouter/model/gguf.h"

namespace sinkrouter {
namespace {

const std::string kModel = std::string(SINKROUTER_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";

#define SKIP_WITHOUT_MODEL()                                                                               \
  if (!std::filesystem::exists(kModel))                                                                    \
  GTEST_SKIP() << kModel << " is absent: run tools/fetch_model.sh (make fetches it before the tests)"

TEST(SmolLM2File, HyperParametersAndTensorTypes) {
  SKIP_WITHOUT_MODEL();
  const GGUFFile f = GGUFFile::open(kModel);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.get_string("general.architecture", ""), "llama");
  EXPECT_EQ(f.get_u64("llama.block_count", 0), 30u);
  EXPECT_EQ(f.get_u64("llama.embedding_length", 0), 576u);
  EXPECT_EQ(f.get_u64("llama.feed_forward_length", 0), 1536u);
  EXPECT_EQ(f.get_u64("llama.attention.head_count", 0), 9u);
  EXPECT_EQ(f.get_u64("llama.attention.head_count_kv", 0), 3u);
  EXPECT_EQ(f.get_u64("llama.vocab_size", 0), 49152u);
  EXPECT_EQ(f.get_f64("llama.rope.freq_base", 0), 100000.0);
  EXPECT_EQ(float(f.get_f64("llama.attention.layer_norm_rms_epsilon", 0)), 1e-5f);
  EXPECT_EQ(f.get_u64("general.file_type", 0), 3u);  // mostly q4_1
  EXPECT_EQ(f.get("tokenizer.ggml.tokens").as_strings().size(), 49152u);
  EXPECT_EQ(f.get("tokenizer.ggml.token_type").as_ints().size(), 49152u);
  EXPECT_EQ(f.get_string("tokenizer.ggml.model", ""), "gpt2");

  // 2 global tensors + 9 per layer; output.weight absent (tied to token_embd).
  EXPECT_EQ(f.tensors().size(), 2u + 30u * 9u);
  EXPECT_EQ(f.find_tensor("output.weight"), nullptr);
  const GGUFTensorInfo& emb = f.tensor("token_embd.weight");
  EXPECT_EQ(emb.type, GGMLType::Q8_0);
  EXPECT_EQ(emb.ne, (std::vector<int64_t>{576, 49152}));
  EXPECT_EQ(f.tensor("output_norm.weight").type, GGMLType::F32);
  struct Expect {
    const char* suffix;
    GGMLType type;
    std::vector<int64_t> ne;
  };
  const Expect per_layer[] = {
      {"attn_norm.weight", GGMLType::F32, {576}},        {"ffn_norm.weight", GGMLType::F32, {576}},
      {"attn_q.weight", GGMLType::Q4_1, {576, 576}},     {"attn_k.weight", GGMLType::Q4_1, {576, 192}},
      {"attn_v.weight", GGMLType::Q4_1, {576, 192}},     {"attn_output.weight", GGMLType::Q4_1, {576, 576}},
      {"ffn_gate.weight", GGMLType::Q4_1, {576, 1536}},  {"ffn_up.weight", GGMLType::Q4_1, {576, 1536}},
      {"ffn_down.weight", GGMLType::Q4_1, {1536, 576}},
  };
  for (int layer = 0; layer < 30; ++layer) {
    for (const Expect& e : per_layer) {
      const std::string name = "blk." + std::to_string(layer) + "." + e.suffix;
      const GGUFTensorInfo& t = f.tensor(name);
      EXPECT_EQ(t.type, e.type) << name;
      EXPECT_EQ(t.ne, e.ne) << name;
      EXPECT_EQ(t.nbytes, uint64_t(ggml_row_bytes(t.type, t.ne[0]) * t.rows())) << name;
    }
  }
}

// Row slices (first and last 32 values) bit for bit, and the whole row's sum, against gguf-py.
TEST(SmolLM2File, DequantisedRowsMatchGgufPy) {
  SKIP_WITHOUT_MODEL();
  std::ifstream in(std::string(SINKROUTER_TEST_DATA) + "/gguf/smollm2_rows.json");
  ASSERT_TRUE(in.good()) << "tests/data/gguf/smollm2_rows.json missing";
  const nlohmann::json want = nlohmann::json::parse(in);
  const GGUFFile f = GGUFFile::open(kModel);
  ASSERT_GE(want["rows"].size(), 6u);
  for (const nlohmann::json& w : want["rows"]) {
    const std::string name = w["tensor"].get<std::string>();
    const int64_t row = w["row"].get<int64_t>();
    SCOPED_TRACE(name + " row " + std::to_string(row));
    const GGUFTensorInfo& t = f.tensor(name);
    ASSERT_EQ(t.ne[0], w["ne0"].get<int64_t>());
    ASSERT_LT(row, t.rows());
    std::vector<float> out(size_t(t.ne[0]), NAN);
    dequantize_row(t.type, t.data + row * ggml_row_bytes(t.type, t.ne[0]), out.data(), t.ne[0]);
    const auto head = w["head"].get<std::vector<float>>();
    const auto tail = w["tail"].get<std::vector<float>>();
    for (size_t i = 0; i < head.size(); ++i) ASSERT_EQ(float_bits(out[i]), float_bits(head[i])) << "element " << i;
    const size_t tail_at = out.size() - tail.size();
    for (size_t i = 0; i < tail.size(); ++i)
      ASSERT_EQ(float_bits(out[tail_at + i]), float_bits(tail[i])) << "element " << tail_at + i;
    // Every element enters the sum; float64 sums in different orders differ by ~n*2^-53*sum|x|.
    double sum = 0, sum_abs = 0;
    for (float x : out) {
      ASSERT_TRUE(std::isfinite(x));
      sum += x;
      sum_abs += std::fabs(x);
    }
    EXPECT_NEAR(sum, w["sum"].get<double>(), 1e-12 * sum_abs + 1e-30);
  }
}

TEST(SmolLM2File, ChecksumMatchesTheFetchedOne) {
  SKIP_WITHOUT_MODEL();
  std::ifstream in(kModel + ".sha256");
  if (!in.good()) GTEST_SKIP() << kModel << ".sha256 is absent (tools/fetch_model.sh writes it)";
  std::string want;
  in >> want;
  EXPECT_EQ(sha256_file(kModel), want);
}

}  // namespace
}  // namespace sinkrouter
