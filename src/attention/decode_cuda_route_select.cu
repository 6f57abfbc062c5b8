// The routing pass of the CUDA decoder, second kernel: route_select, one CTA of 512
// threads per (sequence, KV head), over the bound terms route_bounds wrote
// (decode_cuda_route.cu). It decides which routable blocks are read, as router.cpp does:
//   sinkrouter certified: skip the longest prefix of blocks, in ascending order of
//     c_j = max_g b_jg (ties by block index: a stable sort), whose per-head sums of b_jg
//     stay <= epsilon. One pass gathers the candidates (c_j <= epsilon) in block order and
//     sums their b_jg; if they all fit, all are skipped. Otherwise the candidates are
//     sorted in shared memory (CUB's stable block radix sort on the float bits of c_j),
//     prefix-summed per head in sorted order, and the first rank that does not fit is the
//     cut: block j is skipped iff (bits(c_j), j) < (bits, block) of that rank. More
//     candidates than the sort holds (sort_capacity): bisection on the float bits of the
//     threshold, then on the block index among the ties at it, so that the cut is the
//     sort's (slow; only past sort_capacity candidate blocks).
//   sinkrouter fast: not launched; route_bounds decides and its last CTA per (b, h) finishes.
//   streaming: skip every routable block.
//   quest: keep the k blocks of largest bound max_g u_jg, ties to the lower index (the
//     CPU's stable sort): a sort by bound, or, past sort_capacity blocks, the k-th largest
//     bound by bisection on its ordered bits.
// Then finish_routing (decode_cuda_route_tail.cuh) writes the kept-block list, the
// certificate, the anchors read alone and the statistics.
//
// Every pass is blocked: thread t takes 16 consecutive blocks per round of 8192, so all
// of a thread's loads are in flight together.
#include <climits>
#include <cstdint>

#include <cub/block/block_radix_sort.cuh>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "core/cuda_check.h"
#include "core/cuda_launch.cuh"
#include "decode_cuda_kernels.cuh"
#include "decode_cuda_route_tail.cuh"

namespace sinkrouter::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kItems = kRouteItems;        // blocks per thread per round
constexpr int kRound = kThreads * kItems;  // 8192
constexpr int kSmallItems = 2;             // the small sort: 1024 candidates
constexpr int kGChunk = kRouteGChunk;      // heads summed per pass (more: another pass)

using SortBig = cub::BlockRadixSort<uint32_t, kThreads, kItems, int32_t>;
using SortSmall = cub::BlockRadixSort<uint32_t, kThreads, kSmallItems, int32_t>;
using ScanInt = cub::BlockScan<int, kThreads>;
using ScanDbl = cub::BlockScan<double, kThreads>;
using ReduceInt = cub::BlockReduce<int, kThreads>;

union TempStorage {
  typename SortBig::TempStorage sort_big;
  typename SortSmall::TempStorage sort_small;
  typename ScanInt::TempStorage scan_int;
  typename ScanDbl::TempStorage scan_dbl;
  typename ReduceInt::TempStorage reduce_int;
};
constexpr int kTempBytes = (int(sizeof(TempStorage)) + 15) / 16 * 16;

using Head = RouteHead;

// c[i] = cost of block base + 16 t + i, +inf past the end.
__device__ __forceinline__ void load_costs(const Head& hd, int base, float (&c)[kItems]) {
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const int j = base + int(threadIdx.x) * kItems + i;
    c[i] = j < hd.nbr ? hd.cost[j] : INFINITY;
  }
}

// Whether every head's sum of b_jg over the blocks with pick(j, c_j) stays <= epsilon.
template <typename Pick>
__device__ bool sums_fit(const RouteArgs& a, const Head& hd, double* s_sum, Pick pick) {
  bool fits = true;
  for (int g0 = 0; g0 < hd.G; g0 += kGChunk) {
    double tot[kGChunk];
#pragma unroll
    for (int k = 0; k < kGChunk; ++k) tot[k] = 0;
    for (int base = 0; base < hd.nbr; base += kRound) {
      float c[kItems];
      load_costs(hd, base, c);
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        const int j = base + int(threadIdx.x) * kItems + i;
        if (j < hd.nbr && pick(j, c[i])) {
          const float* bt = hd.bterm + int64_t(j) * hd.G + g0;
#pragma unroll
          for (int k = 0; k < kGChunk; ++k)
            if (g0 + k < hd.G) tot[k] += bt[k];
        }
      }
    }
    route_block_sum<kThreads>(tot, s_sum);
    for (int k = 0; k < kGChunk && g0 + k < hd.G; ++k) fits = fits && s_sum[k] <= a.epsilon;
  }
  return fits;
}

