// GGUF v3 (and v2, the same layout) reader. The file is memory-mapped read-only; every
// read goes through a bounds-checked cursor, every count is checked against the bytes
// left before anything is allocated, and every tensor must lie inside the file. An
// error names the file, the key or tensor, the byte offset and what was expected.
// Format facts: docs/GGUF.md.
#include "sinkrouter/model/gguf.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "quants.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter {

// The bytes a GGUFFile's tensor pointers point into: an mmap of the file, or an owned
// copy (from_bytes). Shared by copies of the GGUFFile.
struct GGUFFile::Mapping {
  const uint8_t* data = nullptr;
  uint64_t size = 0;
  void* mapped = nullptr;
  size_t mapped_size = 0;
  std::vector<uint8_t> owned;

  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (mapped != nullptr) ::munmap(mapped, mapped_size);
  }
};

namespace {

using VT = GGUFValue::Type;

constexpr uint64_t kDefaultAlignment = 32;
constexpr uint64_t kMaxKeyBytes = 65535;          // the GGUF spec's bound on keys
constexpr uint64_t kMaxTensorNameBytes = 256;     // ggml writes <= 63; lenient but bounded
constexpr int kMaxArrayDepth = 8;                 // arrays of arrays: bounds the recursion
constexpr uint64_t kMaxArrayElements = 1u << 24;  // all arrays together (49152-token vocabularies fit)
// Vectors are reserved up to this many entries; beyond it they grow as entries are actually
// read. A count that passes the fits-in-the-file check can still be a lie in a multi-GB
// file, and an in-memory entry is several times larger than its smallest encoding.
constexpr uint64_t kMaxReserve = 1u << 16;
// Smallest encodings, used to reject counts that cannot fit in the bytes left.
constexpr uint64_t kMinKVBytes = 8 + 1 + 4 + 1;              // key length, 1-byte key, type, u8
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;  // name, n_dims, ne[0], type, offset

// Bytes of one value of type t as stored; for string and array, the least they can take
// (a length, or an element type and a count).
uint64_t min_value_bytes(VT t) {
  switch (t) {
    case VT::U8: case VT::I8: case VT::BOOL: return 1;
    case VT::U16: case VT::I16: return 2;
    case VT::U32: case VT::I32: case VT::F32: return 4;
    case VT::U64: case VT::I64: case VT::F64: case VT::STRING: return 8;
    case VT::ARRAY: return 12;
  }
  return 1;
}

// Bounds-checked little-endian reads over [data, data + size). Messages read
// "<file>: <context>: <what> at offset N ...", the context being "header",
// "metadata key 'x'" or "tensor 'y'".
class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size, const std::string& file) : data_(data), size_(size), file_(file) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }
  void set_context(std::string context) { context_ = std::move(context); }

  template <typename... Args>
  [[noreturn]] void error(fmt::format_string<Args...> format, Args&&... args) const {
    fail("{}: {}: {}", file_, context_, fmt::format(format, std::forward<Args>(args)...));
  }

  void need(uint64_t n, const char* what) const {
    if (n > left())
      error("{} at offset {} needs {} bytes but the file ends after {} (size {})", what, pos_, n, left(), size_);
  }

  template <typename U>
  U read(const char* what) {
    need(sizeof(U), what);
    U v;
    std::memcpy(&v, data_ + pos_, sizeof(U));
    pos_ += sizeof(U);
    return v;
  }

  // u64 length + bytes; the length is checked against max_len and the bytes left first.
  std::string string(const char* what, uint64_t max_len) {
    const uint64_t at = pos_;
    const uint64_t len = read<uint64_t>(what);
    if (len > max_len) error("{} at offset {} is {} bytes long (expected at most {})", what, at, len, max_len);
    if (len > left())
      error("{} at offset {} is {} bytes long but only {} bytes are left in the file (size {})", what, at, len,
            left(), size_);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), size_t(len));
    pos_ += len;
    return s;
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& file_;
  std::string context_ = "header";
};

// Reads metadata values, nested arrays included, with the element budget and depth limit.
class ValueReader {
 public:
  explicit ValueReader(Cursor& c) : c_(c) {}

  VT type(const char* what) {
    const uint64_t at = c_.pos();
    const uint32_t id = c_.read<uint32_t>(what);
    if (id > uint32_t(VT::F64)) c_.error("{} {} at offset {} is not a GGUF value type (expected 0 to 12)", what, id, at);
    return VT(id);
  }

