"""COCODataset: a COCO-format annotation json plus its image folder, as (image, BoxList, index).

Also the image reader shared by the datasets (:func:`load_image`) and the json reader
(:func:`load_coco_json`), both of which name the offending file in their errors.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from pycocotools.coco import COCO
from torch import Tensor

from detbench.structures import BoxList, PersonKeypoints, SegmentationMask

from .coco_checks import check_image_files, check_structure, listed_ids, sanitize_annotations

logger = logging.getLogger(__name__)

Transforms = Callable[[Any, BoxList], tuple[Any, BoxList]]


class ImageLoadError(RuntimeError):
    """An image file that is missing, unreadable or not an image; the message names it."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. 16-bit grayscale ("I;16*", "I") is scaled from [0, 65535]
    to [0, 255]; an alpha channel is dropped; palette and grayscale images are expanded."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        # 65535 / 257 = 255 exactly, so full range maps to full range.
        gray = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
        image = Image.fromarray(gray, mode="L")
    return image if image.mode == "RGB" else image.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Read an image file as 8-bit RGB, upright per its EXIF orientation tag.

    Raises :class:`ImageLoadError` naming ``path`` if it is missing, truncated or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so truncated data fails here and not later
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"cannot read image {path}: {exc}") from exc


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file from its header (not decoded); ImageLoadError names it."""
    try:
        with Image.open(path) as image:
            return image.size
    except OSError as exc:
        raise ImageLoadError(f"cannot read image {path}: {exc}") from exc


def load_coco_json(ann_file: str | Path) -> COCO:
    """A pycocotools COCO of ``ann_file``; errors name the file (and the position of a JSON error).

    The json is checked first (:mod:`.coco_checks`): a broken file raises DatasetError, and
    malformed annotations are left out (logged by reason, with their ids)."""
    ann_file = Path(ann_file)
    try:
        text = ann_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise FileNotFoundError(f"cannot read annotation file {ann_file}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{ann_file} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno} (char {exc.pos})"
        ) from exc
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError(f"{ann_file} is not a COCO instances file: missing top-level key(s) {missing}")
    check_structure(data, ann_file)
    data["annotations"] = sanitize_annotations(data, ann_file)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
        coco.createIndex()
    return coco


def _problem(ann: dict, width: int, height: int, known: set[int]) -> str | None:
    """Why a non-crowd annotation cannot be a training target, or None if it can."""
    if ann.get("category_id") not in known:
        return "unknown category_id"
    bbox = ann.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return "bbox is not [x, y, w, h]"
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return "non-finite bbox"
    # Width/height of the box clipped to the image [0, width] x [0, height].
    if min(x + w, width) - max(x, 0.0) <= 0 or min(y + h, height) - max(y, 0.0) <= 0:
        return "box width or height <= 0 (after clipping to the image)"
    return None


class COCODataset(torch.utils.data.Dataset):
    """Images and targets of a COCO-format json.

    ``__getitem__(i)`` returns ``(image, target, i)``: the image after ``transforms`` (a
    [3, H, W] float tensor with the standard transforms) and a BoxList in that image's size
    with "labels" (int64, contiguous ids 1..C, 0 is background), "masks" (SegmentationMask)
    when the annotations have segmentations, and "keypoints" (PersonKeypoints) when the
    categories declare keypoints (person_keypoints files).

    Crowd annotations (``iscrowd=1``) are never targets. Non-crowd annotations whose box
    is degenerate after clipping to the image (w or h <= 0), non-finite, or of an unknown
    category are dropped; the counts per reason are logged once. With
    ``remove_images_without_annotations`` images left without targets (for keypoint files:
    with fewer than ``min_keypoints_per_image`` labelled keypoints) are dropped; otherwise
    they are kept as pure negatives. Images are read as RGB (see :func:`load_image`).

    Before any item is read, the json is checked and malformed annotations are left out
    (see :func:`load_coco_json`), and the image files of the kept images are checked per
    ``verify_images`` (see :func:`~.coco_checks.check_image_files`): a missing or empty file
    (or, with "header"/"decode", an unreadable one) raises DatasetError naming every such file.
    """

    def __init__(
        self,
        ann_file: str | Path,
        root: str | Path,
        remove_images_without_annotations: bool,
        transforms: Transforms | None = None,
        min_keypoints_per_image: int = 10,
        verify_images: str = "exists",
    ) -> None:
        self.ann_file, self.root, self.transforms = Path(ann_file), Path(root), transforms
        self.coco = load_coco_json(self.ann_file)
        cats = sorted(self.coco.dataset["categories"], key=lambda c: c["id"])
        self.json_category_id_to_contiguous_id = {c["id"]: i + 1 for i, c in enumerate(cats)}
        self.contiguous_category_id_to_json_id = {v: k for k, v in self.json_category_id_to_contiguous_id.items()}
        self.categories = {i + 1: c["name"] for i, c in enumerate(cats)}
        self.has_keypoints = any("keypoints" in c for c in cats)
        self._anns = self._usable_annotations()
        self.has_masks = any(a.get("segmentation") for anns in self._anns.values() for a in anns)
        ids = sorted(self.coco.imgs)
        if remove_images_without_annotations:
            ids = [i for i in ids if self._is_usable(self._anns[i], min_keypoints_per_image)]
        self.ids = ids
        self.id_to_img_map = dict(enumerate(ids))
        check_image_files(self.root, (self.coco.imgs[i] for i in ids), self.ann_file, verify_images)

    def _usable_annotations(self) -> dict[int, list[dict]]:
        """Image id -> its non-crowd annotations that pass :func:`_problem`; logs what was dropped."""
        known = set(self.json_category_id_to_contiguous_id)
        dropped: dict[str, list[int]] = defaultdict(list)
        kept: dict[int, list[dict]] = {i: [] for i in self.coco.imgs}
        for img_id, info in self.coco.imgs.items():
            for ann in self.coco.imgToAnns.get(img_id, []):
                if ann.get("iscrowd", 0):
                    continue
                reason = _problem(ann, info["width"], info["height"], known)
                if reason is None:
                    kept[img_id].append(ann)
                else:
                    dropped[reason].append(ann["id"])
        for reason, ids in sorted(dropped.items()):
            logger.warning("%s: dropped %d annotation(s): %s (annotation ids %s)",
                           self.ann_file, len(ids), reason, listed_ids(ids))
        return kept

    def _is_usable(self, anns: list[dict], min_keypoints: int) -> bool:
        if not anns:
            return False
        if not self.has_keypoints:
            return True
        # Keypoint files: an image helps the keypoint head only with enough labelled points.
        visible = sum(sum(1 for v in a.get("keypoints", [])[2::3] if v > 0) for a in anns)
        return visible >= min_keypoints

    def __len__(self) -> int:
        return len(self.ids)

    def get_img_info(self, index: int) -> dict:
        """The json's image entry (original "height", "width", "file_name", "id")."""
        return self.coco.imgs[self.ids[index]]

    def _image_path(self, index: int) -> Path:
        return self.root / self.get_img_info(index)["file_name"]

    def get_groundtruth(self, index: int) -> BoxList:
        """The untransformed target of image ``index`` in its original size (see the class doc)."""
        info = self.get_img_info(index)
        size = (info["width"], info["height"])
        anns = self._anns[self.ids[index]]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        target = BoxList(boxes, size, mode="xywh").convert("xyxy").clip_to_image(remove_empty=False)
        labels = [self.json_category_id_to_contiguous_id[a["category_id"]] for a in anns]
        target.add_field("labels", torch.tensor(labels, dtype=torch.int64))
        if self.has_masks:
            target.add_field("masks", self._masks(anns, size))
        if self.has_keypoints:
            num = len(PersonKeypoints.NAMES)
            kps = [a.get("keypoints") or [0.0] * 3 * num for a in anns]  # flat (x, y, v) * num
            kps = torch.tensor(kps, dtype=torch.float32).reshape(len(anns), num, 3)
            target.add_field("keypoints", PersonKeypoints(kps, size))
        return target

    def _masks(self, anns: list[dict], size: tuple[int, int]) -> SegmentationMask:
        """Polygons stay polygons; if any instance is an RLE, all become bitmasks [N, H, W]."""
        segs = [a.get("segmentation") or [] for a in anns]
        if all(isinstance(s, list) for s in segs):
            return SegmentationMask(segs, size, mode="poly")
        bitmasks = [self._ann_to_mask(a, size) for a in anns]
        stacked = torch.stack(bitmasks) if bitmasks else torch.zeros((0, size[1], size[0]), dtype=torch.uint8)
        return SegmentationMask(stacked, size, mode="mask")

    def _ann_to_mask(self, ann: dict, size: tuple[int, int]) -> Tensor:
        if not ann.get("segmentation"):
            return torch.zeros((size[1], size[0]), dtype=torch.uint8)
        with warnings.catch_warnings():
            # pycocotools' decode trips a numpy 2 DeprecationWarning (copy=False) internally.
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.from_numpy(self.coco.annToMask(ann).astype(np.uint8))

    def __getitem__(self, index: int) -> tuple[Any, BoxList, int]:
        path = self._image_path(index)
        try:
            image = load_image(path)
        except ImageLoadError as exc:
            raise ImageLoadError(f"{exc} (image id {self.ids[index]} of {self.ann_file})") from exc
        target = self.get_groundtruth(index)
        if image.size != target.size:
            raise ImageLoadError(
                f"{path}: image is {image.size} (width, height) after EXIF orientation but "
                f"{self.ann_file} says {target.size} (image id {self.ids[index]})"
            )
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target, index

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.ann_file}, {len(self)} images, {len(self.categories)} categories)"
