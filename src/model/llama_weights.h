// A Llama-family model's configuration and weights, read from a GGUF file. The weights
// stay in the memory-mapped file (quantised); QMatrix points into it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "qmatmul.h"
#include "sinkrouter/engine/engine.h"
#include "sinkrouter/model/gguf.h"

namespace sinkrouter {

// Reads and validates llama.* metadata; Error for other architectures or missing keys.
ModelConfig read_model_config(const GGUFFile& file);

struct LayerWeights {
  std::vector<float> attn_norm;  // [n_embd]
  QMatrix wq;                    // [n_head * head_dim, n_embd]
  QMatrix wk, wv;                // [n_head_kv * head_dim, n_embd]
  QMatrix wo;                    // [n_embd, n_head * head_dim]
  std::vector<float> ffn_norm;   // [n_embd]
  QMatrix w_gate, w_up;          // [n_ff, n_embd]
  QMatrix w_down;                // [n_embd, n_ff]
};

struct LlamaWeights {
  QMatrix token_embd;            // [n_vocab, n_embd]
  std::vector<LayerWeights> layers;
  std::vector<float> output_norm;  // [n_embd]
  QMatrix output;                // [n_vocab, n_embd] (token_embd when tied)
};

// Checks every tensor's presence, type and shape against the config.
LlamaWeights load_llama_weights(const GGUFFile& file, const ModelConfig& config);

}  // namespace sinkrouter