  GGUFValue value(VT t, int depth) {
    GGUFValue v;
    v.type = t;
    switch (t) {
      case VT::U8: v.u = c_.read<uint8_t>("u8 value"); break;
      case VT::U16: v.u = c_.read<uint16_t>("u16 value"); break;
      case VT::U32: v.u = c_.read<uint32_t>("u32 value"); break;
      case VT::U64: v.u = c_.read<uint64_t>("u64 value"); break;
      case VT::I8: v.i = c_.read<int8_t>("i8 value"); break;
      case VT::I16: v.i = c_.read<int16_t>("i16 value"); break;
      case VT::I32: v.i = c_.read<int32_t>("i32 value"); break;
      case VT::I64: v.i = c_.read<int64_t>("i64 value"); break;
      case VT::F32: v.f = c_.read<float>("f32 value"); break;
      case VT::F64: v.f = c_.read<double>("f64 value"); break;
      case VT::BOOL: {
        const uint64_t at = c_.pos();
        v.u = c_.read<uint8_t>("bool value");
        if (v.u > 1) c_.error("bool value {} at offset {} (expected 0 or 1)", v.u, at);
        break;
      }
      case VT::STRING: v.s = c_.string("string value", std::numeric_limits<uint64_t>::max()); break;
      case VT::ARRAY: read_array(v, depth); break;
    }
    return v;
  }

 private:
  void read_array(GGUFValue& v, int depth) {
    const uint64_t at = c_.pos();
    v.array_type = type("array element type");
    const uint64_t count = c_.read<uint64_t>("array count");
    if (v.array_type == VT::ARRAY && depth + 1 >= kMaxArrayDepth)
      c_.error("arrays nested more than {} levels deep at offset {} (refused)", kMaxArrayDepth, at);
    const uint64_t least = min_value_bytes(v.array_type);
    if (count > c_.left() / least)
      c_.error("array of {} {} elements at offset {} needs at least {} bytes each but only {} bytes are left",
               count, gguf_value_type_name(v.array_type), at, least, c_.left());
    if (count > elements_left_)
      c_.error("array of {} elements at offset {} exceeds the limit of {} array elements in all the metadata",
               count, at, kMaxArrayElements);
    elements_left_ -= count;
    v.array.reserve(size_t(std::min<uint64_t>(count, kMaxReserve)));
    for (uint64_t k = 0; k < count; ++k) v.array.push_back(value(v.array_type, depth + 1));
  }

  Cursor& c_;
  uint64_t elements_left_ = kMaxArrayElements;
};

std::string shape_str(const std::vector<int64_t>& ne) {
  return fmt::format("[{}]", fmt::join(ne, ", "));
}

}  // namespace

