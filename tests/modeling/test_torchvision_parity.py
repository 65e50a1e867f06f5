"""Whole-model parity with torchvision: the same weights give the same proposals and detections.

torchvision's Faster / Mask / Keypoint R-CNN R-50-FPN are built as its COCO builders build
them when given weights (FrozenBatchNorm2d, stem and layer1 frozen), made non-trivial (random
batch-norm statistics and head weights, a classifier confident enough to pass the score
threshold), saved to a file and loaded into detbench through MODEL.WEIGHT with the
configs/torchvision/*.yaml config. Both run on the same image, whose size (320x480, a
multiple of 32) both models keep as it is: torchvision's min/max size and detbench's are
lowered together, as are the proposal and detection counts, to keep the test fast.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN, KeypointRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d

from detbench.config import load_config
from detbench.modeling.detector import build_detection_model
from detbench.utils.checkpoint import Checkpointer

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "torchvision"
H, W = 320, 480  # multiples of 32 within min/max size 320/512: no resize, no padding on either side
POST_NMS, DETECTIONS = 300, 10  # lowered on both sides (torchvision: 1000 and 100)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
KINDS = {"fasterrcnn": (FasterRCNN, 91), "maskrcnn": (MaskRCNN, 91), "keypointrcnn": (KeypointRCNN, 2)}


pytestmark = pytest.mark.usefixtures("native_cpu_convolutions")  # see tests/conftest.py


def _torchvision_model(kind: str) -> torch.nn.Module:
    """The COCO builder's architecture (FrozenBatchNorm2d, 3 trainable stages), random weights."""
    torch.manual_seed(0)
    cls, num_classes = KINDS[kind]
    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), trainable_layers=3)
    model = cls(backbone, num_classes=num_classes, min_size=H, max_size=512,
                rpn_post_nms_top_n_test=POST_NMS, box_detections_per_img=DETECTIONS)
    _randomise(model)
    return model.eval()


@torch.no_grad()
def randomise_frozen_batch_norm(model: torch.nn.Module, g: torch.Generator) -> None:
    """Random statistics and affine parameters in every FrozenBatchNorm2d of ``model``."""
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            n = module.weight.numel()
            module.weight.copy_(0.5 + 0.5 * torch.rand(n, generator=g))
            module.bias.copy_(0.1 * torch.randn(n, generator=g))
            module.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            module.running_var.copy_(0.5 + torch.rand(n, generator=g))


@torch.no_grad()
def _randomise(model: torch.nn.Module) -> None:
    """Random frozen batch-norm statistics; RPN and classifier weights large enough that
    objectness scores are spread out (no ties in the top-k) and detections pass 0.05."""
    g = torch.Generator().manual_seed(1)
    randomise_frozen_batch_norm(model, g)
    head = model.rpn.head
    head.cls_logits.weight.normal_(0, 0.1, generator=g)
    head.bbox_pred.weight.normal_(0, 0.01, generator=g)
    predictor = model.roi_heads.box_predictor
    predictor.cls_score.weight.normal_(0, 0.5, generator=g)
    predictor.cls_score.bias.zero_()
    predictor.cls_score.bias[0] = -3.0  # background unlikely: every kind has detections to compare
    predictor.bbox_pred.weight.normal_(0, 0.005, generator=g)


def _detbench_model(kind: str, weight: Path, extra: tuple[str, ...] = ()) -> torch.nn.Module:
    cfg = load_config(CONFIGS / f"{kind}_resnet50_fpn.yaml", [
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHT", str(weight),
        "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST", str(POST_NMS), "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", str(DETECTIONS),
        # Pasted mask probabilities, as torchvision returns them.
        "MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS", "True", "MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD", "-1",
        *extra])
    torch.manual_seed(0)
    model = build_detection_model(cfg)
    Checkpointer(model).load(cfg.MODEL.WEIGHT)
    return model.eval()


