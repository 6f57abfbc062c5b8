#include "sinkrouter/kv/synthetic_kv.h"

#include <algorithm>
#include <cmath>

namespace sinkrouter {

SyntheticKVSpec SyntheticKVSpec::llama_8b() {
  SyntheticKVSpec s;
  s.num_kv_heads = 8;
  s.group = 4;
  s.head_dim = 128;
  s.sink_positions = {0};
  s.sink_score = 20.f;
  s.sink_value_norm = 0.05f;
  s.key_scale = 1.0f;
  s.key_decay = 4.f;
  s.quiet_block_fraction = 0.5f;
  return s;
}

SyntheticKVSpec SyntheticKVSpec::smollm2() {
  SyntheticKVSpec s = llama_8b();
  s.num_kv_heads = 3;
  s.group = 3;
  s.head_dim = 64;
  return s;
}

void fill_normal(const TensorView& t, std::mt19937_64& rng, float stddev) {
  std::normal_distribution<float> dist(0.f, stddev);
  for (int64_t i = 0; i < t.numel(); ++i) t.store(i, dist(rng));
}

SyntheticKV make_synthetic_kv(const SyntheticKVSpec& spec, std::mt19937_64& rng) {
  const int H = spec.num_kv_heads, D = spec.head_dim, G = spec.group;
  const int B = int(spec.lengths.size());
  KVCacheConfig cfg;
  cfg.num_kv_heads = H;
  cfg.head_dim = D;
  cfg.dtype = spec.dtype;
  cfg.page_size = spec.page_size;
  cfg.block_size = spec.block_size;
  int64_t pages = 0;
  for (int64_t n : spec.lengths) pages += (n + spec.page_size - 1) / spec.page_size;
  cfg.num_pages = pages + 1;
  SyntheticKV r;
  r.cache = std::make_unique<PagedKVCache>(cfg);
  r.q = HostTensor(DType::F32, {B, G * H, D});
  fill_normal(r.q.view(), rng);
  std::normal_distribution<float> normal(0.f, 1.f);
  const float scale = 1.f / std::sqrt(float(D));
  for (int b = 0; b < B; ++b) {
    const int seq = r.cache->create_sequence();
    r.seqs.push_back(seq);
    const int64_t n = spec.lengths[size_t(b)];
    HostTensor k(DType::F32, {n, H, D}), v(DType::F32, {n, H, D});
    fill_normal(k.view(), rng, spec.key_scale);
    if (spec.key_decay != 0.f)
      for (int64_t i = 0; i < k.numel(); ++i)
        k.view().store(i, k.view().load(i) * std::exp(-spec.key_decay * float(i % D) / float(D)));
    if (spec.quiet_block_fraction > 0.f) {
      std::uniform_real_distribution<float> coin(0.f, 1.f);
      for (int64_t j = 0; j * spec.block_size < n; ++j) {
        if (coin(rng) >= spec.quiet_block_fraction) continue;
        const int64_t end = std::min<int64_t>(n, (j + 1) * spec.block_size) * H * D;
        for (int64_t i = j * spec.block_size * H * D; i < end; ++i)
          k.view().store(i, k.view().load(i) * spec.quiet_key_scale);
      }
    }
    fill_normal(v.view(), rng, 1.f);
    for (int32_t pos : spec.sink_positions) {
      if (pos >= n) continue;
      for (int h = 0; h < H; ++h) {
        // Mean direction of the group's queries, scaled so that q . k * scale ~ sink_score.
        std::vector<float> dir(static_cast<size_t>(D), 0.f);
        for (int g = 0; g < G; ++g)
          for (int d = 0; d < D; ++d) dir[size_t(d)] += r.q.view().load(r.q.view().offset(b, h * G + g, d));
        float nrm = 0;
        for (float x : dir) nrm += x * x;
        nrm = std::sqrt(nrm);
        // Length such that the least-aligned query of the group scores sink_score, and the
        // best-aligned at most 8 sink_score (SyntheticKVSpec::sink_positions).
        float min_dot = 1e30f, max_dot = 0.f;
        for (int g = 0; g < G; ++g) {
          float dotg = 0;
          for (int d = 0; d < D; ++d)
            dotg += r.q.view().load(r.q.view().offset(b, h * G + g, d)) * dir[size_t(d)] / nrm;
          min_dot = std::min(min_dot, dotg);
          max_dot = std::max(max_dot, dotg);
        }
        const float len = spec.sink_score / (scale * std::max({min_dot, max_dot / 8.f, 1e-3f}));
        float vn = 0;
        for (int d = 0; d < D; ++d) {
          k.view().store(k.view().offset(pos, h, d), dir[size_t(d)] / nrm * len + 0.1f * normal(rng));
          const float vv = normal(rng);
          v.view().store(v.view().offset(pos, h, d), vv);
          vn += vv * vv;
        }
        vn = std::sqrt(vn);
        for (int d = 0; d < D; ++d)
          v.view().store(v.view().offset(pos, h, d), v.view().load(v.view().offset(pos, h, d)) / vn * spec.sink_value_norm);
      }
    }
    const int64_t chunk = spec.append_chunk > 0 ? spec.append_chunk : n;
    for (int64_t t = 0; t < n; t += chunk) {
      const int64_t m = std::min(chunk, n - t);
      TensorView kc = k.view(), vc = v.view();
      kc.data = static_cast<float*>(kc.data) + t * H * D;
      kc.shape[0] = m;
      vc.data = static_cast<float*>(vc.data) + t * H * D;
      vc.shape[0] = m;
      r.cache->append(seq, kc, vc);
    }
    for (int h = 0; h < H; ++h) {
      std::vector<int32_t> inside;
      for (int32_t pos : spec.sink_positions)
        if (pos < n) inside.push_back(pos);
      r.cache->register_anchors(seq, h, inside);
    }
  }
  r.batch = r.cache->batch(r.seqs);
  return r;
}

}  // namespace sinkrouter
