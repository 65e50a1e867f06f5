"""ResNet-18/34 (basic blocks): structure, width checks, C4 head, FPN, GroupNorm training, dilation.

Numerical parity with torchvision's resnet18 / resnet34 is in test_resnet.py.
"""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from detbench.config import load_config
from detbench.config.defaults import get_cfg
from detbench.layers import FrozenBatchNorm2d
from detbench.modeling.backbone import STAGE_SPECS, build_backbone, build_resnet, make_resnet_head
from detbench.modeling.backbone.resnet import BasicBlock, ResNet, Stem
from detbench.modeling.detector import build_detection_model

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
# Basic blocks have no bottleneck, so res2 outputs WIDTH_PER_GROUP = 64 channels.
BASIC_FROZEN = dict(TRANS_FUNC="BasicBlockWithFixedBatchNorm", RES2_OUT_CHANNELS=64)
BASIC_GN = dict(STEM_FUNC="StemWithGN", TRANS_FUNC="BasicBlockWithGN", RES2_OUT_CHANNELS=64)


def _cfg(conv_body: str, freeze_at: int = 0, **resnets):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.CONV_BODY = conv_body
    cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT = freeze_at
    cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS = 256  # the FPN width of the FPN YAML files
    for key, value in resnets.items():
        cfg.MODEL.RESNETS[key] = value
    return cfg


