// Fast CPU decode: threads over (sequence, KV head, split); each split streams its spans
// with the G query heads of the group together (one K/V row conversion serves all G),
// online softmax in float32; a merge over the splits with merge_state(). Mirrors the
// CUDA Split-K kernel. The span loops are in cpu_span_kernels.h (AVX2 with a generic
// fallback).
#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu_math.h"
#include "cpu_span_kernels.h"
#include "sinkrouter/attention/decode.h"
#include "sinkrouter/attention/merge_state.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Output of one split: the partial state of each of the G heads, and what blasst skipped.
struct SplitResult {
  std::vector<float> m, l, acc;      // [G], [G], [G * D]
  std::vector<double> skipped_mass;  // [G] exp(s - m_A) summed over tokens whose V was skipped
  std::vector<double> skipped_vnorm; // [G] the same mass times the block's value-norm maximum
  int64_t v_tokens_read = 0;         // blasst: tokens of KeysOnly spans whose V was read
  int32_t blocks_v_skipped = 0;      // blasst: KeysOnly blocks with every span's V skipped
};

// Token i's K row pointer for i in [0, len) of the span [begin, begin + len) of (b, h),
// stepping page by page (one page-table lookup per page, not per token).
void span_rows(const PagedKV& kv, const uint16_t* pages, int b, int h, int32_t begin, int len,
               const uint16_t** rows) {
  const int64_t row_stride = int64_t(kv.num_kv_heads) * kv.head_dim;
  int i = 0;
  while (i < len) {
    const int64_t t = begin + i;
    const int n = int(std::min<int64_t>(len - i, kv.page_size - t % kv.page_size));
    const uint16_t* base = pages + kv.k_offset(b, t, h);
    for (int j = 0; j < n; ++j) rows[i + j] = base + j * row_stride;
    i += n;
  }
}

// One split of (b, h): its spans in order, the G query heads together. GS > 0: the group
// size as a compile-time constant, for the AVX2 span kernels (cpu_span_kernels.h); GS = 0:
// the generic loops. BF: bf16 storage, else f16.
template <int D, int GS, bool BF>
void run_split(const float* qf, int G, const PagedKV& kv, const RoutePlan& plan, int b, int h,
               int32_t span_begin, int32_t span_end, SplitResult& r) {
  const uint16_t* pages = static_cast<const uint16_t*>(kv.pages);
  const int64_t vstride = kv.v_stride();
  const int QH = G * kv.num_kv_heads;
  const float log_thr = plan.policy.blasst_threshold > 0
                            ? float(std::log(plan.policy.blasst_threshold)) : kNegInf;
  r.m.assign(size_t(G), kNegInf);
  r.l.assign(size_t(G), 0.f);
  r.acc.assign(size_t(G) * D, 0.f);
  r.skipped_mass.assign(size_t(G), 0.0);
  r.skipped_vnorm.assign(size_t(G), 0.0);

  // Per-thread scratch: scores [G][len], row pointers, converted V rows [len][D].
  thread_local std::vector<float> scores, vbuf;
  thread_local std::vector<const uint16_t*> rows;
  alignas(64) float row[D];
  int32_t last_block = -1;
  bool block_v_read = false;
  for (int32_t si = span_begin; si < span_end; ++si) {
    const Span& sp = plan.spans[size_t(si)];
    const int len = sp.end - sp.begin;
    scores.resize(size_t(G) * size_t(len));
    rows.resize(size_t(len));
    span_rows(kv, pages, b, h, sp.begin, len, rows.data());
#if defined(SR_SPAN_AVX2)
    // The next span's first rows, while this one is computed.
    if (si + 1 < span_end) {
      const Span& next = plan.spans[size_t(si) + 1];
      cpu::prefetch_row(pages + kv.k_offset(b, next.begin, h), D * 2);
    }
#endif
    // K pass: scores[g][i] = q'_g . k_i
#if defined(SR_SPAN_AVX2)
    if constexpr (GS > 0)
      cpu::span_scores_avx2<D, GS, BF>(qf, rows.data(), vstride, len, scores.data());
    else
#endif
      cpu::span_scores_generic(qf, G, D, BF, rows.data(), len, scores.data(), row);
    if (sp.kind == SpanKind::KeysOnly) {
      if (sp.block != last_block) {
        if (last_block >= 0 && !block_v_read) ++r.blocks_v_skipped;
        last_block = sp.block;
        block_v_read = false;
      }
      bool skip = true;
      for (int g = 0; g < G && skip; ++g) {
        const float thr = plan.sink_max[size_t(b) * QH + size_t(h) * G + g] + log_thr;
        for (int i = 0; i < len; ++i) skip &= scores[size_t(g) * len + i] < thr;
      }
      if (skip) {
        const float vmax = kv.has_summaries() ? kv.block_value_norm(b, sp.block, h)
                                              : std::numeric_limits<float>::infinity();
        for (int g = 0; g < G; ++g) {
          const double ma = plan.sink_max[size_t(b) * QH + size_t(h) * G + g];
          double mass = 0;
          for (int i = 0; i < len; ++i) mass += std::exp(double(scores[size_t(g) * len + i]) - ma);
          r.skipped_mass[size_t(g)] += mass;
          r.skipped_vnorm[size_t(g)] += mass * vmax;
        }
        continue;
      }
      block_v_read = true;
      r.v_tokens_read += len;
    }
    // Online softmax (rescale each head's state to the new maximum, scores into weights),
    // then the V pass: acc_g += p_gi * v_i.
#if defined(SR_SPAN_AVX2)
    if constexpr (GS > 0) {
      vbuf.resize(size_t(len) * D);
      cpu::span_softmax_avx2<D>(scores.data(), G, len, r.m.data(), r.l.data(), r.acc.data());
      cpu::span_values_avx2<D, GS, BF>(scores.data(), rows.data(), vstride, len, r.acc.data(), vbuf.data());
      continue;
    }
#endif
    cpu::span_softmax_generic(scores.data(), G, len, r.m.data(), r.l.data(), r.acc.data(), D);
    cpu::span_values_generic(scores.data(), G, D, BF, rows.data(), vstride, len, r.acc.data(), row);
  }
  if (last_block >= 0 && !block_v_read) ++r.blocks_v_skipped;
}

