"""The inference loop on a synthetic COCO dataset with a model that replays known boxes."""

from __future__ import annotations

import contextlib
import io
import logging

import pytest
import torch
from pycocotools.coco import COCO
from torch import nn

from detbench.engine.inference import compute_on_dataset, inference, merge_predictions
from detbench.engine.predictions_file import load_predictions
from detbench.structures import BoxList
from detbench.structures.image_list import to_image_list

# Three images (width, height) with xywh ground-truth boxes of categories 3 and 7.
IMAGES = {1: (40, 30), 2: (25, 50), 5: (60, 60)}
BOXES = {1: [(2, 3, 10, 8, 3), (20, 5, 12, 20, 7)], 2: [(0, 0, 24, 49, 7)], 5: [(10, 10, 30, 30, 3)]}
# The network sees each image scaled by this factor.
SCALE = 2


class TinyCoco:
    """The COCODataset contract on an in-memory COCO json; item i is an image whose pixels
    all equal i (so a model can tell which image it sees)."""

    def __init__(self) -> None:
        anns = [
            {"id": n, "image_id": img, "category_id": c, "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
            for n, (img, x, y, w, h, c) in enumerate(
                ((img, *box) for img, boxes in BOXES.items() for box in boxes), start=1
            )
        ]
        self.coco = COCO()
        self.coco.dataset = {
            "images": [{"id": i, "width": w, "height": h, "file_name": f"{i}.jpg"} for i, (w, h) in IMAGES.items()],
            "annotations": anns,
            "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        }
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco.createIndex()
        self.ids = sorted(IMAGES)
        self.contiguous_category_id_to_json_id = {1: 3, 2: 7}
        self.categories = {1: "cat", 2: "dog"}

    def __len__(self) -> int:
        return len(self.ids)

    def get_img_info(self, index: int) -> dict:
        return self.coco.imgs[self.ids[index]]

    def __getitem__(self, index: int):
        width, height = IMAGES[self.ids[index]]
        return torch.full((3, height * SCALE, width * SCALE), float(index)), None, index


class Loader:
    """Batches (ImageList, targets, indices) over ``indices``, like a test DataLoader."""

    def __init__(self, dataset: TinyCoco, indices: list[int], batch_size: int = 2) -> None:
        self.dataset, self.indices, self.batch_size = dataset, indices, batch_size

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)  # ceil

    def __iter__(self):
        for start in range(0, len(self.indices), self.batch_size):
            items = [self.dataset[i] for i in self.indices[start : start + self.batch_size]]
            images, targets, indices = zip(*items)
            yield to_image_list(list(images), size_divisibility=32), targets, indices


class ReplayModel(nn.Module):
    """Returns, for each image, its ground-truth boxes (score 1) in the network input size,
    optionally shifted right by ``shift`` network pixels."""

    def __init__(self, dataset: TinyCoco, shift: float = 0.0) -> None:
        super().__init__()
        self.dataset, self.shift = dataset, shift
        self.calls = 0

    def forward(self, images):
        assert not self.training and not torch.is_grad_enabled()
        self.calls += 1
        outputs = []
        for tensor, (height, width) in zip(images.tensors, images.image_sizes):
            index = int(tensor[0, 0, 0])
            rows = torch.tensor(BOXES[self.dataset.ids[index]], dtype=torch.float32).reshape(-1, 5)
            xyxy = torch.cat((rows[:, :2], rows[:, :2] + rows[:, 2:4]), dim=1) * SCALE
            xyxy[:, 0::2] += self.shift
            out = BoxList(xyxy, (width, height))
            labels = [{3: 1, 7: 2}[int(c)] for c in rows[:, 4]]
            out.add_field("labels", torch.tensor(labels, dtype=torch.int64))
            out.add_field("scores", torch.ones(len(labels)))
            outputs.append(out)
        return outputs


def test_compute_on_dataset_returns_predictions_in_original_size():
    dataset = TinyCoco()
    model = ReplayModel(dataset).eval()
    predictions, model_time = compute_on_dataset(model, Loader(dataset, [2, 0, 1]))
    assert sorted(predictions) == [0, 1, 2] and model.calls == 2 and model_time >= 0
    for index, pred in predictions.items():
        width, height = IMAGES[dataset.ids[index]]
        assert pred.size == (width, height)
        expected = torch.tensor([b[:4] for b in BOXES[dataset.ids[index]]], dtype=torch.float32)
        torch.testing.assert_close(pred.convert("xywh").bbox, expected)


def test_inference_scores_ap_1_and_saves_outputs(tmp_path):
    dataset = TinyCoco()
    model = ReplayModel(dataset).train()
    results = inference(model, Loader(dataset, [0, 1, 2]), "tiny", ("bbox",), "cpu", tmp_path / "out")
    assert model.training  # the caller's mode is restored
    assert results["bbox"]["AP"] == pytest.approx(1.0)
    saved = load_predictions(tmp_path / "out" / "predictions.pth")  # torch.load(weights_only=True)
    assert sorted(saved) == [0, 1, 2]
    expected, _ = compute_on_dataset(model.eval(), Loader(dataset, [0, 1, 2]))
    for index, prediction in expected.items():
        torch.testing.assert_close(saved[index].bbox, prediction.bbox, rtol=0, atol=0)
        assert saved[index].size == prediction.size and saved[index].fields() == prediction.fields()
    assert (tmp_path / "out" / "bbox.json").exists() and (tmp_path / "out" / "coco_results.json").exists()


def test_inference_of_shifted_boxes_scores_lower():
    dataset = TinyCoco()
    # 4 network pixels = 2 image pixels: the 10 x 8 box drops to IoU 8 * 8 / (12 * 8) = 0.67.
    results = inference(ReplayModel(dataset, shift=4.0), Loader(dataset, [0, 1, 2]), "tiny")
    assert 0.0 < results["bbox"]["AP"] < 1.0


def _boxes(n: int, tag: float) -> BoxList:
    """n boxes whose coordinates all equal ``tag`` (to tell the copies apart)."""
    return BoxList(torch.full((n, 4), tag), (10, 10))


def test_merge_keeps_each_index_once_in_order():
    # Two ranks of a distributed sampler that padded 5 images to 6: index 0 appears twice.
    rank0 = {0: _boxes(1, 0.0), 2: _boxes(1, 2.0), 4: _boxes(1, 4.0)}
    rank1 = {1: _boxes(1, 1.0), 3: _boxes(1, 3.0), 0: _boxes(2, 9.0)}
    merged = merge_predictions([rank0, rank1], num_images=5)
    assert list(merged) == [0, 1, 2, 3, 4]
    assert len(merged[0]) == 1  # the first rank's copy
    for index, boxes in merged.items():
        assert boxes.bbox[0, 0].item() == index


def test_merge_warns_about_missing_images(caplog):
    with caplog.at_level(logging.WARNING, logger="detbench.engine.inference"):
        merged = merge_predictions([{0: _boxes(1, 0.0)}, {2: _boxes(1, 2.0)}], num_images=4)
    assert list(merged) == [0, 2]
    assert "2 of 4 test images have no prediction" in caplog.text
