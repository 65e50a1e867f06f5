"""CityscapesDataset on a tiny raw folder the tests write: polygon and binary-mask modes agree,
the catalog names, evaluation, and malformed annotation files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch.testing import assert_close

from detbench.config import load_config
from detbench.data import build_dataset, catalog
from detbench.data.datasets.cityscapes import CityscapesDataset
from detbench.data.datasets.cityscapes_format import LABEL_IDS, read_polygon_file
from detbench.data.datasets.coco_checks import DatasetError
from detbench.data.datasets.evaluation import evaluate

WIDTH, HEIGHT = 48, 32
# (label, polygon) in drawing order; instances do not overlap, so visible = annotated.
OBJECTS = [
    {"label": "road", "polygon": [[0, 20], [47, 20], [47, 31], [0, 31]]},
    {"label": "person", "polygon": [[2, 3], [10, 3], [10, 12], [2, 12]]},
    {"label": "cargroup", "polygon": [[12, 14], [16, 14], [16, 18]]},
    {"label": "car", "polygon": [[20, 5], [30, 5], [30, 15]]},
    {"label": "car", "polygon": [[30, 20], [40, 20], [40, 25], [30, 25]], "deleted": 1},
    {"label": "caravan", "polygon": [[33, 2], [45, 2], [45, 9], [33, 9]]},
    {"label": "bicycle", "polygon": [[40, 22], [46, 22], [46, 30], [40, 30]]},
]
# Continuous boxes of the covered pixels, (min x, min y, max x + 1, max y + 1).
BOXES = [[2.0, 3, 11, 13], [20, 5, 31, 16], [33, 2, 46, 10], [40, 22, 47, 31]]
LABELS = [1, 3, 6, 10]  # person, car, caravan, bicycle in CITYSCAPES_CLASSES


def _instance_ids(objects: list[dict]) -> Image.Image:
    """The *_instanceIds.png cityscapesScripts would draw: objects in order, instance classes as
    class id * 1000 + k, crowds and stuff as their class id."""
    ids = Image.new("I", (WIDTH, HEIGHT), 0)
    draw, counts = ImageDraw.Draw(ids), {}
    for obj in objects:
        if obj.get("deleted"):
            continue
        name = obj["label"]
        if name in LABEL_IDS and 24 <= LABEL_IDS[name] <= 33:
            value = LABEL_IDS[name] * 1000 + counts.setdefault(name, 0)
            counts[name] += 1
        else:
            value = LABEL_IDS[name.removesuffix("group")]
        draw.polygon([tuple(p) for p in obj["polygon"]], fill=value)
    return Image.fromarray(np.array(ids, dtype=np.uint16))  # a 16-bit PNG, as Cityscapes ships them


def write_cityscapes(root: Path, frames: dict[str, list[dict]], split: str = "val", city: str = "lindau") -> Path:
    """leftImg8bit/ and gtFine/ for ``frames`` ({frame name: objects}) of one city; returns ``root``."""
    images, annotations = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
    images.mkdir(parents=True, exist_ok=True)
    annotations.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for frame, objects in frames.items():
        stem = f"{city}_{frame}"
        pixels = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{stem}_leftImg8bit.png")
        data = {"imgHeight": HEIGHT, "imgWidth": WIDTH, "objects": objects}
        (annotations / f"{stem}_gtFine_polygons.json").write_text(json.dumps(data))
        _instance_ids(objects).save(annotations / f"{stem}_gtFine_instanceIds.png")
    return root


@pytest.fixture
def city(tmp_path: Path) -> Path:
    return write_cityscapes(tmp_path / "cityscapes", {"000000_000019": OBJECTS, "000001_000019": OBJECTS[:1]})


@pytest.mark.parametrize("mode", ["poly", "mask"])
def test_both_modes_give_the_covered_pixels_box(city, mode):
    dataset = CityscapesDataset(city / "leftImg8bit", city / "gtFine", "val", mode)
    assert len(dataset) == 2 and dataset.get_img_info(0)["width"] == WIDTH
    target = dataset.get_groundtruth(0)
    assert_close(target.bbox, torch.tensor(BOXES))
    assert target.get_field("labels").tolist() == LABELS
    masks = target.get_field("masks")
    assert masks.mode == mode and len(masks) == 4
    assert len(dataset.get_groundtruth(1)) == 0  # road only
    image, item, index = dataset[0]
    assert image.size == (WIDTH, HEIGHT) and len(item) == 4 and index == 0


def test_polygons_move_to_pixel_centres_and_agree_with_the_mask(city):
    poly = CityscapesDataset(city / "leftImg8bit", city / "gtFine", "val", "poly").get_groundtruth(0)
    mask = CityscapesDataset(city / "leftImg8bit", city / "gtFine", "val", "mask").get_groundtruth(0)
    assert poly.get_field("masks").polygons[0][0].tolist() == [2.5, 3.5, 10.5, 3.5, 10.5, 12.5, 2.5, 12.5]
    # The polygon runs through the centres of the boundary pixels, so its rasterisation lies inside
    # what cityscapesScripts draws, half a pixel thinner on each side: the 9 x 10 pixel person
    # rectangle is drawn as 90 pixels, and pycocotools rasterises the polygon through their centres
    # (an 8 x 9 continuous rectangle) into 72.
    rasterised = poly.get_field("masks").get_mask_tensor().bool()
    drawn = mask.get_field("masks").get_mask_tensor().bool()
    assert not (rasterised & ~drawn).any()
    assert int(drawn[0].sum()) == 90 and int(rasterised[0].sum()) == 72


def test_mini_removal_and_catalog(city, tmp_path, monkeypatch):
    img, ann = city / "leftImg8bit", city / "gtFine"
    assert len(CityscapesDataset(img, ann, "val", mini=1)) == 1  # every (2 // 1 + 1)-th image
    assert len(CityscapesDataset(img, ann, "val", mini=10)) == 2
    kept = CityscapesDataset(img, ann, "val", "mask", remove_images_without_annotations=True)
    assert [Path(kept.get_img_info(i)["file_name"]).name for i in range(len(kept))] == [
        "lindau_000000_000019_leftImg8bit.png"]
    for mode in ("poly", "mask"):
        for split, real in (("train", "train"), ("val", "val"), ("minival", "val")):
            spec = catalog.get(f"cityscapes_{mode}_instance_{split}", root=tmp_path)
            assert spec.factory == "CityscapesDataset" and spec.args["split"] == real and spec.args["mode"] == mode
            assert spec.args["mini"] == (10 if split == "minival" else None)
            assert spec.class_names() == catalog.CITYSCAPES_CLASSES
    monkeypatch.setenv(catalog.ENV_ROOT, str(tmp_path))
    dataset = build_dataset(load_config(None, []), "cityscapes_poly_instance_minival", is_train=True)
    assert len(dataset) == 1 and dataset.mode == "poly"  # the image without instances is dropped in training


@pytest.mark.parametrize("mode", ["poly", "mask"])
def test_ground_truth_as_predictions_scores_one(city, mode):
    dataset = CityscapesDataset(city / "leftImg8bit", city / "gtFine", "val", mode)
    predictions = []
    for i in range(len(dataset)):
        gt = dataset.get_groundtruth(i)
        gt.add_field("scores", torch.ones(len(gt)))
        predictions.append(gt)
    result = evaluate(dataset, predictions, iou_types=("bbox",))
    assert result["bbox"]["AP"] == pytest.approx(1.0)


def test_malformed_polygon_files(city, tmp_path, caplog):
    path = tmp_path / "x_gtFine_polygons.json"
    bad = [{"label": "unicorn", "polygon": [[0, 0], [1, 0], [1, 1]]}, {"label": "car", "polygon": [[0, 0], [1, 0]]},
           {"label": "person", "polygon": [[0, 0], [1, "a"], [1, 1]]}, {"label": "rider", "polygon": [[60, 40],
                                                                                                  [70, 40], [70, 50]]},
           {"label": "bus", "polygon": [[1, 1], [5, 1], [5, 5]]}]
    path.write_text(json.dumps({"imgHeight": HEIGHT, "imgWidth": WIDTH, "objects": bad}))
    parsed = read_polygon_file(path)
    assert [o.label for o in parsed.objects] == ["bus"]
    assert parsed.dropped == {
        "unknown label 'unicorn'": ["object #0 ('unicorn')"],
        "polygon with fewer than 3 points": ["object #1 ('car')"],
        "polygon is not a list of [x, y] number pairs": ["object #2 ('person')"],
        "polygon entirely outside the image": ["object #3 ('rider')"],
    }
    for text, message in (('{"objects": [', "is not valid JSON: .* line 1"), ('{"imgWidth": 4}', "no 'objects' list"),
                          ('{"objects": [], "imgWidth": 0, "imgHeight": 2}', "not positive integers")):
        path.write_text(text)
        with pytest.raises(DatasetError, match=f"x_gtFine_polygons.json.*{message}|{message}"):
            read_polygon_file(path)
    # In a dataset: the dropped objects are logged with the file, once.
    ann = city / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_polygons.json"
    ann.write_text(json.dumps({"imgHeight": HEIGHT, "imgWidth": WIDTH, "objects": OBJECTS + bad}))
    dataset = CityscapesDataset(city / "leftImg8bit", city / "gtFine", "val", "poly")
    with caplog.at_level(logging.WARNING):
        dataset.get_groundtruth(0)
        dataset.get_groundtruth(0)
    assert caplog.text.count("unknown label 'unicorn'") == 1 and f"{ann}: dropped 4 object(s)" not in caplog.text
    assert f"{ann}: dropped 1 object(s): unknown label 'unicorn': object #7 ('unicorn')" in caplog.text


def test_missing_files_and_wrong_sizes(city):
    ann = city / "gtFine" / "val" / "lindau" / "lindau_000001_000019_gtFine_instanceIds.png"
    ann.unlink()
    with pytest.raises(DatasetError, match="1 Cityscapes annotation file.*lindau_000001_000019_gtFine_instanceIds.png"):
        CityscapesDataset(city / "leftImg8bit", city / "gtFine", "val", "mask")
    with pytest.raises(DatasetError, match="Cityscapes folder not found: .*leftImg8bit/train"):
        CityscapesDataset(city / "leftImg8bit", city / "gtFine", "train", "poly")
    Image.fromarray(np.zeros((10, 10), dtype=np.uint16)).save(ann)
    dataset = CityscapesDataset(city / "leftImg8bit", city / "gtFine", "val", "mask")
    with pytest.raises(DatasetError, match=r"instanceIds.png is for a \(10, 10\).*is \(48, 32\)"):
        dataset.get_groundtruth(1)


@pytest.mark.parametrize("mode", ["poly", "mask"])
def test_trains_a_step_and_evaluates_through_the_engine(city, tmp_path, monkeypatch, mode):
    """maskrcnn-benchmark's cityscapes_{poly,mask}_instance names through the real data loader, one
    Mask R-CNN training step on their masks and run_test's COCO bbox + segm evaluation."""
    from detbench.data import make_data_loader
    from detbench.engine.launch import run_test
    from detbench.modeling.detector import build_detection_model

    monkeypatch.setenv(catalog.ENV_ROOT, str(tmp_path))
    torch.manual_seed(0)
    cfg = load_config("configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml", [
        "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "11", "DATASETS.TRAIN", f"('cityscapes_{mode}_instance_val',)",
        "DATASETS.TEST", f"('cityscapes_{mode}_instance_minival',)", "SOLVER.IMS_PER_BATCH", "1",
        "TEST.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", "1", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64",
        "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path / "out")])
    model = build_detection_model(cfg)
    images, targets, _ = next(iter(make_data_loader(cfg, is_train=True)))
    assert len(targets[0]) == 4 and targets[0].get_field("masks").mode == mode
    losses = model(images, list(targets))
    assert "loss_mask" in losses
    sum(losses.values()).backward()
    results = run_test(cfg, model, distributed=False)[f"cityscapes_{mode}_instance_minival"]
    assert set(results) == {"bbox", "segm"} and 0.0 <= results["segm"]["AP"] <= 1.0


def test_boxes_of_values_match_the_boxes_of_the_masks():
    from detbench.data.datasets.cityscapes import boxes_of_values
    from detbench.data.datasets.penn_fudan import boxes_from_masks

    ids_map = np.random.default_rng(0).choice([0, 7, 24000, 24001, 26003], size=(20, 30)).astype(np.int32)
    ids_map[5:9, 2:4] = 33000  # a small block
    values = [24000, 24001, 26003, 33000]
    masks = torch.from_numpy(ids_map)[None] == torch.tensor(values, dtype=torch.int32)[:, None, None]
    assert_close(boxes_of_values(ids_map, values), boxes_from_masks(masks))
    assert_close(boxes_of_values(ids_map, [33000]), torch.tensor([[2.0, 5, 4, 9]]))
    assert boxes_of_values(ids_map, []).shape == (0, 4)
