// Schema of detbench::sigmoid_focal_loss and its backward. Kernels live in cpu/ and cuda/;
// autograd and fake (meta) kernels are registered from Python
// (detbench/layers/sigmoid_focal_loss.py). The formula is stated in
// cpu/sigmoid_focal_loss_common.h.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(detbench, m) {
  // logits and targets of one shape (e.g. [N, C]; targets in [0, 1]) -> the element-wise
  // focal loss, same shape. alpha < 0 turns the class weighting off.
  m.def("sigmoid_focal_loss(Tensor logits, Tensor targets, float gamma, float alpha) -> Tensor");
  // grad (shape of logits) -> d loss / d logits (targets are not differentiated).
  m.def(
      "sigmoid_focal_loss_backward(Tensor grad, Tensor logits, Tensor targets, float gamma, "
      "float alpha) -> Tensor");
}
