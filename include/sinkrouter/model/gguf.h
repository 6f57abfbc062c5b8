// GGUF v3 reader: memory-mapped, every read bounds-checked. A truncated, corrupt or
// hostile file gets an Error that says what is wrong and where, never a crash.
// Facts: ../shared/REFERENCE.md section 1 (not in the repo; summarised in docs/GGUF.md).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace sinkrouter {

enum class GGMLType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, BF16 = 30,
};

// "q4_1", ...; "type 17" for ids we do not name.
std::string ggml_type_name(GGMLType t);
// True for the types whose rows dequantize_row() handles.
bool ggml_type_supported(GGMLType t);
// Values per block and bytes per block; throws Error for ids without a known block layout
// (types that are known but not dequantised, e.g. iq2_xxs, are sized: their files open).
int64_t ggml_block_values(GGMLType t);
int64_t ggml_block_bytes(GGMLType t);
// Bytes of a row of n values (n must be a multiple of the block size: Error otherwise).
int64_t ggml_row_bytes(GGMLType t, int64_t n);

// Dequantises n values (a multiple of the block size) of type t into float.
void dequantize_row(GGMLType t, const void* src, float* dst, int64_t n);

// One metadata value. Arrays hold their elements (nested arrays allowed).
struct GGUFValue {
  enum class Type : uint32_t {
    U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8,
    ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
  };
  Type type = Type::U8;
  Type array_type = Type::U8;  // element type when type == ARRAY
  uint64_t u = 0;              // unsigned integers and bool
  int64_t i = 0;               // signed integers
  double f = 0;                // floats
  std::string s;               // strings
  std::vector<GGUFValue> array;

  // Checked conversions; Error names the key and the actual type on mismatch.
  uint64_t as_u64(const std::string& key = "") const;  // any integer >= 0
  int64_t as_i64(const std::string& key = "") const;   // any integer in range
  double as_f64(const std::string& key = "") const;    // any number
  bool as_bool(const std::string& key = "") const;
  const std::string& as_string(const std::string& key = "") const;
  std::vector<std::string> as_strings(const std::string& key = "") const;  // ARRAY of STRING
  std::vector<int64_t> as_ints(const std::string& key = "") const;         // ARRAY of integers
  std::vector<double> as_floats(const std::string& key = "") const;        // ARRAY of numbers
  std::string to_display(size_t max_items = 8) const;  // for `sinkrouter inspect`
};

const char* gguf_value_type_name(GGUFValue::Type t);

struct GGUFTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // ne[0] is contiguous (an HF [out, in] weight has ne = {in, out})
  GGMLType type = GGMLType::F32;
  uint64_t offset = 0;          // from the start of the data section
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;

  int64_t numel() const;
  int64_t rows() const;  // numel / ne[0]
};

class GGUFFile {
 public:
  // Maps the file read-only and validates the header, metadata, tensor table, alignment
  // and that every tensor's bytes lie inside the file.
  static GGUFFile open(const std::string& path);
  // The same from a buffer (tests, the fuzzer); the buffer is copied.
  static GGUFFile from_bytes(const uint8_t* data, size_t size, const std::string& name = "<memory>");

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t file_size() const { return size_; }
  // File offset of the data section (tensor offsets count from here).
  uint64_t data_offset() const { return data_offset_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, GGUFValue>>& metadata() const { return metadata_; }
  bool has(const std::string& key) const;
  const GGUFValue& get(const std::string& key) const;  // Error "missing metadata key ..."
  const GGUFValue* find(const std::string& key) const;
  // Typed getters with defaults when the key is absent.
  uint64_t get_u64(const std::string& key, uint64_t fallback) const;
  double get_f64(const std::string& key, double fallback) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;

  const std::vector<GGUFTensorInfo>& tensors() const { return tensors_; }
  const GGUFTensorInfo* find_tensor(const std::string& name) const;
  const GGUFTensorInfo& tensor(const std::string& name) const;  // Error "tensor ... is missing"

 private:
  struct Mapping;
  // Validates and indexes bytes [data, data + size), which mapping_ keeps alive.
  void parse(const uint8_t* data, uint64_t size);

  std::shared_ptr<Mapping> mapping_;
  std::string path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t size_ = 0;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GGUFValue>> metadata_;
  std::map<std::string, size_t> metadata_index_;
  std::vector<GGUFTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// SHA-256 of a file, hex (the model is checked before use).
std::string sha256_file(const std::string& path);

}  // namespace sinkrouter
