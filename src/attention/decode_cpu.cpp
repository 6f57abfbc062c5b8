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

// One KV head's part of a work item: its pre-scaled queries [G][D], its spans
// [span_begin, span_end) of the plan, where its partial state goes, and blasst's
// bookkeeping of the block being read.
struct SplitLane {
  int h = 0;
  const float* qf = nullptr;
  int32_t span_begin = 0, span_end = 0;
  SplitResult* r = nullptr;
  int32_t last_block = -1;
  bool block_v_read = false;
};

// One work item of sequence b: the lanes' spans in order, the G query heads of each lane
// together. Several lanes (KV heads with the same spans, as under dense attention) go in
// lockstep, span by span: a token's K (and V) rows of all heads are adjacent in a page, so
// the item streams whole rows instead of one head's slice of each. GS > 0: the group size
// as a compile-time constant, for the AVX2 span kernels (cpu_span_kernels.h); GS = 0: the
// generic loops. BF: bf16 storage, else f16.
template <int D, int GS, bool BF>
void run_split(SplitLane* lanes, int nlanes, int G, const PagedKV& kv, const RoutePlan& plan, int b) {
  const uint16_t* pages = static_cast<const uint16_t*>(kv.pages);
  const int64_t vstride = kv.v_stride();
  const int QH = G * kv.num_kv_heads;
  const float log_thr = plan.policy.blasst_threshold > 0
                            ? float(std::log(plan.policy.blasst_threshold)) : kNegInf;
  for (int j = 0; j < nlanes; ++j) {
    SplitResult& r = *lanes[j].r;
    r.m.assign(size_t(G), kNegInf);
    r.l.assign(size_t(G), 0.f);
    r.acc.assign(size_t(G) * D, 0.f);
    r.skipped_mass.assign(size_t(G), 0.0);
    r.skipped_vnorm.assign(size_t(G), 0.0);
  }
  // Lockstep lanes are heads lanes[0].h .. + nlanes - 1: the first one prefetches all
  // their rows (adjacent), the others find them in cache.
  const int lead_prefetch = D * 2 * nlanes;

  // Per-thread scratch: scores [G][len], row pointers, converted V rows [len][D].
  thread_local std::vector<float> scores, vbuf;
  thread_local std::vector<const uint16_t*> rows;
  alignas(64) float row[D];
  const int32_t count = lanes[0].span_end - lanes[0].span_begin;
  for (int32_t k = 0; k < count; ++k)
    for (int j = 0; j < nlanes; ++j) {
      SplitLane& lane = lanes[j];
      SplitResult& r = *lane.r;
      const int h = lane.h;
      const int32_t si = lane.span_begin + k;
      const Span& sp = plan.spans[size_t(si)];
      const int len = sp.end - sp.begin;
      scores.resize(size_t(G) * size_t(len));
      rows.resize(size_t(len));
      span_rows(kv, pages, b, h, sp.begin, len, rows.data());
#if defined(SR_SPAN_AVX2)
      // The next span's first rows, while this one is computed.
      if (j == 0 && si + 1 < lane.span_end) {
        const Span& next = plan.spans[size_t(si) + 1];
        cpu::prefetch_row(pages + kv.k_offset(b, next.begin, h), lead_prefetch);
      }
#endif
      // K pass: scores[g][i] = q'_g . k_i
#if defined(SR_SPAN_AVX2)
      if constexpr (GS > 0)
        cpu::span_scores_avx2<D, GS, BF>(lane.qf, rows.data(), vstride, len, scores.data(),
                                         j == 0 ? lead_prefetch : 0);
      else
#endif
        cpu::span_scores_generic(lane.qf, G, D, BF, rows.data(), len, scores.data(), row);
      if (sp.kind == SpanKind::KeysOnly) {
        if (sp.block != lane.last_block) {
          if (lane.last_block >= 0 && !lane.block_v_read) ++r.blocks_v_skipped;
          lane.last_block = sp.block;
          lane.block_v_read = false;
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
        lane.block_v_read = true;
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
  for (int j = 0; j < nlanes; ++j)
    if (lanes[j].last_block >= 0 && !lanes[j].block_v_read) ++lanes[j].r->blocks_v_skipped;
}

using SplitFn = void (*)(SplitLane*, int, int, const PagedKV&, const RoutePlan&, int);

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

// The token ranges a split reads, adjacent spans merged: [begin, end) pairs.
void split_ranges(const RoutePlan& plan, int32_t s0, int32_t s1, std::vector<int32_t>& out) {
  out.clear();
  for (int32_t i = s0; i < s1; ++i) {
    const Span& sp = plan.spans[size_t(i)];
    if (!out.empty() && out.back() == sp.begin)
      out.back() = sp.end;
    else {
      out.push_back(sp.begin);
      out.push_back(sp.end);
    }
  }
}

// Whether every KV head of sequence b reads, split by split, the tokens head 0 reads (dense
// always does; a routed plan that keeps the same blocks for every head does too, its
// anchors only cutting spans differently), with no blasst spans (whose V reads are
// decided per head). Then head 0's spans serve every head, in lockstep.
bool heads_share_tokens(const RoutePlan& plan, int b) {
  const int H = plan.num_kv_heads;
  const int bh0 = b * H;
  const int32_t splits = plan.num_splits(bh0);
  for (int h = 0; h < H; ++h)
    for (int32_t i = plan.span_indptr[size_t(bh0 + h)]; i < plan.span_indptr[size_t(bh0 + h) + 1]; ++i)
      if (plan.spans[size_t(i)].kind == SpanKind::KeysOnly) return false;
  std::vector<int32_t> ref, other;
  for (int h = 1; h < H; ++h)
    if (plan.num_splits(bh0 + h) != splits) return false;
  for (int32_t s = 0; s < splits; ++s) {
    const int32_t i0 = plan.split_indptr[size_t(bh0)] + s;
    split_ranges(plan, plan.split_begin[size_t(i0)], plan.split_begin[size_t(i0) + 1], ref);
    for (int h = 1; h < H; ++h) {
      const int32_t ih = plan.split_indptr[size_t(bh0 + h)] + s;
      split_ranges(plan, plan.split_begin[size_t(ih)], plan.split_begin[size_t(ih) + 1], other);
      if (other != ref) return false;
    }
  }
  return true;
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
  // Queries per query head, pre-scaled: scores are q' . k.
  std::vector<float> qf(size_t(B) * QH * D);
  for (int b = 0; b < B; ++b)
    for (int qh = 0; qh < QH; ++qh)
      for (int d = 0; d < D; ++d)
        qf[(size_t(b) * QH + qh) * D + d] = q.load(q.offset(b, qh, d)) * plan.scale;
  // Work items: each split of each (b, h); or, where all heads of b read the same tokens,
  // each split of b with every head in lockstep over head 0's spans.
  struct Item {
    int b, h0, heads;
    int32_t split;  // index of the split within its (b, h)
  };
  std::vector<Item> items;
  for (int b = 0; b < B; ++b) {
    const bool shared = H > 1 && heads_share_tokens(plan, b);
    for (int h = 0; h < H; h += shared ? H : 1)
      for (int32_t s = 0; s < plan.num_splits(b * H + h); ++s) items.push_back({b, h, shared ? H : 1, s});
  }
  const SplitFn split_fn = select_split_fn(D, G, kv.dtype == DType::BF16);
  pool.parallel_for(int64_t(items.size()), [&](int64_t i) {
    const Item& it = items[size_t(i)];
    SplitLane lanes[16];
    std::vector<SplitLane> many;
    SplitLane* lane = it.heads <= 16 ? lanes : (many.resize(size_t(it.heads)), many.data());
    const int32_t lead = plan.split_indptr[size_t(it.b * H + it.h0)] + it.split;
    for (int j = 0; j < it.heads; ++j) {
      const int h = it.h0 + j, bh = it.b * H + h;
      const int32_t item = plan.split_indptr[size_t(bh)] + it.split;
      lane[j] = SplitLane{};
      lane[j].h = h;
      lane[j].qf = &qf[(size_t(it.b) * QH + size_t(h) * G) * D];
      lane[j].span_begin = plan.split_begin[size_t(lead)];  // the lead head's spans (same tokens)
      lane[j].span_end = plan.split_begin[size_t(lead) + 1];
      lane[j].r = &results[size_t(item)];
    }
    split_fn(lane, it.heads, G, kv, plan, it.b);
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
