"""MobileNetV2 and MobileNetV3-Large bodies (torchvision's networks), alone or under an FPN.

The body holds torchvision's ``features`` Sequential (built with ``weights=None``; weights come
through MODEL.WEIGHT) and returns the outputs of some of its *stages*, counted as torchvision's
``_mobilenet_extractor`` counts them: stage 0 ends at ``features[0]`` (the stem), stage k at
the k-th block that halves the resolution (``_is_cn``), the last stage at ``features[-1]``; both
networks have 6 stages. Registered bodies (MODEL.BACKBONE.CONV_BODY):

* ``MobileNetV2`` / ``MobileNetV3-Large``: the last stage only, as the fine-tuning tutorial's
  ``mobilenet_v2(...).features`` (1280 channels; 960 for V3-Large), stride 32.
* ``MobileNetV2-FPN`` / ``MobileNetV3-Large-FPN``: the last two stages (both stride 32) into an
  FPN with a max-pooled extra level, as ``fasterrcnn_mobilenet_v3_large_fpn``: strides (32, 32, 64).

MODEL.MOBILENET.NORM picks frozen batch norm (torchvision's detectors) or trained batch norm
(torchvision's classifiers, the tutorial); MODEL.BACKBONE.FREEZE_CONV_BODY_AT = 6 minus
torchvision's ``trainable_layers`` freezes the parameters of the first stages.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch
from torch import nn
from torchvision.models import mobilenet_v2, mobilenet_v3_large

from detbench.layers.norm import FrozenBatchNorm2d, conv2d_frozen_bn
from .backbone import BACKBONES, Backbone, max_pool_fpn

# CONV_BODY prefix -> torchvision builder of the classifier whose ``features`` make the body.
NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "MobileNetV2": mobilenet_v2,
    "MobileNetV3-Large": mobilenet_v3_large,
}
NORMS = ("FrozenBatchNorm2d", "BatchNorm2d")


def stage_ends(features: nn.Sequential) -> list[int]:
    """Index in ``features`` of the last module of each stage (torchvision's ``stage_indices``)."""
    strided = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)]
    return [0, *strided, len(features) - 1]


def _module_stride(module: nn.Module) -> int:
    """How much ``module`` reduces the resolution: the product of its convolutions' strides."""
    stride = 1
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            stride *= m.stride[0]
    return stride


