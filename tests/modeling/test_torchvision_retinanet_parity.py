"""RetinaNet parity with torchvision: the same weights give the same detections.

torchvision's retinanet_resnet50_fpn is built as its COCO builder builds it when given weights
(FrozenBatchNorm2d with eps 0, stem and layer1 frozen, P6 from P5), made non-trivial (random
batch-norm statistics, a classifier whose scores spread over the 0.05 threshold), saved to a
file and loaded into detbench through MODEL.WEIGHT with configs/torchvision/retinanet_resnet50_fpn.yaml.
Both run on the same image at a size neither resizes: a synthetic 320x480 one (always), and a
real Penn-Fudan photo at 800x1216 (when the data is there), where torchvision's anchor strides
on P6/P7 (800 // 13 = 61, ...) differ from the nominal 64/128.
torchvision's background logit (label 0, never trained positive) is dropped by the conversion;
the test sets its bias very low so that torchvision, too, never outputs label 0.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close
from torchvision.models import resnet50
from torchvision.models.detection import RetinaNet
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from detbench.config import load_config
from detbench.modeling.detector import build_detection_model
from detbench.utils.checkpoint import Checkpointer
from test_torchvision_parity import randomise_frozen_batch_norm  # tests/modeling is on sys.path

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "torchvision" / "retinanet_resnet50_fpn.yaml"
PENN_FUDAN = Path("/work/shared/data/PennFudanPed/PNGImages")
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
DETECTIONS = 100  # lowered on both sides (torchvision: 300) to keep the test short

pytestmark = pytest.mark.usefixtures("native_cpu_convolutions")  # see tests/conftest.py


def _torchvision_model(min_size: int, max_size: int) -> torch.nn.Module:
    """The COCO builder's architecture (FrozenBatchNorm2d eps 0, 3 trainable stages), random weights."""
    torch.manual_seed(0)
    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(256, 256))
    model = RetinaNet(backbone, num_classes=91, min_size=min_size, max_size=max_size,
                      detections_per_img=DETECTIONS)
    overwrite_eps(model, 0.0)
    _randomise(model)
    return model.eval()


@torch.no_grad()
def _randomise(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    randomise_frozen_batch_norm(model, g)
    cls_logits = model.head.classification_head.cls_logits
    cls_logits.weight.normal_(0, 0.02, generator=g)
    cls_logits.bias.copy_(torch.randn(cls_logits.bias.shape, generator=g) - 3.5)  # scores spread across 0.05
    cls_logits.bias.view(-1, 91)[:, 0] = -30.0  # the background column never passes
    model.head.regression_head.bbox_reg.weight.normal_(0, 0.01, generator=g)


def _detbench_model(weight: Path, extra: tuple[str, ...] = ()) -> torch.nn.Module:
    cfg = load_config(CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", str(weight),
                               "MODEL.RETINANET.DETECTIONS_PER_IMG", str(DETECTIONS), *extra])
    torch.manual_seed(0)
    model = build_detection_model(cfg)
    Checkpointer(model).load(cfg.MODEL.WEIGHT)
    return model.eval()


def _synthetic_image(h: int, w: int) -> torch.Tensor:
    coarse = torch.rand(1, 3, 5, 8, generator=torch.Generator().manual_seed(2))
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def _photo(h: int, w: int) -> torch.Tensor:
    """A Penn-Fudan photo, resized (bilinear) to exactly h x w, RGB in [0, 1]."""
    from torchvision.io import ImageReadMode, read_image

    image = read_image(str(sorted(PENN_FUDAN.glob("*.png"))[0]), ImageReadMode.RGB).float() / 255
    return torch.nn.functional.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False)[0]


def _compare(tv_model, db_model, image: torch.Tensor) -> int:
    with torch.no_grad():
        tv_out = tv_model([image])[0]
        db_out = db_model([(image - MEAN) / STD])[0]
    assert db_out.size == (image.shape[2], image.shape[1])
    assert len(tv_out["boxes"]) >= 20, "too few detections for the test to mean much"
    assert len(db_out) == len(tv_out["boxes"])
    # Same detections in the same order (both sort by score; scores are distinct here).
    assert_close(db_out.get_field("labels"), tv_out["labels"])
    assert_close(db_out.get_field("scores"), tv_out["scores"], atol=1e-5, rtol=1e-4)
    assert_close(db_out.bbox, tv_out["boxes"], atol=1e-3, rtol=0)
    return len(db_out)


