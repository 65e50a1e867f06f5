"""Non-maximum suppression, plain and per category.

The kernels (``csrc/cpu/nms_kernel.cpp``, ``csrc/cuda/nms_kernel.cu``) implement
``torch.ops.detbench.nms`` with the semantics of ``torchvision.ops.nms``: boxes are
visited in decreasing score order, with a stable sort so that equal scores keep their
input order; a box is dropped when its IoU with an already kept box is
> ``iou_threshold``; IoU = inter / (area_a + area_b - inter) with areas
(x2 - x1) * (y2 - y1) (no +1). ``torch.ops.detbench.batched_nms`` applies the same
rule within each category. :func:`detbench.layers.reference.nms_reference` and
:func:`~detbench.layers.reference.batched_nms_reference` state them as plain loops.
"""

from __future__ import annotations

import torch

from detbench import extension

__all__ = ["batched_nms", "nms"]

# Category dtypes that batched_nms widens to the int64 its op takes.
_NARROW_INTEGERS = (torch.uint8, torch.int8, torch.int16, torch.int32)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS.

    Args:
        boxes: ``[N, 4]`` (x1, y1, x2, y2), float32/float64 (also float16/bfloat16 on CUDA).
        scores: ``[N]``, same dtype and device as ``boxes``.
        iou_threshold: drop boxes whose IoU with a kept box is > this.

    Returns:
        int64 ``[M]``: indices into ``boxes`` of the kept boxes, by decreasing score
        (ties in input order).

    Non-finite values follow from the rule above and IEEE arithmetic: NaN scores
    sort first (as in ``torch.sort(descending=True)``), ``+inf`` next, ``-inf`` last.
    An IoU that is NaN (a box with a NaN coordinate, two empty boxes, inf - inf)
    compares false, so a NaN box suppresses nothing and is never suppressed: it is
    always kept. The same holds per category in :func:`batched_nms`.
    """
    extension.assert_has_ops()
    return torch.ops.detbench.nms(boxes, scores, iou_threshold)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS within each category: boxes with different ``idxs`` never suppress each other.

    One call of ``torch.ops.detbench.batched_nms``. Both kernels sort the boxes by
    (category, decreasing score) and run :func:`nms`'s greedy loop on each category on
    its own, on the original coordinates (no offset trick), so their decisions are
    exactly those of one :func:`nms` call per category. On CUDA the suppression bitmask
    covers only the pairs within a category: 80k boxes in 80 categories of 1k need
    10 MB of mask, not the 800 MB of a mask over all pairs.

    Args:
        boxes: ``[N, 4]`` (x1, y1, x2, y2); scores: ``[N]``, same dtype and device.
        idxs: ``[N]`` integer category of each box (any integer dtype; the op itself
            takes int64), on the same device.
        iou_threshold: drop boxes whose IoU with a kept box of their category is > this.

    Returns:
        int64 ``[M]`` indices of the kept boxes, by decreasing score (ties in input
        order, whatever the categories).
    """
    extension.assert_has_ops()
    if idxs.shape != scores.shape:
        raise ValueError(f"batched_nms: idxs must be [N] like scores {tuple(scores.shape)}, got {tuple(idxs.shape)}")
    # No early return on empty input: the op still checks the shapes ([N, 0] boxes
    # are an error). Empty idxs carry no category, so their dtype (often the float32
    # of a torch.tensor([])) does not matter.
    if idxs.dtype in _NARROW_INTEGERS or idxs.numel() == 0:
        idxs = idxs.long()
    return torch.ops.detbench.batched_nms(boxes, scores, idxs, iou_threshold)


def _check_boxes_and_scores(name: str, boxes: torch.Tensor, scores: torch.Tensor) -> None:
    torch._check(boxes.dim() == 2 and boxes.size(1) == 4, lambda: f"{name}: boxes must be [N, 4], got {boxes.shape}")
    torch._check(scores.dim() == 1 and scores.size(0) == boxes.size(0), lambda: f"{name}: scores must be [N]")
    torch._check(scores.dtype == boxes.dtype, lambda: f"{name}: scores {scores.dtype} != boxes {boxes.dtype}")


def _kept_indices(boxes: torch.Tensor) -> torch.Tensor:
    """Fake result: int64 [M] with M data-dependent, at most N."""
    kept = torch.library.get_ctx().new_dynamic_size()
    torch._check(kept <= boxes.size(0))
    return boxes.new_empty((kept,), dtype=torch.int64)


def _register() -> None:
    @torch.library.register_fake("detbench::nms")
    def _(boxes, scores, iou_threshold):
        _check_boxes_and_scores("nms", boxes, scores)
        return _kept_indices(boxes)

    @torch.library.register_fake("detbench::batched_nms")
    def _(boxes, scores, idxs, iou_threshold):
        _check_boxes_and_scores("batched_nms", boxes, scores)
        torch._check(idxs.dim() == 1 and idxs.size(0) == boxes.size(0), lambda: "batched_nms: idxs must be [N]")
        torch._check(idxs.dtype == torch.int64, lambda: f"batched_nms: idxs must be int64, got {idxs.dtype}")
        return _kept_indices(boxes)


if extension.has_ops():  # the schema comes with the compiled library
    _register()
