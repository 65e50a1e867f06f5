// Schemas of detbench::nms and detbench::batched_nms. Kernels live in cpu/ and cuda/;
// the fake kernels are registered from Python (detbench/layers/nms.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(detbench, m) {
  // boxes [N, 4] (x1, y1, x2, y2), scores [N]; returns the int64 indices of the kept
  // boxes, sorted by decreasing score.
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  // nms within each category: idxs [N] (int64) is the category of each box, and boxes of
  // different categories never suppress each other. Same output order as nms: decreasing
  // score, equal scores in input order (whatever their categories).
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
}
