"""Shared fixture of the data tests: a tiny synthetic COCO-format dataset on disk."""

from __future__ import annotations

import json
from pathlib import Path

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
