"""Checks of a COCO-format json and its image files, before any training or evaluation starts.

Two kinds of defect, two answers:

* the file itself is broken where no single annotation can be blamed (a top-level entry of
  the wrong type, an image or category entry without a valid id, size or name, duplicate
  image, category or annotation ids, image files missing or empty): :class:`DatasetError`,
  naming the json and the offending ids / files, is raised at once;
* one annotation is malformed (fields of the wrong type, a NaN, negative or huge box, a
  polygon of odd length or with fewer than 3 points, an RLE of another size than its image,
  keypoints that are not triples, an area that is not a number): it is removed, and the
  count per reason is logged with the json's name and the annotation ids.

Annotations that are well-formed but unusable as training targets (unknown category, a box
empty after clipping) are handled by the dataset, which keeps them in the ground truth.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

from PIL import Image, UnidentifiedImageError
from pycocotools import mask as coco_mask

logger = logging.getLogger(__name__)

MAX_COORDINATE = 1e6  # pixels; a box or polygon coordinate beyond +-this is corrupt data
MAX_IMAGE_SIDE = 100_000  # pixels; a larger width or height in the json is corrupt data
LISTED = 10  # ids / files named in one message
VERIFY_MODES = ("exists", "header", "decode")


class DatasetError(ValueError):
    """A dataset file that cannot be used as it is; the message names the file and the entries."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float (bool excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def listed_ids(items: list[Any]) -> str:
    """The first LISTED items, comma-separated, and how many more there are."""
    more = f" and {len(items) - LISTED} more" if len(items) > LISTED else ""
    return ", ".join(str(i) for i in items[:LISTED]) + more


def _duplicates(ids: Iterable[Any]) -> list[Any]:
    counts = Counter(ids)
    return sorted((i for i, n in counts.items() if n > 1), key=str)


def _entry_problems(entries: list[Any], what: str, required: dict[str, Any]) -> list[str]:
    """One line per entry of ``entries`` (images or categories) whose fields fail ``required``."""
    problems = []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(f"{what} #{position} is a {type(entry).__name__}, not an object")
            continue
        for key, (test, allowed) in required.items():
            if not test(entry.get(key)):
                problems.append(f"{what} #{position} (id {entry.get('id')!r}): {key} = {entry.get(key)!r} "
                                f"is not {allowed}")
    return problems


def _positive_side(value: Any) -> bool:
    return _is_int(value) and 0 < value <= MAX_IMAGE_SIDE


IMAGE_FIELDS = {
    "id": (_is_int, "an integer"),
    "file_name": (lambda v: isinstance(v, str) and v.strip() != "", "a file name"),
    "width": (_positive_side, f"an integer in [1, {MAX_IMAGE_SIDE}]"),
    "height": (_positive_side, f"an integer in [1, {MAX_IMAGE_SIDE}]"),
}
CATEGORY_FIELDS = {"id": (_is_int, "an integer"), "name": (lambda v: isinstance(v, str), "a string")}


def check_structure(data: dict, ann_file: Path) -> None:
    """Raise DatasetError listing what makes ``data`` unusable as a whole (see the module doc)."""
    problems = [f"'{k}' is a {type(data[k]).__name__}, not a list"
                for k in ("images", "annotations", "categories") if not isinstance(data[k], list)]
    if not problems:
        problems += _entry_problems(data["images"], "image", IMAGE_FIELDS)
        problems += _entry_problems(data["categories"], "category", CATEGORY_FIELDS)
    if not problems:
        for what, entries in (("image", data["images"]), ("category", data["categories"])):
            repeated = _duplicates(e["id"] for e in entries)
            if repeated:
                problems.append(f"duplicate {what} ids: {listed_ids(repeated)}")
        repeated = _duplicates(a["id"] for a in data["annotations"] if isinstance(a, dict) and _is_int(a.get("id")))
        if repeated:
            problems.append(f"duplicate annotation ids: {listed_ids(repeated)}")
    if problems:
        raise DatasetError(f"{ann_file} cannot be used: {len(problems)} problem(s):\n  " + "\n  ".join(problems[:50]))


def _polygon_problem(polygons: list) -> str | None:
    for polygon in polygons:
        if not isinstance(polygon, list) or not all(_is_number(v) for v in polygon):
            return "polygon coordinates are not finite numbers"
        if len(polygon) % 2:
            return "polygon with an odd number of coordinates"
        if len(polygon) < 6:
            return "polygon with fewer than 3 points"
        if max(abs(v) for v in polygon) > MAX_COORDINATE:
            return f"polygon coordinate beyond +-{MAX_COORDINATE:g} pixels"
    return None


