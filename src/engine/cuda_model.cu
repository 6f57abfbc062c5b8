// CudaModel: the weights on the device (see cuda_model.h).
#include "cuda_model.h"

#include <cmath>
#include <cstring>

#include "core/cuda_check.h"
#include "model/qmatmul.h"
#include "sinkrouter/core/dtype.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter {
namespace {

// The weights as one host image, laid out as they will sit on the device; pieces start at
// 256-byte offsets (aligned for 16-byte vector loads and cuBLAS).
class HostImage {
 public:
  size_t reserve(size_t bytes) {
    const size_t at = bytes_.size();
    bytes_.resize(at + ((bytes + 255) / 256) * 256, 0);
    return at;
  }
  uint8_t* at(size_t offset) { return bytes_.data() + offset; }
  size_t size() const { return bytes_.size(); }
  const uint8_t* data() const { return bytes_.data(); }

 private:
  std::vector<uint8_t> bytes_;
};

// Rows of one GGUF matrix, dequantised as the CPU engine does and rounded to bf16 (nearest
// even), written at dst (rows x cols uint16).
void put_rows(const QMatrix& m, uint16_t* dst, ThreadPool& pool) {
  constexpr int64_t kRowsPerTask = 64;
  pool.parallel_for((m.rows + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t task) {
    std::vector<float> row(static_cast<size_t>(m.cols));
    for (int64_t r = task * kRowsPerTask; r < std::min(m.rows, (task + 1) * kRowsPerTask); ++r) {
      dequantize_matrix_row(m, r, row.data());
      for (int64_t i = 0; i < m.cols; ++i) dst[r * m.cols + i] = to_bf16(row[size_t(i)]).bits;
    }
  });
}

}  // namespace

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver or no device: not an error for "auto"
    return 0;
  }
  return n;
}

CudaModel::CudaModel(const CpuModel& cpu) : config(cpu.config), options(cpu.options), capacity(cpu.capacity) {
  const ModelConfig& c = config;
  const LlamaWeights& w = cpu.weights;
  q_dim = c.n_head * c.head_dim;
  kv_dim = c.n_head_kv * c.head_dim;
  SR_CHECK(c.n_embd % 8 == 0 && c.n_ff % 8 == 0 && q_dim % 8 == 0,
           "GPU engine: widths n_embd {}, n_ff {}, n_head x head_dim {} must be multiples of 8", c.n_embd, c.n_ff,
           q_dim);
  const int64_t E = c.n_embd, F = c.n_ff, QKV = q_dim + 2 * int64_t(kv_dim);

  // Offsets first, then the image.
  HostImage img;
  struct LayerOffsets {
    size_t attn_norm, wqkv, wo, ffn_norm, w_gate_up, w_down;
  };
  std::vector<LayerOffsets> lo(size_t(c.n_layers));
  const size_t embd_off = img.reserve(size_t(c.n_vocab) * E * 2);
  const size_t out_off = c.tied_embeddings ? embd_off : img.reserve(size_t(c.n_vocab) * E * 2);
  const size_t out_norm_off = img.reserve(size_t(E) * 4);
  for (LayerOffsets& o : lo) {
    o.attn_norm = img.reserve(size_t(E) * 4);
    o.wqkv = img.reserve(size_t(QKV) * E * 2);
    o.wo = img.reserve(size_t(E) * q_dim * 2);
    o.ffn_norm = img.reserve(size_t(E) * 4);
    o.w_gate_up = img.reserve(size_t(2 * F) * E * 2);
    o.w_down = img.reserve(size_t(E) * F * 2);
  }
  const size_t rope_off = img.reserve(size_t(c.head_dim / 2) * sizeof(double));

  ThreadPool& pool = *cpu.pool;
  auto u16 = [&](size_t off) { return reinterpret_cast<uint16_t*>(img.at(off)); };
  put_rows(w.token_embd, u16(embd_off), pool);
  if (!c.tied_embeddings) put_rows(w.output, u16(out_off), pool);
  std::memcpy(img.at(out_norm_off), w.output_norm.data(), size_t(E) * 4);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w.layers[size_t(l)];
    const LayerOffsets& o = lo[size_t(l)];
    std::memcpy(img.at(o.attn_norm), L.attn_norm.data(), size_t(E) * 4);
    std::memcpy(img.at(o.ffn_norm), L.ffn_norm.data(), size_t(E) * 4);
    put_rows(L.wq, u16(o.wqkv), pool);
    put_rows(L.wk, u16(o.wqkv) + size_t(q_dim) * E, pool);
    put_rows(L.wv, u16(o.wqkv) + size_t(q_dim + kv_dim) * E, pool);
    put_rows(L.wo, u16(o.wo), pool);
    put_rows(L.w_gate, u16(o.w_gate_up), pool);
    put_rows(L.w_up, u16(o.w_gate_up) + size_t(F) * E, pool);
    put_rows(L.w_down, u16(o.w_down), pool);
  }
  // RoPE frequencies exactly as Rope (llama_ops.cpp) forms them.
  double* inv_freq = reinterpret_cast<double*>(img.at(rope_off));
  for (int i = 0; i < c.head_dim / 2; ++i) {
    double f = std::pow(double(c.rope_base), -2.0 * i / c.head_dim);
    if (!c.rope_freq_divisors.empty()) f /= double(c.rope_freq_divisors[size_t(i)]);
    inv_freq[i] = f;
  }

  SR_CUDA_CHECK(cudaMalloc(&storage_, img.size()));
  const cudaError_t copied = cudaMemcpy(storage_, img.data(), img.size(), cudaMemcpyHostToDevice);
  if (copied != cudaSuccess) {
    cudaFree(storage_);
    storage_ = nullptr;
    SR_CUDA_CHECK(copied);
  }
  if (cublasCreate(&cublas) != CUBLAS_STATUS_SUCCESS) {
    cudaFree(storage_);
    storage_ = nullptr;
    fail("GPU engine: cublasCreate failed (is the CUDA device usable?)");
  }

  auto dev = [&](size_t off) { return static_cast<uint8_t*>(storage_) + off; };
  auto bf = [&](size_t off) { return reinterpret_cast<const __nv_bfloat16*>(dev(off)); };
  auto f32 = [&](size_t off) { return reinterpret_cast<const float*>(dev(off)); };
  token_embd = bf(embd_off);
  output = bf(out_off);
  output_norm = f32(out_norm_off);
  for (const LayerOffsets& o : lo)
    layers.push_back({f32(o.attn_norm), bf(o.wqkv), bf(o.wo), f32(o.ffn_norm), bf(o.w_gate_up), bf(o.w_down)});
  rope.inv_freq = reinterpret_cast<const double*>(dev(rope_off));
  rope.head_dim = c.head_dim;
  decode_weight_bytes = size_t(c.n_layers) * 2 * size_t(E) * size_t(QKV + q_dim + 3 * F) + size_t(c.n_vocab) * E * 2;
  cuda::gemv_configure(int(std::max<int64_t>(E, std::max<int64_t>(F, q_dim))));
}

CudaModel::~CudaModel() {
  if (cublas) cublasDestroy(cublas);
  if (storage_) cudaFree(storage_);
}

}  // namespace sinkrouter
