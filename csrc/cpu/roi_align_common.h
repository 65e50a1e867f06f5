// Argument checks and RoI geometry shared by the CPU and CUDA roi_align kernels.
// Only inline functions: the header is included by several translation units.
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>

#include <cmath>

namespace detbench {

// Checks shared by roi_align and roi_align_backward: rois [K, 5] of the dtype and
// device of `like`, positive pooled sizes.
inline void check_rois(
    const at::Tensor& rois,
    const at::Tensor& like,
    int64_t pooled_height,
    int64_t pooled_width,
    const char* op) {
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, op,
              ": rois must be [K, 5] (batch index, x1, y1, x2, y2), got ", rois.sizes());
  TORCH_CHECK(rois.device() == like.device(), op, ": rois are on ", rois.device(),
              " but the feature tensor is on ", like.device());
  TORCH_CHECK(rois.scalar_type() == like.scalar_type(), op, ": rois dtype ",
              rois.scalar_type(), " differs from the feature dtype ", like.scalar_type());
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0, op,
              ": pooled sizes must be > 0, got ", pooled_height, "x", pooled_width);
}

// roi_align_backward: grad must be [K, channels, pooled_height, pooled_width].
inline void check_backward_args(
    const at::Tensor& grad,
    const at::Tensor& rois,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t batch_size,
    int64_t channels,
    int64_t height,
    int64_t width) {
  check_rois(rois, grad, pooled_height, pooled_width, "roi_align_backward");
  TORCH_CHECK(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0,
              "roi_align_backward: negative input size");
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == channels &&
                  grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              "roi_align_backward: grad must be [K, C, pooled_h, pooled_w] = [", rois.size(0),
              ", ", channels, ", ", pooled_height, ", ", pooled_width, "], got ", grad.sizes());
}

// Batch indices are read as int64 by truncation; a valid one lies in [0, batch_size),
// which also rejects NaN (every comparison with NaN is false).
template <typename T>
C10_HOST_DEVICE inline bool batch_index_ok(T value, int64_t batch_size) {
  return value >= T(0) && value < static_cast<T>(batch_size);
}

// Where the bins of one RoI lie on the feature map, in feature pixels. Same
// arithmetic (and the same T) as torchvision so that rounding agrees.
template <typename T>
struct RoiGeometry {
  T start_h, start_w;  // top-left corner of bin (0, 0)
  T bin_h, bin_w;      // bin size
  int64_t grid_h, grid_w;  // samples per bin along each axis (<= 0: no sample)
  T count;             // divisor of the sample sum: max(grid_h * grid_w, 1)
};

// Most samples per bin along one axis. Only absurd boxes (about 2^30 bins wide) reach
// it; it keeps the conversion to int64 defined and grid_h * grid_w below 2^63.
constexpr int64_t kMaxGrid = int64_t{1} << 30;

// The adaptive sample count ceil(extent / bins) as an integer: 0 (no sample) when it
// is NaN or not positive, kMaxGrid when it is larger (inf included).
template <typename T>
C10_HOST_DEVICE inline int64_t adaptive_grid(T extent, int64_t bins) {
  const T c = ::ceil(extent / static_cast<T>(bins));
  if (!(c > T(0))) {  // also NaN
    return 0;
  }
  return c < static_cast<T>(kMaxGrid) ? static_cast<int64_t>(c) : kMaxGrid;
}

// Host and device; T is the accumulation type (float for half inputs on CUDA).
template <typename T>
C10_HOST_DEVICE inline RoiGeometry<T> roi_geometry(
    const T* roi,
    T spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t sampling_ratio,
    bool aligned) {
  // aligned=True: a box edge at x maps to the continuous coordinate x * scale - 0.5,
  // where pixel i covers [i - 0.5, i + 0.5) and its value sits at i.
  const T offset = aligned ? T(0.5) : T(0);
  RoiGeometry<T> g;
  g.start_w = roi[1] * spatial_scale - offset;
  g.start_h = roi[2] * spatial_scale - offset;
  T roi_w = roi[3] * spatial_scale - offset - g.start_w;
  T roi_h = roi[4] * spatial_scale - offset - g.start_h;
  if (!aligned) {  // legacy behaviour: force malformed or tiny boxes to 1x1
    roi_w = roi_w > T(1) ? roi_w : T(1);
    roi_h = roi_h > T(1) ? roi_h : T(1);
  }
  g.bin_h = roi_h / static_cast<T>(pooled_height);
  g.bin_w = roi_w / static_cast<T>(pooled_width);
  // Adaptive sampling: about one sample per feature pixel, ceil(roi size / bins).
  // A fixed ratio is capped like the adaptive count, so that grid_h * grid_w cannot overflow.
  const int64_t fixed = sampling_ratio < kMaxGrid ? sampling_ratio : kMaxGrid;
  g.grid_h = sampling_ratio > 0 ? fixed : adaptive_grid(roi_h, pooled_height);
  g.grid_w = sampling_ratio > 0 ? fixed : adaptive_grid(roi_w, pooled_width);
  const int64_t samples = g.grid_h * g.grid_w;
  g.count = static_cast<T>(samples > 1 ? samples : 1);
  return g;
}

}  // namespace detbench
