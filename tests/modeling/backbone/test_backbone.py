"""BACKBONES registry and build_backbone: every entry, torchvision parity of R-50-FPN, freezing, empty input."""

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d as TorchvisionFrozenBN

from detbench.config.defaults import get_cfg
from detbench.modeling.backbone import BACKBONES, FPN, Backbone, build_backbone, build_resnet

CONTRACT_NAMES = {"R-50-C4", "R-50-C5", "R-101-C4", "R-101-C5", "R-50-FPN", "R-101-FPN", "R-152-FPN"}


def _shallow(conv_body: str) -> bool:
    return conv_body.startswith(("R-18-", "R-34-"))


def _cfg(conv_body: str, **resnets):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.CONV_BODY = conv_body
    if _shallow(conv_body):  # ResNet-18/34: basic blocks, 64 channels out of res2
        cfg.MODEL.RESNETS.TRANS_FUNC = "BasicBlockWithFixedBatchNorm"
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    # FPN width: the FPN YAML files set 256.
    cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS = 256 if conv_body.endswith(("FPN", "RETINANET")) else 1024
    for key, value in resnets.items():
        cfg.MODEL.RESNETS[key] = value
    return cfg


# MobileNet bodies alone: the channels of torchvision's last ``features`` module, stride 32.
MOBILENET_CHANNELS = {"MobileNetV2": 1280, "MobileNetV3-Large": 960}


def _expected(conv_body: str) -> tuple[int, tuple[int, ...]]:
    if conv_body.startswith("MobileNet"):  # tests/modeling/backbone/test_mobilenet.py has the details
        if conv_body.endswith("-FPN"):
            return 256, (32, 32, 64)
        return MOBILENET_CHANNELS[conv_body], (32,)
    if conv_body.endswith("-FPN"):
        return 256, (4, 8, 16, 32, 64)
    if conv_body.endswith("-FPN-RETINANET"):  # P3..P7
        return 256, (8, 16, 32, 64, 128)
    scale = 4 if _shallow(conv_body) else 1  # basic blocks have no 4x expansion
    return (1024 // scale, (16,)) if conv_body.endswith("-C4") else (2048 // scale, (32,))


@pytest.mark.parametrize("conv_body", sorted(BACKBONES))
def test_every_registered_backbone(conv_body):
    backbone = build_backbone(_cfg(conv_body))
    channels, strides = _expected(conv_body)
    assert isinstance(backbone, Backbone)
    assert (backbone.out_channels, backbone.strides) == (channels, strides)
    # Deep bodies run at a tiny size to keep the suite fast.
    h, w = (64, 96) if conv_body.startswith("R-50") else (32, 32)
    with torch.no_grad():
        outputs = backbone(torch.randn(1, 3, h, w))
    # Each stride-2 step rounds up, so a map has ceil(side / stride) cells.
    expected = [(1, channels, math.ceil(h / s), math.ceil(w / s)) for s in strides]
    assert [tuple(o.shape) for o in outputs] == expected


@pytest.mark.parametrize("conv_body, trans_func", [("R-34-FPN", "BottleneckWithFixedBatchNorm"),
                                                   ("R-50-FPN", "BasicBlockWithFixedBatchNorm")])
def test_block_type_must_fit_the_depth(conv_body, trans_func):
    cfg = _cfg("R-50-C4")
    cfg.MODEL.BACKBONE.CONV_BODY = conv_body
    cfg.MODEL.RESNETS.TRANS_FUNC = trans_func
    with pytest.raises(ValueError, match=f"CONV_BODY {conv_body} needs .*TRANS_FUNC, got {trans_func}"):
        build_backbone(cfg)


def test_registry_covers_the_contract_and_reports_unknown_names():
    assert CONTRACT_NAMES <= set(BACKBONES)
    with pytest.raises(KeyError, match="MODEL.BACKBONE.CONV_BODY.*R-50-FPN"):
        build_backbone(_cfg("R-50-FPM"))


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random frozen-BN statistics and affine terms, and random FPN biases (they start at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, TorchvisionFrozenBN):
                c = m.weight.numel()
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(0.2 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))
    return model


