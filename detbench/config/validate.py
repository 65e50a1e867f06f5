"""Checks that a merged config describes something detbench can run, before any work starts.

The loader already refuses unknown keys and wrong types; :func:`validate_config` refuses
values of the right type that cannot work: a learning rate of zero, MIN_SIZE above
MAX_SIZE, fewer than two classes, a pooler with the wrong number of FPN levels, a
misspelt registered name. Every problem found is listed in one :class:`ConfigError`,
each line giving the key, the value and what is allowed.

Deliberately allowed: SOLVER.STEPS entries at or beyond SOLVER.MAX_ITER (they never fire;
this is how a shortened schedule keeps the file's STEPS), and a "cuda" device on a machine
without one (the config may be checked on another machine than the one that runs it).
"""

from __future__ import annotations

import difflib
import importlib
import math
import re
from typing import Any, Callable

from yacs.config import CfgNode

from .loader import ConfigError

# FPN heads pool from P2..P5; P6 only feeds the RPN.
FPN_POOLED_LEVELS = 4
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
WARMUP_METHODS = ("constant", "linear")
# The choices of the SOLVER recipe options (detbench/solver/build.py builds them).
OPTIMIZERS = ("SGD", "AdamW")
LR_SCHEDULERS = ("WarmupMultiStepLR", "WarmupCosineLR")
CLIP_TYPES = ("value", "norm")
DTYPES = ("float32", "float16")
VERIFY_IMAGES = ("exists", "header", "decode")  # detbench.data.datasets.coco_checks.VERIFY_MODES
VOC_METRICS = ("auto", "11point", "area")  # detbench.data.datasets.voc.VOC_METRICS

