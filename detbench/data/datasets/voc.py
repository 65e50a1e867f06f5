"""PascalVOCDataset: the VOC devkit folder (Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/*.txt).

Box convention. VOC's ``<bndbox>`` gives 1-based, inclusive pixel indices: ``xmin = 1`` is
the first column and ``xmax`` the last column the object covers. In detbench's continuous
coordinates (pixel i covers [i, i+1), see :class:`~detbench.structures.BoxList`) the 1-based
column ``c`` covers [c - 1, c), so the box ``(xmin, ymin, xmax, ymax)`` becomes
``(xmin - 1, ymin - 1, xmax, ymax)`` and its width ``xmax - xmin + 1`` is the number of pixel
columns it covers. A box covering the whole W x H image, (1, 1, W, H), becomes (0, 0, W, H).
The same mapping makes the continuous IoU of two boxes equal to the devkit's IoU on the
integer boxes (which adds 1 to each width and height), so the VOC metric needs no "+1".

Objects marked ``<difficult>1</difficult>`` stay in the ground truth with a "difficult" field
(the metric ignores them); they are left out of the training targets unless
``use_difficult`` (DATASETS.VOC_USE_DIFFICULT).

Bad input: a missing ImageSets file, a missing or broken XML file or one without a valid
``<size>`` raise :class:`~.coco_checks.DatasetError` naming every such file; an object of an
unknown class, without a numeric box, with an empty box or a box entirely outside the image
is dropped, and a box reaching outside the image is clipped to it; both are logged by
reason with the XML file and the object's position and name.
"""

from __future__ import annotations

import logging
import math
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from detbench.structures import BoxList

from ..catalog import VOC_CLASSES
from .coco import ImageLoadError, Transforms, load_image
from .coco_checks import DatasetError, check_image_files, listed_ids

logger = logging.getLogger(__name__)

VOC_METRICS = ("auto", "11point", "area")


@dataclass(frozen=True)
class VOCObject:
    """One kept object: its class name, continuous xyxy box and difficult flag."""

    name: str
    box: tuple[float, float, float, float]
    difficult: bool


@dataclass(frozen=True)
class VOCImage:
    """One annotation file: image size in pixels and its kept objects."""

    width: int
    height: int
    objects: tuple[VOCObject, ...]


def voc_box_to_continuous(xmin: float, ymin: float, xmax: float, ymax: float) -> tuple[float, float, float, float]:
    """VOC's 1-based inclusive pixel box -> detbench's continuous xyxy box (see the module doc)."""
    return (xmin - 1.0, ymin - 1.0, float(xmax), float(ymax))


def _text(node: ET.Element | None, tag: str) -> str | None:
    child = node.find(tag) if node is not None else None
    return child.text.strip() if child is not None and child.text is not None else None


def _size(root: ET.Element, path: Path) -> tuple[int, int]:
    try:
        width, height = int(_text(root.find("size"), "width")), int(_text(root.find("size"), "height"))
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: no valid <size><width>/<height> (positive integers)") from None
    if width <= 0 or height <= 0:
        raise DatasetError(f"{path}: <size> is {width} x {height}, not positive")
    return width, height


def _object(obj: ET.Element, width: int, height: int, classes: set[str]) -> tuple[VOCObject | None, str | None]:
    """(the object, None), (None, why it is dropped) or (the clipped object, "clipped ...")."""
    name = (_text(obj, "name") or "").lower()
    if name not in classes:
        return None, f"unknown class name {name!r}"
    try:
        coords = [float(_text(obj.find("bndbox"), k)) for k in ("xmin", "ymin", "xmax", "ymax")]
    except (TypeError, ValueError):
        return None, "no <bndbox> with numeric xmin, ymin, xmax, ymax"
    try:
        difficult = int(_text(obj, "difficult") or 0) == 1
    except ValueError:
        return None, "<difficult> is not 0 or 1"
    x1, y1, x2, y2 = voc_box_to_continuous(*coords)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
        return None, "empty or inverted box (xmax < xmin or ymax < ymin)"
    clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None, "box entirely outside the image"
    note = None if clipped == (x1, y1, x2, y2) else "box reaches outside the image (clipped to it)"
    return VOCObject(name, clipped, difficult), note