@pytest.fixture(scope="module")
def weight_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tv_retinanet") / "retinanet.pth"
    torch.save(_torchvision_model(320, 512).state_dict(), path)
    return path


def test_same_detections_as_torchvision(weight_file):
    tv_model = _torchvision_model(320, 512)  # the same weights as in the file
    db_model = _detbench_model(weight_file, ("INPUT.MIN_SIZE_TEST", "320", "INPUT.MAX_SIZE_TEST", "512"))
    _compare(tv_model, db_model, _synthetic_image(320, 480))


@pytest.mark.skipif(not PENN_FUDAN.is_dir(), reason="needs /work/shared/data/PennFudanPed")
def test_same_detections_as_torchvision_on_a_photo_at_800x1216(weight_file):
    tv_model = _torchvision_model(800, 1333)
    db_model = _detbench_model(weight_file)
    _compare(tv_model, db_model, _photo(800, 1216))


def test_fine_tuning_reinitialises_only_the_classifier(weight_file, caplog):
    with caplog.at_level(logging.INFO):
        model = _detbench_model(weight_file, ("MODEL.RETINANET.NUM_CLASSES", "3"))
    torch.manual_seed(0)
    fresh = build_detection_model(load_config(CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", "",
                                                       "MODEL.RETINANET.NUM_CLASSES", "3"])).state_dict()
    loaded = torch.load(weight_file, weights_only=True)
    state = model.state_dict()
    for key in ("rpn.head.cls_logits.weight", "rpn.head.cls_logits.bias"):
        assert_close(state[key], fresh[key])  # initialisation kept
    for db_key, tv_key in (("backbone.body.layer4.2.conv3.weight", "backbone.body.layer4.2.conv3.weight"),
                           ("backbone.fpn.fpn_inner2.weight", "backbone.fpn.inner_blocks.0.0.weight"),
                           ("backbone.fpn.top_blocks.p7.bias", "backbone.fpn.extra_blocks.p7.bias"),
                           ("rpn.head.cls_tower.6.weight", "head.classification_head.conv.3.0.weight"),
                           ("rpn.head.bbox_tower.0.bias", "head.regression_head.conv.0.0.bias"),
                           ("rpn.head.bbox_pred.weight", "head.regression_head.bbox_reg.weight")):
        assert_close(state[db_key], loaded[tv_key])
    assert "torchvision retinanet_resnet50_fpn weights" in caplog.text
    assert "only the class-dependent layers were re-initialised" in caplog.text
    assert "rpn.head.cls_logits.weight" in caplog.text


def test_coco_category_logits_map_to_the_80_contiguous_classes(weight_file):
    model = _detbench_model(weight_file, ("MODEL.RETINANET.NUM_CLASSES", "81"))
    from detbench.utils.torchvision_weights import COCO_CATEGORY_IDS

    loaded = torch.load(weight_file, weights_only=True)["head.classification_head.cls_logits.bias"].view(9, 91)
    assert_close(model.state_dict()["rpn.head.cls_logits.bias"].view(9, 80), loaded[:, list(COCO_CATEGORY_IDS)])


@pytest.mark.parametrize("extra, same", [((), True), (("MODEL.RETINANET.STRIDES_FROM_IMAGE", "False"), False),
                                         (("MODEL.RETINANET.ROUND_ANCHOR_SIZES", "False"), False)])
def test_anchors_match_torchvision_at_800x1216(extra, same):
    """Every anchor of P3..P7, in order: integer octave sizes and torchvision's stride rule
    (P6: 13x19 cells on 800x1216, strides 61 and 64) are both needed."""
    from torchvision.models.detection.image_list import ImageList as TVImageList

    from detbench.modeling.rpn.retinanet.retinanet import build_retinanet_anchor_generator
    from detbench.structures.image_list import ImageList

    images = torch.zeros(1, 3, 800, 1216)
    features = [torch.zeros(1, 1, -(-800 // s), -(-1216 // s)) for s in (8, 16, 32, 64, 128)]
    theirs = _torchvision_model(800, 1333).anchor_generator(TVImageList(images, [(800, 1216)]), features)[0]
    generator = build_retinanet_anchor_generator(load_config(CONFIG, ["MODEL.DEVICE", "cpu", *extra]))
    ours = torch.cat([level.bbox for level in generator(ImageList(images, [(800, 1216)]), features)[0]])
    assert ours.shape == theirs.shape
    assert torch.equal(ours, theirs) == same
