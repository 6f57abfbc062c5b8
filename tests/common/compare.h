// Every-element comparison against a float64 reference with a per-dtype tolerance
// (abs + rel * |ref|, rel in units of the output type's epsilon), plus the whole-tensor
// relative error. Returns a description of the first failure, or "" when all pass.
#pragma once

#include <string>

#include "sinkrouter/core/tensor.h"

namespace sinkrouter::testing {

struct Tolerance {
  double abs;
  double rel;  // relative to |ref|
};

// Default tolerance for float32 accumulation written in `out` dtype.
Tolerance tolerance_for(DType out);

// out: any dtype; ref: f64 of the same shape. The reference is rounded to out's dtype
// first, so a correctly rounded result has error 0.
std::string compare_to_reference(const TensorView& out, const TensorView& ref, Tolerance tol);

}  // namespace sinkrouter::testing