using SplitFn = void (*)(const float*, int, const PagedKV&, const RoutePlan&, int, int, int32_t, int32_t,
                         SplitResult&);

template <int D, bool BF>
SplitFn split_fn_for_group(int G) {
#if defined(SR_SPAN_AVX2)
  switch (G) {
    case 1: return run_split<D, 1, BF>;
    case 2: return run_split<D, 2, BF>;
    case 3: return run_split<D, 3, BF>;
    case 4: return run_split<D, 4, BF>;
    case 5: return run_split<D, 5, BF>;
    case 6: return run_split<D, 6, BF>;
    case 7: return run_split<D, 7, BF>;
    case 8: return run_split<D, 8, BF>;
    default: break;
  }
#endif
  (void)G;
  return run_split<D, 0, BF>;
}

// The split kernel for a head size, group size and storage type (one selector).
SplitFn select_split_fn(int D, int G, bool bf) {
  if (D == 64) return bf ? split_fn_for_group<64, true>(G) : split_fn_for_group<64, false>(G);
  return bf ? split_fn_for_group<128, true>(G) : split_fn_for_group<128, false>(G);
}

}  // namespace

void decode_cpu(const TensorView& q, const PagedKV& kv, RoutePlan& plan, const TensorView& out,
                ThreadPool& pool) {
  check_decode_shapes(q, kv, &out, false);
  SR_CHECK(plan.batch == kv.batch && plan.num_kv_heads == kv.num_kv_heads &&
               plan.head_dim == kv.head_dim && plan.group * kv.num_kv_heads == q.shape[1],
           "decode: the plan was made for another batch shape");
  const int B = kv.batch, H = kv.num_kv_heads, D = kv.head_dim, G = plan.group, QH = G * H;
  const int64_t total_splits = plan.split_indptr.back();
  std::vector<SplitResult> results(static_cast<size_t>(total_splits));
  // Work items: every split of every (b, h).
  std::vector<int32_t> item_bh(static_cast<size_t>(total_splits));
  for (int bh = 0; bh < B * H; ++bh)
    for (int32_t s = plan.split_indptr[size_t(bh)]; s < plan.split_indptr[size_t(bh) + 1]; ++s)
      item_bh[size_t(s)] = bh;

  const SplitFn split_fn = select_split_fn(D, G, kv.dtype == DType::BF16);
  pool.parallel_for(total_splits, [&](int64_t item) {
    const int bh = item_bh[size_t(item)];
    const int b = bh / H, h = bh % H;
    std::vector<float> qf(size_t(G) * D);
    for (int g = 0; g < G; ++g)
      for (int d = 0; d < D; ++d) qf[size_t(g) * D + d] = q.load(q.offset(b, h * G + g, d)) * plan.scale;
    const int32_t s0 = plan.split_begin[size_t(item)], s1 = plan.split_begin[size_t(item) + 1];
    split_fn(qf.data(), G, kv, plan, b, h, s0, s1, results[size_t(item)]);
  });

  // Combine: merge the splits of each (b, h), normalise, write, finish the statistics.
  const bool blasst = plan.policy.kind == PolicyKind::Blasst;
  pool.parallel_for(int64_t(B) * H, [&](int64_t bh) {
    const int b = int(bh / H), h = int(bh % H);
    const int32_t first = plan.split_indptr[size_t(bh)], last = plan.split_indptr[size_t(bh) + 1];
    SplitResult& acc = results[size_t(first)];
    for (int32_t s = first + 1; s < last; ++s) {
      SplitResult& r = results[size_t(s)];
      for (int g = 0; g < G; ++g)
        merge_state(acc.m[size_t(g)], acc.l[size_t(g)], &acc.acc[size_t(g) * D], r.m[size_t(g)],
                    r.l[size_t(g)], &r.acc[size_t(g) * D], D);
      for (int g = 0; g < G; ++g) {
        acc.skipped_mass[size_t(g)] += r.skipped_mass[size_t(g)];
        acc.skipped_vnorm[size_t(g)] += r.skipped_vnorm[size_t(g)];
      }
      acc.v_tokens_read += r.v_tokens_read;
      acc.blocks_v_skipped += r.blocks_v_skipped;
    }
    HeadStats& st = plan.stats[size_t(bh)];
    if (blasst) {
      st.bytes_blocks += acc.v_tokens_read * kv.token_bytes() / 2;
      st.blocks_skipped = acc.blocks_v_skipped;
    }
    for (int g = 0; g < G; ++g) {
      const size_t qi = size_t(b) * QH + size_t(h) * G + size_t(g);
      const float inv = acc.l[size_t(g)] > 0 ? 1.f / acc.l[size_t(g)] : 0.f;
      double norm2 = 0;
      for (int d = 0; d < D; ++d) {
        const float o = acc.acc[size_t(g) * D + d] * inv;
        out.store(out.offset(b, h * G + g, d), o);
        norm2 += double(o) * o;
      }
      if (blasst) {
        const double z = plan.sink_sum[qi];
        plan.delta[qi] = float(acc.skipped_mass[size_t(g)] / z * (1 + 1e-6));
        plan.skipped_v_bound[qi] = float(acc.skipped_vnorm[size_t(g)] / z * (1 + 1e-6));
      }
      const float bound = float((plan.skipped_v_bound[qi] + plan.delta[qi] * std::sqrt(norm2)) * (1 + 1e-5));
      st.delta = std::max(st.delta, plan.delta[qi]);
      st.output_error_bound = std::max(st.output_error_bound, bound);
    }
  });
}

std::vector<HeadStats> decode_attention(const TensorView& q, const PagedKV& kv,
                                        const AttentionPolicy& policy, float scale,
                                        const TensorView& out, ThreadPool& pool) {
  RoutePlan plan = plan_decode(q, kv, policy, scale, pool.size(), &pool);
  decode_cpu(q, kv, plan, out, pool);
  return plan.stats;
}

}  // namespace sinkrouter
