"""Non-maximum suppression, plain and per category.

The kernels (``csrc/cpu/nms_kernel.cpp``, ``csrc/cuda/nms_kernel.cu``) implement
``torch.ops.detbench.nms`` with the semantics of ``torchvision.ops.nms``: boxes are
visited in decreasing score order, with a stable sort so that equal scores keep their
input order; a box is dropped when its IoU with an already kept box is
> ``iou_threshold``; IoU = inter / (area_a + area_b - inter) with areas
(x2 - x1) * (y2 - y1) (no +1). :func:`detbench.layers.reference.nms_reference` is the
same rule written as a plain loop.
"""

from __future__ import annotations

import torch

from detbench import extension

__all__ = ["batched_nms", "nms"]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS.

    Args:
        boxes: ``[N, 4]`` (x1, y1, x2, y2), float32/float64 (also float16/bfloat16 on CUDA).
        scores: ``[N]``, same dtype and device as ``boxes``.
        iou_threshold: drop boxes whose IoU with a kept box is > this.

    Returns:
        int64 ``[M]``: indices into ``boxes`` of the kept boxes, by decreasing score
        (ties in input order).
    """
    extension.assert_has_ops()
    return torch.ops.detbench.nms(boxes, scores, iou_threshold)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS within each category: boxes with different ``idxs`` never suppress each other.

    One :func:`nms` call: every box is translated by ``idxs * span``, where span is
    the extent of all coordinates plus one, so that boxes of different categories
    cannot overlap. Coordinates are shifted in at least float32 (float16 cannot hold
    the offsets); decisions within a category can differ from a per-category call
    only for IoUs within rounding of the threshold.

    Args:
        boxes: ``[N, 4]``; scores: ``[N]``; idxs: ``[N]`` integer category of each box.

    Returns:
        int64 ``[M]`` indices of the kept boxes, by decreasing score.
    """
    extension.assert_has_ops()
    if idxs.shape != scores.shape:
        raise ValueError(f"batched_nms: idxs must be [N] like scores {tuple(scores.shape)}, got {tuple(idxs.shape)}")
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    work = boxes.to(torch.promote_types(boxes.dtype, torch.float32))
    low = work.min()
    span = work.max() - low + 1
    # Start every coordinate at 0, then give category c the slab [c * span, (c + 1) * span).
    shifted = work - low + (idxs.to(work.dtype) * span)[:, None]
    if scores.dtype == boxes.dtype:  # otherwise let nms report the mismatch
        scores = scores.to(work.dtype)
    return torch.ops.detbench.nms(shifted, scores, iou_threshold)


def _register() -> None:
    @torch.library.register_fake("detbench::nms")
    def _(boxes, scores, iou_threshold):
        torch._check(boxes.dim() == 2 and boxes.size(1) == 4, lambda: f"nms: boxes must be [N, 4], got {boxes.shape}")
        torch._check(scores.dim() == 1 and scores.size(0) == boxes.size(0), lambda: "nms: scores must be [N]")
        torch._check(scores.dtype == boxes.dtype, lambda: f"nms: scores {scores.dtype} != boxes {boxes.dtype}")
        kept = torch.library.get_ctx().new_dynamic_size()  # data-dependent, at most N
        torch._check(kept <= boxes.size(0))
        return boxes.new_empty((kept,), dtype=torch.int64)


if extension.has_ops():  # the schema comes with the compiled library
    _register()