def _image() -> torch.Tensor:
    """[3, H, W] in [0, 1]: smooth colour blobs, so that RoI features (and labels) vary across the image."""
    coarse = torch.rand(1, 3, 5, 8, generator=torch.Generator().manual_seed(2))
    return torch.nn.functional.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def _run_both(tv_model, db_model, image):
    """(torchvision proposals, torchvision detections, detbench proposals, detbench detections)."""
    captured = {}
    hooks = [tv_model.rpn.register_forward_hook(lambda m, i, o: captured.__setitem__("tv", o[0])),
             db_model.rpn.register_forward_hook(lambda m, i, o: captured.__setitem__("db", o[0]))]
    with torch.no_grad():
        tv_out = tv_model([image])[0]
        db_out = db_model([(image - MEAN) / STD])[0]
    for hook in hooks:
        hook.remove()
    return captured["tv"][0], tv_out, captured["db"][0], db_out


def _match(tv_boxes, tv_labels, db_boxes, db_labels) -> torch.Tensor:
    """For each detbench detection, the index of the torchvision one with the same label and
    the nearest box; asserts that this is a one-to-one matching within 1e-3 pixels."""
    dist = (db_boxes[:, None] - tv_boxes[None]).abs().amax(dim=2)
    dist[db_labels[:, None] != tv_labels[None]] = float("inf")
    nearest, index = dist.min(dim=1)
    assert nearest.max() <= 1e-3, f"largest box distance after matching: {nearest.max():.2e} px"
    assert index.unique().numel() == index.numel(), "two detections matched the same torchvision one"
    return index


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """kind -> (torchvision model, its state dict saved in a file)."""
    folder = tmp_path_factory.mktemp("tv_weights")
    out = {}
    for kind in KINDS:
        model = _torchvision_model(kind)
        torch.save(model.state_dict(), folder / f"{kind}.pth")
        out[kind] = (model, folder / f"{kind}.pth")
    return out


@pytest.mark.parametrize("kind", list(KINDS))
def test_same_outputs_as_torchvision(kind, weights):
    tv_model, path = weights[kind]
    db_model = _detbench_model(kind, path)
    image = _image()
    tv_props, tv_out, db_props, db_out = _run_both(tv_model, db_model, image)

    assert db_props.size == (W, H)
    assert_close(db_props.bbox, tv_props, atol=1e-3, rtol=0)  # same proposals, same order
    assert len(tv_out["boxes"]) == DETECTIONS, "too few detections for the test to mean much"
    assert len(db_out) == len(tv_out["boxes"])
    labels = db_out.get_field("labels")
    index = _match(tv_out["boxes"], tv_out["labels"], db_out.bbox, labels)
    assert_close(labels, tv_out["labels"][index])
    assert_close(db_out.get_field("scores"), tv_out["scores"][index], atol=1e-5, rtol=1e-4)
    if kind == "maskrcnn":
        assert_close(db_out.get_field("mask"), tv_out["masks"][index], atol=1e-4, rtol=0)
    if kind == "keypointrcnn":
        assert_close(db_out.get_field("keypoints").keypoints, tv_out["keypoints"][index], atol=1e-3, rtol=0)
        assert_close(db_out.get_field("keypoints_scores"), tv_out["keypoints_scores"][index],
                     atol=1e-3, rtol=1e-4)


PENN_FUDAN = Path(__file__).resolve().parents[3] / "shared" / "data" / "PennFudanPed" / "PNGImages"


