"""ResNet / ResNeXt bodies and the res5 head: structure, options, and parity with torchvision."""

import pytest
import torch
import torchvision
from torch import nn
from torch.testing import assert_close

from detbench.config.defaults import get_cfg
from detbench.layers import FrozenBatchNorm2d
from detbench.modeling.backbone import STAGE_SPECS, StageSpec, build_resnet, make_resnet_head
from detbench.modeling.backbone.resnet import Bottleneck, ResNet, ResNetHead, Stem


def _cfg(conv_body="R-50-C5", **resnets):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.CONV_BODY = conv_body
    cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT = 0
    for key, value in resnets.items():
        cfg.MODEL.RESNETS[key] = value
    return cfg


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random affine parameters and running statistics in every BatchNorm2d (then eval mode)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(0.2 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return model.eval()


def _torchvision_to_body(state: dict) -> dict:
    """torchvision ResNet keys -> detbench body keys: conv1/bn1 move into the stem; fc is dropped."""
    renamed = {}
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        renamed[f"stem.{key}" if key.startswith(("conv1.", "bn1.")) else key] = value
    return renamed


def _torchvision_stages(model: torchvision.models.ResNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(layer3, layer4) outputs of a torchvision ResNet."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    c4 = model.layer3(model.layer2(model.layer1(x)))
    return c4, model.layer4(c4)


def test_stage_specs_block_counts():
    blocks = {"R-18": (2, 2, 2, 2), "R-34": (3, 4, 6, 3), "R-50": (3, 4, 6, 3), "R-101": (3, 4, 23, 3),
              "R-152": (3, 8, 36, 3)}
    for depth, counts in blocks.items():
        assert [s.block_count for s in STAGE_SPECS[f"{depth}-C5"]] == list(counts)
        assert [s.block_count for s in STAGE_SPECS[f"{depth}-C4"]] == list(counts[:3])
        assert [s.return_features for s in STAGE_SPECS[f"{depth}-C4"]] == [False, False, True]
        assert [s.return_features for s in STAGE_SPECS[f"{depth}-C5"]] == [False, False, False, True]
        assert all(s.return_features for s in STAGE_SPECS[f"{depth}-FPN"])
    assert STAGE_SPECS["R-50-FPN"][0] == StageSpec(index=1, block_count=3, return_features=True)


# Basic blocks (ResNet-18/34): no bottleneck, so res2 has WIDTH_PER_GROUP = 64 output channels.
BASIC = dict(TRANS_FUNC="BasicBlockWithFixedBatchNorm", RES2_OUT_CHANNELS=64)


@pytest.mark.parametrize(
    "arch, depth, res5_channels, options",
    [
        (torchvision.models.resnet18, "R-18", 512, BASIC),
        (torchvision.models.resnet34, "R-34", 512, BASIC),
        (torchvision.models.resnet50, "R-50", 2048, {}),
        (torchvision.models.resnext50_32x4d, "R-50", 2048, dict(NUM_GROUPS=32, WIDTH_PER_GROUP=4)),
    ],
)
def test_c4_c5_and_head_match_torchvision(arch, depth, res5_channels, options):
    torch.manual_seed(0)
    reference = _randomise_bn(arch(weights=None)).double()
    state = _torchvision_to_body(reference.state_dict())
    options = dict(STRIDE_IN_1X1=False, FROZEN_BN_EPSILON=1e-5, **options)
    # float64 before loading, so that no weight is rounded to float32 on the way.
    c5 = build_resnet(_cfg(f"{depth}-C5", **options)).double()
    c5.load_state_dict(state)
    c4 = build_resnet(_cfg(f"{depth}-C4", **options)).double()
    c4.load_state_dict({k: v for k, v in state.items() if not k.startswith("layer4.")})
    # The head has res5 of the C4 body's depth (R-18: 2 blocks), so layer4 loads strictly.
    head = make_resnet_head(_cfg(f"{depth}-C4", **options)).double()
    head.load_state_dict({k: v for k, v in state.items() if k.startswith("layer4.")})

    x = torch.randn(1, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        expected_c4, expected_c5 = _torchvision_stages(reference, x)
        (got_c5,), (got_c4,) = c5(x), c4(x)
        got_head = head(got_c4)
    assert got_c5.shape == (1, res5_channels, 2, 3) and got_c4.shape == (1, res5_channels // 2, 4, 6)
    assert_close(got_c5, expected_c5)
    assert_close(got_c4, expected_c4)
    assert_close(got_head, expected_c5)


def test_stride_in_1x1_places_the_stride():
    msra = build_resnet(_cfg(STRIDE_IN_1X1=True)).layer2[0]
    tv = build_resnet(_cfg(STRIDE_IN_1X1=False)).layer2[0]
    assert (msra.conv1.stride, msra.conv2.stride) == ((2, 2), (1, 1))
    assert (tv.conv1.stride, tv.conv2.stride) == ((1, 1), (2, 2))
    assert msra.downsample[0].stride == tv.downsample[0].stride == (2, 2)


def test_resnext_101_32x8d_widths():
    body = build_resnet(_cfg("R-101-FPN", NUM_GROUPS=32, WIDTH_PER_GROUP=8))
    conv2 = body.layer1[0].conv2
    assert (conv2.groups, conv2.in_channels, conv2.out_channels) == (32, 256, 256)
    # Widths double per stage: layer4's 3x3 conv has 32 * 8 * 8 = 2048 channels.
    assert body.layer4[2].conv2.out_channels == 2048 and body.layer4[2].conv2.groups == 32
    assert body.out_channels == (256, 512, 1024, 2048)
    assert [len(body.layer1), len(body.layer2), len(body.layer3), len(body.layer4)] == [3, 4, 23, 3]


def test_frozen_bn_body_has_only_conv_parameters_and_cfg_eps():
    body = build_resnet(_cfg(FROZEN_BN_EPSILON=0.25))
    frozen = [m for m in body.modules() if isinstance(m, FrozenBatchNorm2d)]
    # stem 1 + 16 blocks x 3 + 4 projection shortcuts.
    assert len(frozen) == 1 + 16 * 3 + 4
    assert all(m.eps == 0.25 for m in frozen)
    modules = dict(body.named_modules())
    for name, _ in body.named_parameters():
        assert isinstance(modules[name.rsplit(".", 1)[0]], nn.Conv2d), name


def test_group_norm_variant():
    cfg = _cfg("R-50-C4", STEM_FUNC="StemWithGN", TRANS_FUNC="BottleneckWithGN")
    cfg.MODEL.GROUP_NORM.NUM_GROUPS = -1
    cfg.MODEL.GROUP_NORM.DIM_PER_GP = 16
    body = build_resnet(cfg)
    assert isinstance(body.stem.bn1, nn.GroupNorm) and body.stem.bn1.num_groups == 64 // 16
    assert body.layer3[0].bn3.num_groups == 1024 // 16 and body.layer3[0].downsample[1].num_groups == 1024 // 16
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
    (out,) = body(torch.randn(2, 3, 32, 48))
    out.sum().backward()
    assert out.shape == (2, 1024, 2, 3)
    assert body.stem.bn1.weight.grad is not None and body.layer1[0].bn2.bias.grad is not None


@pytest.mark.parametrize("freeze_at", range(6))
def test_freeze_conv_body_at(freeze_at):
    cfg = _cfg("R-50-C5", STEM_FUNC="StemWithGN", TRANS_FUNC="BottleneckWithGN")
    cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT = freeze_at
    body = build_resnet(cfg)
    parts = ["stem", "layer1", "layer2", "layer3", "layer4"]
    for name, p in body.named_parameters():
        assert p.requires_grad == (parts.index(name.split(".")[0]) >= freeze_at), name


def test_freeze_out_of_range_and_unknown_blocks_raise():
    cfg = _cfg()
    cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT = 6
    with pytest.raises(ValueError, match="FREEZE_CONV_BODY_AT"):
        build_resnet(cfg)
    with pytest.raises(KeyError, match="MODEL.RESNETS.TRANS_FUNC"):
        build_resnet(_cfg(TRANS_FUNC="BottleneckWithBN"))
    with pytest.raises(ValueError, match="layer1"):
        ResNet(Stem(), Bottleneck, (StageSpec(2, 1, True),))


def test_res5_dilation_keeps_stride_16():
    body = build_resnet(_cfg("R-50-C5", RES5_DILATION=2))
    assert body.strides == (16,)
    assert body.layer4[0].downsample[0].stride == (1, 1)
    assert all(b.conv2.dilation == (2, 2) and b.conv2.padding == (2, 2) for b in body.layer4)
    (out,) = body(torch.randn(1, 3, 64, 96))
    assert out.shape == (1, 2048, 4, 6)


def test_resnet_head_shapes_and_dilation():
    head = make_resnet_head(_cfg())
    assert isinstance(head, ResNetHead) and (head.in_channels, head.out_channels) == (1024, 2048)
    assert head(torch.randn(3, 1024, 14, 14)).shape == (3, 2048, 7, 7)
    dilated = make_resnet_head(_cfg(), dilation=2)
    assert dilated(torch.randn(3, 1024, 14, 14)).shape == (3, 2048, 14, 14)
    assert head(torch.zeros(0, 1024, 14, 14)).shape == (0, 2048, 7, 7)
    assert sorted(head.state_dict())[0].startswith("layer4.0.")