# Numeric keys: (key, test, what is allowed).
RANGES: list[tuple[str, Callable[[float], bool], str]] = [
    ("SOLVER.BASE_LR", lambda v: v > 0, "a number > 0"),
    ("SOLVER.BIAS_LR_FACTOR", lambda v: v > 0, "a number > 0"),
    ("SOLVER.MOMENTUM", lambda v: 0 <= v < 1, "a number in [0, 1)"),
    ("SOLVER.WEIGHT_DECAY", lambda v: v >= 0, "a number >= 0"),
    ("SOLVER.WEIGHT_DECAY_BIAS", lambda v: v >= 0, "a number >= 0"),
    ("SOLVER.GAMMA", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    ("SOLVER.WARMUP_FACTOR", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    ("SOLVER.WARMUP_ITERS", lambda v: v >= 0, "an integer >= 0"),
    ("SOLVER.MAX_ITER", lambda v: v > 0, "an integer > 0"),
    ("SOLVER.IMS_PER_BATCH", lambda v: v > 0, "an integer > 0"),
    ("SOLVER.CHECKPOINT_PERIOD", lambda v: v > 0, "an integer > 0"),
    ("SOLVER.CHECKPOINTS_TO_KEEP", lambda v: v >= 0, "an integer >= 0 (0 keeps every checkpoint)"),
    ("SOLVER.LOG_PERIOD", lambda v: v > 0, "an integer > 0"),
    ("MODEL_EMA.DECAY", lambda v: 0 <= v < 1, "a number in [0, 1)"),
    ("MODEL_EMA.RAMP_ITERS", lambda v: v >= 0, "an integer >= 0"),
    ("INPUT.SCALE_JITTER.TARGET_SIZE", lambda v: v > 0, "an integer > 0"),
    ("INPUT.SCALE_JITTER.MIN_SCALE", lambda v: v > 0, "a number > 0"),
    ("INPUT.COLOR_JITTER.BRIGHTNESS", lambda v: v >= 0, "a number >= 0"),
    ("INPUT.COLOR_JITTER.CONTRAST", lambda v: v >= 0, "a number >= 0"),
    ("INPUT.COLOR_JITTER.SATURATION", lambda v: v >= 0, "a number >= 0"),
    ("INPUT.COLOR_JITTER.HUE", lambda v: 0 <= v <= 0.5, "a number in [0, 0.5]"),
    ("TEST.IMS_PER_BATCH", lambda v: v > 0, "an integer > 0"),
    ("INPUT.MAX_SIZE_TRAIN", lambda v: v > 0, "an integer > 0"),
    ("INPUT.MIN_SIZE_TEST", lambda v: v > 0, "an integer > 0"),
    ("INPUT.MAX_SIZE_TEST", lambda v: v > 0, "an integer > 0"),
    ("INPUT.HORIZONTAL_FLIP_PROB_TRAIN", lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    ("DATALOADER.NUM_WORKERS", lambda v: v >= 0, "an integer >= 0"),
    ("DATALOADER.SIZE_DIVISIBILITY", lambda v: v >= 0, "an integer >= 0"),
    ("MODEL.BACKBONE.FREEZE_CONV_BODY_AT", lambda v: 0 <= v <= 5, "an integer in [0, 5]"),
    ("MODEL.GROUP_NORM.EPSILON", lambda v: v > 0, "a number > 0"),
    ("MODEL.ROI_BOX_HEAD.NUM_CLASSES", lambda v: v >= 2, "an integer >= 2 (the background is class 0)"),
    ("MODEL.ROI_HEADS.SCORE_THRESH", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    ("MODEL.ROI_HEADS.NMS", lambda v: 0 < v <= 1, "an IoU in (0, 1]"),
    ("MODEL.ROI_HEADS.DETECTIONS_PER_IMG", lambda v: v > 0, "an integer > 0"),
    ("MODEL.RPN.NMS_THRESH", lambda v: 0 < v <= 1, "an IoU in (0, 1]"),
    ("MODEL.RPN.MIN_SIZE", lambda v: v >= 0, "a number >= 0"),
    ("MODEL.RPN.SCORE_THRESH", lambda v: 0 <= v < 1, "a probability in [0, 1)"),
]
for _head in ("MODEL.RPN", "MODEL.ROI_HEADS"):
    RANGES += [
        (f"{_head}.FG_IOU_THRESHOLD", lambda v: 0 <= v <= 1, "an IoU in [0, 1]"),
        (f"{_head}.BG_IOU_THRESHOLD", lambda v: 0 <= v <= 1, "an IoU in [0, 1]"),
        (f"{_head}.POSITIVE_FRACTION", lambda v: 0 < v <= 1, "a fraction in (0, 1]"),
        (f"{_head}.BATCH_SIZE_PER_IMAGE", lambda v: v > 0, "an integer > 0"),
    ]

# Keys naming a registry entry -> (module, registry attribute); imported only when validating,
# because the modeling package imports the config package.
REGISTERED = {
    "MODEL.META_ARCHITECTURE": ("detbench.modeling.detector.detectors", "META_ARCHITECTURES"),
    "MODEL.BACKBONE.CONV_BODY": ("detbench.modeling.backbone.backbone", "BACKBONES"),
    "MODEL.RESNETS.STEM_FUNC": ("detbench.modeling.backbone.resnet", "STEMS"),
    "MODEL.RESNETS.TRANS_FUNC": ("detbench.modeling.backbone.resnet", "BOTTLENECKS"),
    "MODEL.RPN.RPN_HEAD": ("detbench.modeling.rpn.rpn", "RPN_HEADS"),
    "MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR": (
        "detbench.modeling.roi_heads.box_head.roi_box_feature_extractors", "ROI_BOX_FEATURE_EXTRACTORS"),
    "MODEL.ROI_BOX_HEAD.PREDICTOR": ("detbench.modeling.roi_heads.box_head.roi_box_predictors", "ROI_BOX_PREDICTOR"),
    "MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR": (
        "detbench.modeling.roi_heads.mask_head.roi_mask_feature_extractors", "ROI_MASK_FEATURE_EXTRACTORS"),
    "MODEL.ROI_MASK_HEAD.PREDICTOR": (
        "detbench.modeling.roi_heads.mask_head.roi_mask_predictors", "ROI_MASK_PREDICTOR"),
    "MODEL.ROI_KEYPOINT_HEAD.FEATURE_EXTRACTOR": (
        "detbench.modeling.roi_heads.keypoint_head.roi_keypoint_feature_extractors",
        "ROI_KEYPOINT_FEATURE_EXTRACTORS"),
    "MODEL.ROI_KEYPOINT_HEAD.PREDICTOR": (
        "detbench.modeling.roi_heads.keypoint_head.roi_keypoint_predictors", "ROI_KEYPOINT_PREDICTOR"),
}


def _get(cfg: CfgNode, key: str) -> Any:
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but True is never a meaningful learning rate or size.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _problem(key: str, value: Any, allowed: str) -> str:
    return f"{key} = {value!r}: must be {allowed}"


def _check_ranges(cfg: CfgNode) -> list[str]:
    return [
        _problem(key, _get(cfg, key), allowed)
        for key, test, allowed in RANGES
        if not (_is_number(_get(cfg, key)) and test(_get(cfg, key)))
    ]


def _check_solver(cfg: CfgNode) -> list[str]:
    s, problems = cfg.SOLVER, []
    steps = tuple(s.STEPS)
    valid = all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in steps)
    if not valid or any(a >= b for a, b in zip(steps, steps[1:])):
        allowed = "strictly increasing integers > 0 (values >= MAX_ITER are allowed)"
        problems.append(_problem("SOLVER.STEPS", steps, allowed))
    if s.WARMUP_METHOD not in WARMUP_METHODS:
        problems.append(_problem("SOLVER.WARMUP_METHOD", s.WARMUP_METHOD, f"one of {WARMUP_METHODS}"))
    return problems + _check_recipe_options(s)


def _check_recipe_options(s: CfgNode) -> list[str]:
    """SOLVER.OPTIMIZER, BETAS, LR_SCHEDULER, BASE_LR_END and CLIP_GRADIENTS."""
    clip = s.CLIP_GRADIENTS
    checks = [
        ("SOLVER.OPTIMIZER", s.OPTIMIZER, s.OPTIMIZER in OPTIMIZERS, f"one of {OPTIMIZERS}"),
        ("SOLVER.BETAS", tuple(s.BETAS), len(s.BETAS) == 2 and all(_is_number(b) and 0 <= b < 1 for b in s.BETAS),
         "two numbers in [0, 1)"),
        ("SOLVER.WEIGHT_DECAY_NORM", s.WEIGHT_DECAY_NORM, _is_number(s.WEIGHT_DECAY_NORM),
         "a number (>= 0, or negative for 'as other parameters')"),
        ("SOLVER.LR_SCHEDULER", s.LR_SCHEDULER, s.LR_SCHEDULER in LR_SCHEDULERS, f"one of {LR_SCHEDULERS}"),
        ("SOLVER.BASE_LR_END", s.BASE_LR_END, _is_number(s.BASE_LR_END) and s.BASE_LR_END >= 0, "a number >= 0"),
        ("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", clip.CLIP_TYPE, clip.CLIP_TYPE in CLIP_TYPES, f"one of {CLIP_TYPES}"),
        ("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", clip.CLIP_VALUE, _is_number(clip.CLIP_VALUE) and clip.CLIP_VALUE > 0,
         "a number > 0"),
        ("SOLVER.CLIP_GRADIENTS.NORM_TYPE", clip.NORM_TYPE,
         isinstance(clip.NORM_TYPE, (int, float)) and not isinstance(clip.NORM_TYPE, bool) and clip.NORM_TYPE > 0,
         "a number > 0 (inf allowed)"),
    ]
    problems = [_problem(key, value, allowed) for key, value, ok, allowed in checks if not ok]
    cosine_end_too_high = (s.LR_SCHEDULER == "WarmupCosineLR" and _is_number(s.BASE_LR) and _is_number(s.BASE_LR_END)
                           and s.BASE_LR_END > s.BASE_LR)
    if cosine_end_too_high:  # the cosine would rise
        problems.append(_problem("SOLVER.BASE_LR_END", s.BASE_LR_END, f"<= BASE_LR = {s.BASE_LR} for WarmupCosineLR"))
    return problems


def parse_expected_result(entry: Sequence[Any]) -> tuple[str | None, str, str, float, float]:
    """(dataset or None, task, metric, mean, std) of one TEST.EXPECTED_RESULTS entry
    (detbench/engine/expected_results.py); ValueError says what is wrong."""
    entry = list(entry)
    if len(entry) not in (3, 4):
        raise ValueError(f"{entry!r}: must be [task, metric, [mean, std]] or [dataset, task, metric, [mean, std]]")
    dataset = entry.pop(0) if len(entry) == 4 else None
    task, metric, stats = entry
    names = [dataset, task, metric] if dataset is not None else [task, metric]
    if not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{entry!r}: dataset, task and metric must be non-empty strings")
    numeric = isinstance(stats, (list, tuple)) and len(stats) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in stats)
    if not numeric or stats[1] < 0:
        raise ValueError(f"{stats!r}: the last item must be [mean, std] with std >= 0")
    return dataset, task, metric, float(stats[0]), float(stats[1])


def _check_expected_results(cfg: CfgNode) -> list[str]:
    problems = []
    for entry in cfg.TEST.EXPECTED_RESULTS:
        try:
            parse_expected_result(entry)
        except (TypeError, ValueError) as exc:
            problems.append(f"TEST.EXPECTED_RESULTS entry {exc}")
    tol = cfg.TEST.EXPECTED_RESULTS_SIGMA_TOL
    if not (_is_number(tol) and tol >= 0):
        problems.append(_problem("TEST.EXPECTED_RESULTS_SIGMA_TOL", tol, "a number >= 0"))
    return problems


def _check_datasets(cfg: CfgNode) -> list[str]:
    problems = []
    if cfg.DATASETS.VERIFY_IMAGES not in VERIFY_IMAGES:
        problems.append(_problem("DATASETS.VERIFY_IMAGES", cfg.DATASETS.VERIFY_IMAGES, f"one of {VERIFY_IMAGES}"))
    if cfg.TEST.VOC_METRIC not in VOC_METRICS:
        problems.append(_problem("TEST.VOC_METRIC", cfg.TEST.VOC_METRIC, f"one of {VOC_METRICS}"))
    return problems


def _check_input(cfg: CfgNode) -> list[str]:
    i, problems = cfg.INPUT, []
    sizes = tuple(i.MIN_SIZE_TRAIN)
    max_train = i.MAX_SIZE_TRAIN
    if not sizes or not all(_is_number(m) and 0 < m <= max_train for m in sizes):
        allowed = f"a non-empty tuple of sizes in (0, MAX_SIZE_TRAIN = {max_train}]"
        problems.append(_problem("INPUT.MIN_SIZE_TRAIN", sizes, allowed))
    if _is_number(i.MIN_SIZE_TEST) and i.MIN_SIZE_TEST > i.MAX_SIZE_TEST:
        problems.append(_problem("INPUT.MIN_SIZE_TEST", i.MIN_SIZE_TEST, f"<= MAX_SIZE_TEST = {i.MAX_SIZE_TEST}"))
    jitter = i.SCALE_JITTER
    if _is_number(jitter.MIN_SCALE) and _is_number(jitter.MAX_SCALE) and jitter.MAX_SCALE < jitter.MIN_SCALE:
        problems.append(_problem("INPUT.SCALE_JITTER.MAX_SCALE", jitter.MAX_SCALE, f">= MIN_SCALE = {jitter.MIN_SCALE}"))
    if len(i.PIXEL_MEAN) != 3 or not all(_is_number(v) for v in i.PIXEL_MEAN):
        problems.append(_problem("INPUT.PIXEL_MEAN", list(i.PIXEL_MEAN), "3 finite numbers, one per channel"))
    if len(i.PIXEL_STD) != 3 or not all(_is_number(v) and v > 0 for v in i.PIXEL_STD):
        problems.append(_problem("INPUT.PIXEL_STD", list(i.PIXEL_STD), "3 numbers > 0, one per channel"))
    return problems


def _active_roi_heads(cfg: CfgNode) -> list[str]:
    """Config sections of the RoI heads the model will build."""
    heads = [] if cfg.MODEL.RPN_ONLY else ["ROI_BOX_HEAD"]
    heads += ["ROI_MASK_HEAD"] if cfg.MODEL.MASK_ON else []
    heads += ["ROI_KEYPOINT_HEAD"] if cfg.MODEL.KEYPOINT_ON else []
    return heads


def _check_model(cfg: CfgNode) -> list[str]:
    m, problems = cfg.MODEL, []
    if not DEVICE_PATTERN.fullmatch(m.DEVICE):
        problems.append(_problem("MODEL.DEVICE", m.DEVICE, "'auto', 'cpu', 'cuda' or 'cuda:N'"))
    if cfg.DTYPE not in DTYPES:
        problems.append(_problem("DTYPE", cfg.DTYPE, f"one of {DTYPES}"))
    gn = m.GROUP_NORM
    # Exactly one of the two sizes is -1 ("derive me from the other"); the other must be positive.
    if sorted([gn.DIM_PER_GP == -1, gn.NUM_GROUPS == -1]) != [False, True] or max(gn.DIM_PER_GP, gn.NUM_GROUPS) <= 0:
        problems.append(_problem("MODEL.GROUP_NORM.DIM_PER_GP / NUM_GROUPS", (gn.DIM_PER_GP, gn.NUM_GROUPS),
                                 "exactly one of the two -1 and the other > 0"))
    for head in ("RPN", "ROI_HEADS"):
        fg, bg = m[head].FG_IOU_THRESHOLD, m[head].BG_IOU_THRESHOLD
        if bg > fg:
            problems.append(_problem(f"MODEL.{head}.BG_IOU_THRESHOLD", bg, f"<= FG_IOU_THRESHOLD = {fg}"))
    return problems + _check_levels(cfg)


def _check_levels(cfg: CfgNode) -> list[str]:
    """Anchor strides and pooler scales must match the number of feature maps they describe."""
    rpn, problems = cfg.MODEL.RPN, []
    strides, sizes = tuple(rpn.ANCHOR_STRIDE), tuple(rpn.ANCHOR_SIZES)
    # With FPN one anchor size per level; without, one feature map carries every size.
    want = len(sizes) if rpn.USE_FPN else 1
    if rpn.ANCHOR_SIZES_ON_EVERY_LEVEL:  # any number of levels, each with every size
        want = max(len(strides), 1)
    if len(strides) != want or not all(_is_number(s) and s > 0 for s in strides):
        where = (f"one per ANCHOR_SIZES entry ({want}) with RPN.USE_FPN" if rpn.USE_FPN
                 else "one stride without RPN.USE_FPN")
        problems.append(_problem("MODEL.RPN.ANCHOR_STRIDE", strides, f"positive numbers, {where}"))
    for head in _active_roi_heads(cfg):
        scales = tuple(cfg.MODEL[head].POOLER_SCALES)
        if not scales or not all(_is_number(s) and s > 0 for s in scales):
            problems.append(_problem(f"MODEL.{head}.POOLER_SCALES", scales, "a non-empty tuple of numbers > 0"))
        elif cfg.MODEL.ROI_HEADS.USE_FPN and len(scales) != FPN_POOLED_LEVELS:
            problems.append(_problem(f"MODEL.{head}.POOLER_SCALES", scales,
                                     f"{FPN_POOLED_LEVELS} scales (P2..P5) with ROI_HEADS.USE_FPN"))
    return problems


def _check_names(cfg: CfgNode) -> list[str]:
    problems = []
    for key, (module, attribute) in REGISTERED.items():
        registry, name = getattr(importlib.import_module(module), attribute), _get(cfg, key)
        if name in registry:
            continue
        close = difflib.get_close_matches(str(name), list(registry), n=3, cutoff=0.5)
        hint = f"Did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        allowed = f"a name registered in {registry.name}. {hint}Known: {', '.join(registry)}"
        problems.append(_problem(key, name, allowed))
    return problems


def validate_config(cfg: CfgNode) -> None:
    """Raise :class:`ConfigError` listing every impossible value of ``cfg`` (key, value, what is allowed)."""
    problems = (_check_ranges(cfg) + _check_solver(cfg) + _check_input(cfg) + _check_expected_results(cfg)
                + _check_model(cfg) + _check_names(cfg) + _check_datasets(cfg))
    from .validate_dcn import check_dcn_keys  # here, as below: these modules import this one's helpers
    from .validate_retinanet import check_pooler_and_retinanet_keys

    problems += check_pooler_and_retinanet_keys(cfg) + check_dcn_keys(cfg)
    from .validate_bbox_aug import check_bbox_aug_keys  # the same reason

    problems += check_bbox_aug_keys(cfg)
    if problems:
        header = "invalid config value" if len(problems) == 1 else f"{len(problems)} invalid config values"
        raise ConfigError(f"{header}:\n  " + "\n  ".join(problems))
