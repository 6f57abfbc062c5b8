// Synthetic KV caches for tests, benchmarks and the demo: fresh random keys and values (never zeros),
// optional planted sinks (keys aligned with the queries, small values), odd lengths.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "sinkrouter/core/tensor.h"
#include "sinkrouter/kv/paged_kv_cache.h"

namespace sinkrouter {

struct SyntheticKVSpec {
  int num_kv_heads = 2;
  int group = 2;  // query heads per KV head
  int head_dim = 64;
  DType dtype = DType::BF16;
  int page_size = 16;
  int block_size = 64;
  std::vector<int64_t> lengths{100};
  // Planted sinks: these positions get keys along the mean direction of their KV head's
  // queries, so that every query of the group scores at least about sink_score on them
  // (noise aside) and none more than 8 times that, and values of norm sink_value_norm. (In
  // a large group of random queries one can be nearly orthogonal to the mean: the cap keeps
  // the key from growing without bound, which made scores of ~10^4 that no float32 kernel
  // matches a float64 reference on; kernel runs 12i, 13a-13b.)
  std::vector<int32_t> sink_positions{};
  float sink_score = 12.f;
  float sink_value_norm = 0.05f;
  float key_scale = 1.f;   // std of ordinary key components
  // Anisotropy: dimension d of ordinary keys has std key_scale * exp(-key_decay * d / D).
  // Keys of trained models put most of their variance in a few dimensions; 0 = isotropic.
  float key_decay = 0.f;
  // Planted dormant content: this fraction of routing blocks (drawn at random) get their
  // ordinary keys scaled by quiet_key_scale, so that their scores sit far below the sink.
  // Controls how much a router can skip, for benchmarks at a chosen skip rate.
  float quiet_block_fraction = 0.f;
  float quiet_key_scale = 0.02f;
  int append_chunk = 0;    // 0: append each sequence at once; else in chunks of this size

  // Model shapes with a planted sink at position 0 (bf16, page 16, block 64).
  static SyntheticKVSpec llama_8b();  // 8 KV heads, group 4, head_dim 128
  static SyntheticKVSpec smollm2();   // 3 KV heads, group 3, head_dim 64
};

struct SyntheticKV {
  std::unique_ptr<PagedKVCache> cache;
  std::vector<int> seqs;
  PagedKVBatch batch;
  HostTensor q;  // [batch, q_heads, head_dim] f32
};

// Builds the cache and queries. Queries are drawn first so that sinks can be aimed at them.
SyntheticKV make_synthetic_kv(const SyntheticKVSpec& spec, std::mt19937_64& rng);

// Fills a float tensor view with N(0, stddev) values.
void fill_normal(const TensorView& t, std::mt19937_64& rng, float stddev = 1.f);

}  // namespace sinkrouter
