#include "gguf_writer.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "sinkrouter/core/error.h"

namespace sinkrouter::testing {
namespace {

using VT = GGUFValue::Type;

// Writes v's payload as type t (array elements are written as the array's element type).
void write_value(ByteWriter& w, VT t, const GGUFValue& v) {
  switch (t) {
    case VT::U8: w.u8(uint8_t(v.u)); break;
    case VT::I8: w.u8(uint8_t(v.i)); break;
    case VT::U16: { uint16_t x = uint16_t(v.u); w.raw(&x, 2); break; }
    case VT::I16: { int16_t x = int16_t(v.i); w.raw(&x, 2); break; }
    case VT::U32: w.u32(uint32_t(v.u)); break;
    case VT::I32: w.u32(uint32_t(int32_t(v.i))); break;
    case VT::U64: w.u64(v.u); break;
    case VT::I64: w.u64(uint64_t(v.i)); break;
    case VT::F32: { float x = float(v.f); w.raw(&x, 4); break; }
    case VT::F64: w.raw(&v.f, 8); break;
    case VT::BOOL: w.u8(uint8_t(v.u)); break;
    case VT::STRING: w.str(v.s); break;
    case VT::ARRAY:
      w.u32(uint32_t(v.array_type));
      w.u64(v.array.size());
      for (const GGUFValue& e : v.array) write_value(w, v.array_type, e);
      break;
    default: break;  // an invalid type id written on purpose: no payload
  }
}

}  // namespace

void ByteWriter::raw(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  bytes_.insert(bytes_.end(), b, b + n);
}

void ByteWriter::pad_to(uint64_t alignment) {
  while (bytes_.size() % alignment != 0) bytes_.push_back(0);
}

void patch_u32(std::vector<uint8_t>& bytes, size_t at, uint32_t v) { std::memcpy(bytes.data() + at, &v, 4); }
void patch_u64(std::vector<uint8_t>& bytes, size_t at, uint64_t v) { std::memcpy(bytes.data() + at, &v, 8); }

GGUFBuilder& GGUFBuilder::kv(const std::string& key, GGUFValue v) {
  metadata.emplace_back(key, std::move(v));
  return *this;
}

GGUFBuilder& GGUFBuilder::tensor(const std::string& name, GGMLType type, const std::vector<int64_t>& ne,
                                 std::vector<uint8_t> data) {
  int64_t rows = 1;
  for (size_t d = 1; d < ne.size(); ++d) rows *= ne[d];
  const int64_t want = ggml_row_bytes(type, ne.at(0)) * rows;
  SR_CHECK(int64_t(data.size()) == want, "GGUFBuilder: tensor '{}' has {} bytes of data (expected {})", name,
           data.size(), want);
  tensors.push_back({name, std::vector<uint64_t>(ne.begin(), ne.end()), uint32_t(type), std::move(data), {}});
  return *this;
}

GGUFBuilder& GGUFBuilder::f32_tensor(const std::string& name, const std::vector<int64_t>& ne,
                                     const std::vector<float>& v) {
  std::vector<uint8_t> data(v.size() * 4);
  std::memcpy(data.data(), v.data(), data.size());
  return tensor(name, GGMLType::F32, ne, std::move(data));
}

std::vector<uint8_t> GGUFBuilder::build(GGUFLayout* layout) const {
  GGUFLayout lay;
  ByteWriter w;
  w.raw("GGUF", 4);
  w.u32(version);
  w.u64(tensors.size());
  w.u64(metadata.size());
  for (const auto& [key, value] : metadata) {
    GGUFLayout::KV k{w.size(), 0, 0};
    w.str(key);
    k.type_at = w.size();
    w.u32(uint32_t(value.type));
    k.value_at = w.size();
    write_value(w, value.type, value);
    lay.kvs.push_back(k);
  }
  uint64_t next_offset = 0;
  std::vector<uint64_t> offsets;
  for (const GGUFTensorSpec& t : tensors) {
    GGUFLayout::Tensor l{w.size(), 0, 0, 0, 0, 0};
    w.str(t.name);
    l.n_dims_at = w.size();
    w.u32(uint32_t(t.ne.size()));
    l.ne_at = w.size();
    for (uint64_t n : t.ne) w.u64(n);
    l.type_at = w.size();
    w.u32(t.type);
    l.offset_at = w.size();
    w.u64(t.offset.value_or(next_offset));
    offsets.push_back(next_offset);
    next_offset = (next_offset + t.data.size() + alignment - 1) / alignment * alignment;
    lay.tensors.push_back(l);
  }
  w.pad_to(alignment);
  lay.data_start = w.size();
  for (size_t k = 0; k < tensors.size(); ++k) {
    while (w.size() < lay.data_start + offsets[k]) w.u8(0);
    lay.tensors[k].data_at = w.size();
    w.raw(tensors[k].data.data(), tensors[k].data.size());
  }
  if (layout) *layout = lay;
  return std::move(w.bytes());
}

GGUFValue gguf_uint(GGUFValue::Type t, uint64_t v) {
  GGUFValue x;
  x.type = t;
  x.u = v;
  return x;
}
GGUFValue gguf_int(GGUFValue::Type t, int64_t v) {
  GGUFValue x;
  x.type = t;
  x.i = v;
  return x;
}
GGUFValue gguf_u32(uint32_t v) { return gguf_uint(VT::U32, v); }
GGUFValue gguf_i32(int32_t v) { return gguf_int(VT::I32, v); }
GGUFValue gguf_f32(float v) {
  GGUFValue x;
  x.type = VT::F32;
  x.f = v;
  return x;
}
GGUFValue gguf_f64(double v) {
  GGUFValue x;
  x.type = VT::F64;
  x.f = v;
  return x;
}
GGUFValue gguf_bool(bool v) { return gguf_uint(VT::BOOL, v ? 1 : 0); }
GGUFValue gguf_string(const std::string& s) {
  GGUFValue x;
  x.type = VT::STRING;
  x.s = s;
  return x;
}
GGUFValue gguf_array(GGUFValue::Type element_type, std::vector<GGUFValue> items) {
  GGUFValue x;
  x.type = VT::ARRAY;
  x.array_type = element_type;
  x.array = std::move(items);
  return x;
}
GGUFValue gguf_strings(const std::vector<std::string>& items) {
  std::vector<GGUFValue> v;
  for (const std::string& s : items) v.push_back(gguf_string(s));
  return gguf_array(VT::STRING, std::move(v));
}
GGUFValue gguf_i32s(const std::vector<int32_t>& items) {
  std::vector<GGUFValue> v;
  for (int32_t i : items) v.push_back(gguf_i32(i));
  return gguf_array(VT::I32, std::move(v));
}

std::string write_temp_file(const std::string& stem, const std::vector<uint8_t>& bytes) {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("sinkrouter_" + std::to_string(::getpid()) + "_" + stem);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  SR_CHECK(out.good(), "write_temp_file: cannot write {}", path.string());
  return path.string();
}

}  // namespace sinkrouter::testing
