#include "compare.h"

#include <fmt/format.h>

#include <cmath>

namespace sinkrouter::testing {

Tolerance tolerance_for(DType out) {
  switch (out) {
    case DType::F32: return {2e-5, 1e-4};
    case DType::BF16: return {2e-5, 1.01 * 2 * dtype_epsilon(DType::BF16)};  // one ulp
    case DType::F16: return {2e-5, 1.01 * 2 * dtype_epsilon(DType::F16)};
    case DType::F64: return {1e-12, 1e-12};
  }
  return {0, 0};
}

std::string compare_to_reference(const TensorView& out, const TensorView& ref, Tolerance tol) {
  if (out.numel() != ref.numel()) return fmt::format("size {} != {}", out.numel(), ref.numel());
  double err2 = 0, ref2 = 0;
  const double* r = ref.ptr<double>();
  for (int64_t i = 0; i < out.numel(); ++i) {
    double want = r[i];
    if (out.dtype == DType::BF16) want = to_float(to_bf16(float(want)));
    if (out.dtype == DType::F16) want = to_float(to_f16(float(want)));
    if (out.dtype == DType::F32) want = double(float(want));
    const double got = out.load(i);
    const double e = std::fabs(got - want);
    if (!(e <= tol.abs + tol.rel * std::fabs(want)))
      return fmt::format("element {}: got {} expected {} (error {:.3g} > {:.3g} + {:.3g}*|ref|)", i, got,
                         want, e, tol.abs, tol.rel);
    err2 += (got - r[i]) * (got - r[i]);
    ref2 += r[i] * r[i];
  }
  const double rel = std::sqrt(err2 / std::max(ref2, 1e-300));
  const double limit = out.dtype == DType::F32 ? 1e-5 : 4 * dtype_epsilon(out.dtype);
  if (rel > limit) return fmt::format("whole-tensor relative error {:.3g} > {:.3g}", rel, limit);
  return "";
}

}  // namespace sinkrouter::testing
