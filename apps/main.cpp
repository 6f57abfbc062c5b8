// The `sinkrouter` command line: generate, inspect, eval, analyze, bench-attention, ...
#include <cstdio>
#include <map>
#include <string>

#include "commands.h"
#include "sinkrouter/core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"SinkRouter: sink-aware sparse decode attention for long-context LLMs"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "sinkrouter 0.1.0");
  std::map<std::string, sinkrouter::apps::Runner> runners;
  runners["bench-attention"] = sinkrouter::apps::register_bench_attention(app);
  runners["inspect"] = sinkrouter::apps::register_inspect(app);
  runners["generate"] = sinkrouter::apps::register_generate(app);
  runners["compare"] = sinkrouter::apps::register_compare(app);
  runners["eval"] = sinkrouter::apps::register_eval(app);
  runners["bench-decode"] = sinkrouter::apps::register_bench_decode(app);
  runners["analyze"] = sinkrouter::apps::register_analyze(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (const auto* sub : app.get_subcommands()) return runners.at(sub->get_name())();
  } catch (const sinkrouter::Error& e) {
    std::fprintf(stderr, "sinkrouter: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sinkrouter: unexpected error: %s\n", e.what());
    return 1;
  }
  return 0;
}
