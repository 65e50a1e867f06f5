"""COCO evaluation on coco_mini val: the ground truth, turned into predictions in a resized
image, must score AP 1.0 through the same prepare/evaluate path as a model's outputs."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from detbench.data.datasets.evaluation import evaluate
from detbench.data.datasets.evaluation.coco import encode_masks, prepare_for_coco_detection
from detbench.structures.mask_ops import Masker
from detbench.structures import BoxList, PersonKeypoints

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
ANNOTATIONS = DATA / "coco_mini" / "annotations"
pytestmark = [
    pytest.mark.skipif(not ANNOTATIONS.exists(), reason="needs ../shared/data/coco_mini"),
    # pycocotools' decode (annToMask) trips a numpy 2 DeprecationWarning internally.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


class GtDataset:
    """The evaluation-facing part of the COCODataset contract, built straight from pycocotools."""

    def __init__(self, ann_file: Path) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO(str(ann_file))
        self.ids = sorted(self.coco.imgs)
        cat_ids = sorted(self.coco.cats)
        self.contiguous_category_id_to_json_id = {i + 1: c for i, c in enumerate(cat_ids)}
        self.json_category_id_to_contiguous_id = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.categories = {i + 1: self.coco.cats[c]["name"] for i, c in enumerate(cat_ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def get_img_info(self, index: int) -> dict:
        return self.coco.imgs[self.ids[index]]

    def annotations(self, index: int) -> list[dict]:
        """Non-crowd annotations of image ``index``."""
        return [a for a in self.coco.imgToAnns[self.ids[index]] if not a.get("iscrowd", 0)]


@pytest.fixture(scope="module")
def instances() -> GtDataset:
    return GtDataset(ANNOTATIONS / "instances_val2017.json")


@pytest.fixture(scope="module")
def person_keypoints() -> GtDataset:
    return GtDataset(ANNOTATIONS / "person_keypoints_val2017.json")


def _prediction(dataset: GtDataset, index: int, boxes: torch.Tensor, scale: tuple[float, float]) -> BoxList:
    """A BoxList of xyxy ``boxes`` (original pixels) in the image scaled by ``scale`` = (sx, sy),
    with the annotations' labels and score 1."""
    info = dataset.get_img_info(index)
    sx, sy = scale
    size = (round(info["width"] * sx), round(info["height"] * sy))
    # Scale by the exact ratio of the integer sizes, as a resized image would.
    ratio = torch.tensor([size[0] / info["width"], size[1] / info["height"]] * 2, dtype=torch.float64)
    pred = BoxList((boxes.double() * ratio).float(), size)
    labels = [dataset.json_category_id_to_contiguous_id[a["category_id"]] for a in dataset.annotations(index)]
    pred.add_field("labels", torch.tensor(labels, dtype=torch.int64))
    pred.add_field("scores", torch.ones(len(labels)))
    return pred


def _gt_boxes(dataset: GtDataset, index: int) -> torch.Tensor:
    """[N, 4] xyxy boxes of the non-crowd annotations."""
    xywh = torch.tensor([a["bbox"] for a in dataset.annotations(index)], dtype=torch.float64).reshape(-1, 4)
    return torch.cat((xywh[:, :2], xywh[:, :2] + xywh[:, 2:]), dim=1)


def _box_predictions(dataset: GtDataset, scale=(0.75, 1.25)) -> list[BoxList]:
    return [_prediction(dataset, i, _gt_boxes(dataset, i), scale) for i in range(len(dataset))]


def _exact_paste_axis(start: int, size: int) -> tuple[float, float]:
    """Box ends along one axis such that pasting an ``size``-cell mask (padding 1) copies cell
    j to pixel ``start + j``: the grown box must truncate to (start - 1, start + size), which
    makes the padded mask's resize an identity. Both grown ends are put mid-way in the range
    that truncates right, so float rounding cannot move them."""
    # Truncation goes towards zero, so -1 comes from (-2, -1] but k >= 0 from [k, k + 1).
    low = start - 0.5 if start >= 1 else start - 1.5
    high = start + size + 0.5
    centre, half = (low + high) / 2, (high - low) / 2 * size / (size + 2)
    return centre - half, centre + half


def _exact_mask_predictions(dataset: GtDataset) -> tuple[list[BoxList], list[torch.Tensor]]:
    """Per image a prediction in the image scaled by 2 whose "mask" [K, 1, M, M] holds each
    annotation's bitmask in an M x M window starting at the mask's top-left pixel (M: the
    largest mask extent of the image, so one M fits all); and the [K, H, W] bitmasks."""
    predictions, bitmasks = [], []
    for index in range(len(dataset)):
        anns = dataset.annotations(index)
        info = dataset.get_img_info(index)
        full = np.stack([dataset.coco.annToMask(a) for a in anns]) if anns else np.zeros((0, 1, 1), np.uint8)
        corners, m = [], 1
        for bitmask in full:
            ys, xs = np.nonzero(bitmask)
            corners.append((int(xs.min()), int(ys.min())))
            m = max(m, int(xs.max()) - corners[-1][0] + 1, int(ys.max()) - corners[-1][1] + 1)
        windows = torch.zeros((len(anns), 1, m, m), dtype=torch.float16)
        boxes = []
        for k, (x0, y0) in enumerate(corners):
            patch = torch.from_numpy(full[k, y0 : y0 + m, x0 : x0 + m])
            windows[k, 0, : patch.shape[0], : patch.shape[1]] = patch
            (x1, x2), (y1, y2) = _exact_paste_axis(x0, m), _exact_paste_axis(y0, m)
            boxes.append([x1, y1, x2, y2])
        pred = _prediction(dataset, index, torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4), (2, 2))
        pred.add_field("mask", windows)
        predictions.append(pred)
        bitmasks.append(torch.from_numpy(full).reshape(len(anns), info["height"], info["width"]))
    return predictions, bitmasks


