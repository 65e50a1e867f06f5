// Launch helpers shared by the CUDA kernels (roi_align, roi_pool, sigmoid_focal_loss).
// Only inline functions: the header is included by several translation units.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>

namespace detbench {
namespace cuda {

constexpr int kThreads = 256;

// Grid for a grid-stride loop over n elements (the cap only bounds the launch).
inline int64_t num_blocks(int64_t n) {
  return std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t{1} << 20);
}

// Raises unless every RoI batch index lies in [0, batch_size). Costs one small
// device-to-host copy (a synchronisation), the price of a Python error instead of
// an out-of-bounds read.
inline void check_batch_indices(const at::Tensor& rois, int64_t batch_size, const char* op) {
  const at::Tensor index = rois.select(1, 0);
  const bool ok = at::logical_and(index.ge(0), index.lt(batch_size)).all().item<bool>();
  TORCH_CHECK(ok, op, ": every RoI batch index must be an integer in [0, ", batch_size, ")");
}

}  // namespace cuda
}  // namespace detbench
