// Schema of detbench::roi_align and its backward. Kernels live in cpu/ and cuda/;
// autograd and fake (meta) kernels are registered from Python (detbench/layers/roi_align.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(detbench, m) {
  // input [N, C, H, W], rois [K, 5] = (batch index, x1, y1, x2, y2) in input-image
  // coordinates; returns [K, C, pooled_height, pooled_width].
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, int sampling_ratio, bool aligned) -> Tensor");
  // grad [K, C, pooled_height, pooled_width] -> grad_input [batch_size, channels, height, width],
  // in channels-last memory when `channels_last` (autograd asks for the forward input's layout, so
  // the gradient adds to the other gradients of a channels-last map without a layout change).
  m.def(
      "roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, int batch_size, int channels, int height, int width, "
      "int sampling_ratio, bool aligned, bool channels_last=False) -> Tensor");
}
