"""Dataset catalog: a name in DATASETS.TRAIN / DATASETS.TEST -> which dataset class and files.

Paths are relative to the catalog root, the environment variable ``DETBENCH_DATASETS``
(default ``./datasets``), laid out as::

    <root>/coco/train2014, val2014, train2017, val2017           image folders
    <root>/coco/annotations/instances_*.json, person_keypoints_*.json
    <root>/PennFudanPed/PNGImages, PedMasks
    <root>/voc/VOC2007, VOC2012/Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/<split>.txt
    <root>/voc/VOC20xx/Annotations/pascal_<split>20xx.json             the "*_cocostyle" names
    <root>/cityscapes/leftImg8bit/<split>/<city>/*_leftImg8bit.png      the raw-layout names
    <root>/cityscapes/gtFine/<split>/<city>/*_gtFine_{polygons.json,instanceIds.png}
    <root>/cityscapes/images/*.png, annotations/instancesonly_filtered_gtFine_<split>.json
    <root>/shapes/<split>_<parameters>_<hash>/images, instances.json   generated on first use

``shapes_train`` and ``shapes_val`` need no download: :mod:`detbench.data.datasets.shapes`
generates them into the cache folder the first time they are built.

Your own COCO-format data needs no code: add ``(name, image folder, annotation json)``
triples to ``DATASETS.CUSTOM`` (relative paths are resolved against the root) and use the
name in ``DATASETS.TRAIN`` / ``DATASETS.TEST``.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

logger = logging.getLogger(__name__)

ENV_ROOT = "DETBENCH_DATASETS"
DEFAULT_ROOT = "./datasets"


def _coco_names() -> dict[str, tuple[str, str]]:
    """Standard COCO names -> (image folder, annotation json), relative to the root."""
    splits = {
        "2014_train": ("train2014", "train2014"),
        "2014_val": ("val2014", "val2014"),
        "2014_minival": ("val2014", "minival2014"),
        "2014_valminusminival": ("val2014", "valminusminival2014"),
        "2017_train": ("train2017", "train2017"),
        "2017_val": ("val2017", "val2017"),
    }
    names = {}
    for split, (folder, ann) in splits.items():
        names[f"coco_{split}"] = (f"coco/{folder}", f"coco/annotations/instances_{ann}.json")
        names[f"keypoints_coco_{split}"] = (f"coco/{folder}", f"coco/annotations/person_keypoints_{ann}.json")
    return names


def _cocostyle_names() -> dict[str, tuple[str, str]]:
    """Pascal VOC and Cityscapes converted to COCO json (maskrcnn-benchmark's names and files):
    the VOC json files of Detectron, and Cityscapes as tools/convert_cityscapes_to_coco.py writes it."""
    names = {}
    for year, split in (("2007", "train"), ("2007", "val"), ("2007", "test"), ("2012", "train"), ("2012", "val")):
        names[f"voc_{year}_{split}_cocostyle"] = (
            f"voc/VOC{year}/JPEGImages", f"voc/VOC{year}/Annotations/pascal_{split}{year}.json")
    for split in ("train", "val", "test"):
        files = ("cityscapes/images", f"cityscapes/annotations/instancesonly_filtered_gtFine_{split}.json")
        names[f"cityscapes_fine_instanceonly_seg_{split}_cocostyle"] = files
        # The older name that maskrcnn-benchmark's configs/cityscapes/e2e_*_R_50_FPN_1x.yaml use.
        names[f"cityscapes_fine_instanceonly_seg_{split}"] = files
    return names


def _voc_names() -> dict[str, tuple[str, str, int]]:
    """VOC devkit names -> (folder relative to the root, ImageSets/Main split, year)."""
    splits = {"2007": ("train", "val", "trainval", "test"), "2012": ("train", "val", "trainval", "test")}
    return {f"voc_{year}_{split}": (f"voc/VOC{year}", split, int(year))
            for year, names in splits.items() for split in names}


def _cityscapes_names() -> dict[str, tuple[str, str, int | None]]:
    """Raw Cityscapes names -> (split, "poly" or "mask", mini: keep about this many images or None)."""
    names = {}
    for mode in ("poly", "mask"):
        for split in ("train", "val"):
            names[f"cityscapes_{mode}_instance_{split}"] = (split, mode, None)
        names[f"cityscapes_{mode}_instance_minival"] = ("val", mode, 10)
    return names


COCO_DATASETS = {**_coco_names(), **_cocostyle_names()}
VOC_DATASETS = _voc_names()
CITYSCAPES_DATASETS = _cityscapes_names()
CITYSCAPES_FOLDER = "cityscapes"
PENN_FUDAN_DATASETS = {"penn_fudan_train": "train", "penn_fudan_test": "test"}
PENN_FUDAN_FOLDER = "PennFudanPed"
SHAPES_DATASETS = {"shapes_train": "train", "shapes_val": "val"}
SHAPES_FOLDER = "shapes"
# Class names (label 1, 2, ...) of the datasets whose categories are fixed by their code; COCO-format
# data names its own in the json. The shapes generator and PennFudanDataset take theirs from here.
SHAPES_CLASSES = ("circle", "square", "triangle", "star", "ring")  # json category ids 1..5
PENN_FUDAN_CLASSES = ("person",)
# Pascal VOC's 20 classes (labels 1..20, in the devkit's order; 0 is the background).
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
# The Cityscapes classes with instances (labels 1..10, cityscapesScripts' order): the raw-layout names.
CITYSCAPES_CLASSES = ("person", "rider", "car", "truck", "bus", "caravan", "trailer", "train", "motorcycle",
                      "bicycle")
# The 8 of them that maskrcnn-benchmark's COCO converter keeps (caravan and trailer are not evaluated
# by the Cityscapes benchmark): the categories of tools/convert_cityscapes_to_coco.py's json files.
CITYSCAPES_COCO_CLASSES = ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")


class UnknownDatasetError(KeyError):
    """A dataset name the catalog does not know (KeyError, printed without KeyError's quotes)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class DatasetSpec:
    """What the catalog knows of a name: the dataset class's name and its path arguments."""

    name: str
    # "COCODataset", "PennFudanDataset", "PascalVOCDataset", "CityscapesDataset" or "Shapes" (a
    # COCODataset generated on first use).
    factory: str
    args: dict[str, Any] = field(default_factory=dict)
    # Names of labels 1, 2, ... when the dataset's code fixes them; None: read them from "ann_file".
    classes: tuple[str, ...] | None = None

    def class_names(self) -> tuple[str, ...] | None:
        """Names of labels 1, 2, ... (as the dataset numbers them), without creating or
        downloading anything; None when they are in a json that cannot be read."""
        if self.classes is not None:
            return self.classes
        ann_file = self.args.get("ann_file")
        if ann_file is None:
            return None
        try:
            with open(ann_file, encoding="utf-8") as f:
                categories = json.load(f)["categories"]
            # COCODataset numbers the json's category ids 1..K in increasing order.
            return tuple(c["name"] for c in sorted(categories, key=lambda c: c["id"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.info("No class names from %s: %s", ann_file, exc)
            return None


def datasets_root() -> Path:
    """The catalog root: $DETBENCH_DATASETS, or ./datasets."""
    return Path(os.environ.get(ENV_ROOT) or DEFAULT_ROOT)


def _resolve(path: str, root: Path) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else root / p


def _custom_table(custom: Iterable[Sequence[str]]) -> dict[str, tuple[str, str]]:
    """DATASETS.CUSTOM triples -> {name: (image folder, json)}, checked."""
    table = {}
    for entry in custom:
        if isinstance(entry, (str, bytes)) or len(entry) != 3 or not all(isinstance(e, str) for e in entry):
            raise ValueError(
                f"DATASETS.CUSTOM entries must be (name, image folder, annotation json) strings, got {entry!r}"
            )
        name, images, ann = entry
        if name in _builtin_names() or name in table:
            raise ValueError(f"DATASETS.CUSTOM name {name!r} is already defined; choose another name")
        table[name] = (images, ann)
    return table


def _builtin_names() -> list[str]:
    return [*COCO_DATASETS, *VOC_DATASETS, *CITYSCAPES_DATASETS, *PENN_FUDAN_DATASETS, *SHAPES_DATASETS]


def known_names(custom: Iterable[Sequence[str]] = ()) -> list[str]:
    """Every name the catalog resolves, built-in and custom, sorted."""
    return sorted([*_builtin_names(), *_custom_table(custom)])


def get(name: str, custom: Iterable[Sequence[str]] = (), root: str | Path | None = None) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; an unknown name raises KeyError listing the known
    names and the closest one."""
    root = Path(root) if root is not None else datasets_root()
    custom = _custom_table(custom)
    if name in custom:
        images, ann = custom[name]
        return DatasetSpec(name, "COCODataset", {"root": _resolve(images, root), "ann_file": _resolve(ann, root)})
    if name in COCO_DATASETS:
        images, ann = COCO_DATASETS[name]
        return DatasetSpec(name, "COCODataset", {"root": root / images, "ann_file": root / ann})
    if name in VOC_DATASETS:
        folder, split, year = VOC_DATASETS[name]
        return DatasetSpec(name, "PascalVOCDataset", {"root": root / folder, "split": split, "year": year},
                           VOC_CLASSES)
    if name in CITYSCAPES_DATASETS:
        split, mode, mini = CITYSCAPES_DATASETS[name]
        args = {"img_dir": root / CITYSCAPES_FOLDER / "leftImg8bit", "ann_dir": root / CITYSCAPES_FOLDER / "gtFine",
                "split": split, "mode": mode, "mini": mini}
        return DatasetSpec(name, "CityscapesDataset", args, CITYSCAPES_CLASSES)
    if name in PENN_FUDAN_DATASETS:
        args = {"root": root / PENN_FUDAN_FOLDER, "split": PENN_FUDAN_DATASETS[name]}
        return DatasetSpec(name, "PennFudanDataset", args, PENN_FUDAN_CLASSES)
    if name in SHAPES_DATASETS:
        # Only the cache root here: the split is generated when the dataset is built, not looked up.
        return DatasetSpec(name, "Shapes", {"root": root / SHAPES_FOLDER, "split": SHAPES_DATASETS[name]},
                           SHAPES_CLASSES)
    known = sorted([*_builtin_names(), *custom])
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.0)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownDatasetError(
        f"unknown dataset {name!r}.{hint} Known names: {', '.join(known)}. "
        f"Add your own COCO-format data with DATASETS.CUSTOM (name, image folder, annotation json)."
    )
