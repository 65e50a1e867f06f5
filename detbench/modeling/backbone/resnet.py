"""ResNet / ResNeXt bodies and the res5 RoI head, described by StageSpec tables.

Layout and parameter names follow maskrcnn-benchmark (``stem.conv1``, ``stem.bn1``,
``layer1.0.conv1`` ... ``layer4.2.bn3``, ``layerN.0.downsample.0/1``), which are also
torchvision's names inside each stage, so torchvision ResNet weights load by renaming
``conv1``/``bn1`` to ``stem.conv1``/``stem.bn1``. Stage ``index`` 1..4 is ``layer1``..``layer4``
(res2..res5 in the papers); the stem has stride 4 and every stage after the first halves
the resolution, except a dilated res5.

ResNet-18/34 use basic blocks (two 3x3 convs named ``conv1/bn1/conv2/bn2``, as torchvision's
``BasicBlock``), chosen by MODEL.RESNETS.TRANS_FUNC; their stages output 64, 128, 256, 512 channels.

Deformable convolutions (MODEL.RESNETS.STAGE_WITH_DCN, as maskrcnn-benchmark): in the chosen
stages of the body, each block's ``conv2`` (the bottleneck's 3x3; a basic block's second 3x3)
is a :class:`~detbench.layers.dcn.DFConv2d` with the same channels, groups, stride and
dilation; its parameters are ``conv2.conv.weight`` and ``conv2.offset.{weight,bias}``. The
res5 head of the C4 models stays plain, as in maskrcnn-benchmark.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from detbench.layers import FrozenBatchNorm2d
from detbench.layers.dcn import DFConv2d
from detbench.layers.norm import conv2d_frozen_bn
from detbench.modeling.utils import group_norm_factory
from detbench.utils.registry import Registry

# A normalisation layer for a given number of channels.
NormFactory = Callable[[int], nn.Module]
# A block: (in_channels, bottleneck_channels, out_channels, *, num_groups, stride_in_1x1,
# stride, dilation[, deformable]) -> nn.Module mapping [N, in, H, W] -> [N, out, H/stride, W/stride];
# ``deformable`` (a DeformableSpec) is passed only to blocks of stages with deformable convolutions.
BlockFactory = Callable[..., nn.Module]

# STEMS: name -> builder(cfg) -> stem module with ``out_channels``; [N, 3, H, W] -> [N, C, ~H/4, ~W/4].
STEMS = Registry("STEMS")
# BOTTLENECKS: name -> builder(cfg) -> BlockFactory (see above).
BOTTLENECKS = Registry("BOTTLENECKS")


class DeformableSpec(NamedTuple):
    """How a block's 3x3 conv is made deformable: v2 (``modulated``) or v1, and its deformable groups."""

    modulated: bool = False
    deformable_groups: int = 1


def conv3x3(
    in_channels: int,
    out_channels: int,
    *,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    deformable: DeformableSpec | None = None,
) -> nn.Module:
    """A bias-free 3x3 conv keeping the size at H / stride (padding = dilation): nn.Conv2d (the
    block initialises it, see :func:`_kaiming_init`), or a DFConv2d with zero offsets when
    ``deformable`` is given."""
    if deformable is not None:
        return DFConv2d(
            in_channels, out_channels, modulated=deformable.modulated, kernel_size=3, stride=stride,
            dilation=dilation, groups=groups, deformable_groups=deformable.deformable_groups, bias=False,
        )
    return nn.Conv2d(
        in_channels, out_channels, kernel_size=3, stride=stride, padding=dilation, dilation=dilation,
        groups=groups, bias=False,
    )


class StageSpec(NamedTuple):
    """One ResNet stage: ``index`` 1..4 (layer1..layer4), its number of blocks, whether it is an output."""

    index: int
    block_count: int
    return_features: bool


