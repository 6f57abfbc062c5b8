// Thin wrappers over the PTX the tensor-core attention kernels share (decode and prefill):
// cp.async copies into shared memory, ldmatrix, mma.sync m16n8k16 and the MUFU exp2.
//
// Fragment layouts of mma.sync.m16n8k16 (16-bit in, f32 accumulate), lane = 4 * g + t:
//   A (16x16, row-major) a0: (row g,   cols 2t, 2t+1)   a1: (row g+8, cols 2t, 2t+1)
//                        a2: (row g,   cols 2t+8, +9)   a3: (row g+8, cols 2t+8, +9)
//   B (16x8, "col")      b0: (k 2t, 2t+1; col g)        b1: (k 2t+8, 2t+9; col g)
//   C (16x8, f32)        c0, c1: (row g, cols 2t, 2t+1) c2, c3: (row g+8, cols 2t, 2t+1)
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "core/cuda_dtype.cuh"

namespace sinkrouter::cuda {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared (a shared-space address), asynchronously; valid == false
// writes 16 zero bytes and reads nothing (src must still be a mapped address).
__device__ __forceinline__ void cp_async16_to(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
}
// The same, asking the L2 to fetch l2_prefetch bytes (0, 128 or 256) around src at the
// first miss: fewer, larger DRAM reads when neighbouring 16-byte pieces follow. The branch
// is uniform when l2_prefetch is (a kernel argument).
__device__ __forceinline__ void cp_async16_to(uint32_t dst, const void* src, bool valid, int l2_prefetch) {
  const int bytes = valid ? 16 : 0;
  if (l2_prefetch == 256)
    asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes)
                 : "memory");
  else if (l2_prefetch == 128)
    asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes)
                 : "memory");
  else
    cp_async16_to(dst, src, valid);
}
__device__ __forceinline__ void cp_async_commit_group() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 16-bit matrices; lane l gives the address of row l % 8 of matrix l / 8.
// Without .trans lane t receives (row t/4, columns 2(t%4), +1) of each; with .trans
// (rows 2(t%4), +1, column t/4).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// c += a * b on the tensor cores (16x8x16, 16-bit operands, f32 accumulators).
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, Bf16Tag) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, F16Tag) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// log2(e): softmax exponents as 2^(x log2 e), the scale folded into one multiply.
constexpr float kLog2e = 1.4426950408889634f;

// 2^x for the softmax: one MUFU.EX2 (relative error ~2^-22; results below 2^-126 flush
// to zero, far under what a probability in [0, 1] summed in float can show).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Two floats as one bf16x2 register, `lo` in the low half (the lower column index).
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

}  // namespace sinkrouter::cuda
