"""Reading Cityscapes' gtFine annotation files: the label table and the ``*_gtFine_polygons.json`` files.

Polygon convention. A Cityscapes polygon vertex ``[x, y]`` is the integer index of the pixel
it lies on, and cityscapesScripts rasterises a polygon (into ``*_instanceIds.png``) with PIL,
which fills every pixel whose index lies inside or on the polygon. In detbench's continuous
coordinates (pixel i covers [i, i+1), see :class:`~detbench.structures.BoxList`) a vertex
therefore moves to its pixel's centre, ``(x + 0.5, y + 0.5)``, and an object's box is the
box of the pixels it covers, ``(min x, min y, max x + 1, max y + 1)`` of the raw vertices:
the same box that the binary mask of the ``*_instanceIds.png`` file gives. The polygon
itself runs through the centres of the boundary pixels, so rasterised it is half a pixel
thinner on each side than cityscapesScripts' drawing (detectron2 dilates it by 0.5 pixel
with shapely; detbench leaves it as annotated).

Objects marked "deleted" and objects of classes without instances (road, sky, ...) are
skipped. A label ending in "group" (e.g. "cargroup") is a crowd of that class: reported
with ``is_group`` (maskrcnn-benchmark, hence detbench's datasets, leave them out).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .coco_checks import DatasetError

# cityscapesScripts' label table: name -> id (the value / 1000 of an instance in *_instanceIds.png).
LABEL_IDS = {
    "unlabeled": 0, "ego vehicle": 1, "rectification border": 2, "out of roi": 3, "static": 4, "dynamic": 5,
    "ground": 6, "road": 7, "sidewalk": 8, "parking": 9, "rail track": 10, "building": 11, "wall": 12,
    "fence": 13, "guard rail": 14, "bridge": 15, "tunnel": 16, "pole": 17, "polegroup": 18,
    "traffic light": 19, "traffic sign": 20, "vegetation": 21, "terrain": 22, "sky": 23, "person": 24,
    "rider": 25, "car": 26, "truck": 27, "bus": 28, "caravan": 29, "trailer": 30, "train": 31,
    "motorcycle": 32, "bicycle": 33, "license plate": -1,
}
# The classes with instances (ids 24..33); the others never have per-object ids.
INSTANCE_LABELS = ("person", "rider", "car", "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle")
GROUP_SUFFIX = "group"


@dataclass(frozen=True)
class CityscapesObject:
    """One object of an instance class: flat polygon [x0, y0, x1, y1, ...] and xyxy box, both
    in continuous coordinates (see the module doc), and its position in the file."""

    label: str
    polygon: tuple[float, ...]
    box: tuple[float, float, float, float]
    is_group: bool
    index: int


@dataclass(frozen=True)
class PolygonFile:
    """A ``*_gtFine_polygons.json``: image size, its instance-class objects, and the objects
    dropped as {reason: ["object #k ('label')", ...]}."""

    width: int
    height: int
    objects: tuple[CityscapesObject, ...]
    dropped: dict[str, list[str]]


def _label_of(name: Any) -> tuple[str | None, bool]:
    """(class name or None if not a Cityscapes label, is a group)."""
    if not isinstance(name, str):
        return None, False
    if name in LABEL_IDS:
        return name, False
    base = name[: -len(GROUP_SUFFIX)] if name.endswith(GROUP_SUFFIX) else None
    return (base, True) if base in INSTANCE_LABELS else (None, False)


def _polygon_problem(points: Any) -> str | None:
    if not isinstance(points, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in p)
            for p in points):
        return "polygon is not a list of [x, y] number pairs"
    if len(points) < 3:
        return "polygon with fewer than 3 points"
    return None


def _object(obj: dict, index: int, width: int, height: int) -> tuple[CityscapesObject | None, str | None]:
    """The object (None if skipped or dropped) and why it is dropped (None if not)."""
    label, is_group = _label_of(obj.get("label"))
    if label is None:
        return None, f"unknown label {obj.get('label')!r}"
    if label not in INSTANCE_LABELS:
        return None, None  # a class without instances: not an object detbench detects
    problem = _polygon_problem(obj.get("polygon"))
    if problem is not None:
        return None, problem
    xs, ys = [float(p[0]) for p in obj["polygon"]], [float(p[1]) for p in obj["polygon"]]
    box = (max(min(xs), 0.0), max(min(ys), 0.0), min(max(xs) + 1, float(width)), min(max(ys) + 1, float(height)))
    if box[2] <= box[0] or box[3] <= box[1]:
        return None, "polygon entirely outside the image"
    polygon = tuple(v + 0.5 for point in zip(xs, ys) for v in point)
    return CityscapesObject(label, polygon, box, is_group, index), None


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    if not isinstance(data, dict) or not isinstance(data.get("objects"), list):
        raise DatasetError(f"{path} is not a Cityscapes polygon file: no 'objects' list")
    sizes = (data.get("imgWidth"), data.get("imgHeight"))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes):
        raise DatasetError(f"{path}: imgWidth, imgHeight = {sizes} are not positive integers")
    return data


def read_polygon_file(path: str | Path) -> PolygonFile:
    """Parse one ``*_gtFine_polygons.json``. A file that is not JSON, has no "objects" list or
    no positive integer "imgWidth" / "imgHeight" raises DatasetError naming it; a malformed
    object (unknown label, polygon not [x, y] pairs or under 3 points, entirely outside the
    image) is dropped and reported in ``dropped``."""
    path = Path(path)
    data = _load(path)
    width, height = data["imgWidth"], data["imgHeight"]
    objects, dropped = [], defaultdict(list)
    for index, obj in enumerate(data["objects"]):
        if not isinstance(obj, dict):
            dropped["object is not a JSON object"].append(f"object #{index}")
            continue
        if obj.get("deleted"):
            continue
        kept, reason = _object(obj, index, width, height)
        if kept is not None:
            objects.append(kept)
        elif reason is not None:
            dropped[reason].append(f"object #{index} ({obj.get('label')!r})")
    return PolygonFile(width, height, tuple(objects), dict(dropped))
