#include "llama_weights.h"

#include <cmath>

#include <fmt/ranges.h>

#include "sinkrouter/core/error.h"

namespace sinkrouter {

namespace {

int read_int(const GGUFFile& f, const std::string& key) {
  const GGUFValue* v = f.find(key);
  SR_CHECK(v != nullptr, "{}: metadata key '{}' is missing (needed for a llama model)", f.path(), key);
  const int64_t x = v->as_i64(key);
  SR_CHECK(x > 0 && x < (int64_t(1) << 31), "{}: metadata '{}' = {} is out of range", f.path(), key, x);
  return int(x);
}

std::vector<float> read_vector(const GGUFFile& f, const std::string& name, int64_t n) {
  const GGUFTensorInfo& t = f.tensor(name);
  SR_CHECK(t.numel() == n, "{}: tensor '{}' has {} values (expected {})", f.path(), name, t.numel(), n);
  std::vector<float> out(static_cast<size_t>(n));
  dequantize_row(t.type, t.data, out.data(), n);
  return out;
}

QMatrix read_matrix(const GGUFFile& f, const std::string& name, int64_t rows, int64_t cols) {
  const GGUFTensorInfo& t = f.tensor(name);
  SR_CHECK(t.ne.size() == 2 && t.ne[0] == cols && t.ne[1] == rows,
           "{}: tensor '{}' has shape {} (expected ne = [{}, {}])", f.path(), name,
           fmt::format("[{}]", fmt::join(t.ne, ", ")), cols, rows);
  return QMatrix::from_tensor(t);
}

}  // namespace

ModelConfig read_model_config(const GGUFFile& f) {
  ModelConfig c;
  c.architecture = f.get_string("general.architecture", "");
  SR_CHECK(c.architecture == "llama",
           "{}: architecture '{}' is not supported (expected 'llama': Llama, SmolLM, Mistral-style models)",
           f.path(), c.architecture);
  c.name = f.get_string("general.name", "");
  const std::string a = c.architecture;
  c.n_layers = read_int(f, a + ".block_count");
  c.n_embd = read_int(f, a + ".embedding_length");
  c.n_head = read_int(f, a + ".attention.head_count");
  c.n_head_kv = f.has(a + ".attention.head_count_kv") ? read_int(f, a + ".attention.head_count_kv") : c.n_head;
  c.n_ff = read_int(f, a + ".feed_forward_length");
  c.context_length = read_int(f, a + ".context_length");
  c.head_dim = f.has(a + ".attention.key_length") ? read_int(f, a + ".attention.key_length") : c.n_embd / c.n_head;
  if (f.has(a + ".attention.value_length"))
    SR_CHECK(read_int(f, a + ".attention.value_length") == c.head_dim,
             "{}: key_length and value_length differ, which is not supported", f.path());
  SR_CHECK(c.n_head % c.n_head_kv == 0, "{}: {} heads are not a multiple of {} KV heads", f.path(), c.n_head,
           c.n_head_kv);
  c.rope_base = float(f.get_f64(a + ".rope.freq_base", 10000.0));
  c.rms_eps = float(f.get_f64(a + ".attention.layer_norm_rms_epsilon", 1e-5));
  const uint64_t rope_dims = f.get_u64(a + ".rope.dimension_count", uint64_t(c.head_dim));
  SR_CHECK(int(rope_dims) == c.head_dim, "{}: partial RoPE ({} of {} dims) is not supported", f.path(), rope_dims,
           c.head_dim);
  const std::string scaling = f.get_string(a + ".rope.scaling.type", "none");
  SR_CHECK(scaling == "none" || scaling == "",
           "{}: RoPE scaling type '{}' is not supported (llama3 scaling via rope_freqs.weight is)", f.path(),
           scaling);
  const GGUFTensorInfo& embd = f.tensor("token_embd.weight");
  SR_CHECK(embd.ne.size() == 2 && embd.ne[0] == c.n_embd, "{}: token_embd.weight has the wrong shape", f.path());
  c.n_vocab = int(embd.ne[1]);
  c.tied_embeddings = f.find_tensor("output.weight") == nullptr;
  if (const GGUFTensorInfo* rf = f.find_tensor("rope_freqs.weight")) {
    SR_CHECK(rf->numel() == c.head_dim / 2, "{}: rope_freqs.weight has {} values (expected {})", f.path(),
             rf->numel(), c.head_dim / 2);
    c.rope_freq_divisors = read_vector(f, "rope_freqs.weight", c.head_dim / 2);
  }
  return c;
}

LlamaWeights load_llama_weights(const GGUFFile& f, const ModelConfig& c) {
  LlamaWeights w;
  const int64_t q_dim = int64_t(c.n_head) * c.head_dim, kv_dim = int64_t(c.n_head_kv) * c.head_dim;
  w.token_embd = read_matrix(f, "token_embd.weight", c.n_vocab, c.n_embd);
  w.output_norm = read_vector(f, "output_norm.weight", c.n_embd);
  w.output = c.tied_embeddings ? w.token_embd : read_matrix(f, "output.weight", c.n_vocab, c.n_embd);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = fmt::format("blk.{}.", l);
    LayerWeights L;
    L.attn_norm = read_vector(f, p + "attn_norm.weight", c.n_embd);
    L.wq = read_matrix(f, p + "attn_q.weight", q_dim, c.n_embd);
    L.wk = read_matrix(f, p + "attn_k.weight", kv_dim, c.n_embd);
    L.wv = read_matrix(f, p + "attn_v.weight", kv_dim, c.n_embd);
    L.wo = read_matrix(f, p + "attn_output.weight", c.n_embd, q_dim);
    L.ffn_norm = read_vector(f, p + "ffn_norm.weight", c.n_embd);
    L.w_gate = read_matrix(f, p + "ffn_gate.weight", c.n_ff, c.n_embd);
    L.w_up = read_matrix(f, p + "ffn_up.weight", c.n_ff, c.n_embd);
    L.w_down = read_matrix(f, p + "ffn_down.weight", c.n_embd, c.n_ff);
    w.layers.push_back(std::move(L));
  }
  return w;
}

}  // namespace sinkrouter
