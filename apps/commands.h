// Each subcommand of the `sinkrouter` program registers itself on the CLI11 app and
// returns the function that runs it once parsing succeeded.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace sinkrouter::apps {

using Runner = std::function<int()>;

Runner register_bench_attention(CLI::App& app);
Runner register_inspect(CLI::App& app);
Runner register_generate(CLI::App& app);
Runner register_compare(CLI::App& app);
Runner register_eval(CLI::App& app);
Runner register_bench_decode(CLI::App& app);
Runner register_analyze(CLI::App& app);

}  // namespace sinkrouter::apps
