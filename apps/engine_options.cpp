#include "engine_options.h"

#include <chrono>
#include <cstdio>
#include <memory>

namespace sinkrouter::apps {

void EngineCliOptions::add_to(CLI::App* cmd, bool model_required, const std::string& default_matmul) {
  engine.matmul = default_matmul;
  engine.device = "auto";  // the GPU when the build has CUDA and a device is present
  auto* m = cmd->add_option("-m,--model", engine.model_path, "GGUF model file");
  if (model_required) m->required();
  m->check(CLI::ExistingFile);
  cmd->add_option("--device", engine.device, "cpu, cuda or auto")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
  cmd->add_option("-t,--threads", engine.threads, "CPU threads (0: all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--max-context", engine.max_context, "KV capacity in tokens (0: the model's trained context)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 31));
  cmd->add_flag("--allow-beyond-trained-context", engine.allow_beyond_trained_context,
                "allow --max-context past the trained length");
  cmd->add_option("--kv-dtype", kv_dtype, "KV cache type: bf16 or f16")
      ->check(CLI::IsMember({"bf16", "f16"}))
      ->capture_default_str();
  cmd->add_option("--page-size", engine.page_size, "KV page size in tokens (1 to 256)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_option("--block-size", engine.block_size, "routing block in tokens")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  cmd->add_option("--prefill-chunk", engine.prefill_chunk, "tokens per prefill chunk")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--gpu-prefill-chunk", engine.cuda_prefill_chunk,
                  "tokens per prefill chunk on the GPU (activation memory grows with it)")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--matmul", engine.matmul, "CPU decode matmuls: q8 (int8 activations, fast) or f32 (exact)")
      ->check(CLI::IsMember({"q8", "f32"}))
      ->capture_default_str();
  cmd->add_option("--first-anchors", engine.first_anchors, "first tokens kept as anchors in every head")
      ->check(CLI::Range(0, 32))
      ->capture_default_str();
  cmd->add_option("--detected-sinks", engine.detected_sinks, "extra anchors per head found at prefill")
      ->check(CLI::Range(0, 32))
      ->capture_default_str();
}

EngineOptions EngineCliOptions::resolve() const {
  EngineOptions o = engine;
  o.kv_dtype = parse_dtype(kv_dtype);
  return o;
}

ProgressFn stderr_progress(const std::string& label) {
  auto start = std::make_shared<std::chrono::steady_clock::time_point>(std::chrono::steady_clock::now());
  return [label, start](int64_t done, int64_t total) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - *start).count();
    std::fprintf(stderr, "\r%s %7lld/%lld tokens %3d%%  %.1f s", label.c_str(), (long long)done, (long long)total,
                 int(100 * done / std::max<int64_t>(total, 1)), s);
    if (done == total) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  };
}

}  // namespace sinkrouter::apps