void GGUFFile::parse(const uint8_t* data, uint64_t size) {
  size_ = size;
  Cursor c(data, size, path_);
  if (size == 0) fail("{}: empty file (expected a GGUF file, which starts with the magic \"GGUF\")", path_);
  c.need(4, "magic");
  c.read<uint32_t>("magic");
  if (std::memcmp(data, "GGUF", 4) != 0)
    fail("{}: not a GGUF file: the magic at offset 0 is {:02x} {:02x} {:02x} {:02x} (expected 47 47 55 46, \"GGUF\")",
         path_, data[0], data[1], data[2], data[3]);
  version_ = c.read<uint32_t>("version");
  if (version_ == 0x02000000u || version_ == 0x03000000u)
    c.error("version bytes at offset 4 read {:#010x}: a big-endian GGUF (expected a little-endian file)", version_);
  if (version_ == 1)
    c.error("GGUF version 1 at offset 4 is not supported (expected version 3; version 2 is read as well)");
  if (version_ != 2 && version_ != 3) c.error("unsupported GGUF version {} at offset 4 (expected 3)", version_);
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const uint64_t n_kv = c.read<uint64_t>("metadata count");
  if (n_kv > c.left() / kMinKVBytes)
    c.error("metadata count {} at offset 16 cannot fit in the {} bytes that follow (each entry takes at least {})",
            n_kv, c.left(), kMinKVBytes);
  if (n_tensors > c.left() / kMinTensorInfoBytes)
    c.error("tensor count {} at offset 8 cannot fit in the {} bytes that follow (each tensor info takes at least {})",
            n_tensors, c.left(), kMinTensorInfoBytes);

  // ---- metadata ----
  ValueReader values(c);
  std::vector<uint64_t> key_offsets;
  metadata_.reserve(size_t(std::min<uint64_t>(n_kv, kMaxReserve)));
  for (uint64_t k = 0; k < n_kv; ++k) {
    const uint64_t at = c.pos();
    c.set_context(fmt::format("metadata entry {} of {}", k, n_kv));
    std::string key = c.string("key", kMaxKeyBytes);
    if (key.empty()) c.error("empty key at offset {} (expected a name such as general.architecture)", at);
    c.set_context(fmt::format("metadata key '{}'", key));
    const auto dup = metadata_index_.find(key);
    if (dup != metadata_index_.end())
      c.error("duplicate key at offset {} (first defined at offset {})", at, key_offsets[dup->second]);
    const VT type = values.type("value type");
    GGUFValue value = values.value(type, 0);
    metadata_index_.emplace(key, metadata_.size());
    key_offsets.push_back(at);
    metadata_.emplace_back(std::move(key), std::move(value));
  }

  if (const GGUFValue* a = find("general.alignment")) {
    const uint64_t at = key_offsets[metadata_index_.at("general.alignment")];
    if (a->type != VT::U32)
      fail("{}: metadata key 'general.alignment' at offset {} has type {} (expected u32)", path_, at,
           gguf_value_type_name(a->type));
    if (a->u == 0 || (a->u & (a->u - 1)) != 0)
      fail("{}: metadata key 'general.alignment' at offset {} is {} (expected a power of two)", path_, at, a->u);
    alignment_ = a->u;
  } else {
    alignment_ = kDefaultAlignment;
  }

  // ---- tensor infos ----
  if (n_tensors > c.left() / kMinTensorInfoBytes)
    fail("{}: tensor count {} (offset 8) cannot fit in the {} bytes after the metadata (each tensor info takes at "
         "least {})", path_, n_tensors, c.left(), kMinTensorInfoBytes);
  std::vector<uint64_t> info_offsets;
  tensors_.reserve(size_t(std::min<uint64_t>(n_tensors, kMaxReserve)));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    const uint64_t at = c.pos();
    c.set_context(fmt::format("tensor info {} of {}", k, n_tensors));
    GGUFTensorInfo t;
    t.name = c.string("tensor name", kMaxTensorNameBytes);
    if (t.name.empty()) c.error("empty tensor name at offset {}", at);
    c.set_context(fmt::format("tensor '{}'", t.name));
    const auto dup = tensor_index_.find(t.name);
    if (dup != tensor_index_.end())
      c.error("duplicate tensor name at offset {} (first defined at offset {})", at, info_offsets[dup->second]);
    const uint64_t dims_at = c.pos();
    const uint32_t n_dims = c.read<uint32_t>("n_dims");
    if (n_dims < 1 || n_dims > 4) c.error("n_dims {} at offset {} (expected 1 to 4)", n_dims, dims_at);
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne_at = c.pos();
      const uint64_t ne = c.read<uint64_t>("ne");
      if (ne == 0 || ne > uint64_t(std::numeric_limits<int64_t>::max()))
        c.error("ne[{}] = {} at offset {} (expected 1 to 2^63-1)", d, ne, ne_at);
      t.ne.push_back(int64_t(ne));
      if (__builtin_mul_overflow(numel, int64_t(ne), &numel))
        c.error("shape {}... at offset {} has more than 2^63-1 elements", shape_str(t.ne), dims_at);
    }
    const uint64_t type_at = c.pos();
    const uint32_t type_id = c.read<uint32_t>("ggml type");
    const detail::GGMLTypeTraits* tr = detail::find_ggml_type(type_id);
    if (tr == nullptr)
      c.error("ggml type id {} at offset {} has no known block layout (expected a ggml type such as 0 f32, "
              "1 f16, 2 q4_0, 8 q8_0, 12 q4_K)", type_id, type_at);
    t.type = GGMLType(type_id);
    t.offset = c.read<uint64_t>("data offset field");
    if (t.ne[0] % tr->block_values != 0)
      c.error("ne[0] = {} is not a multiple of the {} block size {}", t.ne[0], tr->name, tr->block_values);
    const uint64_t blocks_per_row = uint64_t(t.ne[0] / tr->block_values);
    uint64_t row_bytes = 0;
    if (__builtin_mul_overflow(blocks_per_row, uint64_t(tr->block_bytes), &row_bytes) ||
        __builtin_mul_overflow(row_bytes, uint64_t(numel / t.ne[0]), &t.nbytes))
      c.error("{} {} tensor data size overflows 64 bits", tr->name, shape_str(t.ne));
    tensor_index_.emplace(t.name, tensors_.size());
    info_offsets.push_back(at);
    tensors_.push_back(std::move(t));
  }

  // ---- data section ----
  const uint64_t info_end = c.pos();
  const uint64_t data_start = (info_end + alignment_ - 1) / alignment_ * alignment_;  // info_end <= size < 2^63
  data_offset_ = data_start;
  for (GGUFTensorInfo& t : tensors_) {
    if (t.offset % alignment_ != 0)
      fail("{}: tensor '{}': data offset {} is not a multiple of the alignment {}", path_, t.name, t.offset,
           alignment_);
    uint64_t begin = 0, end = 0;
    if (__builtin_add_overflow(data_start, t.offset, &begin))
      fail("{}: tensor '{}' data [offset {} + {}, {} bytes] runs past the end of the file (size {})", path_, t.name,
           data_start, t.offset, t.nbytes, size);
    if (__builtin_add_overflow(begin, t.nbytes, &end) || end > size)
      fail("{}: tensor '{}' data [offset {}, {} bytes] runs past the end of the file (size {})", path_, t.name,
           begin, t.nbytes, size);
    t.data = data + begin;
  }
}

