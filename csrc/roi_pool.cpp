// Schema of detbench::roi_pool (Fast R-CNN max pooling of box regions) and its backward.
// Kernels live in cpu/ and cuda/; autograd and fake (meta) kernels are registered from
// Python (detbench/layers/roi_pool.py). The bin rules are stated in cpu/roi_pool_common.h.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(detbench, m) {
  // input [N, C, H, W], rois [K, 5] = (batch index, x1, y1, x2, y2) in input-image
  // coordinates; returns (output [K, C, pooled_height, pooled_width], argmax of the same
  // shape, int32: the h * W + w of the pixel each bin took, -1 for an empty bin).
  m.def(
      "roi_pool(Tensor input, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width) -> (Tensor, Tensor)");
  // grad [K, C, pooled_height, pooled_width] -> grad_input [batch_size, channels, height, width]:
  // each bin's gradient goes to the pixel its argmax names.
  m.def(
      "roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, "
      "int pooled_height, int pooled_width, int batch_size, int channels, int height, int width) -> Tensor");
}
