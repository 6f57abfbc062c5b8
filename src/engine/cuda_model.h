// A Llama-family model resident on a CUDA device: every weight dequantised on the host
// (dequantize_row, the CPU's own path) and uploaded once as bf16, [out, in] row-major.
// Q, K and V are stacked into one matrix, and so are gate and up, so that one product
// (one read of the weights in decode) serves each group.
//
// Plain C++ header: engine.cpp (g++) includes it.
#pragma once

#if defined(SINKROUTER_HAVE_CUDA)

#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <vector>

#include "engine/cpu_session.h"
#include "model/cuda_ops.h"
#include "sinkrouter/engine/engine.h"

namespace sinkrouter {

struct CudaLayerWeights {
  const float* attn_norm = nullptr;         // [n_embd]
  const __nv_bfloat16* wqkv = nullptr;      // [q_dim + 2 kv_dim, n_embd]: wq rows, wk rows, wv rows
  const __nv_bfloat16* wo = nullptr;        // [n_embd, q_dim]
  const float* ffn_norm = nullptr;          // [n_embd]
  const __nv_bfloat16* w_gate_up = nullptr;  // [2 n_ff, n_embd]: gate rows, then up rows
  const __nv_bfloat16* w_down = nullptr;    // [n_embd, n_ff]
};

class CudaModel {
 public:
  // Uploads the weights of `cpu` (its config, options and capacity are copied).
  explicit CudaModel(const CpuModel& cpu);
  ~CudaModel();
  CudaModel(const CudaModel&) = delete;
  CudaModel& operator=(const CudaModel&) = delete;

  ModelConfig config;
  EngineOptions options;
  int64_t capacity = 0;  // tokens per session (as the CPU engine's)
  int q_dim = 0, kv_dim = 0;
  std::vector<CudaLayerWeights> layers;
  const __nv_bfloat16* token_embd = nullptr;  // [n_vocab, n_embd]
  const __nv_bfloat16* output = nullptr;      // [n_vocab, n_embd]; token_embd when tied
  const float* output_norm = nullptr;         // [n_embd]
  cuda::RopeTable rope;                       // inv_freq [head_dim / 2], double
  cublasHandle_t cublas = nullptr;            // prefill GEMMs (never inside a captured graph)
  size_t decode_weight_bytes = 0;             // bytes of weights one decode step reads

 private:
  void* storage_ = nullptr;  // one allocation holds every weight
};

// Devices CUDA sees; 0 when none (or no driver), never throws.
int cuda_device_count();

}  // namespace sinkrouter

#endif  // SINKROUTER_HAVE_CUDA