// Sorts the m list entries (keys ascending, stable) and returns the blocked arrangement:
// thread t holds ranks ITEMS t .. ITEMS t + ITEMS - 1 (padding: key 0xffffffff, INT_MAX).
template <int ITEMS, typename Sort>
__device__ void sort_list(typename Sort::TempStorage& tmp, const uint32_t* list_key, const int32_t* list_j, int m,
                          uint32_t (&key)[ITEMS], int32_t (&jj)[ITEMS]) {
  // The list was written by other threads (quest writes entry j from thread j % kThreads,
  // this reads it from thread j / ITEMS): without this barrier a thread read entries not
  // yet written, stale shared memory of an earlier CTA, and quest then wrote keep[] at
  // stale block ids (run 2: wrong quest decisions, then an illegal address; racecheck's
  // hazard between the list writes in quest_select and the reads below).
  __syncthreads();
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    const int r = int(threadIdx.x) * ITEMS + i;
    key[i] = r < m ? list_key[r] : 0xffffffffu;
    jj[i] = r < m ? list_j[r] : INT_MAX;
  }
  __syncthreads();  // the temporary storage is shared with earlier scans
  Sort(tmp).Sort(key, jj);
  __syncthreads();
}

// Certified cut among m sorted candidates: the key (bits << 32 | block) of the first rank
// at which some head's prefix sum passes epsilon, or ~0 when none does.
template <int ITEMS, typename Sort>
__device__ uint64_t sorted_cut(const RouteArgs& a, TempStorage& tmp, typename Sort::TempStorage& sort_tmp,
                               const Head& hd, const uint32_t* list_key, const int32_t* list_j, int m) {
  __shared__ int s_first;
  __shared__ uint64_t s_key;
  uint32_t key[ITEMS];
  int32_t jj[ITEMS];
  if (threadIdx.x == 0) s_first = INT_MAX;
  sort_list<ITEMS, Sort>(sort_tmp, list_key, list_j, m, key, jj);
  int first = INT_MAX;
  for (int g = 0; g < hd.G; ++g) {
    double x[ITEMS];
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      const int r = int(threadIdx.x) * ITEMS + i;
      x[i] = r < m ? double(hd.bterm[int64_t(jj[i]) * hd.G + g]) : 0.0;
    }
    ScanDbl(tmp.scan_dbl).InclusiveSum(x, x);
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      const int r = int(threadIdx.x) * ITEMS + i;
      if (r < m && x[i] > a.epsilon && r < first) first = r;
    }
    __syncthreads();  // the scan storage is reused by the next head
  }
  atomicMin(&s_first, first);
  __syncthreads();
  const int f = s_first;
  if (f == INT_MAX) return ~0ull;
#pragma unroll
  for (int i = 0; i < ITEMS; ++i)
    if (int(threadIdx.x) * ITEMS + i == f) s_key = (uint64_t(key[i]) << 32) | uint32_t(jj[i]);
  __syncthreads();
  return s_key;
}

