"""MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS: masks are pasted once, never twice.

Evaluation of predictions whose masks are already pasted (``masks_pasted``): the same oracle
masks (each ground-truth mask resampled over its box at 28 x 28) evaluated box-relative and
pasted by the mask head's own post-processor give the same segm AP on non-square images (before
the fix the second paste crashed on them). And ``inference`` of a model with POSTPROCESS_MASKS on
writes exactly the segm results of the same model with it off.
"""

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
from detbench.engine.inference import pastes_masks
from detbench.modeling.detector import build_detection_model
from detbench.modeling.roi_heads.mask_head.inference import MaskPostProcessor
from detbench.modeling.roi_heads.mask_head.loss import project_masks_on_boxes
from detbench.structures import BoxList
from detbench.structures.mask_ops import Masker

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2
M = 28


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> COCODataset:
    images, ann = generate_shapes(tmp_path_factory.mktemp("shapes"), "val", num_images=4, image_size=(72, 120))
    with contextlib.redirect_stdout(io.StringIO()):
        return COCODataset(ann, images, remove_images_without_annotations=False)


def _oracle(dataset: COCODataset, index: int, scale: int) -> tuple[BoxList, torch.Tensor]:
    """Ground-truth boxes in an image ``scale`` times larger, labels, score 1, and the [K, 1, M, M]
    mask probabilities cut out of each box."""
    _, target, _ = dataset[index]
    masks = target.get_field("masks").get_mask_tensor().float()  # [K, H, W]
    # The mask head's training targets: each mask resampled over its own box.
    cells = project_masks_on_boxes(masks, target.bbox, torch.arange(len(target)), M)[:, None]
    w, h = target.size
    pred = BoxList(target.bbox * scale, (w * scale, h * scale))
    pred.add_field("labels", target.get_field("labels"))
    pred.add_field("scores", torch.ones(len(target)))
    return pred, cells


def _mask_head_output(pred: BoxList, probs: torch.Tensor, masker: Masker | None) -> BoxList:
    """What the mask head's post-processor returns for logits whose labelled channel is ``probs``."""
    num_classes = int(pred.get_field("labels").max()) + 1
    logits = torch.full((len(pred), num_classes, M, M), -20.0)
    logits[torch.arange(len(pred)), pred.get_field("labels")] = torch.logit(probs[:, 0].clamp(1e-6, 1 - 1e-6))
    return MaskPostProcessor(masker)(logits, [pred])[0]


def test_segm_ap_is_the_same_for_pasted_and_box_relative_masks(dataset):
    oracle = [_oracle(dataset, i, 1) for i in range(len(dataset))]
    relative = [_mask_head_output(p, m, None) for p, m in oracle]
    pasted = [_mask_head_output(p, m, Masker(0.5, padding=1)) for p, m in oracle]
    assert pasted[0].get_field("mask").shape[-2:] == (72, 120)  # [K, 1, h, w]: image-sized
    off = evaluate(dataset, relative, None, ("segm",))["segm"]
    on = evaluate(dataset, pasted, None, ("segm",), masks_pasted=True)["segm"]
    # Good oracle masks (AP50 1; the small shapes lose edge pixels at 28 x 28, hence AP ~0.6), so
    # equal APs are not two zeros.
    assert off["AP50"] == 1.0 and off["AP"] > 0.5
    assert on == off


def test_inference_gives_the_same_segm_results_with_postprocess_masks(dataset, tmp_path):
    from detbench.data import make_data_loader
    from detbench.engine.inference import inference

    custom = repr((("tiny", str(dataset.root), str(dataset.ann_file)),))
    written = []
    for on in (False, True):
        torch.manual_seed(0)
        cfg = load_config("configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml", [
            "MODEL.DEVICE", "cpu", "DATASETS.CUSTOM", custom, "DATASETS.TEST", "('tiny',)",
            "MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS", str(on), "MODEL.ROI_HEADS.SCORE_THRESH", "0.0",
            "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "160", "TEST.IMS_PER_BATCH", "2",
            "DATALOADER.NUM_WORKERS", "0"])
        model = build_detection_model(cfg)
        assert pastes_masks(model) is on
        (loader,) = make_data_loader(cfg, is_train=False)
        inference(model, loader, "tiny", ("segm",), "cpu", tmp_path / str(on))
        assert pastes_masks(model) is on  # the Masker is back after evaluation
        written.append(json.loads((tmp_path / str(on) / "segm.json").read_text()))
    assert len(written[0]) > 0 and written[0] == written[1]


def test_the_model_says_whether_it_pastes_masks():
    for on in (False, True):
        cfg = load_config("configs/e2e_mask_rcnn_R_50_FPN_1x.yaml",
                          ["MODEL.DEVICE", "cpu", "MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS", str(on)])
        assert pastes_masks(build_detection_model(cfg)) is on
