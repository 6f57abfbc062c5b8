// JSON and one-line summaries of attention statistics and generation results.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "sinkrouter/attention/decode.h"
#include "sinkrouter/engine/engine.h"

namespace sinkrouter::apps {

nlohmann::json head_stats_json(const HeadStats& s);
nlohmann::json generate_result_json(const GenerateResult& r, const AttentionPolicy& policy);
std::string generate_summary_line(const GenerateResult& r, const AttentionPolicy& policy);

}  // namespace sinkrouter::apps
