// Sink detection at the end of a prefill: keys that receive an outsized share of the
// attention of the prompt's last queries become anchors (DESIGN.md §2: "detected, not
// assumed"). The GPU engine uses this; the CPU session applies the same rule and constants
// (cpu_session.cpp, kSinkShare and kObservedQueries).
#pragma once

#include <cstdint>
#include <vector>

namespace sinkrouter {

// Keys receiving at least this share of the attention of the last kSinkObservedQueries
// queries of the prompt (averaged over those queries and the query heads of a KV head).
constexpr float kSinkMinShare = 0.02f;
constexpr int kSinkObservedQueries = 32;

// received: [n] mean attention per key of one KV head. Returns up to max_new positions,
// largest share first, among the 64 largest, each with share >= min_share and not in
// `existing`.
std::vector<int32_t> select_sinks(const float* received, int64_t n, const std::vector<int32_t>& existing,
                                  int max_new, float min_share = kSinkMinShare);

}  // namespace sinkrouter
