"""Cityscapes gtFine polygons -> COCO instance json, the files of the
``cityscapes_fine_instanceonly_seg_{train,val,test}_cocostyle`` names (``tools/convert_cityscapes_to_coco.py``).

As maskrcnn-benchmark's converter: one json per split, ``instancesonly_filtered_gtFine_<split>.json``,
with the 8 instance classes it keeps (:data:`~detbench.data.catalog.CITYSCAPES_COCO_CLASSES`,
category ids 1..8 in that order; caravan and trailer are not evaluated by Cityscapes and are
left out), image ``file_name`` the bare ``*_leftImg8bit.png`` name (the images of all cities
side by side in ``cityscapes/images``; :func:`link_images` makes that folder of links), and
polygons with fewer than 3 points left out. Unlike it, the polygons are the annotated ones
of the ``*_polygons.json`` files (occluded parts included) in detbench's continuous
coordinates, and boxes the boxes of the covered pixels (see :mod:`.cityscapes_format`);
"area" is the pixel area of the polygon as pycocotools rasterises it. Crowd ("group")
regions are left out, or written with ``iscrowd`` 1 with ``include_groups``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from pycocotools import mask as coco_mask

from ..catalog import CITYSCAPES_COCO_CLASSES, CITYSCAPES_FOLDER, datasets_root
from .cityscapes_format import CityscapesObject, read_polygon_file
from .coco_checks import DatasetError, listed_ids

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
POLYGON_SUFFIX = "_gtFine_polygons.json"
JSON_NAME = "instancesonly_filtered_gtFine_{}.json"


def _annotation(obj: CityscapesObject, ann_id: int, image_id: int, width: int, height: int) -> dict:
    x1, y1, x2, y2 = obj.box
    rle = coco_mask.merge(coco_mask.frPyObjects([list(obj.polygon)], height, width))
    return {
        "id": ann_id, "image_id": image_id, "category_id": CITYSCAPES_COCO_CLASSES.index(obj.label) + 1,
        "iscrowd": int(obj.is_group), "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(coco_mask.area(rle)),
        "segmentation": [list(obj.polygon)],
    }


def convert_split(gtfine: str | Path, split: str, include_groups: bool = False) -> dict:
    """The COCO dict of ``gtfine/<split>/<city>/*_gtFine_polygons.json`` (files in sorted order,
    image and annotation ids from 1). A broken polygon file raises DatasetError naming every
    such file; dropped objects are logged by reason with their file."""
    folder = Path(gtfine) / split
    files = sorted(folder.glob(f"*/*{POLYGON_SUFFIX}"))
    if not files:
        raise DatasetError(f"no Cityscapes polygon files (*/*{POLYGON_SUFFIX}) in {folder}")
    images, annotations, errors, dropped = [], [], [], defaultdict(list)
    for path in files:
        try:
            parsed = read_polygon_file(path)
        except DatasetError as exc:
            errors.append(str(exc))
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": path.name[: -len(POLYGON_SUFFIX)] + "_leftImg8bit.png",
                       "width": parsed.width, "height": parsed.height})
        for reason, objects in parsed.dropped.items():
            dropped[reason] += [f"{path.name}: {o}" for o in objects]
        for obj in parsed.objects:
            if obj.label in CITYSCAPES_COCO_CLASSES and (include_groups or not obj.is_group):
                annotations.append(_annotation(obj, len(annotations) + 1, image_id, parsed.width, parsed.height))
    if errors:
        raise DatasetError(f"{len(errors)} Cityscapes polygon file(s) in {folder} cannot be used:\n  "
                           + "\n  ".join(errors[:50]))
    for reason, objects in sorted(dropped.items()):
        logger.warning("%s: dropped %d object(s): %s: %s", folder, len(objects), reason, listed_ids(objects))
    categories = [{"id": i, "name": n} for i, n in enumerate(CITYSCAPES_COCO_CLASSES, start=1)]
    return {"images": images, "annotations": annotations, "categories": categories}


def convert_cityscapes(
    gtfine: str | Path, out_dir: str | Path, splits: Sequence[str] = SPLITS, include_groups: bool = False,
) -> list[Path]:
    """Write ``out_dir/instancesonly_filtered_gtFine_<split>.json`` for each split; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split in splits:
        data = convert_split(gtfine, split, include_groups)
        path = out_dir / JSON_NAME.format(split)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)  # never a half-written json under the final name
        logger.info("%s: %d images, %d annotations", path, len(data["images"]), len(data["annotations"]))
        written.append(path)
    return written


def link_images(left_img8bit: str | Path, images_dir: str | Path, splits: Sequence[str] = SPLITS) -> int:
    """Symbolic links ``images_dir/<name>`` -> ``left_img8bit/<split>/<city>/<name>`` for every
    ``*_leftImg8bit.png`` (the flat folder of the cocostyle names); existing links are kept.
    Returns the number of links made."""
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    made = 0
    for split in splits:
        for image in sorted((Path(left_img8bit) / split).glob("*/*_leftImg8bit.png")):
            link = images_dir / image.name
            if not link.exists():
                link.symlink_to(image.resolve())
                made += 1
    return made


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Command line of ``tools/convert_cityscapes_to_coco.py``."""
    default = datasets_root() / CITYSCAPES_FOLDER
    parser = argparse.ArgumentParser(description="Cityscapes gtFine polygons -> COCO json (instance classes only)")
    parser.add_argument("--gtfine", type=Path, default=default / "gtFine",
                        help="the gtFine folder holding train/, val/, test/ (default: %(default)s)")
    parser.add_argument("--outdir", type=Path, default=default / "annotations",
                        help="where the json files go (default: %(default)s)")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    parser.add_argument("--with-groups", action="store_true", help="write crowd regions ('cargroup'...) as iscrowd 1")
    parser.add_argument("--link-images", type=Path, default=None, metavar="LEFTIMG8BIT",
                        help="also link the images of this leftImg8bit folder into <outdir>/../images")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    written = convert_cityscapes(args.gtfine, args.outdir, args.splits, args.with_groups)
    if args.link_images is not None:
        images = args.outdir.parent / "images"
        logger.info("%s: %d image links made", images, link_images(args.link_images, images, args.splits))
    return written
