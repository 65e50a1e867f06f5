// Argument checks and bin geometry shared by the CPU and CUDA roi_pool kernels.
// Only inline functions: the header is included by several translation units.
//
// Bins (torchvision.ops.roi_pool's rules): the box corners are scaled by spatial_scale
// and rounded to the nearest integer (halves away from zero); the box covers
// max(x2' - x1' + 1, 1) x max(y2' - y1' + 1, 1) pixels. Bin (ph, pw) spans the rows
// [floor(ph * bh), ceil((ph + 1) * bh)) shifted by y1', with bh = box height / pooled_height
// (columns alike), clipped to the map. A bin's value is the maximum of its pixels (compared
// with >, starting from -FLT_MAX, so NaN pixels are never taken) and its argmax the
// h * width + w of that pixel; an empty bin gives 0 and argmax -1.
// Beyond torchvision: rounded corners are clamped to +-2^40 (no integer overflow on huge
// boxes), and a box with a NaN corner has only empty bins.
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>

#include <cfloat>
#include <cmath>

#include "cpu/roi_align_common.h"

namespace detbench {

constexpr double kMaxRoiCoord = 1099511627776.0;  // 2^40

// Where the bins of one RoI lie: corner (start_h, start_w) and bin sizes, in pixels.
template <typename T>
struct PoolGeometry {
  int64_t start_h, start_w;
  T bin_h, bin_w;
  bool valid;  // false: a NaN corner, every bin is empty
};

template <typename T>
C10_HOST_DEVICE inline int64_t rounded_coord(T v) {
  const double r = ::round(static_cast<double>(v));
  return static_cast<int64_t>(r < -kMaxRoiCoord ? -kMaxRoiCoord : (r > kMaxRoiCoord ? kMaxRoiCoord : r));
}

// roi: the 5 values of one RoI, in T (the accumulation type on CUDA).
template <typename T>
C10_HOST_DEVICE inline PoolGeometry<T> pool_geometry(const T* roi, T scale, int64_t ph, int64_t pw) {
  PoolGeometry<T> g;
  const T x1 = roi[1] * scale, y1 = roi[2] * scale, x2 = roi[3] * scale, y2 = roi[4] * scale;
  g.valid = x1 == x1 && y1 == y1 && x2 == x2 && y2 == y2;  // false when any corner is NaN
  g.start_w = g.valid ? rounded_coord(x1) : 0;
  g.start_h = g.valid ? rounded_coord(y1) : 0;
  const int64_t end_w = g.valid ? rounded_coord(x2) : 0, end_h = g.valid ? rounded_coord(y2) : 0;
  const int64_t roi_w = end_w - g.start_w + 1 > 1 ? end_w - g.start_w + 1 : 1;
  const int64_t roi_h = end_h - g.start_h + 1 > 1 ? end_h - g.start_h + 1 : 1;
  g.bin_h = static_cast<T>(roi_h) / static_cast<T>(ph);
  g.bin_w = static_cast<T>(roi_w) / static_cast<T>(pw);
  return g;
}

// [begin, end) of bin `bin` of size `bin_size` on an axis starting at `start`, clipped to [0, size].
template <typename T>
C10_HOST_DEVICE inline void pool_bin_range(int64_t start, int64_t bin, T bin_size, int64_t size, int64_t& begin,
                                           int64_t& end) {
  begin = static_cast<int64_t>(::floor(static_cast<T>(bin) * bin_size)) + start;
  end = static_cast<int64_t>(::ceil(static_cast<T>(bin + 1) * bin_size)) + start;
  begin = begin < 0 ? 0 : (begin > size ? size : begin);
  end = end < 0 ? 0 : (end > size ? size : end);
}

// Checks of the forward: input [N, C, H, W] and rois as for roi_align.
inline void check_roi_pool_args(const at::Tensor& input, const at::Tensor& rois, int64_t ph, int64_t pw) {
  TORCH_CHECK(input.dim() == 4, "roi_pool: input must be [N, C, H, W], got ", input.sizes());
  check_rois(rois, input, ph, pw, "roi_pool");
  TORCH_CHECK(input.size(2) * input.size(3) <= INT32_MAX, "roi_pool: feature planes above 2^31 pixels");
}

// Checks of the backward: grad and argmax [K, channels, ph, pw], argmax int32.
inline void check_roi_pool_backward_args(const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& argmax,
                                         int64_t ph, int64_t pw, int64_t batch_size, int64_t channels,
                                         int64_t height, int64_t width) {
  check_rois(rois, grad, ph, pw, "roi_pool_backward");
  TORCH_CHECK(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0,
              "roi_pool_backward: negative input size");
  TORCH_CHECK(height * width <= INT32_MAX, "roi_pool_backward: feature planes above 2^31 pixels");
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == channels && grad.size(2) == ph &&
                  grad.size(3) == pw,
              "roi_pool_backward: grad must be [K, C, pooled_h, pooled_w] = [", rois.size(0), ", ", channels, ", ",
              ph, ", ", pw, "], got ", grad.sizes());
  TORCH_CHECK(argmax.sizes() == grad.sizes(), "roi_pool_backward: argmax must have the shape of grad ",
              grad.sizes(), ", got ", argmax.sizes());
  TORCH_CHECK(argmax.scalar_type() == at::kInt, "roi_pool_backward: argmax must be int32, got ",
              argmax.scalar_type());
  TORCH_CHECK(argmax.device() == grad.device(), "roi_pool_backward: argmax is on ", argmax.device(),
              " but grad on ", grad.device());
}

}  // namespace detbench