// Certified threshold key T: block j is skipped iff c_j <= epsilon and
// (bits(c_j) << 32 | j) < T.
__device__ uint64_t certified_threshold(const RouteArgs& a, TempStorage& tmp, uint32_t* list_key, int32_t* list_j,
                                        const Head& hd, float eps_f, double* s_sum) {
  // Candidates in block order into the list (as many as fit), and whether all fit.
  int m = 0;
  for (int base = 0; base < hd.nbr; base += kRound) {
    float c[kItems];
    load_costs(hd, base, c);
    int flag[kItems], pos[kItems], total;
#pragma unroll
    for (int i = 0; i < kItems; ++i) flag[i] = c[i] <= eps_f ? 1 : 0;
    ScanInt(tmp.scan_int).ExclusiveSum(flag, pos, total);
#pragma unroll
    for (int i = 0; i < kItems; ++i)
      if (flag[i] && m + pos[i] < a.sort_capacity) {
        list_key[m + pos[i]] = __float_as_uint(c[i]);
        list_j[m + pos[i]] = base + int(threadIdx.x) * kItems + i;
      }
    m += total;
    __syncthreads();  // scan storage reuse; the list is complete after the last round
  }
  if (sums_fit(a, hd, s_sum, [&](int, float c) { return c <= eps_f; })) return ~0ull;
  if (m <= kThreads * kSmallItems) return sorted_cut<kSmallItems, SortSmall>(a, tmp, tmp.sort_small, hd, list_key, list_j, m);
  if (m <= a.sort_capacity) return sorted_cut<kItems, SortBig>(a, tmp, tmp.sort_big, hd, list_key, list_j, m);
  // Too many candidates to sort: the largest threshold bits t with S(t) fitting.
  int lo = -1, hi = __float_as_int(eps_f);  // S(lo) fits (nothing skipped), S(hi) does not
  while (hi - lo > 1) {
    const int mid = lo + (hi - lo) / 2;
    if (sums_fit(a, hd, s_sum, [&](int, float c) { return __float_as_int(c) <= mid; }))
      lo = mid;
    else
      hi = mid;
  }
  // Blocks whose cost has the bits hi (at least one: S(hi) != S(hi - 1)) are taken in
  // block order, as the stable sort takes them: the largest J such that skipping also the
  // ties with j < J fits. J = first tie fits (that is S(lo)), J = last tie + 1 does not.
  const uint32_t tbits = uint32_t(hi);
  __shared__ int s_jmin, s_jmax;
  if (threadIdx.x == 0) {
    s_jmin = INT_MAX;
    s_jmax = -1;
  }
  __syncthreads();
  int jmin = INT_MAX, jmax = -1;
  for (int j = int(threadIdx.x); j < hd.nbr; j += kThreads)
    if (__float_as_uint(hd.cost[j]) == tbits) {
      jmin = min(jmin, j);
      jmax = max(jmax, j);
    }
  atomicMin(&s_jmin, jmin);
  atomicMax(&s_jmax, jmax);
  __syncthreads();
  int jlo = s_jmin, jhi = s_jmax + 1;
  while (jhi - jlo > 1) {
    const int mid = jlo + (jhi - jlo) / 2;
    if (sums_fit(a, hd, s_sum, [&](int j, float c) {
          const uint32_t u = __float_as_uint(c);
          return u < tbits || (u == tbits && j < mid);
        }))
      jlo = mid;
    else
      jhi = mid;
  }
  return (uint64_t(tbits) << 32) | uint32_t(jlo);
}