def _rle_problem(rle: dict, height: int, width: int) -> str | None:
    size = rle.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
        return "RLE size is not [height, width]"
    if size != [height, width]:
        return "RLE of another size than its image"
    counts = rle.get("counts")
    if isinstance(counts, list):
        if not all(_is_int(c) and c >= 0 for c in counts) or sum(counts) != height * width:
            return "RLE counts do not cover the image"
        return None
    if not isinstance(counts, str):
        return "RLE counts are neither a list nor a string"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            area = int(coco_mask.area({"size": size, "counts": counts.encode()}))
    except Exception:  # pycocotools raises several types for undecodable strings
        return "RLE counts cannot be decoded"
    return None if 0 <= area <= height * width else "RLE counts do not cover the image"


def segmentation_problem(segmentation: Any, height: int, width: int) -> str | None:
    """Why ``segmentation`` (polygons or an RLE) is malformed for a ``height`` x ``width`` image."""
    if isinstance(segmentation, list):
        return _polygon_problem(segmentation)
    if isinstance(segmentation, dict):
        return _rle_problem(segmentation, height, width)
    return "segmentation is neither polygons nor an RLE"


def _bbox_problem(bbox: Any) -> str | None:
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        return "bbox is not [x, y, w, h] of numbers"
    if not all(math.isfinite(v) for v in bbox):
        return "non-finite bbox"
    if max(abs(v) for v in bbox) > MAX_COORDINATE:
        return f"bbox coordinate beyond +-{MAX_COORDINATE:g} pixels"
    return None


def annotation_problem(ann: Any, images: dict[int, dict]) -> str | None:
    """Why ``ann`` is malformed (see the module doc), or None; ``images`` maps id -> image entry."""
    if not isinstance(ann, dict):
        return "annotation is not an object"
    if not _is_int(ann.get("id")):
        return "annotation id is not an integer"
    image = images.get(ann.get("image_id")) if _is_int(ann.get("image_id")) else None
    if image is None:
        return "image_id names no image of the file"
    if not _is_int(ann.get("category_id")):
        return "category_id is not an integer"
    if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd"), float):
        return "iscrowd is not 0 or 1"
    problem = _bbox_problem(ann.get("bbox"))
    if problem is None and "area" in ann and not (_is_number(ann["area"]) and ann["area"] >= 0):
        problem = "area is not a finite number >= 0"
    if problem is None and ann.get("segmentation"):
        problem = segmentation_problem(ann["segmentation"], image["height"], image["width"])
    keypoints = ann.get("keypoints")
    if problem is None and keypoints is not None and not (
            isinstance(keypoints, list) and len(keypoints) % 3 == 0 and all(_is_number(v) for v in keypoints)):
        problem = "keypoints are not (x, y, visibility) triples of numbers"
    return problem


def sanitize_annotations(data: dict, ann_file: Path) -> list[dict]:
    """The annotations of ``data`` that are well-formed; the others are logged by reason with
    their ids (``#N``: the position of an annotation without a valid id) and left out."""
    images = {image["id"]: image for image in data["images"]}
    kept, dropped = [], defaultdict(list)
    for position, ann in enumerate(data["annotations"]):
        reason = annotation_problem(ann, images)
        if reason is None:
            kept.append(ann)
        else:
            has_id = isinstance(ann, dict) and _is_int(ann.get("id"))
            dropped[reason].append(ann["id"] if has_id else f"#{position}")
    for reason, ids in sorted(dropped.items()):
        logger.warning("%s: dropped %d malformed annotation(s): %s (annotation ids %s)",
                       ann_file, len(ids), reason, listed_ids(ids))
    return kept


def _file_problem(path: Path, info: dict, mode: str) -> str | None:
    """Why the image file of ``info`` cannot be used (``mode`` as in :func:`check_image_files`)."""
    try:
        size = path.stat().st_size
    except OSError:
        return "missing"
    if size == 0:
        return "empty (0 bytes)"
    if mode == "exists":
        return None
    try:
        with Image.open(path) as image:
            if mode == "decode":
                image.load()
            width, height = image.size
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientations that swap the sides
                width, height = height, width
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"not a readable image ({exc})"
    if (width, height) != (info["width"], info["height"]):
        return f"{width} x {height} pixels, the json says {info['width']} x {info['height']}"
    return None


def check_image_files(root: Path, infos: Iterable[dict], ann_file: Path, mode: str = "exists") -> None:
    """Raise DatasetError naming every image file of ``infos`` that is unusable.

    ``mode``: "exists" checks that each file exists and is not empty (one stat per image);
    "header" also opens it and compares its size with the json; "decode" decodes every image
    (finds truncated files too, at the cost of reading the whole dataset once).
    """
    if mode not in VERIFY_MODES:
        raise ValueError(f"image check mode {mode!r} is not one of {VERIFY_MODES}")
    bad = []
    for info in infos:
        problem = _file_problem(root / info["file_name"], info, mode)
        if problem is not None:
            bad.append(f"{root / info['file_name']} (image id {info['id']}): {problem}")
    if bad:
        raise DatasetError(f"{len(bad)} image file(s) of {ann_file} cannot be used:\n  " + "\n  ".join(bad[:50])
                           + (f"\n  ... and {len(bad) - 50} more" if len(bad) > 50 else ""))
