"""Checks of TEST.BBOX_AUG (test-time augmentation, detbench/engine/bbox_aug.py).

Called by :func:`detbench.config.validate.validate_config`; each problem is one line naming
the key, the value and what is allowed.
"""

from __future__ import annotations

from yacs.config import CfgNode

from .validate import _problem


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_sizes(aug: CfgNode) -> list[str]:
    problems = []
    if not _is_size(aug.MAX_SIZE):
        problems.append(_problem("TEST.BBOX_AUG.MAX_SIZE", aug.MAX_SIZE, "an integer > 0 (pixels)"))
    scales = tuple(aug.SCALES)
    limit = aug.MAX_SIZE if _is_size(aug.MAX_SIZE) else None
    if not all(_is_size(s) and (limit is None or s <= limit) for s in scales):
        problems.append(_problem("TEST.BBOX_AUG.SCALES", scales,
                                 f"a tuple of integer shorter sides > 0 and <= MAX_SIZE = {aug.MAX_SIZE} (pixels)"))
    return problems


def _check_model(cfg: CfgNode) -> list[str]:
    """Models whose outputs the merge cannot combine (only when TEST.BBOX_AUG.ENABLED)."""
    m = cfg.MODEL
    if m.KEYPOINT_ON:
        return [_problem("TEST.BBOX_AUG.ENABLED", True, "False with MODEL.KEYPOINT_ON True "
                         "(keypoints are not merged over augmented views)")]
    if m.RPN_ONLY and not m.RETINANET_ON:
        return [_problem("TEST.BBOX_AUG.ENABLED", True, "False with MODEL.RPN_ONLY True and MODEL.RETINANET_ON "
                         "False (proposals are not merged over augmented views)")]
    return []


def check_bbox_aug_keys(cfg: CfgNode) -> list[str]:
    """Problems of TEST.BBOX_AUG: sizes always, the model's support only when ENABLED."""
    aug = cfg.TEST.BBOX_AUG
    return _check_sizes(aug) + (_check_model(cfg) if aug.ENABLED else [])