@pytest.fixture(scope="module")
def exact_masks(instances) -> tuple[list[BoxList], list[torch.Tensor]]:
    return _exact_mask_predictions(instances)


def test_exact_mask_predictions_paste_back_to_the_ground_truth(instances, exact_masks):
    # Guards the segm AP 1.0 test below: the constructed predictions really are the ground truth.
    predictions, bitmasks = exact_masks
    masker = Masker(threshold=0.5, padding=1)
    for index in (0, 1, len(instances) - 1):
        info = instances.get_img_info(index)
        pred = predictions[index].resize((info["width"], info["height"]))
        pasted = masker(pred.get_field("mask"), pred)
        assert pasted.shape == (len(pred), 1, info["height"], info["width"])
        torch.testing.assert_close(pasted[:, 0].to(torch.uint8), bitmasks[index])


def test_ground_truth_as_predictions_scores_ap_1(instances, person_keypoints, exact_masks, tmp_path):
    boxes = _box_predictions(instances)
    masks, _ = exact_masks
    bbox = evaluate(instances, boxes, tmp_path / "bbox", ("bbox",))["bbox"]
    segm = evaluate(instances, masks, tmp_path / "segm", ("segm",))["segm"]
    kps = []
    for index, pred in enumerate(_box_predictions(person_keypoints)):
        anns = person_keypoints.annotations(index)
        raw = torch.tensor([a["keypoints"] for a in anns], dtype=torch.float32).reshape(len(anns), 17, 3)
        # A person without labelled keypoints is an ignored ground truth; COCO's OKS matches it
        # to keypoints inside its box, so predict them at the box centre (not at (0, 0)).
        unlabelled = torch.tensor([a["num_keypoints"] == 0 for a in anns], dtype=torch.bool)
        centres = (_gt_boxes(person_keypoints, index)[:, :2] + _gt_boxes(person_keypoints, index)[:, 2:]) / 2
        raw[unlabelled] = torch.cat((centres.float(), torch.ones(len(anns), 1)), dim=1)[unlabelled][:, None]
        info = person_keypoints.get_img_info(index)
        ratio = torch.tensor([pred.size[0] / info["width"], pred.size[1] / info["height"], 1.0])
        pred.add_field("keypoints", PersonKeypoints(raw * ratio, pred.size))
        kps.append(pred)
    keypoints = evaluate(person_keypoints, kps, tmp_path / "kp", ("keypoints",))["keypoints"]
    for metrics in (bbox, segm, keypoints):
        assert metrics["AP"] == pytest.approx(1.0, abs=1e-6)
        assert metrics["AP50"] == pytest.approx(1.0, abs=1e-6)
        assert metrics["AP75"] == pytest.approx(1.0, abs=1e-6)
    assert set(keypoints) == {"AP", "AP50", "AP75", "APm", "APl"}
    assert set(bbox) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    saved = json.loads((tmp_path / "bbox" / "coco_results.json").read_text())
    assert saved["bbox"]["AP"] == pytest.approx(1.0, abs=1e-6)
    assert all(v is None or v == pytest.approx(1.0) for v in saved["bbox"]["per_category"].values())
    results = json.loads((tmp_path / "segm" / "segm.json").read_text())
    assert len(results) == sum(len(p) for p in masks)
    assert isinstance(results[0]["segmentation"]["counts"], str)


def test_wrong_predictions_lower_ap(instances):
    boxes = _box_predictions(instances)
    for pred in boxes[::2]:  # every other image: boxes shifted right by their own width
        xyxy = pred.bbox.clone()
        width = xyxy[:, 2] - xyxy[:, 0]
        xyxy[:, 0] += width
        xyxy[:, 2] += width
        pred.bbox = xyxy
    ap = evaluate(instances, boxes, None, ("bbox",))["bbox"]["AP"]
    assert 0.2 < ap < 0.8


def test_no_predictions_score_zero_and_mapping_input(instances, tmp_path):
    empty = {}
    for i in range(3):
        info = instances.get_img_info(i)
        empty[i] = BoxList(torch.zeros(0, 4), (info["width"], info["height"]))
        empty[i].add_field("labels", torch.zeros(0, dtype=torch.int64))
        empty[i].add_field("scores", torch.zeros(0))
        empty[i].add_field("mask", torch.zeros(0, 1, 28, 28))
    metrics = evaluate(instances, empty, tmp_path, ("bbox", "segm"))
    assert metrics["bbox"]["AP"] == 0.0 and metrics["segm"]["AP"] == 0.0
    assert json.loads((tmp_path / "bbox.json").read_text()) == []


def test_detection_results_are_xywh_in_original_pixels(instances):
    index = 0
    pred = _box_predictions(instances, scale=(0.5, 2.0))[index]
    results = prepare_for_coco_detection({index: pred}, instances)
    expected = [a["bbox"] for a in instances.annotations(index)]
    torch.testing.assert_close(torch.tensor([r["bbox"] for r in results]), torch.tensor(expected), atol=1e-3, rtol=0)
    assert {r["image_id"] for r in results} == {instances.ids[index]}
    json_ids = [a["category_id"] for a in instances.annotations(index)]
    assert [r["category_id"] for r in results] == json_ids


def test_encode_masks_round_trips():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 7, 5)) > 0.5  # non-square, so a transposed encoding would fail
    rles = encode_masks(masks)
    decoded = mask_util.decode([{**r, "counts": r["counts"].encode()} for r in rles])
    np.testing.assert_array_equal(decoded.transpose(2, 0, 1), masks.astype(np.uint8))
    assert [int(a) for a in mask_util.area(rles)] == masks.sum(axis=(1, 2)).tolist()
