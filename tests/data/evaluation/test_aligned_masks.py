"""MODEL.ROI_MASK_HEAD.ALIGNED_MASKS end to end through pycocotools: oracle masks (each ground
truth cut out of its own box at 28 x 28, as the mask head's targets are) give segm AP ~1 with the
aligned pixel model and far less with torchvision's, whose cut and paste shift the masks; and
``inference`` pastes a model's masks with the pixel model it was built with."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from detbench.config import load_config
from detbench.data.datasets.coco import COCODataset
from detbench.data.datasets.evaluation import evaluate
from detbench.data.datasets.shapes import generate_shapes
from detbench.engine.inference import aligned_masks
from detbench.modeling.detector import build_detection_model
from detbench.modeling.roi_heads.mask_head.loss import project_masks_on_boxes
from detbench.structures import BoxList

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> COCODataset:
    images, ann = generate_shapes(tmp_path_factory.mktemp("shapes"), "val", num_images=6, image_size=(96, 112))
    with contextlib.redirect_stdout(io.StringIO()):
        return COCODataset(ann, images, remove_images_without_annotations=False)


def oracle(dataset: COCODataset, aligned: bool) -> list[BoxList]:
    """Ground-truth boxes, score 1, with box-relative [K, 1, 28, 28] masks cut from the truth."""
    predictions = []
    for index in range(len(dataset)):
        _, target, _ = dataset[index]
        masks = target.get_field("masks").get_mask_tensor().float()
        cells = project_masks_on_boxes(masks, target.bbox, torch.arange(len(target)), 28, aligned)
        pred = BoxList(target.bbox, target.size)
        pred.add_field("labels", target.get_field("labels"))
        pred.add_field("scores", torch.ones(len(target)))
        pred.add_field("mask", cells[:, None])
        predictions.append(pred)
    return predictions


def test_oracle_masks_score_near_one_only_when_aligned(dataset):
    aligned = evaluate(dataset, oracle(dataset, True), None, ("segm",), masks_aligned=True)["segm"]
    legacy = evaluate(dataset, oracle(dataset, False), None, ("segm",))["segm"]
    # Measured: AP 1.000 aligned, 0.692 with torchvision's pixel model (AP50 1.0 for both), 0.861 mixed.
    assert aligned["AP"] > 0.95 and aligned["AP50"] == 1.0
    assert legacy["AP"] < 0.75 and legacy["AP50"] == 1.0
    # Mixing the two models (aligned targets, torchvision paste) is worse than either alone.
    mixed = evaluate(dataset, oracle(dataset, True), None, ("segm",))["segm"]
    assert mixed["AP"] < aligned["AP"]


def test_inference_pastes_with_the_models_pixel_model(dataset, tmp_path):
    from detbench.data import make_data_loader
    from detbench.engine.inference import inference

    custom = repr((("tiny", str(dataset.root), str(dataset.ann_file)),))
    written = {}
    for on in (False, True):
        torch.manual_seed(0)
        cfg = load_config("configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml", [
            "MODEL.DEVICE", "cpu", "DATASETS.CUSTOM", custom, "DATASETS.TEST", "('tiny',)",
            "MODEL.ROI_MASK_HEAD.ALIGNED_MASKS", str(on), "MODEL.ROI_HEADS.SCORE_THRESH", "0.0",
            "TEST.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0"])
        model = build_detection_model(cfg)
        assert aligned_masks(model) is on
        (loader,) = make_data_loader(cfg, is_train=False)
        inference(model, loader, "tiny", ("bbox", "segm"), "cpu", tmp_path / str(on))
        written[on] = [json.loads((tmp_path / str(on) / f"{t}.json").read_text()) for t in ("bbox", "segm")]
    # The same weights and boxes; only the pasting differs.
    assert written[False][0] == written[True][0] and len(written[False][1]) > 0
    assert [r["segmentation"] for r in written[False][1]] != [r["segmentation"] for r in written[True][1]]