GGUFFile GGUFFile::open(const std::string& path) {
  auto m = std::make_shared<Mapping>();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    const int err = errno;
    ::close(fd);
    fail("{}: not a regular file{}", path, err ? fmt::format(" ({})", std::strerror(err)) : "");
  }
  m->size = uint64_t(st.st_size);
  if (m->size > 0) {
    // Read-only and private: the model is never written through this mapping.
    void* p = ::mmap(nullptr, size_t(m->size), PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    if (p == MAP_FAILED) fail("{}: mmap of {} bytes failed: {}", path, m->size, std::strerror(err));
    m->mapped = p;
    m->mapped_size = size_t(m->size);
    m->data = static_cast<const uint8_t*>(p);
  } else {
    ::close(fd);
  }
  GGUFFile f;
  f.path_ = path;
  f.mapping_ = m;
  f.parse(m->data, m->size);
  return f;
}

GGUFFile GGUFFile::from_bytes(const uint8_t* data, size_t size, const std::string& name) {
  auto m = std::make_shared<Mapping>();
  m->owned.assign(data, data + size);  // malloc'd: 16-byte aligned, enough for f32 tensor data
  m->data = m->owned.data();
  m->size = size;
  GGUFFile f;
  f.path_ = name;
  f.mapping_ = m;
  f.parse(m->data, m->size);
  return f;
}

bool GGUFFile::has(const std::string& key) const { return metadata_index_.count(key) != 0; }

const GGUFValue* GGUFFile::find(const std::string& key) const {
  const auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

const GGUFValue& GGUFFile::get(const std::string& key) const {
  const GGUFValue* v = find(key);
  if (v == nullptr) fail("{}: missing metadata key '{}'", path_, key);
  return *v;
}

uint64_t GGUFFile::get_u64(const std::string& key, uint64_t fallback) const {
  const GGUFValue* v = find(key);
  return v ? v->as_u64(key) : fallback;
}

double GGUFFile::get_f64(const std::string& key, double fallback) const {
  const GGUFValue* v = find(key);
  return v ? v->as_f64(key) : fallback;
}

std::string GGUFFile::get_string(const std::string& key, const std::string& fallback) const {
  const GGUFValue* v = find(key);
  return v ? v->as_string(key) : fallback;
}

const GGUFTensorInfo* GGUFFile::find_tensor(const std::string& name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GGUFTensorInfo& GGUFFile::tensor(const std::string& name) const {
  const GGUFTensorInfo* t = find_tensor(name);
  if (t == nullptr) fail("{}: tensor '{}' is missing", path_, name);
  return *t;
}

int64_t GGUFTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;  // the reader checked that this does not overflow
  return n;
}

int64_t GGUFTensorInfo::rows() const { return ne.empty() ? 0 : numel() / ne[0]; }

}  // namespace sinkrouter