@pytest.mark.skipif(not PENN_FUDAN.is_dir(), reason="needs ../shared/data/PennFudanPed")
def test_full_size_float64_on_a_real_photo(tmp_path):
    """torchvision's own sizes (800 / 1333, 1000 proposals, 100 detections), a Penn-Fudan photo
    at 800 x 1216 (kept as it is by both), float64 end to end: every proposal and every
    detection has its twin. At this size P6 is 13 x 19, where torchvision spaces anchor rows
    800 // 13 = 61 px apart (MODEL.RPN.STRIDES_FROM_IMAGE); with 64 about 5 % of the
    proposals and some detections differed."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    torch.manual_seed(0)
    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), trainable_layers=3)
    tv_model = MaskRCNN(backbone, num_classes=91)  # torchvision's test-time defaults
    _randomise(tv_model)
    torch.save(tv_model.state_dict(), tmp_path / "maskrcnn.pth")
    db_model = _detbench_model("maskrcnn", tmp_path / "maskrcnn.pth", (
        "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST", "1000", "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", "100")).double()
    tv_model = tv_model.eval().double()
    photo = Image.open(PENN_FUDAN / "FudanPed00001.png").convert("RGB").resize((1216, 800), Image.BILINEAR)
    image = pil_to_tensor(photo).double() / 255
    captured = {}
    hooks = [tv_model.rpn.register_forward_hook(lambda m, i, o: captured.__setitem__("tv", o[0][0])),
             db_model.rpn.register_forward_hook(lambda m, i, o: captured.__setitem__("db", o[0][0]))]
    with torch.no_grad():
        tv_out = tv_model([image])[0]
        db_out = db_model([(image - MEAN.double()) / STD.double()])[0]
    for hook in hooks:
        hook.remove()

    assert len(captured["tv"]) == 1000
    assert_close(captured["db"].bbox, captured["tv"], atol=1e-5, rtol=0)  # same proposals, same order
    assert len(db_out) == len(tv_out["boxes"]) == 100
    index = _match(tv_out["boxes"], tv_out["labels"], db_out.bbox, db_out.get_field("labels"))
    assert_close(db_out.bbox, tv_out["boxes"][index], atol=1e-5, rtol=0)
    assert_close(db_out.get_field("scores"), tv_out["scores"][index], atol=1e-9, rtol=1e-7)
    assert_close(db_out.get_field("mask"), tv_out["masks"][index], atol=1e-6, rtol=0)


def test_fine_tuning_reinitialises_only_class_dependent_layers(weights, caplog):
    """A COCO Mask R-CNN into a 2-class config (torchvision's fine-tuning tutorial)."""
    _, path = weights["maskrcnn"]
    with caplog.at_level(logging.INFO):
        model = _detbench_model("maskrcnn", path, ("MODEL.ROI_BOX_HEAD.NUM_CLASSES", "2"))
    torch.manual_seed(0)  # the same initialisation as inside _detbench_model
    fresh = build_detection_model(load_config(CONFIGS / "maskrcnn_resnet50_fpn.yaml", [
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHT", "", "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "2"])).state_dict()
    loaded = torch.load(path, weights_only=True)
    class_dependent = {"roi_heads.box.predictor.cls_score.weight", "roi_heads.box.predictor.cls_score.bias",
                       "roi_heads.box.predictor.bbox_pred.weight", "roi_heads.box.predictor.bbox_pred.bias",
                       "roi_heads.mask.predictor.mask_fcn_logits.weight",
                       "roi_heads.mask.predictor.mask_fcn_logits.bias"}
    state = model.state_dict()
    for key in class_dependent:
        assert_close(state[key], fresh[key])  # initialisation kept
    # Everything else came from the file: spot checks across backbone, FPN, RPN and heads.
    for db_key, tv_key in (("backbone.body.stem.bn1.running_var", "backbone.body.bn1.running_var"),
                           ("backbone.body.layer4.2.conv3.weight", "backbone.body.layer4.2.conv3.weight"),
                           ("backbone.fpn.fpn_inner4.weight", "backbone.fpn.inner_blocks.3.0.weight"),
                           ("rpn.head.conv.weight", "rpn.head.conv.0.0.weight"),
                           ("roi_heads.box.feature_extractor.fc7.bias", "roi_heads.box_head.fc7.bias"),
                           ("roi_heads.mask.feature_extractor.mask_fcn4.weight", "roi_heads.mask_head.3.0.weight"),
                           ("roi_heads.mask.predictor.conv5_mask.weight",
                            "roi_heads.mask_predictor.conv5_mask.weight")):
        assert_close(state[db_key], loaded[tv_key])
    assert "torchvision maskrcnn_resnet50_fpn weights" in caplog.text
    assert "only the class-dependent layers were re-initialised" in caplog.text
    for key in class_dependent:
        assert key in caplog.text
