#include "stats_json.h"

#include <fmt/format.h>

namespace sinkrouter::apps {

nlohmann::json head_stats_json(const HeadStats& s) {
  const double dense = double(std::max<int64_t>(s.bytes_dense, 1));
  return {{"bytes_summary", s.bytes_summary},
          {"bytes_anchor_window", s.bytes_anchor_window},
          {"bytes_blocks", s.bytes_blocks},
          {"bytes_read", s.bytes_read()},
          {"bytes_dense", s.bytes_dense},
          {"kv_read_fraction", double(s.bytes_read()) / dense},
          {"blocks_total", s.blocks_total},
          {"blocks_skipped", s.blocks_skipped},
          {"max_delta", s.delta},
          {"max_output_error_bound", s.output_error_bound}};
}

nlohmann::json generate_result_json(const GenerateResult& r, const AttentionPolicy& policy) {
  const size_t n = r.tokens.size();
  return {{"text", r.text},
          {"policy", policy.describe()},
          {"prompt_tokens", r.prompt_tokens.size()},
          {"generated_tokens", n},
          {"stopped_at_eos", r.stopped_at_eos},
          {"prefill_seconds", r.prefill_seconds},
          {"prefill_tokens_per_second", r.prefill_seconds > 0 ? double(r.prompt_tokens.size()) / r.prefill_seconds : 0.0},
          {"decode_seconds", r.decode_seconds},
          {"decode_tokens_per_second", r.decode_seconds > 0 && n > 1 ? double(n - 1) / r.decode_seconds : 0.0},
          {"attention", head_stats_json(r.stats)}};
}

std::string generate_summary_line(const GenerateResult& r, const AttentionPolicy& policy) {
  const size_t n = r.tokens.size();
  const double tps = r.decode_seconds > 0 && n > 1 ? double(n - 1) / r.decode_seconds : 0.0;
  const double frac = r.stats.bytes_dense > 0 ? double(r.stats.bytes_read()) / double(r.stats.bytes_dense) : 1.0;
  return fmt::format("[{}] prompt {} tokens, prefill {:.2f} s ({:.0f} tok/s); {} tokens at {:.1f} tok/s; KV read {:.1f}% "
                     "of dense, {} of {} blocks skipped, max delta {:.2g}",
                     policy.describe(), r.prompt_tokens.size(), r.prefill_seconds,
                     r.prefill_seconds > 0 ? double(r.prompt_tokens.size()) / r.prefill_seconds : 0.0, n, tps,
                     100 * frac, r.stats.blocks_skipped, r.stats.blocks_total, r.stats.delta);
}

}  // namespace sinkrouter::apps
