"""The backbone's speed-ups keep its numbers: frozen batch norms folded into the convolutions of
the residual blocks and the stem, the in-place residual addition, and channels-last on CPU."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from detbench.config.defaults import get_cfg
from detbench.layers import FrozenBatchNorm2d
from detbench.modeling.backbone import build_backbone
from detbench.modeling.backbone.backbone import to_conv_layout
from detbench.modeling.backbone.resnet import BasicBlock, Bottleneck, Stem


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random frozen-BN statistics (variance far from 1), so that an unfolded scale would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, FrozenBatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g, dtype=m.weight.dtype) + 0.5)
                m.bias.copy_(0.2 * torch.randn(c, generator=g, dtype=m.weight.dtype))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g, dtype=m.weight.dtype))
                m.running_var.copy_(torch.rand(c, generator=g, dtype=m.weight.dtype) * 2 + 0.2)
    return module


def _bottleneck_reference(block: Bottleneck, x: torch.Tensor) -> torch.Tensor:
    """The block as written before the folding: conv, then the FrozenBatchNorm2d module, out of place."""
    out = F.relu(block.bn1(block.conv1(x)))
    out = F.relu(block.bn2(block.conv2(out)))
    out = block.bn3(block.conv3(out))
    identity = x if block.downsample is None else block.downsample[1](block.downsample[0](x))
    return F.relu(out + identity)


def _basic_reference(block: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    out = F.relu(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    identity = x if block.downsample is None else block.downsample[1](block.downsample[0](x))
    return F.relu(out + identity)


def _stem_reference(stem: Stem, x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(F.relu(stem.bn1(stem.conv1(x))), kernel_size=3, stride=2, padding=1)


BLOCKS = {
    "bottleneck-stride2": (lambda: Bottleneck(8, 4, 16, stride=2, stride_in_1x1=False), _bottleneck_reference, 8),
    "bottleneck-identity": (lambda: Bottleneck(16, 4, 16, num_groups=2, dilation=2), _bottleneck_reference, 16),
    "basic-stride2": (lambda: BasicBlock(8, 16, 16, stride=2), _basic_reference, 8),
    "stem": (lambda: Stem(8), _stem_reference, 3),
}


@pytest.mark.parametrize("name", list(BLOCKS))
def test_blocks_equal_the_unfolded_computation(name):
    build, reference, in_channels = BLOCKS[name]
    torch.manual_seed(0)
    block = _randomise(build().double())
    x = torch.randn(2, in_channels, 15, 13, dtype=torch.float64, requires_grad=True)
    grad_out = None
    results = []
    for fn in (block, lambda t: reference(block, t)):
        block.zero_grad(set_to_none=True)
        x.grad = None
        y = fn(x)
        grad_out = torch.randn_like(y) if grad_out is None else grad_out
        y.backward(grad_out)
        results.append((y.detach(), x.grad, [p.grad for p in block.parameters()]))
    (y, gx, gp), (y_ref, gx_ref, gp_ref) = results
    assert_close(y, y_ref)
    assert_close(gx, gx_ref)
    assert len(gp) == len(gp_ref) > 0
    for got, expected in zip(gp, gp_ref):
        assert_close(got, expected)


def _onednn_off():
    """torch.backends.mkldnn disabled, without the TF32 warning that toggling it prints."""
    warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
    return torch.backends.mkldnn.flags(enabled=False)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
def test_conv_layout_is_channels_last_with_onednn_only():
    x = torch.randn(1, 3, 8, 8)
    assert to_conv_layout(x).is_contiguous(memory_format=torch.channels_last)
    assert_close(to_conv_layout(x), x)
    with warnings.catch_warnings(), _onednn_off():
        assert to_conv_layout(x) is x
    single = x[0]
    assert to_conv_layout(single) is single  # not a batch: unchanged


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
def test_fpn_backbone_channels_last_equals_contiguous():
    cfg = get_cfg()  # R-18 keeps oneDNN's per-shape set-up short; the blocks are tested above
    cfg.MODEL.BACKBONE.CONV_BODY = "R-18-FPN"
    cfg.MODEL.RESNETS.TRANS_FUNC = "BasicBlockWithFixedBatchNorm"
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS = 64
    torch.manual_seed(0)
    backbone = _randomise(build_backbone(cfg)).eval()
    x = torch.randn(1, 3, 72, 100)
    with torch.no_grad():
        got = backbone(x)
        expected = backbone.fpn(backbone.body(x.contiguous()))  # the same modules on NCHW tensors
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    assert not expected[0].is_contiguous(memory_format=torch.channels_last)
    for g, e in zip(got, expected):
        assert_close(g, e, rtol=1e-4, atol=1e-4 * e.abs().max().item())


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
def test_cpu_detector_keeps_backbone_and_rpn_conv_weights_channels_last():
    from detbench.config import load_config
    from detbench.modeling.backbone.backbone import conv_weights_to_conv_layout
    from detbench.modeling.detector import build_detection_model

    cfg = load_config("configs/quickstart/mask_rcnn_R_18_FPN_shapes_sgd.yaml", ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_detection_model(cfg)
    convs = [m for part in (model.backbone, model.rpn) for m in part.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert all(c.weight.is_contiguous() for c in model.roi_heads.modules() if isinstance(c, nn.Conv2d))
    # Same values and names; a state dict loads into an NCHW model and back.
    torch.manual_seed(0)
    with warnings.catch_warnings(), _onednn_off():
        plain = build_detection_model(cfg)  # to_conv_layout is the identity without oneDNN
    assert all(m.weight.is_contiguous() for m in plain.backbone.modules() if isinstance(m, nn.Conv2d))
    for (name, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # trained-looking weights: not the initialisation
    plain.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 64, 96)
    model.eval(), plain.eval()
    with torch.no_grad():
        got = model.backbone(x)
        expected = plain.backbone.fpn(plain.backbone.body(x))
    for g, e in zip(got, expected):
        assert_close(g, e, rtol=1e-4, atol=1e-4 * e.abs().max().item())
    # Idempotent, and the gradient keeps the weight's layout (no per-step conversion back).
    conv = convs[0]
    assert conv_weights_to_conv_layout(model.backbone) is model.backbone and conv.weight.is_contiguous(memory_format=torch.channels_last)
    model.train()
    sum(f.sum() for f in model.backbone(x)).backward()
    assert conv.weight.grad.is_contiguous(memory_format=torch.channels_last)