// Order-preserving map of a float to an unsigned int.
// -0 maps as +0: the CPU's comparison holds them equal (then the lower block index wins).
__device__ __forceinline__ uint32_t ordered_u32(float f) {
  const uint32_t u = __float_as_uint(f == 0.f ? 0.f : f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Number of blocks whose ordered bound is >= t (same value in every thread).
__device__ int count_at_least(TempStorage& tmp, const Head& hd, int64_t t) {
  __shared__ int s_total;
  int c = 0;
  for (int j = int(threadIdx.x); j < hd.nbr; j += kThreads) c += int64_t(ordered_u32(hd.ub[j])) >= t ? 1 : 0;
  const int total = ReduceInt(tmp.reduce_int).Sum(c);
  if (threadIdx.x == 0) s_total = total;
  __syncthreads();
  const int r = s_total;
  __syncthreads();
  return r;
}

// Quest: keep[j] for the k largest bounds, ties to the lower block index.
__device__ void quest_select(TempStorage& tmp, uint32_t* list_key, int32_t* list_j, int sort_capacity,
                             const Head& hd, int64_t k) {
  if (k >= hd.nbr || k <= 0) {
    for (int j = int(threadIdx.x); j < hd.nbr; j += kThreads) hd.keep[j] = k > 0 ? 1 : 0;
    return;
  }
  if (hd.nbr <= sort_capacity) {
    // Descending bound = ascending complement of its ordered bits; stable: lower block first.
    for (int j = int(threadIdx.x); j < hd.nbr; j += kThreads) {
      list_key[j] = ~ordered_u32(hd.ub[j]);
      list_j[j] = j;
    }
    auto mark = [&](auto items, auto& sort_tmp, auto sort_tag) {
      constexpr int ITEMS = decltype(items)::value;
      using Sort = typename decltype(sort_tag)::type;
      uint32_t key[ITEMS];
      int32_t jj[ITEMS];
      sort_list<ITEMS, Sort>(sort_tmp, list_key, list_j, hd.nbr, key, jj);
#pragma unroll
      for (int i = 0; i < ITEMS; ++i) {
        const int r = int(threadIdx.x) * ITEMS + i;
        if (r < hd.nbr) hd.keep[jj[i]] = r < k ? 1 : 0;
      }
    };
    struct SmallTag { using type = SortSmall; };
    struct BigTag { using type = SortBig; };
    if (hd.nbr <= kThreads * kSmallItems)
      mark(std::integral_constant<int, kSmallItems>{}, tmp.sort_small, SmallTag{});
    else
      mark(std::integral_constant<int, kItems>{}, tmp.sort_big, BigTag{});
    return;
  }
  // The k-th largest ordered bound t: the largest t with count(>= t) >= k.
  int64_t lo = 0, hi = int64_t(1) << 32;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (count_at_least(tmp, hd, mid) >= k)
      lo = mid;
    else
      hi = mid;
  }
  const int above = count_at_least(tmp, hd, lo + 1);
  int equal_seen = 0;
  for (int j0 = 0; j0 < hd.nbr; j0 += kThreads) {
    const int j = j0 + int(threadIdx.x);
    const int64_t key = j < hd.nbr ? int64_t(ordered_u32(hd.ub[j])) : -1;
    const int tie = key == lo ? 1 : 0;
    int rank, ties;
    ScanInt(tmp.scan_int).ExclusiveSum(tie, rank, ties);
    if (j < hd.nbr) hd.keep[j] = key > lo || (tie && equal_seen + rank < k - above) ? 1 : 0;
    equal_seen += ties;
    __syncthreads();
  }
}

// Dynamic shared memory: TempStorage, then the candidate list (sort_capacity keys and
// block ids).
__global__ void __launch_bounds__(kThreads) route_select_kernel(const RouteArgs a) {
  extern __shared__ __align__(16) unsigned char dsm[];
  TempStorage& tmp = *reinterpret_cast<TempStorage*>(dsm);
  uint32_t* list_key = reinterpret_cast<uint32_t*>(dsm + kTempBytes);
  int32_t* list_j = reinterpret_cast<int32_t*>(list_key + a.sort_capacity);
  __shared__ double s_sum[2 * kGChunk];
  pdl_begin(a);  // route_bounds' output
  const int bh = int(blockIdx.x), b = bh / a.kv.num_kv_heads;
  const int G = a.group, R = a.kv.block_size;
  const int64_t n = a.seq_lens[b];
  const int64_t ws = window_start_of(n, a.window, R);
  const int nbr = int(ws / R);
  const int64_t at = int64_t(bh) * a.block_stride;
  const Head hd{a.cost + at, a.bterm + at * G, a.ubound + at, a.keep + at, nbr, G};
  const float eps_f = __double2float_rd(a.epsilon);
  const bool by_key = !a.streaming && !a.quest && a.certified;

  uint64_t T = 0;
  if (a.quest) {
    const int64_t k = (int64_t(a.quest_budget) - (n - ws)) / R;  // truncates as the CPU's does
    quest_select(tmp, list_key, list_j, a.sort_capacity, hd, k > 0 ? k : 0);
  } else if (by_key) {
    T = certified_threshold(a, tmp, list_key, list_j, hd, eps_f, s_sum);
  }
  __syncthreads();  // keep[] of quest visible to every thread

  // Kept-block list, certificate, anchors and statistics. Skipped: certified by key;
  // quest by keep[]; streaming everything.
  finish_routing<kThreads>(a, hd, bh, n, ws, by_key, T, eps_f);
}

}  // namespace

int route_select_prepare(const RouteArgs& a) {
  const int smem = kTempBytes + a.sort_capacity * 8;
  raise_smem_limit(reinterpret_cast<const void*>(route_select_kernel), smem);
  return smem;
}

void route_select_launch(const RouteArgs& a, int batch, int num_kv_heads, int smem, cudaStream_t stream) {
  launch_pdl(route_select_kernel, dim3(unsigned(batch * num_kv_heads)), dim3(kThreads), size_t(smem), stream, a);
}

}  // namespace sinkrouter::cuda
