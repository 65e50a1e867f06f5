// Argument checks and threshold handling shared by the CPU and CUDA nms and
// batched_nms kernels.
// Only inline functions: the header is included by several translation units.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

namespace detbench {

// boxes [N, 4] and scores [N] on one device with one dtype.
inline void check_nms_args(const at::Tensor& boxes, const at::Tensor& scores) {
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, "nms: boxes must be [N, 4] (x1, y1, x2, y2), got ",
              boxes.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0), "nms: scores must be [N] with N = ",
              boxes.size(0), ", got ", scores.sizes());
  TORCH_CHECK(boxes.device() == scores.device(), "nms: boxes are on ", boxes.device(), " but scores on ",
              scores.device());
  TORCH_CHECK(boxes.scalar_type() == scores.scalar_type(), "nms: boxes dtype ", boxes.scalar_type(),
              " differs from scores dtype ", scores.scalar_type());
}

// batched_nms: boxes and scores as for nms, plus idxs, the int64 [N] category of each box.
inline void check_batched_nms_args(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs) {
  check_nms_args(boxes, scores);
  TORCH_CHECK(idxs.dim() == 1 && idxs.size(0) == boxes.size(0), "batched_nms: idxs must be [N] with N = ",
              boxes.size(0), ", got ", idxs.sizes());
  TORCH_CHECK(idxs.scalar_type() == at::kLong, "batched_nms: idxs must be int64, got ", idxs.scalar_type());
  TORCH_CHECK(idxs.device() == boxes.device(), "batched_nms: boxes are on ", boxes.device(), " but idxs on ",
              idxs.device());
}

// The largest T not above `threshold`. For any T value v, `v > threshold` (compared in
// double, as torchvision's CPU kernel does) holds exactly when `v > below(threshold)`,
// so the inner loops can compare in T.
template <typename T>
inline T threshold_in(double threshold) {
  T t = static_cast<T>(threshold);
  if (static_cast<double>(t) > threshold) {
    t = std::nextafter(t, -std::numeric_limits<T>::infinity());
  }
  return t;
}

}  // namespace detbench
