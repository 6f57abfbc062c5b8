#include "sinkrouter/engine/engine.h"

#include <chrono>
#include <cmath>
#include <fstream>
#include <numeric>
#include <thread>

#include "cpu_session.h"
#include "sinkrouter/core/error.h"
#include "sinkrouter/model/gguf.h"
#if defined(SINKROUTER_HAVE_CUDA)
#include "cuda_session.h"
#endif

namespace sinkrouter {

struct Engine::Impl {
  GGUFFile file;
  Tokenizer tokenizer;
  CpuModel model;
  std::string device;  // "cpu" or "cuda"
#if defined(SINKROUTER_HAVE_CUDA)
  std::unique_ptr<CudaModel> cuda;  // weights on the device when device == "cuda"
#endif
};

namespace {

void verify_checksum(const std::string& path) {
  std::ifstream in(path + ".sha256");
  if (!in) return;  // no checksum file beside the model: nothing to check against
  std::string expected;
  in >> expected;
  const std::string actual = sha256_file(path);
  SR_CHECK(expected == actual,
           "{}: checksum mismatch (expected {} from {}.sha256, got {}): the file is damaged or was replaced",
           path, expected, path, actual);
}

}  // namespace

Engine::Engine(const EngineOptions& options) : impl_(std::make_unique<Impl>()) {
  SR_CHECK(!options.model_path.empty(), "no model given (use -m FILE)");
  std::string device = options.device;
  SR_CHECK(device == "cpu" || device == "cuda" || device == "auto", "unknown device '{}' (expected cpu, cuda or auto)",
           device);
#if defined(SINKROUTER_HAVE_CUDA)
  if (device == "auto") device = cuda_device_count() > 0 ? "cuda" : "cpu";
  SR_CHECK(device != "cuda" || cuda_device_count() > 0,
           "--device cuda: no CUDA device is visible (use --device cpu or auto)");
  SR_CHECK(device != "cuda" || options.kv_dtype == DType::BF16,
           "--device cuda: the GPU engine keeps its KV cache in bf16 (got {}); use --kv-dtype bf16", 
           dtype_name(options.kv_dtype));
#else
  if (device == "auto") device = "cpu";
  SR_CHECK(device == "cpu",
           "--device cuda: this build of sinkrouter has no CUDA support (nvcc was not found when it was "
           "configured); use --device cpu, or rebuild where nvcc is installed");
#endif
  impl_->device = device;
  SR_CHECK(options.kv_dtype == DType::BF16 || options.kv_dtype == DType::F16,
           "KV dtype {} is not supported (expected bf16 or f16)", dtype_name(options.kv_dtype));
  SR_CHECK(options.matmul == "q8" || options.matmul == "f32", "unknown matmul mode '{}' (expected q8 or f32)",
           options.matmul);
  SR_CHECK(options.prefill_chunk >= 1, "prefill chunk {} must be at least 1", options.prefill_chunk);
  if (options.verify_checksum) verify_checksum(options.model_path);
  impl_->file = GGUFFile::open(options.model_path);
  CpuModel& m = impl_->model;
  m.options = options;
  m.config = read_model_config(impl_->file);
  SR_CHECK(m.config.head_dim == 64 || m.config.head_dim == 128,
           "{}: head dimension {} is not supported by the attention kernels (expected 64 or 128)",
           options.model_path, m.config.head_dim);
  m.weights = load_llama_weights(impl_->file, m.config);
  impl_->tokenizer = Tokenizer::from_gguf(impl_->file);
  m.capacity = options.max_context > 0 ? options.max_context : m.config.context_length;
  SR_CHECK(m.capacity <= m.config.context_length || options.allow_beyond_trained_context,
           "--max-context {} exceeds the {} tokens the model was trained for; pass "
           "--allow-beyond-trained-context to run there anyway (quality is not expected to hold)",
           m.capacity, m.config.context_length);
  m.rope = std::make_unique<Rope>(m.config.head_dim, m.config.rope_base, m.config.rope_freq_divisors);
  m.pool = std::make_unique<ThreadPool>(options.threads);
#if defined(SINKROUTER_HAVE_CUDA)
  if (device == "cuda") {
    SR_CHECK(options.cuda_prefill_chunk >= 1, "GPU prefill chunk {} must be at least 1", options.cuda_prefill_chunk);
    impl_->cuda = std::make_unique<CudaModel>(m);
  }
#endif
}

Engine::~Engine() = default;

const ModelConfig& Engine::config() const { return impl_->model.config; }
const Tokenizer& Engine::tokenizer() const { return impl_->tokenizer; }
const EngineOptions& Engine::options() const { return impl_->model.options; }
const std::string& Engine::device() const { return impl_->device; }

std::unique_ptr<Session> Engine::new_session(const AttentionPolicy& policy) const {
#if defined(SINKROUTER_HAVE_CUDA)
  if (impl_->cuda) return std::make_unique<CudaSession>(*impl_->cuda, policy);
#endif
  return std::make_unique<CpuSession>(impl_->model, policy);
}

std::vector<GenerateResult> Engine::generate_batch(const std::vector<std::vector<int32_t>>& prompts,
                                                   const AttentionPolicy& policy, const GenerateOptions& o) const {
  SR_CHECK(!prompts.empty(), "generate_batch: no prompts");
  SR_CHECK(o.max_new_tokens >= 0, "max_new_tokens {} must not be negative", o.max_new_tokens);
  SR_CHECK(o.temperature >= 0, "temperature {} must not be negative", o.temperature);
  SR_CHECK(o.top_p > 0 && o.top_p <= 1, "top-p {} out of range (expected (0, 1])", o.top_p);
#if defined(SINKROUTER_HAVE_CUDA)
  if (impl_->cuda) return cuda_generate_batch(*impl_->cuda, impl_->tokenizer, prompts, policy, o);
#endif
  GenerateOptions quiet = o;
  quiet.on_token = nullptr;
  quiet.prefill_progress = nullptr;
  std::vector<GenerateResult> r;
  for (const auto& p : prompts) r.push_back(generate(p, policy, quiet));
  return r;
}

GenerateResult Engine::generate(const std::vector<int32_t>& prompt, const AttentionPolicy& policy,
                                const GenerateOptions& o) const {
  SR_CHECK(o.max_new_tokens >= 0, "max_new_tokens {} must not be negative", o.max_new_tokens);
  SR_CHECK(o.temperature >= 0, "temperature {} must not be negative", o.temperature);
  SR_CHECK(o.top_p > 0 && o.top_p <= 1, "top-p {} out of range (expected (0, 1])", o.top_p);
  const int64_t need = int64_t(prompt.size()) + o.max_new_tokens;
  SR_CHECK(need <= impl_->model.capacity,
           "context over capacity: the prompt has {} tokens and {} new tokens were asked for, {} in all, "
           "but the limit is {} tokens (the model was trained for {})",
           prompt.size(), o.max_new_tokens, need, impl_->model.capacity, config().context_length);
  auto session = new_session(policy);
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  std::vector<float> logits = session->prefill(prompt, o.prefill_progress);
  const double prefill_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  GenerateResult r = continue_generation(*session, std::move(logits), o);
  r.prompt_tokens = prompt;
  r.prefill_seconds = prefill_seconds;
  return r;
}

GenerateResult Engine::continue_generation(Session& session, std::vector<float> logits,
                                           const GenerateOptions& o) const {
  SR_CHECK(o.max_new_tokens >= 0, "max_new_tokens {} must not be negative", o.max_new_tokens);
  SR_CHECK(o.temperature >= 0, "temperature {} must not be negative", o.temperature);
  SR_CHECK(o.top_p > 0 && o.top_p <= 1, "top-p {} out of range (expected (0, 1])", o.top_p);
  GenerateResult r;
  using clock = std::chrono::steady_clock;
  uint64_t rng = o.seed * 0x9E3779B97F4A7C15ULL + 1;
  Tokenizer::StreamDecoder stream(impl_->tokenizer);
  const auto t1 = clock::now();
  // Greedy decoding asks the session for the argmax itself (decode_greedy: the GPU session
  // then downloads one id instead of the logits); the first token comes from the prefill's.
  const bool greedy = o.temperature <= 0.f;
  int32_t greedy_next = -1;  // the last decode_greedy's answer
  for (int i = 0; i < o.max_new_tokens; ++i) {
    const int32_t next =
        greedy && i > 0 ? greedy_next : sample_token(logits, o.temperature, o.top_p, rng);
    if (impl_->tokenizer.is_end_of_generation(next)) {
      r.stopped_at_eos = true;
      break;
    }
    r.tokens.push_back(next);
    const std::string piece = stream.push(next);
    r.text += piece;
    if (o.on_token && !o.on_token(next, piece)) break;
    if (i + 1 < o.max_new_tokens) {
      if (greedy)
        greedy_next = session.decode_greedy(next);
      else
        logits = session.decode(next);
    }
  }
  const std::string rest = stream.flush();
  r.text += rest;
  if (o.on_token && !rest.empty()) o.on_token(-1, rest);
  r.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  r.stats = session.total_stats();
  return r;
}

int32_t sample_token(const std::vector<float>& logits, float temperature, float top_p, uint64_t& state) {
  SR_CHECK(!logits.empty(), "sample: no logits");
  if (temperature <= 0.f) return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  const float mx = *std::max_element(logits.begin(), logits.end());
  std::vector<std::pair<float, int32_t>> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    p[i] = {std::exp((logits[i] - mx) / temperature), int32_t(i)};
    sum += p[i].first;
  }
  std::sort(p.begin(), p.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  // Nucleus: the smallest prefix whose mass reaches top_p.
  double cum = 0;
  size_t keep = 0;
  while (keep < p.size()) {
    cum += p[keep].first / sum;
    ++keep;
    if (cum >= top_p) break;
  }
  // splitmix64 -> uniform in [0, cum)
  state += 0x9E3779B97F4A7C15ULL;
  uint64_t z = state;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  const double u = double(z >> 11) * 0x1.0p-53 * cum;
  double acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += p[i].first / sum;
    if (u < acc) return p[i].second;
  }
  return p[keep - 1].second;
}

}  // namespace sinkrouter
