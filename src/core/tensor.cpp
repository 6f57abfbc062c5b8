#include "sinkrouter/core/tensor.h"

#include <fmt/format.h>

namespace sinkrouter {

namespace {
void set_contiguous(TensorView& v, const int64_t* dims, int n) {
  SR_CHECK(n >= 0 && n <= kMaxDims, "tensor rank {} is not supported (expected 0 to {})", n,
           kMaxDims);
  v.ndim = n;
  for (int i = 0; i < n; ++i) {
    SR_CHECK(dims[i] >= 0, "negative extent {} in dimension {}", dims[i], i);
    v.shape[i] = dims[i];
  }
  int64_t s = 1;
  for (int i = n - 1; i >= 0; --i) {
    v.stride[i] = s;
    s *= v.shape[i];
  }
}
}  // namespace

TensorView::TensorView(void* d, DType t, std::initializer_list<int64_t> dims) : data(d), dtype(t) {
  set_contiguous(*this, dims.begin(), int(dims.size()));
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

bool TensorView::is_contiguous() const {
  int64_t s = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    if (shape[i] != 1 && stride[i] != s) return false;
    s *= shape[i];
  }
  return true;
}

std::string TensorView::shape_str() const {
  std::string s = "[";
  for (int i = 0; i < ndim; ++i) s += fmt::format("{}{}", i ? ", " : "", shape[i]);
  return s + "] " + dtype_name(dtype);
}

float TensorView::load(int64_t o) const {
  switch (dtype) {
    case DType::F32: return static_cast<const float*>(data)[o];
    case DType::F16: return to_float(static_cast<const f16*>(data)[o]);
    case DType::BF16: return to_float(static_cast<const bf16*>(data)[o]);
    case DType::F64: return float(static_cast<const double*>(data)[o]);
  }
  return 0;
}

void TensorView::store(int64_t o, float v) const {
  switch (dtype) {
    case DType::F32: static_cast<float*>(data)[o] = v; break;
    case DType::F16: static_cast<f16*>(data)[o] = to_f16(v); break;
    case DType::BF16: static_cast<bf16*>(data)[o] = to_bf16(v); break;
    case DType::F64: static_cast<double*>(data)[o] = v; break;
  }
}

void check_tensor(const TensorView& t, const char* what, std::initializer_list<DType> dtypes,
                  std::initializer_list<int64_t> shape) {
  bool dtype_ok = false;
  std::string allowed;
  for (DType d : dtypes) {
    dtype_ok |= (d == t.dtype);
    allowed += fmt::format("{}{}", allowed.empty() ? "" : " or ", dtype_name(d));
  }
  SR_CHECK(dtype_ok, "{}: dtype {} is not supported (expected {})", what, dtype_name(t.dtype),
           allowed);
  SR_CHECK(t.data != nullptr || t.numel() == 0, "{}: tensor has no data", what);
  std::string want = "[";
  int i = 0;
  bool ok = int(shape.size()) == t.ndim;
  for (int64_t e : shape) {
    want += fmt::format("{}{}", i ? ", " : "", e < 0 ? std::string("*") : std::to_string(e));
    if (ok && e >= 0 && t.shape[i] != e) ok = false;
    ++i;
  }
  want += "]";
  SR_CHECK(ok, "{}: shape {} does not match the expected {}", what, t.shape_str(), want);
}

HostTensor::HostTensor(DType dtype, std::initializer_list<int64_t> shape)
    : HostTensor(dtype, std::vector<int64_t>(shape)) {}

HostTensor::HostTensor(DType dtype, const std::vector<int64_t>& shape) {
  view_.dtype = dtype;
  set_contiguous(view_, shape.data(), int(shape.size()));
  const size_t bytes = size_t(view_.numel()) * dtype_size(dtype);
  storage_.resize((bytes + 63) / 64);
  view_.data = storage_.empty() ? nullptr : storage_.data();
}

}  // namespace sinkrouter
