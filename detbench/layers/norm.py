"""Normalisation layers: frozen batch norm for fine-tuning, and a GroupNorm builder."""

from __future__ import annotations

import torch
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (all buffers, none trained).

    Computes ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` per
    channel, the same in training and evaluation. ``eps`` defaults to 1e-5, as in
    torchvision's ResNets; weights converted from Caffe2 (maskrcnn-benchmark) already
    fold the variance in and use ``running_var = 1``, where eps = 0 reproduces them exactly.

    Input and output: ``[N, C, H, W]``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        if num_features <= 0:
            raise ValueError(f"FrozenBatchNorm2d needs num_features > 0, got {num_features}")
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        # nn.BatchNorm2d checkpoints carry a step counter that has no meaning here.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)

    def scale_and_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(scale, shift)``, both [C], with ``forward(x) == x * scale + shift``."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_and_shift()
        # [C] -> [1, C, 1, 1] to broadcast over batch and spatial dimensions.
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Replace every ``nn.BatchNorm2d`` / ``SyncBatchNorm`` in ``module`` by a frozen copy.

        Returns the converted module (a new object when ``module`` itself is a batch norm).
        """
        if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            frozen = cls(module.num_features, module.eps)
            if module.affine:
                frozen.weight.copy_(module.weight.detach())
                frozen.bias.copy_(module.bias.detach())
            if module.track_running_stats:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
            return frozen
        for name, child in module.named_children():
            converted = cls.convert_frozen_batchnorm(child)
            if converted is not child:
                setattr(module, name, converted)
        return module


def conv2d_frozen_bn(x: torch.Tensor, conv: nn.Conv2d, bn: FrozenBatchNorm2d) -> torch.Tensor:
    """``bn(conv(x))`` as one convolution: [N, C_in, H, W] -> [N, C_out, H', W'].

    The frozen batch norm is an affine map per output channel, so it folds into the
    convolution: weight ``w * scale`` and bias ``b * scale + shift`` (``shift`` alone when
    the conv has no bias). The folded weight is recomputed on every call from the current
    tensors, so gradients reach ``conv.weight`` (and ``conv.bias``) exactly as through the
    unfolded pair, and loading new weights needs no refresh. This saves two full passes
    over the output (the multiply and the add of :meth:`FrozenBatchNorm2d.forward`) for
    one multiply over the much smaller weight. Forward hooks on ``bn`` do not run.
    """
    scale, shift = bn.scale_and_shift()
    # [C_out] -> [C_out, 1, 1, 1]: one factor per output channel, i.e. per filter.
    weight = conv.weight * scale.view(-1, 1, 1, 1).to(conv.weight.dtype)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return conv._conv_forward(x, weight, bias.to(conv.weight.dtype))


def group_norm(
    out_channels: int,
    num_groups: int = 32,
    dim_per_group: int = -1,
    eps: float = 1e-5,
    affine: bool = True,
) -> nn.GroupNorm:
    """A ``nn.GroupNorm`` over ``out_channels``, sized by exactly one of two rules.

    Either ``num_groups`` groups (``dim_per_group == -1``) or groups of
    ``dim_per_group`` channels (``num_groups == -1``); maskrcnn-benchmark's
    ``MODEL.GROUP_NORM.NUM_GROUPS`` / ``DIM_PER_GP``. The channels must divide evenly.
    """
    if (num_groups == -1) == (dim_per_group == -1):
        raise ValueError(
            f"group_norm: set exactly one of num_groups ({num_groups}) and dim_per_group "
            f"({dim_per_group}); the other must be -1"
        )
    if dim_per_group != -1:
        if dim_per_group <= 0 or out_channels % dim_per_group:
            raise ValueError(f"group_norm: {out_channels} channels cannot form groups of {dim_per_group}")
        num_groups = out_channels // dim_per_group
    elif num_groups <= 0 or out_channels % num_groups:
        raise ValueError(f"group_norm: {out_channels} channels cannot be split into {num_groups} groups")
    return nn.GroupNorm(num_groups, out_channels, eps=eps, affine=affine)