def parse_voc_xml(path: Path, classes: tuple[str, ...] = VOC_CLASSES) -> tuple[VOCImage, dict[str, list[str]]]:
    """The image size and objects of one VOC XML file, and {reason: ["object #k (name)", ...]}
    for the objects dropped or clipped. Raises DatasetError for a broken or size-less file."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        line, column = exc.position
        raise DatasetError(f"{path}: broken XML at line {line}, column {column}: {exc}") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read annotation file: {exc.strerror or exc}") from None
    width, height = _size(root, path)
    objects, notes = [], defaultdict(list)
    known = set(classes)
    for k, obj in enumerate(root.iter("object")):
        kept, note = _object(obj, width, height, known)
        if kept is not None:
            objects.append(kept)
        if note is not None:
            notes[note].append(f"object #{k} ({_text(obj, 'name')!r})")
    return VOCImage(width, height, tuple(objects)), dict(notes)


def read_image_set(root: Path, split: str) -> list[str]:
    """Image ids listed in ``root/ImageSets/Main/<split>.txt`` (first field of each non-empty line)."""
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        folder = path.parent
        have = sorted(p.stem for p in folder.glob("*.txt") if "_" not in p.stem) if folder.is_dir() else []
        raise DatasetError(f"VOC split file not found: {path} (splits there: {have or 'none'})")
    return [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def resolve_voc_metric(metric: str, year: int | None) -> str:
    """TEST.VOC_METRIC -> "11point" or "area": "auto" is the 11-point metric for VOC2007, else area."""
    if metric not in VOC_METRICS:
        raise ValueError(f"TEST.VOC_METRIC = {metric!r}: must be one of {VOC_METRICS}")
    if metric != "auto":
        return metric
    return "11point" if year == 2007 else "area"


class PascalVOCDataset(torch.utils.data.Dataset):
    """A VOC devkit split: ``(image, target, index)`` items with "labels" (1..20, see
    :data:`~detbench.data.catalog.VOC_CLASSES`) and "difficult" (bool) fields.

    Every XML file of the split is read when the dataset is built (errors name the files;
    see the module doc). ``ids`` are the devkit's image ids ("000005", "2008_000001").
    ``year`` (2007, 2012; None: from a folder name "VOC<year>") and ``metric``
    ("auto", "11point", "area") choose the VOC metric, :attr:`voc_metric`.
    With ``remove_images_without_annotations`` images without a training target are dropped.
    """

    def __init__(
        self, root: str | Path, split: str, use_difficult: bool = False, transforms: Transforms | None = None,
        year: int | None = None, metric: str = "auto", remove_images_without_annotations: bool = False,
        verify_images: str = "exists",
    ) -> None:
        self.root, self.split, self.transforms = Path(root), split, transforms
        self.use_difficult = use_difficult
        found = re.search(r"VOC(\d{4})", self.root.name)
        self.year = year if year is not None else (int(found.group(1)) if found else None)
        self.voc_metric = resolve_voc_metric(metric, self.year)
        self.categories = dict(enumerate(VOC_CLASSES, start=1))
        self.json_category_id_to_contiguous_id = {i: i for i in self.categories}
        self.contiguous_category_id_to_json_id = dict(self.json_category_id_to_contiguous_id)
        self._class_to_label = {name: i for i, name in self.categories.items()}
        ids = read_image_set(self.root, split)
        self._images = self._parse_all(ids)
        if remove_images_without_annotations:
            ids = [i for i in ids if any(self.use_difficult or not o.difficult for o in self._images[i].objects)]
        self.ids = ids
        self.id_to_img_map = dict(enumerate(ids))
        image_set = self.root / "ImageSets" / "Main" / f"{split}.txt"
        check_image_files(self.root / "JPEGImages", (self.get_img_info(i) for i in range(len(ids))), image_set,
                          verify_images)

    def _parse_all(self, ids: list[str]) -> dict[str, VOCImage]:
        """Every annotation of ``ids``; raises naming every unusable file, logs dropped objects."""
        images, errors, notes = {}, [], defaultdict(list)
        for image_id in ids:
            path = self.root / "Annotations" / f"{image_id}.xml"
            try:
                images[image_id], dropped = parse_voc_xml(path)
            except DatasetError as exc:
                errors.append(str(exc))
                continue
            for reason, objects in dropped.items():
                notes[reason] += [f"{path.name}: {o}" for o in objects]
        if errors:
            raise DatasetError(f"{len(errors)} annotation file(s) of VOC split {self.split!r} ({self.root}) "
                               f"cannot be used:\n  " + "\n  ".join(errors[:50]))
        for reason, objects in sorted(notes.items()):
            logger.warning("%s/Annotations: %d object(s): %s: %s", self.root, len(objects), reason, listed_ids(objects))
        return images

    def __len__(self) -> int:
        return len(self.ids)

    def get_img_info(self, index: int) -> dict:
        """{"height", "width", "file_name" (in JPEGImages/), "id"} of image ``index``."""
        image_id = self.ids[index]
        image = self._images[image_id]
        return {"height": image.height, "width": image.width, "file_name": f"{image_id}.jpg", "id": image_id}

    def get_groundtruth(self, index: int) -> BoxList:
        """Every kept object of image ``index``, difficult ones included, in the original size."""
        image = self._images[self.ids[index]]
        boxes = torch.tensor([o.box for o in image.objects], dtype=torch.float32).reshape(-1, 4)
        target = BoxList(boxes, (image.width, image.height), mode="xyxy")
        labels = [self._class_to_label[o.name] for o in image.objects]
        target.add_field("labels", torch.tensor(labels, dtype=torch.int64))
        target.add_field("difficult", torch.tensor([o.difficult for o in image.objects], dtype=torch.bool))
        return target

    def __getitem__(self, index: int) -> tuple[Any, BoxList, int]:
        path = self.root / "JPEGImages" / f"{self.ids[index]}.jpg"
        image = load_image(path)
        target = self.get_groundtruth(index)
        if image.size != target.size:
            raise ImageLoadError(f"{path}: image is {image.size} (width, height) but its XML says {target.size}")
        if not self.use_difficult:
            target = target[~target.get_field("difficult")]
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target, index

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root}, split={self.split}, {len(self)} images)"