@pytest.mark.parametrize("stride_in_1x1", [True, False])
def test_r18_structure_and_frozen_bn(stride_in_1x1):
    body = build_resnet(_cfg("R-18-C5", STRIDE_IN_1X1=stride_in_1x1, FROZEN_BN_EPSILON=0.25, **BASIC_FROZEN))
    assert [len(getattr(body, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert (body.out_channels, body.strides) == ((512,), (32,))
    # layer1 keeps 64 channels and the stem's resolution: no projection, as in torchvision.
    assert body.layer1[0].downsample is None and body.layer2[0].downsample[0].stride == (2, 2)
    # The stride is on the first 3x3 conv whatever STRIDE_IN_1X1 says (a basic block has no 1x1).
    first = body.layer3[0]
    assert (first.conv1.kernel_size, first.conv1.stride, first.conv2.stride) == ((3, 3), (2, 2), (1, 1))
    assert (first.conv1.in_channels, first.conv1.out_channels, first.conv2.out_channels) == (128, 256, 256)
    assert not hasattr(first, "conv3")
    frozen = [m for m in body.modules() if isinstance(m, FrozenBatchNorm2d)]
    # stem 1 + 8 blocks x 2 + 3 projection shortcuts (layer2..layer4).
    assert len(frozen) == 1 + 8 * 2 + 3 and all(m.eps == 0.25 for m in frozen)
    modules = dict(body.named_modules())
    for name, _ in body.named_parameters():
        assert isinstance(modules[name.rsplit(".", 1)[0]], nn.Conv2d), name


@pytest.mark.parametrize("conv_body, channels, strides", [
    ("R-18-C4", 256, (16,)), ("R-34-C5", 512, (32,)),
    ("R-18-FPN", 256, (4, 8, 16, 32, 64)), ("R-34-FPN", 256, (4, 8, 16, 32, 64)),
])
def test_backbones_channels_strides_and_shapes(conv_body, channels, strides):
    backbone = build_backbone(_cfg(conv_body, **BASIC_FROZEN))
    assert (backbone.out_channels, backbone.strides) == (channels, strides)
    if conv_body.endswith("FPN"):
        assert backbone.body.out_channels == (64, 128, 256, 512)
        assert tuple(backbone.fpn.in_channels_list) == (64, 128, 256, 512)
    h, w = 40, 72  # 40 / 32 is not whole: the last maps round up
    with torch.no_grad():
        outputs = backbone(torch.randn(1, 3, h, w))
    assert [tuple(o.shape) for o in outputs] == [(1, channels, math.ceil(h / s), math.ceil(w / s)) for s in strides]


@pytest.mark.parametrize("trans_func", ["BasicBlockWithFixedBatchNorm", "BasicBlockWithGN"])
def test_widths_that_disagree_with_basic_blocks_name_the_keys(trans_func):
    with pytest.raises(ValueError, match="MODEL.RESNETS.RES2_OUT_CHANNELS.*got NUM_GROUPS 1, RES2_OUT_CHANNELS 256"):
        build_resnet(_cfg("R-18-C4", TRANS_FUNC=trans_func))  # default RES2_OUT_CHANNELS: 256
    with pytest.raises(ValueError, match="MODEL.RESNETS.NUM_GROUPS"):
        make_resnet_head(_cfg("R-34-C4", TRANS_FUNC=trans_func, NUM_GROUPS=32, WIDTH_PER_GROUP=2))
    with pytest.raises(ValueError, match="no bottleneck"):
        BasicBlock(64, 32, 64)


@pytest.mark.parametrize("conv_body, blocks", [("R-18-C4", 2), ("R-34-C4", 3)])
def test_c4_head_is_res5_of_the_same_depth(conv_body, blocks):
    head = make_resnet_head(_cfg(conv_body, **BASIC_FROZEN))
    assert (head.in_channels, head.out_channels, len(head.layer4)) == (256, 512, blocks)
    assert isinstance(head.layer4[0], BasicBlock) and head.layer4[0].downsample[0].stride == (2, 2)
    assert head(torch.randn(3, 256, 14, 14)).shape == (3, 512, 7, 7)
    assert head(torch.zeros(0, 256, 14, 14)).shape == (0, 512, 7, 7)
    dilated = make_resnet_head(_cfg(conv_body, **BASIC_FROZEN), dilation=2)
    assert dilated(torch.randn(3, 256, 14, 14)).shape == (3, 512, 14, 14)


def test_r18_c4_mask_rcnn_wires_the_head():
    opts = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHT", "", "MODEL.BACKBONE.CONV_BODY", "R-18-C4",
            "MODEL.RESNETS.TRANS_FUNC", "BasicBlockWithFixedBatchNorm", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]
    model = build_detection_model(load_config(CONFIGS / "e2e_mask_rcnn_R_50_C4_1x.yaml", opts)).eval()
    assert model.roi_heads["box"].predictor.cls_score.in_features == 512
    assert model.roi_heads["mask"].predictor.conv5_mask.in_channels == 512
    with torch.no_grad():
        (result,) = model([torch.rand(3, 64, 96)])
    assert result.size == (96, 64)


def test_res5_dilation_dilates_both_convs():
    body = build_resnet(_cfg("R-18-C5", RES5_DILATION=2, **BASIC_FROZEN))
    assert body.strides == (16,) and body.layer4[0].downsample[0].stride == (1, 1)
    convs = [conv for block in body.layer4 for conv in (block.conv1, block.conv2)]
    assert all(c.dilation == (2, 2) and c.padding == (2, 2) and c.stride == (1, 1) for c in convs)
    (out,) = body(torch.randn(1, 3, 64, 96))
    assert out.shape == (1, 512, 4, 6)


def test_group_norm_r18_fpn_trains_one_step():
    cfg = _cfg("R-18-FPN", freeze_at=2, **BASIC_GN)
    cfg.MODEL.GROUP_NORM.NUM_GROUPS = -1
    cfg.MODEL.GROUP_NORM.DIM_PER_GP = 16
    cfg.MODEL.FPN.USE_GN = True
    torch.manual_seed(0)
    backbone = build_backbone(cfg)
    block = backbone.body.layer3[0]
    assert isinstance(block.bn1, nn.GroupNorm) and block.bn2.num_groups == 256 // 16
    assert block.downsample[1].num_groups == 256 // 16 and backbone.body.stem.bn1.num_groups == 64 // 16
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules())
    before = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    optimizer = torch.optim.SGD([p for p in backbone.parameters() if p.requires_grad], lr=0.1)
    # A random projection of the outputs: a loss on GroupNorm outputs like their mean square is
    # nearly constant, so its gradients would vanish.
    loss = sum((o * torch.randn_like(o)).mean() for o in backbone(torch.randn(2, 3, 32, 48)))
    loss.backward()
    optimizer.step()
    for name, p in backbone.named_parameters():
        # FREEZE_CONV_BODY_AT = 2: the stem and layer1 stay as they were, GroupNorm included.
        frozen = name.startswith(("body.stem.", "body.layer1."))
        assert p.requires_grad != frozen, name
        assert torch.equal(p, before[name]) == frozen, name


def test_basic_block_resnet_without_a_config():
    body = ResNet(Stem(), BasicBlock, STAGE_SPECS["R-34-FPN"], res2_out_channels=64)
    assert body.out_channels == (64, 128, 256, 512) and body.strides == (4, 8, 16, 32)
    assert [len(getattr(body, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