def _rename_torchvision(key: str) -> str:
    """torchvision BackboneWithFPN key -> detbench key.

    body.conv1 / body.bn1 -> body.stem.conv1 / bn1; fpn.inner_blocks.i.0.p -> fpn.fpn_inner{i+1}.p, and
    layer_blocks to fpn_layer likewise.
    """
    parts = key.split(".")
    if parts[0] == "body" and parts[1] in ("conv1", "bn1"):
        return ".".join(["body", "stem"] + parts[1:])
    if parts[0] == "fpn":
        kind = {"inner_blocks": "fpn_inner", "layer_blocks": "fpn_layer"}[parts[1]]
        return f"fpn.{kind}{int(parts[2]) + 1}.{parts[-1]}"
    return key


def test_r50_fpn_matches_torchvision_detection_backbone():
    torch.manual_seed(0)
    reference = _randomise(resnet_fpn_backbone(backbone_name="resnet50", weights=None)).double().eval()
    ours = build_backbone(_cfg("R-50-FPN", STRIDE_IN_1X1=False, FROZEN_BN_EPSILON=1e-5)).double()
    ours.load_state_dict({_rename_torchvision(k): v for k, v in reference.state_dict().items()})
    # 72 x 100 gives odd sides on the way down (P3: 9 x 13), where upsampling must match the lateral.
    x = torch.randn(1, 3, 72, 100, dtype=torch.float64)
    with torch.no_grad():
        expected = list(reference(x).values())
        got = ours(x)
    assert [tuple(g.shape[-2:]) for g in got] == [(18, 25), (9, 13), (5, 7), (3, 4), (2, 2)]
    assert len(expected) == 5
    for g, e in zip(got, expected):
        assert_close(g, e)


@pytest.mark.parametrize("freeze_at", range(6))
def test_freezing_matches_torchvision_trainable_layers(freeze_at):
    cfg = _cfg("R-50-FPN")
    cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT = freeze_at
    ours = {n: p.requires_grad for n, p in build_backbone(cfg).named_parameters()}
    # torchvision trains the last ``trainable_layers`` of (conv1, layer1, ..., layer4).
    reference = resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=5 - freeze_at)
    expected = {_rename_torchvision(n): p.requires_grad for n, p in reference.named_parameters()}
    assert ours == expected
    assert sum(ours.values()) < len(ours) if freeze_at else all(ours.values())


@pytest.mark.parametrize("conv_body", ["R-50-C4", "R-50-FPN"])
def test_empty_batch(conv_body):
    backbone = build_backbone(_cfg(conv_body))
    channels, strides = _expected(conv_body)
    outputs = backbone(torch.zeros(0, 3, 64, 64))
    side = [math.ceil(64 / s) for s in strides]
    assert [tuple(o.shape) for o in outputs] == [(0, channels, n, n) for n in side]


def test_group_norm_fpn_backbone_trains():
    cfg = _cfg("R-50-FPN", STEM_FUNC="StemWithGN", TRANS_FUNC="BottleneckWithGN")
    cfg.MODEL.FPN.USE_GN = True
    cfg.MODEL.FPN.USE_RELU = True
    backbone = build_backbone(cfg)
    assert isinstance(backbone.fpn.fpn_inner1[1], nn.GroupNorm) and backbone.fpn.fpn_inner1[0].bias is None
    assert isinstance(backbone.fpn.fpn_layer4[2], nn.ReLU)
    outputs = backbone(torch.randn(1, 3, 32, 32))
    assert all(o.min() >= 0 for o in outputs[:4])  # every FPN output conv ends with a ReLU
    sum(o.sum() for o in outputs).backward()
    assert backbone.fpn.fpn_layer1[1].weight.grad is not None
    assert backbone.body.layer2[0].bn1.weight.grad is not None
    # FREEZE_CONV_BODY_AT = 2 (the default) freezes the stem and layer1, GroupNorm included.
    assert backbone.body.stem.bn1.weight.grad is None and backbone.body.layer1[0].bn1.weight.grad is None


def test_backbone_checks_body_and_fpn_agree():
    body = build_resnet(_cfg("R-50-FPN"))
    with pytest.raises(ValueError, match="needs an FPN"):
        Backbone(body)
    with pytest.raises(ValueError, match="do not match"):
        Backbone(body, FPN([256, 512, 1024], 256))
