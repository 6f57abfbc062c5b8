// `sinkrouter inspect FILE [--json]`: what a GGUF file holds. The header (version,
// alignment, where the data section starts), every metadata key with its type and value
// (long arrays shortened to their first items and the count), the tensor table (name,
// type, shape ne, bytes, offset) and the totals. Opening validates the whole file, so
// this is also the quickest way to see why a file is rejected.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "sinkrouter/model/gguf.h"

namespace sinkrouter::apps {
namespace {

struct InspectOptions {
  std::string path;
  bool json = false;
  size_t max_items = 8;
};

// "u32", "string", "array[string]", "array[array]".
std::string type_label(const GGUFValue& v) {
  if (v.type != GGUFValue::Type::ARRAY) return gguf_value_type_name(v.type);
  return fmt::format("array[{}]", gguf_value_type_name(v.array_type));
}

nlohmann::json value_json(const GGUFValue& v, size_t max_items) {
  using T = GGUFValue::Type;
  switch (v.type) {
    case T::U8: case T::U16: case T::U32: case T::U64: return v.u;
    case T::I8: case T::I16: case T::I32: case T::I64: return v.i;
    case T::F32: return double(float(v.f));
    case T::F64: return v.f;
    case T::BOOL: return v.u != 0;
    case T::STRING: return v.s;
    case T::ARRAY: {
      nlohmann::json items = nlohmann::json::array();
      for (size_t k = 0; k < std::min(max_items, v.array.size()); ++k) items.push_back(value_json(v.array[k], max_items));
      return {{"count", v.array.size()}, {"items", items}};
    }
  }
  return nullptr;
}

std::string shape_str(const std::vector<int64_t>& ne) { return fmt::format("[{}]", fmt::join(ne, ", ")); }

int run(const InspectOptions& o) {
  const GGUFFile f = GGUFFile::open(o.path);
  uint64_t total_bytes = 0;
  int64_t total_values = 0;
  for (const GGUFTensorInfo& t : f.tensors()) {
    total_bytes += t.nbytes;
    total_values += t.numel();
  }
  if (o.json) {
    nlohmann::json metadata = nlohmann::json::array();
    for (const auto& [key, value] : f.metadata())
      metadata.push_back({{"key", key}, {"type", type_label(value)}, {"value", value_json(value, o.max_items)}});
    nlohmann::json tensors = nlohmann::json::array();
    for (const GGUFTensorInfo& t : f.tensors())
      tensors.push_back({{"name", t.name}, {"type", ggml_type_name(t.type)}, {"ne", t.ne}, {"bytes", t.nbytes},
                         {"offset", t.offset}, {"dequantize", ggml_type_supported(t.type)}});
    const nlohmann::json out = {{"path", f.path()},           {"version", f.version()},
                                {"file_size", f.file_size()}, {"alignment", f.alignment()},
                                {"data_offset", f.data_offset()}, {"metadata", metadata},
                                {"tensors", tensors},         {"total_tensor_bytes", total_bytes},
                                {"total_values", total_values}};
    // Token strings need not be valid UTF-8 (byte-level BPE pieces): replace, don't throw.
    fmt::print("{}\n", out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
    return 0;
  }

  fmt::print("{}: GGUF v{}, {} bytes, alignment {}, data section at offset {}\n", f.path(), f.version(),
             f.file_size(), f.alignment(), f.data_offset());
  fmt::print("\nmetadata ({} keys):\n", f.metadata().size());
  size_t key_width = 0;
  for (const auto& kv : f.metadata()) key_width = std::max(key_width, kv.first.size());
  for (const auto& [key, value] : f.metadata())
    fmt::print("  {:<{}}  {:<14} {}\n", key, key_width, type_label(value), value.to_display(o.max_items));

  fmt::print("\ntensors ({}):\n", f.tensors().size());
  size_t name_width = 4;
  for (const GGUFTensorInfo& t : f.tensors()) name_width = std::max(name_width, t.name.size());
  fmt::print("  {:<{}}  {:<8} {:<22} {:>12} {:>12}\n", "name", name_width, "type", "shape (ne)", "bytes", "offset");
  for (const GGUFTensorInfo& t : f.tensors())
    fmt::print("  {:<{}}  {:<8} {:<22} {:>12} {:>12}{}\n", t.name, name_width, ggml_type_name(t.type),
               shape_str(t.ne), t.nbytes, t.offset, ggml_type_supported(t.type) ? "" : "  (not dequantised)");
  fmt::print("\ntotal: {} tensors, {} values, {} bytes ({:.2f} bits per value)\n", f.tensors().size(), total_values,
             total_bytes, total_values ? 8.0 * double(total_bytes) / double(total_values) : 0.0);
  return 0;
}

}  // namespace

Runner register_inspect(CLI::App& app) {
  auto o = std::make_shared<InspectOptions>();
  CLI::App* cmd = app.add_subcommand("inspect", "show a GGUF file's header, metadata and tensor table");
  cmd->add_option("file", o->path, "the GGUF file")->required();
  cmd->add_flag("--json", o->json, "print JSON instead of text");
  cmd->add_option("--max-items", o->max_items, "array items shown before the count")
      ->check(CLI::Range(size_t(0), size_t(1) << 20))
      ->capture_default_str();
  return [o] { return run(*o); };
}

}  // namespace sinkrouter::apps
