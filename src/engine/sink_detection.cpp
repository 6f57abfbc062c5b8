#include "sink_detection.h"

#include <algorithm>
#include <numeric>

namespace sinkrouter {

std::vector<int32_t> select_sinks(const float* received, int64_t n, const std::vector<int32_t>& existing,
                                  int max_new, float min_share) {
  std::vector<int32_t> chosen;
  if (n <= 0 || max_new <= 0) return chosen;
  const int64_t top = std::min<int64_t>(n, 64);
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + top, order.end(),
                    [&](int32_t a, int32_t b) { return received[a] > received[b]; });
  for (int64_t i = 0; i < top && int(chosen.size()) < max_new; ++i) {
    const int32_t p = order[size_t(i)];
    if (received[p] < min_share) break;
    if (std::find(existing.begin(), existing.end(), p) == existing.end()) chosen.push_back(p);
  }
  return chosen;
}

}  // namespace sinkrouter
