"""MobileNet parity with torchvision: the same weights give the same features, proposals and detections.

torchvision's models are built as its builders build them (``fasterrcnn_mobilenet_v3_large_fpn``
and its 320 variant given weights: FrozenBatchNorm2d, 3 trainable stages, 15 anchors on each of
3 levels, rpn_score_thresh 0.05; the fine-tuning tutorial's Faster R-CNN on
``mobilenet_v2().features`` with trained batch norm), made non-trivial (random batch-norm
statistics and head weights), saved to a file and loaded into detbench through MODEL.WEIGHT with
configs/torchvision/fasterrcnn_mobilenet_v3_large*_fpn.yaml and
configs/tutorial/faster_rcnn_mobilenet_v2.yaml. Both run on the same image, of a size both keep.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_torchvision_parity import MEAN, STD, _match, randomise_frozen_batch_norm  # tests/modeling
from torch.testing import assert_close
from torchvision.models import mobilenet_v2, mobilenet_v3_large
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _mobilenet_extractor
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

from detbench.config import load_config
from detbench.modeling.detector import build_detection_model
from detbench.utils.checkpoint import Checkpointer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FPN_CONFIG = CONFIGS / "torchvision" / "fasterrcnn_mobilenet_v3_large_fpn.yaml"
FPN_320_CONFIG = CONFIGS / "torchvision" / "fasterrcnn_mobilenet_v3_large_320_fpn.yaml"
TUTORIAL_CONFIG = CONFIGS / "tutorial" / "faster_rcnn_mobilenet_v2.yaml"
H, W = 320, 480  # multiples of 32 that min/max size 320/640 keep as they are
# Detections per image, both sides: more than pass the score threshold, so that no top-k cut
# falls between near-tied scores (random heads give many). Float32 rounding (~1e-7) moved a
# detection across the 0.05 threshold (350 against 349) and let near-tied boxes swap in the NMS
# (one box 20 px off): the FPN detector tests run in float64 (10x slower: depthwise convolutions),
# and detections scoring within MARGIN of the threshold are left out on both sides.
ALL = 1000
SCORE_THRESH, MARGIN = 0.05, 1e-4
PENN_FUDAN = Path(__file__).resolve().parents[3] / "shared" / "data" / "PennFudanPed" / "PNGImages"

pytestmark = pytest.mark.usefixtures("native_cpu_convolutions")  # see tests/conftest.py


def _image() -> torch.Tensor:
    """[3, H, W] in [0, 1]: bilinear-smoothed noise with detail at every stride-32 cell (random
    MobileNet features of smoother images barely vary between RoIs)."""
    coarse = torch.rand(1, 3, H // 8, W // 8, generator=torch.Generator().manual_seed(2))
    return torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)[0]


def mobilenet_fpn_detector(**kwargs) -> FasterRCNN:
    """``_fasterrcnn_mobilenet_v3_large_fpn`` as given COCO weights, with random ones (seed 0)."""
    torch.manual_seed(0)
    body = _mobilenet_extractor(mobilenet_v3_large(norm_layer=FrozenBatchNorm2d), True, 3)
    anchors = AnchorGenerator(((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)
    model = FasterRCNN(body, 91, rpn_anchor_generator=anchors, rpn_score_thresh=0.05, **kwargs)
    g = torch.Generator().manual_seed(1)
    randomise_heads(model, g, classifier_std=2.0)
    with torch.no_grad():  # objectness spread around rpn_score_thresh: the threshold drops some
        model.rpn.head.cls_logits.weight.normal_(0, 3.0, generator=g)
        model.rpn.head.cls_logits.bias.fill_(-3.0)
    return model.eval()


def tutorial_detector(**kwargs) -> FasterRCNN:
    """The fine-tuning tutorial's model (2 classes), random weights and batch-norm statistics."""
    torch.manual_seed(0)
    features = mobilenet_v2().features
    features.out_channels = 1280
    model = FasterRCNN(features, num_classes=2,
                       rpn_anchor_generator=AnchorGenerator(((32, 64, 128, 256, 512),), ((0.5, 1.0, 2.0),)),
                       box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2), **kwargs)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + 0.5 * torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    randomise_heads(model, g)
    return model.eval()


