// ggml tensor types: the block-layout table the GGUF reader needs to size every tensor
// (including types we cannot dequantise, so that such files still open), and the
// per-type dequantisers behind dequantize_row(). Public entry points: gguf.h.
// Layouts and formulas: ../shared/REFERENCE.md section 1, docs/GGUF.md.
#pragma once

#include <cstdint>

#include "sinkrouter/model/gguf.h"

namespace sinkrouter::detail {

struct GGMLTypeTraits {
  uint32_t id;
  const char* name;      // ggml's lower-case name: "q4_1", "bf16", "iq2_xxs"
  int64_t block_values;  // values per block (1 for plain types)
  int64_t block_bytes;   // bytes per block
  bool dequantize;       // dequantize_row() handles it
};

// The traits of a ggml type id, or nullptr for an id whose block layout we do not know
// (such a tensor cannot even be sized, so a file holding one does not open).
const GGMLTypeTraits* find_ggml_type(uint32_t id);

// dequantize_row() with the plain scalar kernels only (no intrinsics): the reference the
// tests hold the fast paths to. Same checks and errors as dequantize_row().
void dequantize_row_scalar(GGMLType t, const void* src, float* dst, int64_t n);

// Comma-separated names of the types dequantize_row() handles (for error messages).
const char* supported_type_list();

}  // namespace sinkrouter::detail