# Blocks per stage of each depth. The table only counts blocks: the block type comes from
# MODEL.RESNETS.TRANS_FUNC, so "R-18"/"R-34" are ResNet-18/34 only with a BasicBlock* entry
# (with a bottleneck, "R-34" has R-50's layout).
_BLOCKS_PER_STAGE = {
    "R-18": (2, 2, 2, 2),
    "R-34": (3, 4, 6, 3),
    "R-50": (3, 4, 6, 3),
    "R-101": (3, 4, 23, 3),
    "R-152": (3, 8, 36, 3),
}


def conv_norm(x: torch.Tensor, conv: nn.Module, norm: nn.Module) -> torch.Tensor:
    """``norm(conv(x))``; a FrozenBatchNorm2d after an nn.Conv2d is folded into it (one pass, same result)."""
    if isinstance(norm, FrozenBatchNorm2d) and isinstance(conv, nn.Conv2d):
        return conv2d_frozen_bn(x, conv, norm)
    return norm(conv(x))


def _stage_specs(blocks: tuple[int, ...], last_index: int, every_stage: bool) -> tuple[StageSpec, ...]:
    return tuple(StageSpec(i, blocks[i - 1], every_stage or i == last_index) for i in range(1, last_index + 1))


# C4: stages up to res4, output res4; C5: up to res5, output res5; FPN: all four stages are outputs.
STAGE_SPECS: dict[str, tuple[StageSpec, ...]] = {
    f"{depth}-{kind}": _stage_specs(blocks, last_index, kind == "FPN")
    for depth, blocks in _BLOCKS_PER_STAGE.items()
    for kind, last_index in (("C4", 3), ("C5", 4), ("FPN", 4))
}
# RetinaNet (maskrcnn-benchmark's "-FPN-RETINANET"): all four stages, res3..res5 (C3..C5) are outputs.
STAGE_SPECS.update({
    f"{depth}-FPN-RETINANET": tuple(StageSpec(i, blocks[i - 1], i >= 2) for i in range(1, 5))
    for depth, blocks in _BLOCKS_PER_STAGE.items()
})


