// libFuzzer target for the GGUF reader: any input must either open or throw
// sinkrouter::Error; an opened file's metadata must display and the first and last row
// of every dequantisable tensor must dequantise, all without leaving the buffer (ASan).
#include <cstdint>
#include <vector>

#include "sinkrouter/core/error.h"
#include "sinkrouter/model/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sinkrouter;
  try {
    const GGUFFile f = GGUFFile::from_bytes(data, size, "fuzz.gguf");
    for (const auto& kv : f.metadata()) (void)kv.second.to_display(4);
    std::vector<float> row;
    for (const GGUFTensorInfo& t : f.tensors()) {
      if (!ggml_type_supported(t.type) || t.ne[0] > (int64_t(1) << 20)) continue;
      row.resize(size_t(t.ne[0]));
      const int64_t row_bytes = ggml_row_bytes(t.type, t.ne[0]);
      dequantize_row(t.type, t.data, row.data(), t.ne[0]);
      dequantize_row(t.type, t.data + (t.rows() - 1) * row_bytes, row.data(), t.ne[0]);
    }
  } catch (const Error&) {
    // the expected outcome for most inputs
  }
  return 0;
}
