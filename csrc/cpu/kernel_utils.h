// Helpers shared by the CPU RoI kernels (roi_align, roi_pool). Only inline functions:
// the header is included by several translation units.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>

#include "cpu/roi_align_common.h"

namespace detbench {
namespace cpu {

// Fewest output bins (forward) or gradient bins (backward) worth a thread of their own:
// below that a parallel region costs more than it saves, and on a busy machine it can
// wait milliseconds for a free core (float64 gradcheck went from 0.05 s to 9 s).
constexpr int64_t kBinsPerThread = 32768;

// at::parallel_for grain for work items of `bins_per_item` bins each.
inline int64_t grain(int64_t bins_per_item) {
  return std::max<int64_t>(1, (kBinsPerThread + bins_per_item - 1) / std::max<int64_t>(bins_per_item, 1));
}

// Rejects RoIs whose batch index is not in [0, batch_size) before any thread starts.
template <typename T>
void check_batch_indices(const T* rois, int64_t num_rois, int64_t batch_size, const char* op) {
  for (int64_t k = 0; k < num_rois; ++k) {
    TORCH_CHECK(batch_index_ok(rois[k * 5], batch_size), op, ": roi ", k, " has batch index ",
                static_cast<double>(rois[k * 5]), ", expected an integer in [0, ", batch_size, ")");
  }
}

}  // namespace cpu
}  // namespace detbench