class Stem(nn.Module):
    """conv1 7x7 stride 2 + norm + ReLU + 3x3 stride 2 max pool: [N, 3, H, W] -> [N, C, H', W'].

    H' = ceil(ceil(H / 2) / 2) for the paddings used (3 for the conv, 1 for the pool).
    """

    def __init__(self, out_channels: int = 64, norm: NormFactory = FrozenBatchNorm2d, in_channels: int = 3):
        super().__init__()
        self.out_channels = out_channels
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm(out_channels)
        nn.init.kaiming_uniform_(self.conv1.weight, a=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(conv_norm(x, self.conv1, self.bn1))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (grouped, dilated) -> 1x1 residual block: [N, in, H, W] -> [N, out, H/s, W/s].

    ``stride_in_1x1`` puts the stride on the first 1x1 conv (MSRA/Caffe2 weights) instead of
    the 3x3 (torchvision). A projection shortcut (``downsample``) is added when the channel
    count changes, which is the case for the first block of every stage. With ``deformable``
    the 3x3 is a deformable conv (see :func:`conv3x3`).
    """

    def __init__(
        self,
        in_channels: int,
        bottleneck_channels: int,
        out_channels: int,
        *,
        num_groups: int = 1,
        stride_in_1x1: bool = True,
        stride: int = 1,
        dilation: int = 1,
        norm: NormFactory = FrozenBatchNorm2d,
        deformable: DeformableSpec | None = None,
    ) -> None:
        super().__init__()
        self.downsample = _shortcut(in_channels, out_channels, stride, norm)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, bottleneck_channels, kernel_size=1, stride=stride_1x1, bias=False)
        self.bn1 = norm(bottleneck_channels)
        self.conv2 = conv3x3(
            bottleneck_channels, bottleneck_channels, stride=stride_3x3, dilation=dilation, groups=num_groups,
            deformable=deformable,
        )
        self.bn2 = norm(bottleneck_channels)
        self.conv3 = nn.Conv2d(bottleneck_channels, out_channels, kernel_size=1, bias=False)
        self.bn3 = norm(out_channels)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(conv_norm(x, self.conv1, self.bn1))
        out = F.relu_(conv_norm(out, self.conv2, self.bn2))
        out = conv_norm(out, self.conv3, self.bn3)
        # In place: neither a convolution (frozen BN folded in) nor GroupNorm needs its output for backward.
        return F.relu_(out.add_(_shortcut_forward(self.downsample, x)))


def _kaiming_init(block: nn.Module) -> None:
    """Kaiming-uniform (a=1) weights for a block's plain convolutions, in module order; a
    DFConv2d keeps its own initialisation (its offset conv must stay zero)."""
    deformable = {id(m) for d in block.modules() if isinstance(d, DFConv2d) for m in d.modules()}
    for m in block.modules():
        if isinstance(m, nn.Conv2d) and id(m) not in deformable:
            nn.init.kaiming_uniform_(m.weight, a=1)


def _shortcut(in_channels: int, out_channels: int, stride: int, norm: NormFactory) -> nn.Module | None:
    """1x1 projection (+ norm) when a block changes the channel count or the size; None for identity."""
    if in_channels == out_channels and stride == 1:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False), norm(out_channels)
    )


def _shortcut_forward(downsample: nn.Sequential | None, x: torch.Tensor) -> torch.Tensor:
    """The shortcut branch of a block: ``x`` itself, or its projection (conv at .0, norm at .1)."""
    return x if downsample is None else conv_norm(x, downsample[0], downsample[1])


class BasicBlock(nn.Module):
    """3x3 -> 3x3 residual block of ResNet-18/34: [N, in, H, W] -> [N, out, H/s, W/s].

    The stride sits on the first 3x3 conv, as in torchvision, so ``stride_in_1x1`` has no
    effect (there is no 1x1 conv). There is no bottleneck either: ``bottleneck_channels``
    must equal ``out_channels`` and ``num_groups`` must be 1; both are accepted only so
    that the block has the same signature as :class:`Bottleneck`. ``dilation`` dilates
    both 3x3 convs. A projection shortcut is added when the channels or the size change.
    With ``deformable`` the second 3x3 (``conv2``, the one without the stride, as the
    bottleneck's ``conv2`` keeps the stride on the 1x1 in MSRA weights) is a deformable conv.
    """

    def __init__(
        self,
        in_channels: int,
        bottleneck_channels: int,
        out_channels: int,
        *,
        num_groups: int = 1,
        stride_in_1x1: bool = True,
        stride: int = 1,
        dilation: int = 1,
        norm: NormFactory = FrozenBatchNorm2d,
        deformable: DeformableSpec | None = None,
    ) -> None:
        super().__init__()
        if num_groups != 1 or bottleneck_channels != out_channels:
            raise ValueError(
                f"BasicBlock has no groups and no bottleneck: got num_groups={num_groups}, "
                f"bottleneck_channels={bottleneck_channels}, out_channels={out_channels}"
            )
        self.downsample = _shortcut(in_channels, out_channels, stride, norm)
        self.conv1 = conv3x3(in_channels, out_channels, stride=stride, dilation=dilation)
        self.bn1 = norm(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels, dilation=dilation, deformable=deformable)
        self.bn2 = norm(out_channels)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(conv_norm(x, self.conv1, self.bn1))
        out = conv_norm(out, self.conv2, self.bn2)
        # In place: neither a convolution (frozen BN folded in) nor GroupNorm needs its output for backward.
        return F.relu_(out.add_(_shortcut_forward(self.downsample, x)))


def frozen_bn_factory(cfg) -> NormFactory:
    """FrozenBatchNorm2d with eps from MODEL.RESNETS.FROZEN_BN_EPSILON."""
    return partial(FrozenBatchNorm2d, eps=cfg.MODEL.RESNETS.FROZEN_BN_EPSILON)


@STEMS.register("StemWithFixedBatchNorm")
def stem_with_frozen_bn(cfg) -> Stem:
    return Stem(cfg.MODEL.RESNETS.STEM_OUT_CHANNELS, norm=frozen_bn_factory(cfg))


@STEMS.register("StemWithGN")
def stem_with_gn(cfg) -> Stem:
    return Stem(cfg.MODEL.RESNETS.STEM_OUT_CHANNELS, norm=group_norm_factory(cfg))


@BOTTLENECKS.register("BottleneckWithFixedBatchNorm")
def bottleneck_with_frozen_bn(cfg) -> BlockFactory:
    return partial(Bottleneck, norm=frozen_bn_factory(cfg))


@BOTTLENECKS.register("BottleneckWithGN")
def bottleneck_with_gn(cfg) -> BlockFactory:
    return partial(Bottleneck, norm=group_norm_factory(cfg))


def check_basic_block_widths(cfg) -> None:
    """Raise ValueError unless the widths in MODEL.RESNETS suit basic blocks (ResNet-18/34).

    A basic block's width is its output, so RES2_OUT_CHANNELS must equal NUM_GROUPS *
    WIDTH_PER_GROUP with NUM_GROUPS 1: 64 with the default WIDTH_PER_GROUP. The widths are
    checked, not derived, so that the config states the channels the model really has.
    """
    r = cfg.MODEL.RESNETS
    if r.NUM_GROUPS != 1 or r.RES2_OUT_CHANNELS != r.WIDTH_PER_GROUP:
        raise ValueError(
            f"MODEL.RESNETS.TRANS_FUNC '{r.TRANS_FUNC}' has no bottleneck: it needs MODEL.RESNETS.NUM_GROUPS 1 "
            f"and MODEL.RESNETS.RES2_OUT_CHANNELS equal to MODEL.RESNETS.WIDTH_PER_GROUP (64 for ResNet-18/34), "
            f"got NUM_GROUPS {r.NUM_GROUPS}, RES2_OUT_CHANNELS {r.RES2_OUT_CHANNELS}, "
            f"WIDTH_PER_GROUP {r.WIDTH_PER_GROUP}"
        )


@BOTTLENECKS.register("BasicBlockWithFixedBatchNorm")
def basic_block_with_frozen_bn(cfg) -> BlockFactory:
    check_basic_block_widths(cfg)
    return partial(BasicBlock, norm=frozen_bn_factory(cfg))


@BOTTLENECKS.register("BasicBlockWithGN")
def basic_block_with_gn(cfg) -> BlockFactory:
    check_basic_block_widths(cfg)
    return partial(BasicBlock, norm=group_norm_factory(cfg))


def stage_channels(index: int, res2_out_channels: int, num_groups: int, width_per_group: int) -> tuple[int, int]:
    """(bottleneck, output) channels of stage ``index``; both double at every stage after res2.

    Basic blocks have no bottleneck: their builders require the two to be equal.
    """
    factor = 2 ** (index - 1)
    return num_groups * width_per_group * factor, res2_out_channels * factor


def make_stage(
    block: BlockFactory,
    in_channels: int,
    bottleneck_channels: int,
    out_channels: int,
    block_count: int,
    *,
    num_groups: int,
    stride_in_1x1: bool,
    first_stride: int,
    dilation: int = 1,
    deformable: DeformableSpec | None = None,
) -> nn.Sequential:
    """``block_count`` blocks; only the first changes channels and applies ``first_stride``.

    ``deformable`` makes every block's 3x3 conv deformable; it is passed to the block factory
    only when given, so factories that know nothing of deformable convolutions keep working.
    """
    extra = {} if deformable is None else {"deformable": deformable}
    blocks = []
    for i in range(block_count):
        blocks.append(
            block(
                in_channels, bottleneck_channels, out_channels, num_groups=num_groups,
                stride_in_1x1=stride_in_1x1, stride=first_stride if i == 0 else 1, dilation=dilation, **extra,
            )
        )
        in_channels = out_channels
    return nn.Sequential(*blocks)


def _first_stride(index: int, dilation: int) -> int:
    # res2 keeps the stem's resolution; a dilated stage keeps its input's resolution too.
    return 1 if index == 1 or dilation > 1 else 2


class ResNet(nn.Module):
    """Stem + stages ``layer1..layerK``: [N, 3, H, W] -> list of the outputs of the returned stages.

    Attributes ``out_channels`` and ``strides`` (tuples, one entry per returned stage) describe the
    outputs, highest resolution first. ``freeze_at`` stops gradients to the first parts: 0 nothing,
    1 the stem, 2 the stem and layer1, ... 5 everything. ``res5_dilation`` > 1 dilates every 3x3
    conv of layer4 and drops its stride (maskrcnn-benchmark and detectron2; torchvision's
    ``replace_stride_with_dilation`` keeps dilation 1 in the stage's first block instead).
    ``stage_with_dcn`` (one bool per layer1..layer4) makes the 3x3 convs of those stages
    deformable as ``deformable`` says (see :class:`DeformableSpec`).
    """

    def __init__(
        self,
        stem: nn.Module,
        block: BlockFactory,
        stages: tuple[StageSpec, ...],
        *,
        num_groups: int = 1,
        width_per_group: int = 64,
        stride_in_1x1: bool = True,
        res2_out_channels: int = 256,
        res5_dilation: int = 1,
        freeze_at: int = 0,
        stage_with_dcn: tuple[bool, bool, bool, bool] = (False, False, False, False),
        deformable: DeformableSpec = DeformableSpec(),
    ) -> None:
        super().__init__()
        consecutive = [s.index for s in stages] == list(range(1, len(stages) + 1))
        if not consecutive or not any(s.return_features for s in stages):
            raise ValueError(f"ResNet stages must be layer1, layer2, ... with at least one output, got {stages}")
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"freeze_at (MODEL.BACKBONE.FREEZE_CONV_BODY_AT) must be in [0, 5], got {freeze_at}")
        if len(stage_with_dcn) != 4:
            raise ValueError(f"stage_with_dcn (MODEL.RESNETS.STAGE_WITH_DCN) needs 4 entries, got {stage_with_dcn}")
        self.stem = stem
        in_channels, stride = stem.out_channels, 4  # the stem's conv and pool each halve H and W
        self._returned: list[str] = []
        out_channels, strides = [], []
        for spec in stages:
            bottleneck, out = stage_channels(spec.index, res2_out_channels, num_groups, width_per_group)
            dilation = res5_dilation if spec.index == 4 else 1
            first_stride = _first_stride(spec.index, dilation)
            name = f"layer{spec.index}"
            self.add_module(name, make_stage(
                block, in_channels, bottleneck, out, spec.block_count, num_groups=num_groups,
                stride_in_1x1=stride_in_1x1, first_stride=first_stride, dilation=dilation,
                deformable=deformable if stage_with_dcn[spec.index - 1] else None,
            ))
            in_channels, stride = out, stride * first_stride
            if spec.return_features:
                self._returned.append(name)
                out_channels.append(out)
                strides.append(stride)
        self._stage_names = [f"layer{s.index}" for s in stages]
        self.out_channels: tuple[int, ...] = tuple(out_channels)
        self.strides: tuple[int, ...] = tuple(strides)
        self._freeze(freeze_at)

    def _freeze(self, freeze_at: int) -> None:
        parts = [self.stem] + [getattr(self, name) for name in self._stage_names]
        for part in parts[:freeze_at]:
            for p in part.parameters():
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for name in self._stage_names:
            x = getattr(self, name)(x)
            if name in self._returned:
                outputs.append(x)
        return outputs


def _check_block_type(conv_body: str, trans_func: str) -> None:
    """ResNet-18/34 are made of basic blocks, deeper ResNets of bottlenecks; refuse a mix-up."""
    shallow = conv_body.split("-")[:2] in (["R", "18"], ["R", "34"])
    if shallow != trans_func.startswith("BasicBlock"):
        wanted = "a BasicBlock* entry" if shallow else "a Bottleneck* entry"
        raise ValueError(
            f"MODEL.BACKBONE.CONV_BODY {conv_body} needs {wanted} in MODEL.RESNETS.TRANS_FUNC, got {trans_func}"
            + (" (and MODEL.RESNETS.RES2_OUT_CHANNELS 64)" if shallow else "")
        )


def build_resnet(cfg, conv_body: str | None = None) -> ResNet:
    """The ResNet body for ``conv_body`` (default MODEL.BACKBONE.CONV_BODY), a key of STAGE_SPECS."""
    conv_body = conv_body or cfg.MODEL.BACKBONE.CONV_BODY
    if conv_body not in STAGE_SPECS:
        known = ", ".join(sorted(STAGE_SPECS))
        raise KeyError(f"No ResNet stage table for '{conv_body}' (MODEL.BACKBONE.CONV_BODY); known: {known}")
    r = cfg.MODEL.RESNETS
    _check_block_type(conv_body, r.TRANS_FUNC)
    stem = STEMS.get(r.STEM_FUNC, config_key="MODEL.RESNETS.STEM_FUNC")(cfg)
    block = BOTTLENECKS.get(r.TRANS_FUNC, config_key="MODEL.RESNETS.TRANS_FUNC")(cfg)
    return ResNet(
        stem, block, STAGE_SPECS[conv_body], num_groups=r.NUM_GROUPS, width_per_group=r.WIDTH_PER_GROUP,
        stride_in_1x1=r.STRIDE_IN_1X1, res2_out_channels=r.RES2_OUT_CHANNELS, res5_dilation=r.RES5_DILATION,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT, stage_with_dcn=tuple(r.STAGE_WITH_DCN),
        deformable=DeformableSpec(r.WITH_MODULATED_DCN, r.DEFORMABLE_GROUPS),
    )


class ResNetHead(nn.Module):
    """The res5 stage alone, applied to pooled RoI features by the C4 RoI heads.

    [K, in, h, w] -> [K, out, h / s, w / s] with s = 2 (1 when ``dilation`` > 1); in = out / 2,
    for R-50 1024 -> 2048, for R-18/34 (basic blocks) 256 -> 512. The stage is the attribute
    ``layer4``, as in the body.
    """

    def __init__(
        self,
        block: BlockFactory,
        *,
        block_count: int = 3,
        num_groups: int = 1,
        width_per_group: int = 64,
        stride_in_1x1: bool = True,
        res2_out_channels: int = 256,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        bottleneck, out = stage_channels(4, res2_out_channels, num_groups, width_per_group)
        self.in_channels, self.out_channels = out // 2, out  # res4 has half of res5's channels
        self.layer4 = make_stage(
            block, self.in_channels, bottleneck, out, block_count, num_groups=num_groups,
            stride_in_1x1=stride_in_1x1, first_stride=_first_stride(4, dilation), dilation=dilation,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(x)


def res5_block_count(conv_body: str) -> int:
    """Blocks in res5 of the depth named by ``conv_body`` ("R-18-C4" -> 2); 3 for a name without a table."""
    depth = conv_body.rsplit("-", 1)[0]  # "R-101-C4" -> "R-101"
    # Every depth but R-18 has 3 blocks in res5; 3 is maskrcnn-benchmark's fixed head size.
    return _BLOCKS_PER_STAGE[depth][3] if depth in _BLOCKS_PER_STAGE else 3


def make_resnet_head(cfg, dilation: int = 1) -> ResNetHead:
    """res5 of MODEL.BACKBONE.CONV_BODY's depth (stride 2 unless dilated) with the body's block type and widths."""
    r = cfg.MODEL.RESNETS
    block = BOTTLENECKS.get(r.TRANS_FUNC, config_key="MODEL.RESNETS.TRANS_FUNC")(cfg)
    return ResNetHead(
        block, block_count=res5_block_count(cfg.MODEL.BACKBONE.CONV_BODY), num_groups=r.NUM_GROUPS,
        width_per_group=r.WIDTH_PER_GROUP, stride_in_1x1=r.STRIDE_IN_1X1, res2_out_channels=r.RES2_OUT_CHANNELS,
        dilation=dilation,
    )
