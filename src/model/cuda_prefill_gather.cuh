// What the wgmma prefill kernel (v3, cuda_prefill_wgmma.cu) feeds its tensor cores with: K
// and V rows of one KV head gathered from the paged cache into a ring of shared-memory
// stages by cp.async, and the CTA's query rows. Where each 16-byte chunk lands is the
// caller's (a `dst(tile, row, chunk)` giving a shared-space address; v3: 128-byte-swizzled
// tiles). Version 2 (cuda_prefill_flash2.cu) keeps the same code as lambdas of its own: on
// it this struct measured 6-7 % slower at head_dim 128 (248 registers, run 9l), the same at 64.
//
// Thread tid copies chunk tid % (D / 8) of the tile rows tid / (D / 8) + i * kRowsPerPass.
// A tile's page ids are loaded one step before its copies are issued (load_ids, then
// issue): the page-table load is in flight while the previous tile is computed, and the
// page index is a multiply and a shift (FastDiv), not a division. Keys at or past the
// cache's end are zero-filled (their pages may hold the cache's NaN poison, and 0 x NaN is
// NaN even where P is 0).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "core/cuda_fast_div.cuh"
#include "core/cuda_mma.cuh"
#include "cuda_prefill_attention.h"

namespace sinkrouter {

template <int D, int KEYS, int THREADS>
struct PagedKVGather {
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row
  static constexpr int kRowsPerPass = THREADS / kChunks;
  static constexpr int kCopyRows = KEYS / kRowsPerPass;  // K (and V) rows each thread copies per tile
  static_assert(THREADS % kChunks == 0 && KEYS % kRowsPerPass == 0, "copy layout");

  const uint16_t* pages;
  const int32_t* page_ids;  // this sequence's
  cuda::FastDiv page_div;
  int page_size, n32, copy_row, copy_chunk;  // n32: keys in the cache (< 2^31, checked by the launchers)
  int64_t row_elems, vstride, head_off;      // one token of one page; K to V; head h's chunk in a row
  int ids[kCopyRows];                        // page ids of the tile to issue next (-1: zero-fill)

  __device__ PagedKVGather(const PrefillAttentionArgs& a, int h, int tid)
      : pages(static_cast<const uint16_t*>(a.kv.pages)),
        page_ids(a.kv.indices + a.kv.indptr[0]),
        page_div(a.kv.page_size),
        page_size(a.kv.page_size),
        n32(int(a.p0 + a.c)),
        copy_row(tid / kChunks),
        copy_chunk(tid % kChunks),
        row_elems(int64_t(a.kv.num_kv_heads) * D),
        vstride(a.kv.v_stride()),
        head_off(int64_t(h) * D + (tid % kChunks) * 8) {}

  __device__ __forceinline__ void load_ids(int tile) {
#pragma unroll
    for (int i = 0; i < kCopyRows; ++i) {
      const int key = tile * KEYS + copy_row + i * kRowsPerPass;
      ids[i] = key < n32 ? page_ids[page_div.div(uint32_t(key))] : -1;
    }
  }

  // The copies of `tile` (its ids loaded last): K row r's chunk to dst(tile, r, chunk), its
  // V row's v_bytes further on.
  template <class Dst>
  __device__ __forceinline__ void issue(int tile, const Dst& dst, uint32_t v_bytes) const {
#pragma unroll
    for (int i = 0; i < kCopyRows; ++i) {
      const int r = copy_row + i * kRowsPerPass;
      const int key = tile * KEYS + r;
      const bool valid = ids[i] >= 0;
      const int in_page = key - int(page_div.div(uint32_t(key))) * page_size;
      const int64_t off = valid ? (int64_t(ids[i]) * 2 * page_size + in_page) * row_elems + head_off : 0;
      const uint32_t to = dst(tile, r, copy_chunk);
      cuda::cp_async16_to(to, pages + off, valid);
      cuda::cp_async16_to(to + v_bytes, pages + off + (valid ? vstride : 0), valid);
    }
  }

  // The ring's start: tiles 0 .. NS - 2 (those that exist) issued, one commit group each
  // (query rows copied before join tile 0's group); the ids of tile NS - 1 loaded.
  template <int NS, class Dst>
  __device__ __forceinline__ void start(int num_tiles, const Dst& dst, uint32_t v_bytes) {
#pragma unroll
    for (int t = 0; t < NS - 1; ++t) {
      load_ids(t);
      if (t < num_tiles) issue(t, dst, v_bytes);
      cuda::cp_async_commit_group();
    }
    load_ids(NS - 1);
  }

  // After the barrier that frees tile kt - 1's stage: tile kt + NS - 1 issued into it (if it
  // exists), a commit group either way (keeps one group per tile for the waits), and the ids
  // of tile kt + NS loaded.
  template <int NS, class Dst>
  __device__ __forceinline__ void refill(int kt, int num_tiles, const Dst& dst, uint32_t v_bytes) {
    if (kt + NS - 1 < num_tiles) issue(kt + NS - 1, dst, v_bytes);
    cuda::cp_async_commit_group();
    load_ids(kt + NS);
  }
};

// The CTA's query rows q0 .. q0 + ROWS - 1 of query head qh, chunk `chunk` of row `row` to
// dst(row, chunk); rows past the chunk zero-filled. Not committed (joins the next group).
template <int D, int ROWS, int THREADS, class Dst>
__device__ __forceinline__ void copy_query_rows(const PrefillAttentionArgs& a, int64_t q0, int qh, int tid,
                                                const Dst& dst) {
  constexpr int kChunks = D / 8;
  for (int i = tid; i < ROWS * kChunks; i += THREADS) {
    const int row = i / kChunks, chunk = i % kChunks;
    const int64_t qi = q0 + row;
    const bool valid = qi < a.c;
    cuda::cp_async16_to(dst(row, chunk), a.q + (valid ? (qi * a.n_head + qh) * D : 0) + chunk * 8, valid);
  }
}

}  // namespace sinkrouter
