"""tools/convert_cityscapes_to_coco.py on a tiny gtFine folder: the COCO json it writes, read back by
COCODataset through the cocostyle catalog names, and broken polygon files."""

from __future__ import annotations

import json
import logging
import runpy
import sys
from pathlib import Path

import pytest
import torch
from pycocotools import mask as coco_mask
from torch.testing import assert_close

from detbench.config import load_config
from detbench.data import build_dataset, catalog
from detbench.data.datasets.cityscapes import CityscapesDataset
from detbench.data.datasets.cityscapes_convert import convert_cityscapes, convert_split, link_images
from detbench.data.datasets.coco_checks import DatasetError

ROOT = Path(__file__).resolve().parents[2]
OBJECTS = [
    {"label": "road", "polygon": [[0, 20], [47, 20], [47, 31], [0, 31]]},
    {"label": "person", "polygon": [[2, 3], [10, 3], [10, 12], [2, 12]]},
    {"label": "cargroup", "polygon": [[12, 14], [16, 14], [16, 18]]},
    {"label": "car", "polygon": [[20, 5], [30, 5], [30, 15]]},
    {"label": "caravan", "polygon": [[33, 2], [45, 2], [45, 9], [33, 9]]},
    {"label": "bicycle", "polygon": [[40, 22], [46, 22], [46, 30], [40, 30]]},
    {"label": "car", "polygon": [[1, 1], [2, 2]]},  # 2 points: dropped
]


def write_gtfine(root: Path, split: str, frames: dict[str, list], city: str = "ulm") -> Path:
    """gtFine/<split>/<city>/<city>_<frame>_gtFine_polygons.json (48 x 32 images) and the matching
    leftImg8bit/ images; returns the cityscapes folder."""
    from PIL import Image

    folder, images = root / "gtFine" / split / city, root / "leftImg8bit" / split / city
    folder.mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    for frame, objects in frames.items():
        data = {"imgHeight": 32, "imgWidth": 48, "objects": objects}
        text = objects if isinstance(objects, str) else json.dumps(data)
        (folder / f"{city}_{frame}_gtFine_polygons.json").write_text(text)
        Image.new("RGB", (48, 32)).save(images / f"{city}_{frame}_leftImg8bit.png")
    return root


def test_json_has_the_eight_classes_and_the_covered_pixels_boxes(tmp_path, caplog):
    root = write_gtfine(tmp_path, "val", {"000000_000019": OBJECTS, "000001_000019": []})
    with caplog.at_level(logging.WARNING):
        data = convert_split(root / "gtFine", "val")
    assert [c["name"] for c in data["categories"]] == list(catalog.CITYSCAPES_COCO_CLASSES)
    assert [c["id"] for c in data["categories"]] == list(range(1, 9))
    assert data["images"] == [
        {"id": 1, "file_name": "ulm_000000_000019_leftImg8bit.png", "width": 48, "height": 32},
        {"id": 2, "file_name": "ulm_000001_000019_leftImg8bit.png", "width": 48, "height": 32}]
    anns = data["annotations"]
    # person, car, bicycle; not road (stuff), cargroup (crowd), caravan (not one of the 8), the 2-point car.
    assert [a["category_id"] for a in anns] == [1, 3, 8]
    # xywh of the covered pixels: the person covers columns 2..10 and rows 3..12.
    assert [a["bbox"] for a in anns] == [[2.0, 3.0, 9.0, 10.0], [20.0, 5.0, 11.0, 11.0], [40.0, 22.0, 7.0, 9.0]]
    assert anns[0]["segmentation"] == [[2.5, 3.5, 10.5, 3.5, 10.5, 12.5, 2.5, 12.5]]
    assert anns[0]["area"] == 72.0 and all(a["iscrowd"] == 0 for a in anns)  # 8 x 9 pixels, see test_cityscapes
    area = coco_mask.area(coco_mask.merge(coco_mask.frPyObjects(anns[1]["segmentation"], 32, 48)))
    assert anns[1]["area"] == float(area) > 0
    assert "ulm_000000_000019_gtFine_polygons.json: object #6 ('car')" in caplog.text and "fewer than 3" in caplog.text
    with_groups = convert_split(root / "gtFine", "val", include_groups=True)["annotations"]
    assert [(a["category_id"], a["iscrowd"]) for a in with_groups] == [(1, 0), (3, 1), (3, 0), (8, 0)]


