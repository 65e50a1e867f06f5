"""Shared fixture of the data tests: a tiny synthetic COCO-format dataset on disk."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image


def tiny_coco_dict() -> dict:
    """3 images, json category ids 5 ("cat") and 9 ("dog"):

    * image 1 "a.jpg" 40 x 30 (w x h): a polygon cat, a crowd dog (RLE), a box of width 0,
      a NaN box and a box entirely right of the image (the last three are dropped);
    * image 2 "b.png" 20 x 50, grayscale: a dog given as a non-crowd uncompressed RLE;
    * image 3 "c.png" 30 x 30: no annotation at all.
    """
    # Uncompressed RLE of a 50 x 20 (h x w) mask, column-major runs: 0s then 1s then 0s.
    # Columns 2..3 (x) fully set: 2 columns * 50 rows = 100 ones after 100 zeros.
    rle = {"size": [50, 20], "counts": [100, 100, 800]}
    crowd = {"size": [30, 40], "counts": [0, 1200]}
    anns = [
        {"id": 1, "image_id": 1, "category_id": 5, "iscrowd": 0, "bbox": [10, 5, 10, 10], "area": 100,
         "segmentation": [[10, 5, 20, 5, 20, 15, 10, 15]]},
        {"id": 2, "image_id": 1, "category_id": 9, "iscrowd": 1, "bbox": [0, 0, 40, 30], "area": 1200,
         "segmentation": crowd},
        {"id": 3, "image_id": 1, "category_id": 5, "iscrowd": 0, "bbox": [3, 3, 0, 4], "area": 0,
         "segmentation": [[3, 3, 3, 3, 3, 7]]},
        {"id": 4, "image_id": 1, "category_id": 5, "iscrowd": 0, "bbox": [float("nan"), 3, 2, 4], "area": 8,
         "segmentation": [[3, 3, 5, 3, 5, 7]]},
        {"id": 5, "image_id": 1, "category_id": 9, "iscrowd": 0, "bbox": [45, 3, 5, 4], "area": 20,
         "segmentation": [[45, 3, 50, 3, 50, 7]]},
        {"id": 6, "image_id": 2, "category_id": 9, "iscrowd": 0, "bbox": [2, 0, 2, 50], "area": 100,
         "segmentation": rle},
    ]
    images = [
        {"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
        {"id": 2, "file_name": "b.png", "width": 20, "height": 50},
        {"id": 3, "file_name": "c.png", "width": 30, "height": 30},
    ]
    cats = [{"id": 9, "name": "dog"}, {"id": 5, "name": "cat"}]
    return {"images": images, "annotations": anns, "categories": cats}


@pytest.fixture
def tiny_coco(tmp_path: Path) -> tuple[Path, Path]:
    """(annotation json, image folder) of :func:`tiny_coco_dict`."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(images / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (50, 20), dtype=np.uint8), mode="L").save(images / "b.png")
    Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(images / "c.png")
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(tiny_coco_dict()))  # json writes NaN as the (accepted) literal NaN
    return ann, images


def voc_xml(width: int, height: int, objects: list[tuple]) -> str:
    """A VOC annotation file: ``objects`` are (name, (xmin, ymin, xmax, ymax), difficult) with
    VOC's 1-based inclusive pixel indices."""
    parts = [f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for name, (xmin, ymin, xmax, ymax), difficult in objects:
        parts.append(f"<object><name>{name}</name><difficult>{int(difficult)}</difficult><bndbox><xmin>{xmin}</xmin>"
                     f"<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>"


def write_voc(root: Path, annotations: dict[str, str | tuple[int, int, list[tuple]]],
              splits: dict[str, list[str]]) -> Path:
    """A VOC devkit folder at ``root``: Annotations/<id>.xml (an XML text, or (width, height,
    objects) for :func:`voc_xml`), a random JPEGImages/<id>.jpg of that size (none for raw XML
    texts without a parseable size) and ImageSets/Main/<split>.txt."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image_id, ann in annotations.items():
        if isinstance(ann, tuple):
            width, height, objects = ann
            ann = voc_xml(width, height, objects)
            pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "JPEGImages" / f"{image_id}.jpg")
        (root / "Annotations" / f"{image_id}.xml").write_text(ann)
    for split, ids in splits.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


@pytest.fixture
def voc():
    """The VOC helpers: ``voc.write(root, annotations, splits)`` and ``voc.xml(width, height, objects)``."""
    return SimpleNamespace(write=write_voc, xml=voc_xml)
