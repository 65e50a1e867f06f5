"""Operations on BoxLists (IoU, NMS, concatenation, filtering) and the tensor helpers under them.

Box geometry (xyxy corners, width = x2 - x1) is defined in :class:`BoxList`'s docstring.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .bounding_box import BoxList


def _upcast(t: Tensor) -> Tensor:
    # Areas of ordinary boxes overflow float16 (a 256 x 256 box), so half types compute in float32.
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def box_area(boxes: Tensor) -> Tensor:
    """[N, 4] xyxy boxes -> [N] areas (x2 - x1) * (y2 - y1), as ``torchvision.ops.box_area``
    (float16/bfloat16 boxes give float32 areas)."""
    boxes = _upcast(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """[N, 4] and [M, 4] xyxy boxes -> [N, M] intersection over union.

    Bitwise equal to ``torchvision.ops.box_iou`` (same arithmetic, float16/bfloat16 computed
    in float32) except for 0 / 0, i.e. two empty boxes: 0 here instead of NaN, so a matcher
    never sees a NaN made from valid input. NaN coordinates still give NaN.
    """
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # [N, M, 2]
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # [N, M, 2]
    wh = _upcast(bottom_right - top_left).clamp(min=0)  # disjoint boxes overlap by 0, not less
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter
    empty_pair = (inter == 0) & (union == 0)
    return torch.where(empty_pair, torch.zeros_like(inter), inter / union)


def boxlist_iou(boxlist1: BoxList, boxlist2: BoxList) -> Tensor:
    """[N, M] IoU between the N boxes of ``boxlist1`` and the M of ``boxlist2`` (any modes).

    Both must belong to the same image size; ValueError otherwise.
    """
    if tuple(boxlist1.size) != tuple(boxlist2.size):
        raise ValueError(
            f"boxlist_iou needs boxlists of the same image size (width, height), "
            f"got {boxlist1.size} and {boxlist2.size}"
        )
    return box_iou(boxlist1.convert("xyxy").bbox, boxlist2.convert("xyxy").bbox)


def boxlist_nms(
    boxlist: BoxList, nms_thresh: float, max_proposals: int = -1, score_field: str = "scores"
) -> BoxList:
    """Non-maximum suppression over ``boxlist`` by the [N] scores in field ``score_field``.

    Returns the kept boxes (all fields kept along) in decreasing score order, at most
    ``max_proposals`` of them when it is > 0. ``nms_thresh <= 0`` disables suppression and
    returns ``boxlist`` unchanged.
    """
    from detbench.layers.nms import nms  # lazy: structures import without the compiled ops

    if nms_thresh <= 0:
        return boxlist
    scores = boxlist.get_field(score_field)
    keep = nms(boxlist.convert("xyxy").bbox, scores, nms_thresh)
    if max_proposals > 0:
        keep = keep[:max_proposals]
    return boxlist[keep]


def remove_small_boxes(boxlist: BoxList, min_size: float) -> BoxList:
    """Keep the boxes with width >= ``min_size`` and height >= ``min_size`` (fields follow)."""
    wh = boxlist.convert("xywh").bbox[:, 2:]
    keep = (wh >= min_size).all(dim=1)
    return boxlist[keep]


def cat_boxlist(boxlists: Sequence[BoxList]) -> BoxList:
    """Concatenate BoxLists of one image: same size, mode and field names are required.

    Tensor fields are joined with ``torch.cat``; another field type must provide a
    ``cat(list_of_fields)`` class or static method.
    """
    if not isinstance(boxlists, (list, tuple)) or not boxlists:
        raise ValueError("cat_boxlist needs a non-empty list of BoxList")
    if not all(isinstance(b, BoxList) for b in boxlists):
        raise TypeError(f"cat_boxlist needs BoxList items, got {[type(b).__name__ for b in boxlists]}")
    first = boxlists[0]
    for other in boxlists[1:]:
        if tuple(other.size) != tuple(first.size):
            raise ValueError(f"cat_boxlist: image sizes differ: {first.size} and {other.size}")
        if other.mode != first.mode:
            raise ValueError(f"cat_boxlist: modes differ: {first.mode!r} and {other.mode!r}")
        if set(other.fields()) != set(first.fields()):
            raise ValueError(f"cat_boxlist: fields differ: {sorted(first.fields())} and {sorted(other.fields())}")
    out = BoxList(torch.cat([b.bbox for b in boxlists], dim=0), first.size, first.mode)
    for name in first.fields():
        out.add_field(name, _cat_field(name, [b.get_field(name) for b in boxlists]))
    return out


def _cat_field(name: str, values: list) -> object:
    if all(isinstance(v, Tensor) for v in values):
        return torch.cat(values, dim=0)
    kind = type(values[0])
    if hasattr(kind, "cat") and all(type(v) is kind for v in values):
        return kind.cat(values)
    raise TypeError(
        f"cat_boxlist: field {name!r} holds {sorted({type(v).__name__ for v in values})}; "
        "it must be tensors or one type with a cat() class method"
    )