def test_cocostyle_names_read_the_converted_files(tmp_path, monkeypatch):
    city = tmp_path / "cityscapes"
    write_gtfine(city, "train", {"000000_000019": OBJECTS})
    write_gtfine(city, "val", {"000000_000019": OBJECTS}, city="lindau")
    written = convert_cityscapes(city / "gtFine", city / "annotations", ("train", "val"))
    assert [p.name for p in written] == ["instancesonly_filtered_gtFine_train.json",
                                         "instancesonly_filtered_gtFine_val.json"]
    assert link_images(city / "leftImg8bit", city / "images", ("train", "val")) == 2
    assert link_images(city / "leftImg8bit", city / "images", ("train", "val")) == 0  # already there
    monkeypatch.setenv(catalog.ENV_ROOT, str(tmp_path))
    cfg = load_config(None, [])
    names = catalog.get("cityscapes_fine_instanceonly_seg_val_cocostyle").class_names()
    assert names == catalog.CITYSCAPES_COCO_CLASSES
    for name in ("cityscapes_fine_instanceonly_seg_val_cocostyle", "cityscapes_fine_instanceonly_seg_val"):
        dataset = build_dataset(cfg, name, is_train=False)
        image, target, _ = dataset[0]
        assert image.size == (48, 32)
        # The same boxes as the raw-layout dataset gives for the classes both keep.
        raw = CityscapesDataset(city / "leftImg8bit", city / "gtFine", "val", "poly").get_groundtruth(0)
        names = [catalog.CITYSCAPES_CLASSES[label - 1] for label in raw.get_field("labels").tolist()]
        keep = torch.tensor([n in catalog.CITYSCAPES_COCO_CLASSES for n in names])
        assert_close(target.bbox, raw.bbox[keep])
        assert target.get_field("masks").polygons[0][0].tolist() == [2.5, 3.5, 10.5, 3.5, 10.5, 12.5, 2.5, 12.5]


def test_broken_polygon_files_are_named(tmp_path):
    root = write_gtfine(tmp_path, "test", {"000000_000019": "{not json", "000001_000019": '{"objects": []}',
                                           "000002_000019": []})
    with pytest.raises(DatasetError) as info:
        convert_split(root / "gtFine", "test")
    message = str(info.value)
    assert "2 Cityscapes polygon file(s)" in message
    assert "ulm_000000_000019_gtFine_polygons.json is not valid JSON" in message
    assert "ulm_000001_000019_gtFine_polygons.json: imgWidth, imgHeight = (None, None)" in message
    with pytest.raises(DatasetError, match="no Cityscapes polygon files"):
        convert_split(root / "gtFine", "train")


def test_the_tool(tmp_path, monkeypatch):
    root = write_gtfine(tmp_path / "cityscapes", "val", {"000000_000019": OBJECTS})
    argv = ["convert_cityscapes_to_coco.py", "--gtfine", str(root / "gtFine"), "--outdir", str(root / "annotations"),
            "--splits", "val", "--link-images", str(root / "leftImg8bit")]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(ROOT / "tools" / "convert_cityscapes_to_coco.py"), run_name="__main__")
    data = json.loads((root / "annotations" / "instancesonly_filtered_gtFine_val.json").read_text())
    assert len(data["annotations"]) == 3
    assert (root / "images" / "ulm_000000_000019_leftImg8bit.png").is_symlink()
