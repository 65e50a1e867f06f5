"""Deformable convolutions in the ResNet body (MODEL.RESNETS.STAGE_WITH_DCN and friends).

A new deformable conv has zero offsets, so a body with deformable stages must compute exactly
what the plain body computes with the same 3x3 weights (v1), or with those weights halved (v2:
every sample is weighted by sigmoid(0) = 0.5). That checks the wiring of the stride, dilation
and groups of every deformable 3x3, for frozen BN and GroupNorm, bottlenecks and basic blocks.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from detbench.config import ConfigError, load_config
from detbench.config.defaults import get_cfg
from detbench.layers.dcn import DFConv2d
from detbench.modeling.backbone import STAGE_SPECS, build_resnet
from detbench.modeling.backbone.resnet import Bottleneck, DeformableSpec, ResNet, Stem
from detbench.modeling.detector import build_detection_model
from detbench.structures.bounding_box import BoxList
from detbench.structures.segmentation_mask import SegmentationMask

DCN_CONFIGS = sorted(
    (Path(__file__).resolve().parents[2] / "config" / "maskrcnn_benchmark_configs" / "dcn").glob("*.yaml")
)
# Bottlenecks a quarter of the usual width keep the test fast; the layout is R-50's / X-50's.
NARROW = dict(WIDTH_PER_GROUP=16, RES2_OUT_CHANNELS=64, STEM_OUT_CHANNELS=32)
BODIES = {
    # name: (CONV_BODY, MODEL.RESNETS overrides)
    "R-50 frozen BN, dilated res5": ("R-50-C5", dict(RES5_DILATION=2, **NARROW)),
    "X-50 4x8 GN, stride on the 3x3": ("R-50-FPN", dict(
        STEM_FUNC="StemWithGN", TRANS_FUNC="BottleneckWithGN", NUM_GROUPS=4, WIDTH_PER_GROUP=8,
        RES2_OUT_CHANNELS=64, STEM_OUT_CHANNELS=32, STRIDE_IN_1X1=False)),
    "R-18 basic blocks frozen BN": ("R-18-FPN", dict(TRANS_FUNC="BasicBlockWithFixedBatchNorm", RES2_OUT_CHANNELS=64)),
    "R-18 basic blocks GN": ("R-18-FPN", dict(
        STEM_FUNC="StemWithGN", TRANS_FUNC="BasicBlockWithGN", RES2_OUT_CHANNELS=64)),
}
pytestmark = pytest.mark.usefixtures("native_cpu_convolutions")  # see tests/conftest.py


def _cfg(conv_body: str, **resnets):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.CONV_BODY, cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT = conv_body, 0
    cfg.MODEL.RESNETS.update(resnets)
    return cfg


def _randomise_norms(body: nn.Module) -> None:
    """Non-trivial frozen BN statistics and GN affine parameters, so that a wrong wiring shows."""
    g = torch.Generator().manual_seed(5)
    for name, buffer in list(body.named_buffers()) + list(body.named_parameters()):
        if "bn" in name or "downsample.1" in name:
            with torch.no_grad():
                buffer.copy_(torch.rand(buffer.shape, generator=g) + 0.5)


@pytest.mark.parametrize("body_name", list(BODIES))
@pytest.mark.parametrize("modulated", [False, True])
def test_zero_offsets_compute_the_plain_body(body_name, modulated):
    conv_body, resnets = BODIES[body_name]
    torch.manual_seed(0)
    plain = build_resnet(_cfg(conv_body, **resnets)).eval()
    _randomise_norms(plain)
    dcn = build_resnet(_cfg(conv_body, STAGE_WITH_DCN=(False, True, False, True), WITH_MODULATED_DCN=modulated,
                            DEFORMABLE_GROUPS=2, **resnets)).eval()
    factor = 0.5 if modulated else 1.0
    state = {}
    for key, value in plain.state_dict().items():
        deformable = key.startswith(("layer2.", "layer4.")) and key.endswith(".conv2.weight")
        state[key.replace(".conv2.weight", ".conv2.conv.weight") if deformable else key] = value
    # the offset convs keep their zero start; conv2.conv.weight is the plain 3x3 (halved for v2)
    missing, unexpected = dcn.load_state_dict(state, strict=False)
    assert not unexpected and missing and all(".conv2.offset." in k for k in missing)
    with torch.no_grad():
        for name, module in dcn.named_modules():
            if isinstance(module, DFConv2d):
                module.conv.weight.mul_(1 / factor)
                assert name.startswith(("layer2.", "layer4."))
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        for got, expected in zip(dcn(x), plain(x)):
            assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_only_the_chosen_stages_are_deformable():
    cfg = _cfg("R-50-FPN", STAGE_WITH_DCN=(False, True, True, True), WITH_MODULATED_DCN=True, DEFORMABLE_GROUPS=4)
    body = build_resnet(cfg)
    assert not any(isinstance(m, DFConv2d) for m in body.layer1.modules())
    for i in (2, 3, 4):
        for block in getattr(body, f"layer{i}"):
            assert isinstance(block.conv2, DFConv2d)
            assert block.conv2.offset.out_channels == 4 * 27  # offsets and mask per deformable group
            assert block.conv2.conv.stride == block.conv2.offset.stride
    assert body.layer2[0].conv2.conv.stride == (1, 1)  # STRIDE_IN_1X1: the stride is on the 1x1
    assert not body.layer2[0].conv2.offset.weight.any()


def test_block_factories_without_the_keyword_still_work():
    """``deformable`` reaches a block factory only in the stages that ask for it."""
    calls = []

    def block(*args, **kwargs):
        calls.append("deformable" in kwargs)
        return Bottleneck(*args, **kwargs)

    ResNet(Stem(), block, STAGE_SPECS["R-50-C4"])
    assert calls == [False] * 13
    calls.clear()
    ResNet(Stem(), block, STAGE_SPECS["R-50-C4"], stage_with_dcn=(False, True, False, False),
           deformable=DeformableSpec(modulated=True))
    assert calls == [False] * 3 + [True] * 4 + [False] * 6


@pytest.mark.parametrize("override, message", [
    (["MODEL.RESNETS.STAGE_WITH_DCN", "(False, True)"], r"MODEL\.RESNETS\.STAGE_WITH_DCN = \(False, True\)"),
    (["MODEL.RESNETS.DEFORMABLE_GROUPS", "0"], r"MODEL\.RESNETS\.DEFORMABLE_GROUPS = 0: must be an integer >= 1"),
    (["MODEL.RESNETS.STAGE_WITH_DCN", "(True, False, False, False)", "MODEL.RESNETS.DEFORMABLE_GROUPS", "5"],
     r"DEFORMABLE_GROUPS = 5: must be a divisor of the 64 input channels of the res2 3x3"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["MODEL.DEVICE", "cpu", *override])


def _targets(width: int, height: int) -> list[BoxList]:
    boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 60.0, 60.0]])
    target = BoxList(boxes, (width, height))
    target.add_field("labels", torch.tensor([1, 80]))
    polygons = [[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in boxes.tolist()]
    target.add_field("masks", SegmentationMask(polygons, (width, height)))
    return [target]


@pytest.mark.parametrize("config", DCN_CONFIGS, ids=[p.name for p in DCN_CONFIGS])
def test_dcn_config_trains_one_step(config):
    torch.manual_seed(0)
    cfg = load_config(config, [
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHT", "", "MODEL.RPN.PRE_NMS_TOP_N_TRAIN", "200",
        "MODEL.RPN.POST_NMS_TOP_N_TRAIN", "64", "MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN", "64",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
        # narrower than R-50 (same layout) to keep the step fast
        "MODEL.RESNETS.WIDTH_PER_GROUP", "16", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
        "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "64", "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", "128",
        "MODEL.ROI_MASK_HEAD.CONV_LAYERS", "(64, 64, 64, 64)",
    ])
    model = build_detection_model(cfg).train()
    deformable = [m for m in model.backbone.body.modules() if isinstance(m, DFConv2d)]
    assert len(deformable) == 4 + 6 + 3  # every block of res3, res4, res5
    assert all(m.modulated == cfg.MODEL.RESNETS.WITH_MODULATED_DCN for m in deformable)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    losses = model(torch.randn(1, 3, 64, 64), _targets(64, 64))
    for name, value in losses.items():
        assert math.isfinite(value.item()), f"{name} = {value}"
    sum(losses.values()).backward()
    grads = [m.offset.weight.grad for m in deformable]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    optimizer.step()
    assert any(m.offset.weight.any() for m in deformable), "the offset convs did not move"
