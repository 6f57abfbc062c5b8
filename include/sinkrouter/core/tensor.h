// A non-owning view of a strided tensor of up to 4 dimensions, plus a small owning
// buffer. Strides are in elements, not bytes. Views carry their dtype so that an API
// taking one can say clearly when it gets the wrong type or shape.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "sinkrouter/core/dtype.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter {

constexpr int kMaxDims = 4;

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::F32;
  int ndim = 0;
  std::array<int64_t, kMaxDims> shape{};
  std::array<int64_t, kMaxDims> stride{};

  TensorView() = default;
  // Contiguous (row-major) view.
  TensorView(void* data, DType dtype, std::initializer_list<int64_t> shape);
  TensorView(const void* data, DType dtype, std::initializer_list<int64_t> shape)
      : TensorView(const_cast<void*>(data), dtype, shape) {}

  int64_t numel() const;
  bool is_contiguous() const;
  std::string shape_str() const;  // "[2, 9, 64] bf16"

  template <typename T>
  T* ptr() const {
    SR_CHECK(dtype_of<T>() == dtype, "tensor is {} but was read as {}", dtype_name(dtype),
             dtype_name(dtype_of<T>()));
    return static_cast<T*>(data);
  }
  int64_t offset(int64_t i0, int64_t i1 = 0, int64_t i2 = 0, int64_t i3 = 0) const {
    return i0 * stride[0] + i1 * stride[1] + i2 * stride[2] + i3 * stride[3];
  }
  // Reads one element as float / writes one element, whatever the dtype.
  float load(int64_t elem_offset) const;
  void store(int64_t elem_offset, float v) const;
};

// Throws a clear error unless `t` has exactly this dtype set and shape (-1 = any extent).
void check_tensor(const TensorView& t, const char* what, std::initializer_list<DType> dtypes,
                  std::initializer_list<int64_t> shape);

// Owning, contiguous, 64-byte aligned host tensor.
class HostTensor {
 public:
  HostTensor() = default;
  HostTensor(DType dtype, std::initializer_list<int64_t> shape);
  HostTensor(DType dtype, const std::vector<int64_t>& shape);
  const TensorView& view() const { return view_; }
  void* data() const { return view_.data; }
  int64_t numel() const { return view_.numel(); }
  size_t bytes() const { return size_t(numel()) * dtype_size(view_.dtype); }

 private:
  std::vector<std::array<uint8_t, 64>> storage_;  // 64-byte aligned chunks
  TensorView view_;
};

}  // namespace sinkrouter
