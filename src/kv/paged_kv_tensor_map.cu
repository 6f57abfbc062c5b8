#include "paged_kv_tensor_map.h"

#include "core/cuda_hopper.h"
#include "sinkrouter/core/error.h"

namespace sinkrouter::cuda {

CUtensorMap paged_kv_tensor_map(const PagedKV& kv, int box_rows, int box_kv, int l2_promotion, const char* who) {
  SR_CHECK(tensor_map_encoder() != nullptr, "{}: the driver has no cuTensorMapEncodeTiled", who);
  SR_CHECK(kv.head_dim % 64 == 0 && box_rows >= 1 && box_rows <= kv.page_size && box_rows <= 256 &&
               (box_kv == 1 || box_kv == 2),
           "{}: no TMA box of {} rows x {} for page size {} and head_dim {}", who, box_rows, box_kv, kv.page_size,
           kv.head_dim);
  // Page ids are int32: the page dimension only bounds what the ids can name.
  constexpr cuuint64_t kMaxPages = cuuint64_t(1) << 31;
  const cuuint64_t row_bytes = cuuint64_t(kv.num_kv_heads) * kv.head_dim * 2;  // one token of a page, K or V
  const cuuint64_t dims[5] = {64, cuuint64_t(kv.num_kv_heads) * (kv.head_dim / 64), cuuint64_t(kv.page_size), 2,
                              kMaxPages};
  const cuuint64_t strides[4] = {128, row_bytes, row_bytes * kv.page_size, row_bytes * kv.page_size * 2};
  const cuuint32_t box[5] = {64, 1, cuuint32_t(box_rows), cuuint32_t(box_kv), 1};
  const cuuint32_t element_strides[5] = {1, 1, 1, 1, 1};
  const CUtensorMapL2promotion promotion = l2_promotion >= 256   ? CU_TENSOR_MAP_L2_PROMOTION_L2_256B
                                           : l2_promotion >= 128 ? CU_TENSOR_MAP_L2_PROMOTION_L2_128B
                                                                 : CU_TENSOR_MAP_L2_PROMOTION_NONE;
  const CUtensorMapDataType type =
      kv.dtype == DType::F16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  CUtensorMap map;
  const CUresult r = tensor_map_encoder()(&map, type, 5, const_cast<void*>(kv.pages), dims, strides, box,
                                          element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                          promotion, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  SR_CHECK(r == CUDA_SUCCESS, "{}: cuTensorMapEncodeTiled failed (CUresult {}) for page size {}, head_dim {}", who,
           int(r), kv.page_size, kv.head_dim);
  return map;
}

}  // namespace sinkrouter::cuda