@torch.no_grad()
def randomise_heads(model: FasterRCNN, g: torch.Generator, classifier_std: float = 0.5) -> None:
    """Random frozen batch norm; RPN and classifier weights that spread the objectness scores
    (no ties in the top-k, many above rpn_score_thresh) and let detections pass 0.05 (the
    MobileNet FPN's box features are small, ~0.02: its classifier needs a larger ``classifier_std``)."""
    randomise_frozen_batch_norm(model, g)
    model.rpn.head.cls_logits.weight.normal_(0, 0.1, generator=g)
    model.rpn.head.bbox_pred.weight.normal_(0, 0.01, generator=g)
    predictor = model.roi_heads.box_predictor
    predictor.cls_score.weight.normal_(0, classifier_std, generator=g)
    predictor.cls_score.bias.zero_()
    predictor.cls_score.bias[0] = -3.0  # background unlikely: detections to compare
    predictor.bbox_pred.weight.normal_(0, 0.005, generator=g)


def detbench_detector(config: Path, weight: Path, *opts: str) -> torch.nn.Module:
    cfg = load_config(config, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", str(weight), *opts])
    model = build_detection_model(cfg)
    Checkpointer(model).load(cfg.MODEL.WEIGHT)
    return model.eval()


def run_both(tv_model, db_model, image: torch.Tensor, dtype: torch.dtype = torch.float32):
    """(torchvision proposals, torchvision detections, detbench proposals, detbench detections),
    models and image in ``dtype``."""
    tv_model, db_model, image = tv_model.to(dtype), db_model.to(dtype), image.to(dtype)
    captured = {}
    hooks = [tv_model.rpn.register_forward_hook(lambda m, i, o: captured.__setitem__("tv", o[0][0])),
             db_model.rpn.register_forward_hook(lambda m, i, o: captured.__setitem__("db", o[0][0]))]
    with torch.no_grad():
        tv_out = tv_model([image])[0]
        db_out = db_model([(image - MEAN.to(image.dtype)) / STD.to(image.dtype)])[0]
    for hook in hooks:
        hook.remove()
    return captured["tv"], tv_out, captured["db"], db_out


def assert_same_proposals(tv_props: torch.Tensor, db_props) -> None:
    """The same proposal boxes, in any order: random RPN weights give objectness scores 1e-7
    apart, which float32 rounding (and the folded batch norm) reorders (1.5 % of the rows)."""
    assert len(db_props) == len(tv_props)
    labels = torch.zeros(len(tv_props), dtype=torch.int64)
    assert_close(db_props.bbox, tv_props[_match(tv_props, labels, db_props.bbox, labels)], atol=1e-3, rtol=0)


def assert_same_detections(tv_out: dict, db_out, box_atol: float = 1e-3, score_rtol: float = 1e-4) -> None:
    """Same boxes, labels and scores (any order), but for those within MARGIN of SCORE_THRESH."""
    tv_out = {k: v[tv_out["scores"] > SCORE_THRESH + MARGIN] for k, v in tv_out.items()}
    db_out = db_out[db_out.get_field("scores") > SCORE_THRESH + MARGIN]
    assert len(db_out) == len(tv_out["boxes"]) > 0
    labels = db_out.get_field("labels")
    index = _match(tv_out["boxes"], tv_out["labels"], db_out.bbox, labels)
    assert_close(db_out.bbox, tv_out["boxes"][index], atol=box_atol, rtol=0)
    assert_close(labels, tv_out["labels"][index])
    assert_close(db_out.get_field("scores"), tv_out["scores"][index], atol=1e-6, rtol=score_rtol)


@pytest.fixture(scope="module")
def fpn_weights(tmp_path_factory) -> tuple[FasterRCNN, Path]:
    path = tmp_path_factory.mktemp("mobilenet") / "fasterrcnn_mobilenet_v3_large_fpn.pth"
    model = mobilenet_fpn_detector(min_size=H, max_size=640, rpn_pre_nms_top_n_test=150,
                                   rpn_post_nms_top_n_test=150, box_detections_per_img=ALL)
    torch.save(model.state_dict(), path)
    return model, path


def test_fpn_features_match_torchvision(fpn_weights):
    tv_model, path = fpn_weights
    tv_model = tv_model.float()  # the detector tests may have left it in float64
    db_model = detbench_detector(FPN_320_CONFIG, path)
    x = ((_image() - MEAN) / STD)[None]
    with torch.no_grad():
        theirs = list(tv_model.backbone(x).values())
        ours = db_model.backbone(x)
    assert [tuple(t.shape) for t in ours] == [(1, 256, 10, 15), (1, 256, 10, 15), (1, 256, 5, 8)]
    for a, b in zip(ours, theirs):
        assert b.abs().amax() > 1e-2, "features too small for the comparison to mean much"
        assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_320_detector_matches_torchvision(fpn_weights):
    """The 320 config (150 proposals, rpn_score_thresh 0.05) on a 320x480 image; the threshold
    drops some of the 150 (MODEL.RPN.SCORE_THRESH 0 would keep them: a test that can fail)."""
    tv_model, path = fpn_weights
    db_model = detbench_detector(FPN_320_CONFIG, path, "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", str(ALL))
    tv_props, tv_out, db_props, db_out = run_both(tv_model, db_model, _image(), torch.float64)
    assert 20 < len(tv_props) < 150
    assert (db_props.get_field("objectness") >= 0.05).all()
    assert_same_proposals(tv_props, db_props)
    assert len(tv_out["boxes"]) >= 50 and tv_out["labels"].unique().numel() > 1, "too few detections to mean much"
    assert_same_detections(tv_out, db_out)


@pytest.mark.skipif(not PENN_FUDAN.is_dir(), reason="needs ../shared/data/PennFudanPed")
def test_800_detector_on_a_real_photo(tmp_path):
    """The 800 config (1000 proposals before and after NMS) on a Penn-Fudan photo
    at 320 x 480 (torchvision's min/max size lowered to keep it; 800 x 1216 took minutes here)."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    tv_model = mobilenet_fpn_detector(min_size=H, max_size=640, box_detections_per_img=ALL)
    torch.save(tv_model.state_dict(), tmp_path / "fpn.pth")
    db_model = detbench_detector(FPN_CONFIG, tmp_path / "fpn.pth", "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", str(ALL))
    photo = Image.open(PENN_FUDAN / "FudanPed00001.png").convert("RGB").resize((W, H), Image.BILINEAR)
    image = pil_to_tensor(photo).float() / 255
    tv_props, tv_out, db_props, db_out = run_both(tv_model, db_model, image, torch.float64)
    assert 150 < len(tv_props) <= 1000
    assert_same_proposals(tv_props, db_props)
    assert len(tv_out["boxes"]) >= 100
    assert_same_detections(tv_out, db_out)


def test_tutorial_model_matches_torchvision(tmp_path):
    """configs/tutorial: one 1280-channel level, trained batch norm (eval statistics), 2 classes."""
    tv_model = tutorial_detector(min_size=H, max_size=640, rpn_post_nms_top_n_test=100, box_detections_per_img=ALL)
    torch.save(tv_model.state_dict(), tmp_path / "tutorial.pth")
    db_model = detbench_detector(TUTORIAL_CONFIG, tmp_path / "tutorial.pth", "MODEL.RPN.POST_NMS_TOP_N_TEST", "100",
                                 "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", str(ALL))
    x = ((_image() - MEAN) / STD)[None]
    with torch.no_grad():
        assert_close(db_model.backbone(x)[0], tv_model.backbone(x), atol=1e-4, rtol=1e-4)
    tv_props, tv_out, db_props, db_out = run_both(tv_model, db_model, _image())
    assert len(tv_props) == 100
    assert_same_proposals(tv_props, db_props)
    assert len(tv_out["boxes"]) >= 20
    assert_same_detections(tv_out, db_out)