class FoldedSequential(nn.Sequential):
    """nn.Sequential that runs each (Conv2d, FrozenBatchNorm2d) pair of its children as one
    convolution (:func:`conv2d_frozen_bn`): same values, one pass less over each output.
    Children keep their indices, so state-dict keys are those of the Sequential it replaces."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        children = list(self)
        i = 0
        while i < len(children):
            module = children[i]
            following = children[i + 1] if i + 1 < len(children) else None
            if isinstance(module, nn.Conv2d) and isinstance(following, FrozenBatchNorm2d):
                x = conv2d_frozen_bn(x, module, following)
                i += 2
            else:
                x = module(x)
                i += 1
        return x


def fold_frozen_batch_norm(module: nn.Module) -> nn.Module:
    """Every nn.Sequential below ``module`` with a (Conv2d, FrozenBatchNorm2d) pair becomes a
    FoldedSequential with the same children; returns ``module`` (replaced if it is one itself)."""
    for name, child in module.named_children():
        setattr(module, name, fold_frozen_batch_norm(child))
    if type(module) is not FoldedSequential and isinstance(module, nn.Sequential):
        children = list(module)
        if any(isinstance(a, nn.Conv2d) and isinstance(b, FrozenBatchNorm2d) for a, b in zip(children, children[1:])):
            return FoldedSequential(*children)
    return module


class MobileNetBody(nn.Module):
    """torchvision's MobileNet ``features``: [N, 3, H, W] -> the outputs of ``return_stages``.

    Output k is [N, out_channels[k], ceil(H / strides[k]), ceil(W / strides[k])]. Modules past the
    last returned stage are dropped. ``freeze_at`` (0 .. 6) stops the gradients of the first
    ``freeze_at`` stages' parameters (batch-norm statistics of trained batch norm still update
    in training, as in torchvision); 6 freezes the whole body.
    """

    def __init__(self, features: nn.Sequential, return_stages: Sequence[int], freeze_at: int = 0) -> None:
        super().__init__()
        ends = stage_ends(features)
        stages = tuple(int(k) for k in return_stages)
        if not stages or list(stages) != sorted(set(stages)) or stages[0] < 0 or stages[-1] >= len(ends):
            raise ValueError(f"MobileNet return stages must increase within [0, {len(ends) - 1}], got {stages}")
        if not 0 <= freeze_at <= len(ends):
            raise ValueError(f"MODEL.BACKBONE.FREEZE_CONV_BODY_AT for a MobileNet must be in [0, {len(ends)}], "
                             f"got {freeze_at}")
        self.return_indices = tuple(ends[k] for k in stages)
        self.features = features[: self.return_indices[-1] + 1]
        cumulative, stride = [], 1
        for block in self.features:
            stride *= _module_stride(block)
            cumulative.append(stride)
        self._strides = tuple(cumulative[i] for i in self.return_indices)
        self._out_channels = tuple(int(self.features[i].out_channels) for i in self.return_indices)
        frozen = len(features) if freeze_at == len(ends) else ends[freeze_at]
        for p in self.features[:frozen].parameters():
            p.requires_grad_(False)
        # After out_channels was read: torchvision's Conv2dNormActivation carries it, the fold drops it.
        for i, block in enumerate(self.features):
            self.features[i] = fold_frozen_batch_norm(block)

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels of each returned stage's output."""
        return self._out_channels

    @property
    def strides(self) -> tuple[int, ...]:
        """Input pixels per cell of each returned stage's output."""
        return self._strides

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self.return_indices:
                outputs.append(x)
        return outputs


def build_mobilenet_features(network: str, norm: str) -> nn.Sequential:
    """torchvision's ``features`` of ``network`` (a NETWORKS key), random weights, with ``norm``.

    "FrozenBatchNorm2d": detbench's, eps 1e-5 (torchvision's detectors pass
    ``torchvision.ops.FrozenBatchNorm2d``, also 1e-5); "BatchNorm2d": torchvision's own choice
    (eps 1e-5 for V2; eps 1e-3, momentum 0.01 for V3).
    """
    if norm not in NORMS:
        raise ValueError(f"MODEL.MOBILENET.NORM must be one of {NORMS}, got {norm!r}")
    norm_layer = FrozenBatchNorm2d if norm == "FrozenBatchNorm2d" else None
    return NETWORKS[network](weights=None, norm_layer=norm_layer).features


def _return_stages(cfg, default: tuple[int, ...]) -> tuple[int, ...]:
    chosen = tuple(cfg.MODEL.MOBILENET.RETURNED_STAGES)
    return chosen if chosen else default


def _body(cfg, network: str, default_stages: tuple[int, ...]) -> MobileNetBody:
    features = build_mobilenet_features(network, cfg.MODEL.MOBILENET.NORM)
    return MobileNetBody(features, _return_stages(cfg, default_stages), cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT)


def build_mobilenet_backbone(cfg, network: str) -> Backbone:
    """One level: the last stage (or the single MODEL.MOBILENET.RETURNED_STAGES entry)."""
    return Backbone(_body(cfg, network, (5,)))


def build_mobilenet_fpn_backbone(cfg, network: str) -> Backbone:
    """The last two stages (or MODEL.MOBILENET.RETURNED_STAGES) into an FPN of
    fpn_out_channels(cfg) channels with a max-pooled extra level."""
    body = _body(cfg, network, (4, 5))
    return Backbone(body, max_pool_fpn(cfg, body.out_channels))


for _network in NETWORKS:
    BACKBONES.register(_network, partial(build_mobilenet_backbone, network=_network))
    BACKBONES.register(f"{_network}-FPN", partial(build_mobilenet_fpn_backbone, network=_network))
