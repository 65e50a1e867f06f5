"""torchvision Mask R-CNN on ResNet-18/34 FPN bodies (basic blocks, GroupNorm or FrozenBatchNorm2d)
into detbench through MODEL.WEIGHT: every tensor lands, and the eval outputs are torchvision's.

The torchvision model is tools/torchvision_twin.py's twin of the compare recipe (resnet18/34 with
the body's norm in a BackboneWithFPN, GroupNorm in the FPN with the GN variant), with random
weights made non-trivial (random norm parameters and statistics, a confident classifier), saved
to a file and loaded by detbench's Checkpointer. The image is 160 x 256 and both sides' min/max
size are lowered to 160 / 256 (to keep the test fast): a multiple of 32 that neither side
resizes or pads.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.testing import assert_close
from torchvision.ops import FrozenBatchNorm2d

from detbench.config import load_config
from detbench.modeling.detector import build_detection_model
from detbench.utils import torchvision_weights as tv
from detbench.utils.checkpoint import Checkpointer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "compare" / "mask_rcnn_R_18_GN_FPN_pennfudan.yaml"
H, W = 160, 256
SIZES = ("INPUT.MIN_SIZE_TRAIN", f"({H},)", "INPUT.MAX_SIZE_TRAIN", str(W),
         "INPUT.MIN_SIZE_TEST", str(H), "INPUT.MAX_SIZE_TEST", str(W))
NORMS = {
    "GN": ("MODEL.RESNETS.STEM_FUNC", "StemWithGN", "MODEL.RESNETS.TRANS_FUNC", "BasicBlockWithGN",
           "MODEL.FPN.USE_GN", "True"),
    "FrozenBN": ("MODEL.RESNETS.STEM_FUNC", "StemWithFixedBatchNorm",
                 "MODEL.RESNETS.TRANS_FUNC", "BasicBlockWithFixedBatchNorm", "MODEL.FPN.USE_GN", "False"),
}

pytestmark = pytest.mark.usefixtures("native_cpu_convolutions")  # see tests/conftest.py


def _twin_module():
    spec = importlib.util.spec_from_file_location("torchvision_twin", ROOT / "tools" / "torchvision_twin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cfg(body: str, norm: str, weight: str = ""):
    return load_config(CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", weight, "MODEL.BACKBONE.CONV_BODY", body,
                                *NORMS[norm], *SIZES, "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", "20",
                                # Pasted mask probabilities, as torchvision returns them.
                                "MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS", "True",
                                "MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD", "-1"])


@torch.no_grad()
def _randomise(model: nn.Module) -> None:
    """Random affine norm parameters (and frozen statistics); RPN and classifier weights that
    spread the objectness scores and let detections pass the 0.05 score threshold."""
    g = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, (nn.GroupNorm, FrozenBatchNorm2d)):
            n = module.weight.numel()
            module.weight.copy_(0.5 + 0.5 * torch.rand(n, generator=g))
            module.bias.copy_(0.1 * torch.randn(n, generator=g))
        if isinstance(module, FrozenBatchNorm2d):
            module.running_mean.copy_(0.1 * torch.randn(module.weight.numel(), generator=g))
            module.running_var.copy_(0.5 + torch.rand(module.weight.numel(), generator=g))
    model.rpn.head.cls_logits.weight.normal_(0, 0.1, generator=g)
    predictor = model.roi_heads.box_predictor
    predictor.cls_score.weight.normal_(0, 0.5, generator=g)
    predictor.cls_score.bias.copy_(torch.tensor([-3.0, 0.0]))  # background unlikely
    predictor.bbox_pred.weight.normal_(0, 0.005, generator=g)


def _image() -> torch.Tensor:
    """[3, H, W] in [0, 1]: smooth colour blobs."""
    coarse = torch.rand(1, 3, 5, 8, generator=torch.Generator().manual_seed(2))
    return nn.functional.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def _shapes(build) -> dict[str, torch.Size]:
    """Keys and shapes of a model's state dict, without allocating its weights."""
    with torch.device("meta"):
        return {k: v.shape for k, v in build().state_dict().items()}


@pytest.mark.parametrize("body", ["R-18-FPN", "R-34-FPN"])
@pytest.mark.parametrize("norm", list(NORMS))
def test_every_tensor_has_its_detbench_twin(body, norm):
    cfg = _cfg(body, norm)
    with torch.device("meta"):
        state = _twin_module().build_twin(cfg).state_dict()
    assert tv.detect_kind(state) == "maskrcnn"
    assert tv.describe(state) == f"maskrcnn_resnet{body[2:4]}_fpn"
    converted, unknown = tv.convert(state)
    assert unknown == []
    assert {k: v.shape for k, v in converted.items()} == _shapes(lambda: build_detection_model(cfg))
    # Only frozen batch norm's counters are dropped (GroupNorm has none).
    assert len(state) - len(converted) == sum(k.endswith("num_batches_tracked") for k in state)


# Two of the four combinations run the forward (each costs seconds): both depths, both norms.
@pytest.mark.parametrize("body, norm", [("R-18-FPN", "GN"), ("R-34-FPN", "FrozenBN")])
def test_torchvision_basic_block_maskrcnn_gives_the_same_outputs(body, norm, tmp_path):
    torch.manual_seed(0)
    tv_model = _twin_module().build_twin(_cfg(body, norm))
    _randomise(tv_model)
    torch.save(tv_model.state_dict(), tmp_path / "tv.pth")
    cfg = _cfg(body, norm, str(tmp_path / "tv.pth"))
    db_model = build_detection_model(cfg)
    Checkpointer(db_model).load(cfg.MODEL.WEIGHT)
    # float64: float32 rounding would reorder near-tied objectness scores (a few of 1000 proposals).
    tv_model, db_model = tv_model.eval().double(), db_model.eval().double()
    image = _image().double()
    mean, std = (torch.tensor(v, dtype=torch.float64).view(3, 1, 1) for v in (cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD))
    captured = {}
    tv_model.rpn.register_forward_hook(lambda m, i, o: captured.__setitem__("tv", o[0][0]))
    db_model.rpn.register_forward_hook(lambda m, i, o: captured.__setitem__("db", o[0][0].bbox))
    with torch.no_grad():
        tv_out = tv_model([image])[0]
        db_out = db_model([(image - mean) / std])[0]

    assert_close(captured["db"], captured["tv"], atol=1e-6, rtol=0)  # the same proposals, in order
    assert len(tv_out["boxes"]) == 20, "too few detections for the test to mean much"
    # Same order: scores are distinct and both sort them the same way.
    assert_close(db_out.bbox, tv_out["boxes"], atol=1e-6, rtol=0)
    assert_close(db_out.get_field("labels"), tv_out["labels"])
    assert_close(db_out.get_field("scores"), tv_out["scores"], atol=1e-9, rtol=1e-7)
    assert_close(db_out.get_field("mask"), tv_out["masks"], atol=1e-7, rtol=0)
