"""Hostile data: every generated defect of a COCO-format dataset (the COCO loader and the custom
datasets of DATASETS.CUSTOM, which use it) is either dropped and logged with the file and the
annotation id, or stops with the file named before any item is loaded. Never a crash later.

A clean base dataset (3 images: polygons, a non-crowd RLE, a crowd RLE) is written per case,
one defect is applied, and the dataset is built and every item of the train loader read (in a
worker process) — so a defect that slipped through would fail there.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from detbench.config import get_cfg
from detbench.data import build_dataset, make_data_loader
from detbench.data.datasets.coco import ImageLoadError
from detbench.data.datasets.coco_checks import DatasetError

SIZES = {1: (40, 30), 2: (32, 48), 3: (36, 36)}  # image id -> (width, height)


def _base() -> dict:
    def poly(x, y, s):
        return [[x, y, x + s, y, x + s, y + s, x, y + s]]

    rle = {"size": [48, 32], "counts": [48 * 4, 48 * 3, 48 * 25]}  # columns 4..6 of image 2
    anns = [
        {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [5, 5, 10, 8], "area": 80.0,
         "segmentation": poly(5, 5, 8)},
        {"id": 12, "image_id": 1, "category_id": 2, "iscrowd": 0, "bbox": [20, 10, 12, 12], "area": 144.0,
         "segmentation": poly(20, 10, 12)},
        {"id": 21, "image_id": 2, "category_id": 2, "iscrowd": 0, "bbox": [4, 0, 3, 48], "area": 144.0,
         "segmentation": rle},
        {"id": 22, "image_id": 2, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 32, 48], "area": 1536.0,
         "segmentation": {"size": [48, 32], "counts": [0, 1536]}},
        {"id": 31, "image_id": 3, "category_id": 1, "iscrowd": 0, "bbox": [2, 2, 20, 20], "area": 400.0,
         "segmentation": poly(2, 2, 20)},
    ]
    images = [{"id": i, "file_name": f"img{i}.png", "width": w, "height": h} for i, (w, h) in SIZES.items()]
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


def _write(tmp_path: Path, data: dict) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in SIZES.items():
        if not (images / f"img{i}.png").exists():
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))  # NaN / Infinity are written as the literals json accepts
    return ann, images


def _ann(data: dict, ann_id: int) -> dict:
    return next(a for a in data["annotations"] if a["id"] == ann_id)


def _set(ann_id: int, **fields) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        _ann(data, ann_id).update(fields)
    return mutate


def _image(image_id: int, **fields) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        next(i for i in data["images"] if i["id"] == image_id).update(fields)
    return mutate


def _append(entry_kind: str, index: int) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        data[entry_kind].append(copy.deepcopy(data[entry_kind][index]))
    return mutate


# (case, defect, annotation id dropped, reason in the log)
DROPPED = [
    ("bbox string", _set(12, bbox="20,10,12,12"), 12, "bbox is not [x, y, w, h] of numbers"),
    ("bbox element string", _set(12, bbox=[20, 10, "12", 12]), 12, "bbox is not [x, y, w, h] of numbers"),
    ("bbox missing", _set(12, bbox=None), 12, "bbox is not [x, y, w, h] of numbers"),
    ("bbox bool", _set(12, bbox=[True, 1, 2, 3]), 12, "bbox is not [x, y, w, h] of numbers"),
    ("nan box", _set(12, bbox=[float("nan"), 10, 12, 12]), 12, "non-finite bbox"),
    ("infinite box", _set(12, bbox=[20, 10, float("inf"), 12]), 12, "non-finite bbox"),
    ("negative width", _set(12, bbox=[20, 10, -12, 12]), 12, "box width or height <= 0"),
    ("negative both", _set(12, bbox=[-5, -5, -1, -1]), 12, "box width or height <= 0"),
    ("huge box", _set(12, bbox=[-1e300, 10, 2e300, 12]), 12, "bbox coordinate beyond"),
    ("huge area", _set(12, area=1e400), 12, "area is not a finite number"),
    ("string area", _set(12, area="big"), 12, "area is not a finite number"),
    ("odd polygon", _set(11, segmentation=[[5, 5, 13, 5, 13, 13, 5]]), 11, "odd number of coordinates"),
    ("two-point polygon", _set(11, segmentation=[[5, 5, 13, 5]]), 11, "fewer than 3 points"),
    ("nan polygon", _set(11, segmentation=[[5, 5, float("nan"), 5, 13, 13]]), 11, "not finite numbers"),
    ("polygon strings", _set(11, segmentation=[["5", 5, 13, 5, 13, 13]]), 11, "not finite numbers"),
    ("huge polygon", _set(11, segmentation=[[5, 5, 1e9, 5, 13, 13]]), 11, "polygon coordinate beyond"),
    ("rle of wrong size", _set(21, segmentation={"size": [40, 30], "counts": [1200]}), 21, "another size"),
    ("rle counts short", _set(21, segmentation={"size": [48, 32], "counts": [10, 5]}), 21, "do not cover"),
    ("rle negative counts", _set(21, segmentation={"size": [48, 32], "counts": [-5, 1541]}), 21, "do not cover"),
    ("rle bad size type", _set(21, segmentation={"size": "48x32", "counts": [1536]}), 21, "RLE size"),
    ("rle garbage string", _set(21, segmentation={"size": [48, 32], "counts": 12}), 21, "neither a list nor"),
    ("crowd rle wrong size", _set(22, segmentation={"size": [10, 10], "counts": [100]}), 22, "another size"),
    ("segmentation number", _set(11, segmentation=5), 11, "neither polygons nor an RLE"),
    ("unknown category", _set(12, category_id=7), 12, "unknown category_id"),
    ("huge category id", _set(12, category_id=2**70), 12, "unknown category_id"),
    ("string category", _set(12, category_id="2"), 12, "category_id is not an integer"),
    ("unknown image", _set(12, image_id=99), 12, "image_id names no image"),
    ("huge image id", _set(12, image_id=10**30), 12, "image_id names no image"),
    ("iscrowd string", _set(12, iscrowd="no"), 12, "iscrowd is not 0 or 1"),
    ("keypoints not triples", _set(12, keypoints=[1, 2]), 12, "keypoints are not"),
    ("annotation not an object", lambda d: d["annotations"].append([1, 2]), "#5", "annotation is not an object"),
    ("annotation id string", _set(12, id="12"), "#1", "annotation id is not an integer"),
]

# (case, defect, text in the error) — the error must also name the json file.
STOPPED = [
    ("duplicate image ids", _append("images", 0), "duplicate image ids: 1"),
    ("duplicate annotation ids", _append("annotations", 0), "duplicate annotation ids: 11"),
    ("duplicate category ids", _append("categories", 1), "duplicate category ids: 2"),
    ("width string", _image(2, width="32"), "width = '32' is not an integer"),
    ("huge width", _image(2, width=10**12), "width = 1000000000000 is not an integer in"),
    ("zero height", _image(2, height=0), "height = 0 is not an integer in"),
    ("file name number", _image(2, file_name=5), "file_name = 5 is not a file name"),
    ("image id string", _image(2, id="2"), "id = '2' is not an integer"),
    ("images not a list", lambda d: d.update(images={"1": d["images"][0]}), "'images' is a dict, not a list"),
    ("category without name", lambda d: d["categories"][0].pop("name"), "name = None is not a string"),
]


def _cfg(ann: Path, images: Path, verify: str = "exists"):
    cfg = get_cfg()
    cfg.DATASETS.CUSTOM = (("hostile", str(images), str(ann)),)
    cfg.DATASETS.TRAIN = ("hostile",)
    cfg.DATASETS.VERIFY_IMAGES = verify
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (24, 32), 64
    cfg.DATALOADER.NUM_WORKERS, cfg.DATALOADER.ASPECT_RATIO_GROUPING = 1, False
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, cfg.SEED = 1, 3, 0
    return cfg


def _read_everything(cfg) -> None:
    """Every training batch through a worker process, and every test item in this one."""
    for images, targets, _ in make_data_loader(cfg, is_train=True):
        assert all(len(t) == len(t.get_field("labels")) for t in targets)
    test = build_dataset(cfg, "hostile", is_train=False)
    for index in range(len(test)):
        test[index]
        test.get_groundtruth(index)


def test_the_clean_base_loads_without_warnings(tmp_path, caplog):
    ann, images = _write(tmp_path, _base())
    with caplog.at_level(logging.WARNING):
        _read_everything(_cfg(ann, images))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("case, defect, ann_id, reason", DROPPED, ids=[c[0] for c in DROPPED])
def test_malformed_annotation_is_dropped_and_logged_with_file_and_id(tmp_path, caplog, case, defect, ann_id, reason):
    data = _base()
    defect(data)
    ann, images = _write(tmp_path, data)
    with caplog.at_level(logging.WARNING):
        _read_everything(_cfg(ann, images))
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(ann) in line and reason in line and f"annotation ids {ann_id})" in line for line in lines), lines
    test = build_dataset(_cfg(ann, images), "hostile", is_train=False)
    kept = {a["id"] for anns in test._anns.values() for a in anns}
    assert ann_id not in kept and kept | {ann_id, 12} >= {11, 12, 21, 31}


@pytest.mark.parametrize("case, defect, message", STOPPED, ids=[c[0] for c in STOPPED])
def test_broken_file_stops_naming_it_before_loading(tmp_path, case, defect, message):
    data = _base()
    defect(data)
    ann, images = _write(tmp_path, data)
    with pytest.raises(DatasetError) as info:
        make_data_loader(_cfg(ann, images), is_train=True)
    assert str(ann) in str(info.value) and message in str(info.value)


def _damage(images: Path, how: str) -> Path:
    path = images / "img2.png"
    if how == "missing":
        path.unlink()
    elif how == "zero bytes":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif how == "not an image":
        path.write_text("<html>404</html>")
    elif how == "wrong size":
        Image.new("RGB", (10, 10)).save(path)
    return path


@pytest.mark.parametrize("how, first_mode", [
    ("missing", "exists"), ("zero bytes", "exists"), ("not an image", "header"), ("wrong size", "header"),
    ("truncated", "decode"),
])
def test_damaged_image_stops_up_front_naming_it(tmp_path, how, first_mode):
    """Each damage is found up front from the DATASETS.VERIFY_IMAGES mode that can see it on."""
    ann, images = _write(tmp_path, _base())
    path = _damage(images, how)
    modes = ("exists", "header", "decode")
    for mode in modes[modes.index(first_mode):]:
        with pytest.raises(DatasetError, match="image id 2") as info:
            make_data_loader(_cfg(ann, images, mode), is_train=True)
        assert str(path) in str(info.value) and str(ann) in str(info.value)


@pytest.mark.parametrize("how", ["truncated", "not an image", "wrong size"])
def test_damage_the_cheap_check_cannot_see_names_the_file_when_read(tmp_path, how):
    ann, images = _write(tmp_path, _base())
    path = _damage(images, how)
    dataset = build_dataset(_cfg(ann, images), "hostile", is_train=False)  # "exists": one stat per image
    with pytest.raises(ImageLoadError, match="image id 2") as info:
        dataset[dataset.ids.index(2)]
    assert str(path) in str(info.value)


def test_image_of_another_format_than_its_name_loads_by_content(tmp_path):
    ann, images = _write(tmp_path, _base())
    pixels = np.asarray(Image.open(images / "img2.png").convert("RGB"))
    (images / "img2.png").unlink()
    Image.fromarray(pixels).save(images / "img2.jpg", format="PNG")  # PNG bytes named .jpg
    data = _base()
    _image(2, file_name="img2.jpg")(data)
    ann, _ = _write(tmp_path, data)
    dataset = build_dataset(_cfg(ann, images, "decode"), "hostile", is_train=False)
    dataset.transforms = None
    image, _, _ = dataset[dataset.ids.index(2)]
    assert np.array_equal(np.asarray(image), pixels)
