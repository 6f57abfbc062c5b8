// Quantised weight rows repacked for the decode GEMV: 16 rows interleaved per tile so
// that one integer multiply-add instruction serves 16 rows at once.
//
// GGUF keeps each row's blocks together (row-major). A GEMV over that layout dots one row
// at a time and ends every 32-value block with a horizontal step and a scalar scale. A
// tile holds 16 consecutive rows block by block: for block b, the 16 rows' scales (f16,
// then for Q4_1 their mins), then their quants as 4-byte groups, row-interleaved:
//
//   Q4_0 / Q4_1: 4 vectors V_j (j = 0..3) of 64 bytes; bytes [4r, 4r+4) of V_j are bytes
//                [4j, 4j+4) of row r's 16 nibble bytes. Low nibbles of V_j hold values
//                4j..4j+3 of row r, high nibbles values 16+4j..16+4j+3 (GGUF's pairing).
//   Q8_0:        8 vectors W_k (k = 0..7) of 64 bytes; bytes [4r, 4r+4) of W_k are values
//                4k..4k+3 of row r.
//
// So lane r of a 16 x int32 vector accumulates row r, and the activation enters as one
// 4-byte broadcast per step (AVX-512 VNNI: vpdpbusd with an embedded broadcast). A tile
// block has exactly the bytes of the 16 GGUF blocks it replaces (288 / 320 / 544 B).
//
// Every kernel (scalar reference, AVX2, AVX-512 VNNI) computes, per row and in block order,
//   acc = fma(d_w * d_x, float(isum_b), acc)      [+ acc = fma(m_w, s_x, acc) for Q4_1]
// with isum_b the exact integer block dot (Q4_0 and Q8_0 recentred in integers), so the
// three give the same bits.
#pragma once

#include <cstdint>
#include <vector>

#include "sinkrouter/model/gguf.h"

namespace sinkrouter {

struct Q8Activation;

constexpr int kTileRows = 16;

enum class GemvKernel {
  Scalar,      // plain C++, the reference
  Avx2,        // built with AVX2 (x86-64-v3)
  Avx512Vnni,  // AVX-512 F/BW/VL + VNNI, chosen at run time when the CPU has them
};

const char* gemv_kernel_name(GemvKernel k);
// Whether this build and this CPU can run the kernel.
bool gemv_kernel_supported(GemvKernel k);
// The fastest supported kernel; SINKROUTER_GEMV_KERNEL=scalar|avx2|avx512vnni overrides it
// (an unsupported or unknown name is an Error).
GemvKernel best_gemv_kernel();

// The first `tiles * 16` rows of a Q4_0, Q4_1 or Q8_0 matrix, repacked. The remaining
// rows (rows % 16) stay in the GGUF layout and are dotted one by one.
struct RowTiles {
  GGMLType type = GGMLType::Q4_1;
  int64_t tiles = 0;       // rows / 16
  int64_t blocks = 0;      // cols / 32
  int64_t block_bytes = 0; // bytes of one tile block (16 rows x 32 columns)
  std::vector<uint8_t> data;  // [tiles][blocks][block_bytes]

  const uint8_t* tile(int64_t t) const { return data.data() + size_t(t * blocks * block_bytes); }
};

// Whether a type has a tile layout (Q4_0, Q4_1, Q8_0).
bool has_row_tiles(GGMLType t);

// Repacks rows [0, 16 * (rows / 16)) of a matrix stored as GGUF rows of `row_bytes`.
RowTiles pack_row_tiles(GGMLType type, const uint8_t* data, int64_t rows, int64_t cols, int64_t row_bytes);

// y[16 t + r] for r < 16 and tiles t in [t0, t1): the dot of each row with x (quantised).
void gemv_tiles(const RowTiles& w, const Q8Activation& x, int64_t t0, int64_t t1, float* y, GemvKernel kernel);

namespace detail {
// Per-ISA kernels behind gemv_tiles (row_tiles.cpp, row_tiles_avx512.cpp).
void gemv_tiles_scalar(const RowTiles& w, const Q8Activation& x, int64_t t0, int64_t t1, float* y);
void gemv_tiles_avx2(const RowTiles& w, const Q8Activation& x, int64_t t0, int64_t t1, float* y);
void gemv_tiles_avx512vnni(const RowTiles& w, const Q8Activation& x, int64_t t0, int64_t t1, float* y);
bool cpu_has_avx512vnni();
}  // namespace detail

}  // namespace sinkrouter
