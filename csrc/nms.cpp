// Schema of detbench::nms. Kernels live in cpu/ and cuda/; the fake kernel is
// registered from Python (detbench/layers/nms.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(detbench, m) {
  // boxes [N, 4] (x1, y1, x2, y2), scores [N]; returns the int64 indices of the kept
  // boxes, sorted by decreasing score.
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
}
