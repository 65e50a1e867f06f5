"""ONNX symbolic functions: detbench's compiled operators as standard ONNX operators.

Registered for the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``),
which exports what a trace recorded, so a model whose output sizes depend on the data
(NMS) and whose input size is free exports as one graph. ``OPSET`` is the opset they need:
RoiAlign's ``coordinate_transformation_mode`` appeared in opset 16.

* ``detbench::roi_align`` -> ``RoiAlign`` (mode "avg"): ``aligned=True`` is
  "half_pixel", ``aligned=False`` the legacy "output_half_pixel" (which also makes every
  RoI at least 1 x 1, as detbench does); ``sampling_ratio <= 0`` (adaptive) is 0.
* ``detbench::nms`` -> ``NonMaxSuppression`` with one batch and one class.
* ``detbench::batched_nms`` -> ``NonMaxSuppression``'s batched form: each category is one
  class of the scores ``[1, C, N]`` (a box scores -inf outside its own category, which the
  score threshold -FLT_MAX removes), so categories never interact and no coordinate offset
  rounds the boxes; the kept boxes, which ONNX lists class by class, are then sorted by
  decreasing score.

NonMaxSuppression drops a box whose IoU with a kept box is > the threshold, as detbench
does. Boxes within a category with exactly equal scores may come in another order.
"""

from __future__ import annotations

import sys

import torch
from torch.onnx import register_custom_op_symbolic
from torch.onnx import symbolic_helper as sym

OPSET = 17  # needs >= 16 (RoiAlign-16); 17 is the newest the onnxruntime CPU provider fully covers here

_INT64 = 7  # TensorProto.INT64
_FLOAT = 1  # TensorProto.FLOAT


def _const(g, value, dtype: torch.dtype):
    return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))


def _selected_boxes(g, boxes, scores_bcn, iou_threshold: float, score_threshold: float | None = None):
    """NonMaxSuppression of boxes [N, 4] with scores [1, C, N] -> selected rows [M, 3]."""
    inputs = [
        sym._unsqueeze_helper(g, boxes, [0]),
        scores_bcn,
        _const(g, [sys.maxsize], torch.int64),  # no limit per class
        _const(g, [iou_threshold], torch.float32),
    ]
    if score_threshold is not None:
        inputs.append(_const(g, [score_threshold], torch.float32))
    return g.op("NonMaxSuppression", *inputs)


def _column(g, table, index: int):
    """Column ``index`` of a [M, k] table -> [M]."""
    return g.op("Gather", table, _const(g, index, torch.int64), axis_i=1)


@sym.parse_args("v", "v", "f")
def _nms(g, boxes, scores, iou_threshold):
    scores = sym._unsqueeze_helper(g, scores, [0, 1])  # [1, 1, N]
    return _column(g, _selected_boxes(g, boxes, scores, iou_threshold), 2)


@sym.parse_args("v", "v", "v", "f")
def _batched_nms(g, boxes, scores, idxs, iou_threshold):
    # Number of categories C = max(idxs) + 1 (0 for no box: a [1, 0, 0] score table).
    zero = _const(g, [0], torch.int64)
    top = g.op("ReduceMax", g.op("Concat", g.op("Add", idxs, _const(g, 1, torch.int64)), zero, axis_i=0),
               keepdims_i=0)
    categories = g.op("Range", _const(g, 0, torch.int64), top, _const(g, 1, torch.int64))  # [C]
    own = g.op("Equal", sym._unsqueeze_helper(g, categories, [1]), sym._unsqueeze_helper(g, idxs, [0]))  # [C, N]
    minus_inf = _const(g, float("-inf"), torch.float32)
    table = g.op("Where", own, sym._unsqueeze_helper(g, g.op("Cast", scores, to_i=_FLOAT), [0]), minus_inf)
    selected = _selected_boxes(g, g.op("Cast", boxes, to_i=_FLOAT), sym._unsqueeze_helper(g, table, [0]),
                               iou_threshold, score_threshold=-3.4028234663852886e38)
    keep = _column(g, selected, 2)
    # Class-major order -> decreasing score over all kept boxes.
    kept_scores = g.op("Gather", scores, keep, axis_i=0)
    count = g.op("Shape", keep)
    order = g.op("TopK", kept_scores, count, axis_i=0, largest_i=1, sorted_i=1, outputs=2)[1]
    return g.op("Gather", keep, order, axis_i=0)


@sym.parse_args("v", "v", "f", "i", "i", "i", "i")
def _roi_align(g, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    batch_indices = g.op("Cast", _column(g, rois, 0), to_i=_INT64)
    boxes = g.op("Slice", rois, _const(g, [1], torch.int64), _const(g, [5], torch.int64), _const(g, [1], torch.int64))
    return g.op(
        "RoiAlign",
        input,
        boxes,
        batch_indices,
        coordinate_transformation_mode_s="half_pixel" if aligned else "output_half_pixel",
        mode_s="avg",
        output_height_i=pooled_height,
        output_width_i=pooled_width,
        sampling_ratio_i=max(sampling_ratio, 0),
        spatial_scale_f=spatial_scale,
    )


_SYMBOLICS = {"detbench::nms": _nms, "detbench::batched_nms": _batched_nms, "detbench::roi_align": _roi_align}
_registered = False


def register_onnx_symbolics() -> None:
    """Register the symbolic functions (for opsets 16 and later); repeated calls do nothing."""
    global _registered
    if _registered:
        return
    for name, fn in _SYMBOLICS.items():
        register_custom_op_symbolic(name, fn, 16)
    _registered = True
