"""Checks of the RoI head keys (POOLER_METHOD, the box loss) and of MODEL.RETINANET.

Called by :func:`detbench.config.validate.validate_config`; each problem is one line naming
the key, the value and what is allowed.
"""

from __future__ import annotations

from yacs.config import CfgNode

from .validate import _is_number, _problem

# Values of MODEL.<head>.POOLER_METHOD: bilinear RoIAlign (Mask R-CNN) or max RoIPool (Fast R-CNN).
POOLER_METHODS = ("ROIAlign", "ROIPool")
LOSS_NORMALIZATIONS = ("maskrcnn-benchmark", "torchvision")
BBOX_REG_LOSS_TYPES = ("smooth_l1", "giou")  # detbench.modeling.roi_heads.box_head.loss
# RetinaNet's backbones make P3..P7: strides 8 .. 128.
RETINANET_STRIDES = (8, 16, 32, 64, 128)


def _check_pooler_methods(cfg: CfgNode) -> list[str]:
    return [
        _problem(f"MODEL.{head}.POOLER_METHOD", cfg.MODEL[head].POOLER_METHOD, f"one of {POOLER_METHODS}")
        for head in ("ROI_BOX_HEAD", "ROI_MASK_HEAD", "ROI_KEYPOINT_HEAD")
        if cfg.MODEL[head].POOLER_METHOD not in POOLER_METHODS
    ]


def _check_box_loss(cfg: CfgNode) -> list[str]:
    head, problems = cfg.MODEL.ROI_BOX_HEAD, []
    if head.BBOX_REG_LOSS_TYPE not in BBOX_REG_LOSS_TYPES:
        problems.append(_problem("MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE", head.BBOX_REG_LOSS_TYPE,
                                 f"one of {BBOX_REG_LOSS_TYPES}"))
    for key in ("BBOX_REG_LOSS_WEIGHT", "SMOOTH_L1_BETA"):
        if not (_is_number(head[key]) and head[key] >= 0):
            problems.append(_problem(f"MODEL.ROI_BOX_HEAD.{key}", head[key], "a number >= 0"))
    return problems


# (key under MODEL.RETINANET, test, what is allowed)
_RANGES = [
    ("NUM_CLASSES", lambda v: v >= 2, "an integer >= 2 (the background is class 0)"),
    ("OCTAVE", lambda v: v > 0, "a number > 0"),
    ("SCALES_PER_OCTAVE", lambda v: v >= 1, "an integer >= 1"),
    ("NUM_CONVS", lambda v: v >= 0, "an integer >= 0"),
    ("BBOX_REG_WEIGHT", lambda v: v > 0, "a number > 0"),
    ("BBOX_REG_BETA", lambda v: v >= 0, "a number >= 0"),
    ("PRE_NMS_TOP_N", lambda v: v > 0, "an integer > 0"),
    ("FG_IOU_THRESHOLD", lambda v: 0 <= v <= 1, "an IoU in [0, 1]"),
    ("BG_IOU_THRESHOLD", lambda v: 0 <= v <= 1, "an IoU in [0, 1]"),
    ("LOSS_ALPHA", lambda v: v <= 1, "a number <= 1 (in [0, 1], or < 0 for no weighting)"),
    ("LOSS_GAMMA", lambda v: v >= 0, "a number >= 0"),
    ("PRIOR_PROB", lambda v: 0 < v < 1, "a probability in (0, 1)"),
    ("INFERENCE_TH", lambda v: 0 <= v < 1, "a number in [0, 1)"),
    ("NMS_TH", lambda v: 0 < v <= 1, "an IoU in (0, 1]"),
    ("DETECTIONS_PER_IMG", lambda v: v > 0, "an integer > 0"),
]


def _check_retinanet(cfg: CfgNode) -> list[str]:
    """MODEL.RETINANET values; the structural ones only when RETINANET_ON (the model uses them)."""
    r, problems = cfg.MODEL.RETINANET, []
    for key, test, allowed in _RANGES:
        if not (_is_number(r[key]) and test(r[key])):
            problems.append(_problem(f"MODEL.RETINANET.{key}", r[key], allowed))
    if r.LOSS_NORMALIZATION not in LOSS_NORMALIZATIONS:
        problems.append(_problem("MODEL.RETINANET.LOSS_NORMALIZATION", r.LOSS_NORMALIZATION,
                                 f"one of {LOSS_NORMALIZATIONS}"))
    if _is_number(r.BG_IOU_THRESHOLD) and _is_number(r.FG_IOU_THRESHOLD) and r.BG_IOU_THRESHOLD > r.FG_IOU_THRESHOLD:
        problems.append(_problem("MODEL.RETINANET.BG_IOU_THRESHOLD", r.BG_IOU_THRESHOLD,
                                 f"<= FG_IOU_THRESHOLD = {r.FG_IOU_THRESHOLD}"))
    if not cfg.MODEL.RETINANET_ON:
        return problems
    if not cfg.MODEL.RPN_ONLY:
        problems.append(_problem("MODEL.RPN_ONLY", False, "True with MODEL.RETINANET_ON (its detections are final)"))
    if not str(cfg.MODEL.BACKBONE.CONV_BODY).endswith("-FPN-RETINANET"):
        problems.append(_problem("MODEL.BACKBONE.CONV_BODY", cfg.MODEL.BACKBONE.CONV_BODY,
                                 "a '-FPN-RETINANET' body (P3..P7) with MODEL.RETINANET_ON"))
    if tuple(r.ANCHOR_STRIDES) != RETINANET_STRIDES:
        problems.append(_problem("MODEL.RETINANET.ANCHOR_STRIDES", tuple(r.ANCHOR_STRIDES),
                                 f"{RETINANET_STRIDES}, the strides of the levels P3..P7 the backbone makes"))
    if len(r.ANCHOR_SIZES) != len(r.ANCHOR_STRIDES) or not all(_is_number(s) and s > 0 for s in r.ANCHOR_SIZES):
        problems.append(_problem("MODEL.RETINANET.ANCHOR_SIZES", tuple(r.ANCHOR_SIZES),
                                 f"one size > 0 per ANCHOR_STRIDES entry ({len(r.ANCHOR_STRIDES)})"))
    if not r.ASPECT_RATIOS or not all(_is_number(a) and a > 0 for a in r.ASPECT_RATIOS):
        problems.append(_problem("MODEL.RETINANET.ASPECT_RATIOS", tuple(r.ASPECT_RATIOS), "numbers > 0"))
    return problems


def check_pooler_and_retinanet_keys(cfg: CfgNode) -> list[str]:
    """Every problem with the RoI pooling methods, the box loss and the RetinaNet keys of ``cfg``."""
    return _check_pooler_methods(cfg) + _check_box_loss(cfg) + _check_retinanet(cfg)
