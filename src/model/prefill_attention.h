// Dense causal attention of a prefill chunk on the CPU, over a paged KV cache that
// already holds the chunk's keys and values.
#pragma once

#include <cstdint>
#include <vector>

#include "sinkrouter/core/thread_pool.h"
#include "sinkrouter/kv/paged_kv.h"

namespace sinkrouter {

// q:   [c, n_head, head_dim] float, the chunk's queries (RoPE applied), positions p0..p0+c-1
// kv:  a batch of one sequence of length p0 + c (bf16 or f16)
// out: [c, n_head, head_dim] float
// received: when not null, [n_kv_heads, p0 + c] is filled with the mean attention each key
//   receives from the last `observe_rows` queries of the chunk (averaged over those
//   queries and the G heads of the KV head) — the signal sink detection uses.
void prefill_attention_cpu(const float* q, int64_t c, int64_t p0, const PagedKV& kv, int n_head,
                           float scale, float* out, ThreadPool& pool, int observe_rows = 0,
                           std::vector<float>* received = nullptr);

}  // namespace sinkrouter
