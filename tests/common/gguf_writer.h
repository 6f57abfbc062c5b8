// A small GGUF writer for tests: builds well-formed v3 files for synthetic models and,
// since it validates nothing, broken ones for the hostile-input tests (raw fields, plus
// a layout of where each field landed so a test can patch bytes afterwards).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sinkrouter/model/gguf.h"

namespace sinkrouter::testing {

// Little-endian byte sink.
class ByteWriter {
 public:
  void u8(uint8_t v) { bytes_.push_back(v); }
  void u32(uint32_t v) { raw(&v, 4); }
  void u64(uint64_t v) { raw(&v, 8); }
  void str(const std::string& s) {
    u64(s.size());
    raw(s.data(), s.size());
  }
  void raw(const void* p, size_t n);
  void pad_to(uint64_t alignment);  // zero bytes up to the next multiple
  size_t size() const { return bytes_.size(); }
  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

// Overwrites 4 or 8 bytes at `at` (little-endian).
void patch_u32(std::vector<uint8_t>& bytes, size_t at, uint32_t v);
void patch_u64(std::vector<uint8_t>& bytes, size_t at, uint64_t v);

// One tensor as written. Fields are raw so tests can write impossible values.
struct GGUFTensorSpec {
  std::string name;
  std::vector<uint64_t> ne;  // n_dims = ne.size()
  uint32_t type = 0;         // ggml type id
  std::vector<uint8_t> data;
  std::optional<uint64_t> offset;  // written instead of the offset the layout computed
};

// Where build() put each field.
struct GGUFLayout {
  struct KV {
    size_t key_at, type_at, value_at;
  };
  struct Tensor {
    size_t info_at, n_dims_at, ne_at, type_at, offset_at, data_at;
  };
  std::vector<KV> kvs;
  std::vector<Tensor> tensors;
  size_t data_start = 0;
};

class GGUFBuilder {
 public:
  uint32_t version = 3;
  uint64_t alignment = 32;  // layout only: add "general.alignment" to the metadata to declare another
  std::vector<std::pair<std::string, GGUFValue>> metadata;
  std::vector<GGUFTensorSpec> tensors;

  GGUFBuilder& kv(const std::string& key, GGUFValue v);
  // Data must be ggml_row_bytes(type, ne[0]) * rows bytes (checked).
  GGUFBuilder& tensor(const std::string& name, GGMLType type, const std::vector<int64_t>& ne,
                      std::vector<uint8_t> data);
  GGUFBuilder& f32_tensor(const std::string& name, const std::vector<int64_t>& ne, const std::vector<float>& v);

  // Tensor data is placed at aligned offsets in order; no padding follows the last one,
  // so every strict prefix of the file cuts into some tensor.
  std::vector<uint8_t> build(GGUFLayout* layout = nullptr) const;
};

// GGUFValue makers.
GGUFValue gguf_uint(GGUFValue::Type t, uint64_t v);  // U8..U64
GGUFValue gguf_int(GGUFValue::Type t, int64_t v);    // I8..I64
GGUFValue gguf_u32(uint32_t v);
GGUFValue gguf_i32(int32_t v);
GGUFValue gguf_f32(float v);
GGUFValue gguf_f64(double v);
GGUFValue gguf_bool(bool v);
GGUFValue gguf_string(const std::string& s);
GGUFValue gguf_array(GGUFValue::Type element_type, std::vector<GGUFValue> items);
GGUFValue gguf_strings(const std::vector<std::string>& items);
GGUFValue gguf_i32s(const std::vector<int32_t>& items);

// Writes bytes to a fresh file under the temp directory; returns its path.
std::string write_temp_file(const std::string& stem, const std::vector<uint8_t>& bytes);

}  // namespace sinkrouter::testing
