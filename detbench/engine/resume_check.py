"""Refuse to resume a run whose config changed in a key that changes the model or the data order.

A checkpoint saved by tools/train_net.py carries the config of its run (``"config"``, the
YAML text). Resuming with another value of a key that builds the model (MODEL.*), feeds it
(INPUT.*, the training datasets, DATALOADER grouping and padding), orders the batches
(SOLVER.IMS_PER_BATCH, SEED) would continue a different run from the saved weights, so it is
refused with every such key named. Everything else may change on resume: test-time keys,
SOLVER.MAX_ITER and the schedule, logging, NUM_WORKERS (the batches do not depend on it), the
device, OUTPUT_DIR.
"""

from __future__ import annotations

from typing import Any

from yacs.config import CfgNode

from detbench.config.loader import ConfigError
from detbench.data import catalog

# Sections whose keys all count, except the exemptions below.
COMPARED_SECTIONS = ("MODEL.", "INPUT.")
COMPARED_KEYS = (
    "DATASETS.TRAIN",
    "DATASETS.REMOVE_IMAGES_WITHOUT_ANNOTATIONS",
    "DATASETS.PENN_FUDAN_NUM_TEST",  # moves images between penn_fudan_train and _test
    "DATASETS.VOC_USE_DIFFICULT",  # adds or removes the difficult VOC objects from the targets
    "DATALOADER.SIZE_DIVISIBILITY",
    "DATALOADER.ASPECT_RATIO_GROUPING",
    "SOLVER.IMS_PER_BATCH",
    "SEED",
)
# Keys inside COMPARED_SECTIONS that never change training.
EXEMPT_KEYS = (
    "MODEL.DEVICE",
    "MODEL.WEIGHT",  # a resumed run loads its own checkpoint, not the initial weights
    "MODEL.ROI_HEADS.SCORE_THRESH",
    "MODEL.ROI_HEADS.NMS",
    "MODEL.ROI_HEADS.DETECTIONS_PER_IMG",
    "MODEL.ROI_HEADS.MIN_DETECTION_SIZE",
)


class ResumeConfigError(ConfigError):
    """The config of a resumed run differs from the saved one where it must not; names the keys."""


def _plain(value: Any) -> Any:
    """Tuples as lists, at any depth: a config read back from YAML has lists only."""
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def _flatten(node: CfgNode, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, CfgNode):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = _plain(value)
    return out


def _compared(key: str) -> bool:
    if key in COMPARED_KEYS:
        return True
    return key.startswith(COMPARED_SECTIONS) and not key.endswith("_TEST") and key not in EXEMPT_KEYS


def training_identity(cfg: CfgNode) -> dict[str, Any]:
    """The values of ``cfg`` that define the trained model and the batches it sees.

    SEED counts as the data seed (a negative SEED trains with seed 0). Each training dataset
    appears with the files it resolves to (``DATASETS.TRAIN:<name>``), so a changed entry of
    DATASETS.CUSTOM counts while an added test set does not.
    """
    flat = {k: v for k, v in _flatten(cfg).items() if _compared(k)}
    if "SEED" in flat:
        flat["SEED"] = max(flat["SEED"], 0)
    for name in flat.get("DATASETS.TRAIN", ()):
        try:
            spec = catalog.get(name, cfg.get("DATASETS", {}).get("CUSTOM", ()))
            flat[f"DATASETS.TRAIN:{name}"] = [spec.factory, {k: str(v) for k, v in spec.args.items()}]
        except KeyError:  # an unknown name fails later with its own message
            flat[f"DATASETS.TRAIN:{name}"] = None
    return flat


def parse_saved_config(text: str) -> CfgNode:
    """The config saved in a checkpoint (YAML text), without merging it into the defaults."""
    return CfgNode.load_cfg(text)


def differing_keys(saved: CfgNode, cfg: CfgNode) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, current value)`` for each key of :func:`training_identity` that
    differs. A key the saved config lacks (written by an older detbench) is skipped."""
    old, new = training_identity(saved), training_identity(cfg)
    return [(k, old[k], new[k]) for k in sorted(new) if k in old and old[k] != new[k]]


def check_resume_compatible(saved_cfg: CfgNode | str | None, cfg: CfgNode, source: str = "the checkpoint") -> None:
    """Raise :class:`ResumeConfigError` naming every key in which ``cfg`` and the config
    saved with the checkpoint differ in a way that changes the model or the data order.

    ``saved_cfg`` is a CfgNode or its YAML text; None (a checkpoint saved without its
    config) skips the check.
    """
    if saved_cfg is None:
        return
    saved = parse_saved_config(saved_cfg) if isinstance(saved_cfg, str) else saved_cfg
    diffs = differing_keys(saved, cfg)
    if not diffs:
        return
    lines = "\n".join(f"  {key}: {old!r} when saved, {new!r} now" for key, old, new in diffs)
    raise ResumeConfigError(
        f"refusing to resume from {source}: the config differs from the one it was trained with in "
        f"{len(diffs)} key(s) that change the model or the data order:\n{lines}\n"
        "Restore these values, or train into a new OUTPUT_DIR (with MODEL.WEIGHT pointing at the "
        "checkpoint to fine-tune from it).")
