"""RoIPool (Fast R-CNN): max pooling of box regions into fixed-size bins.

The compiled kernels (``csrc/cpu``, ``csrc/cuda``) implement ``torch.ops.detbench.roi_pool``
(returning the pooled values and, per bin, the argmax pixel) and ``roi_pool_backward``
(which sends each bin's gradient to its argmax pixel); this module registers their fake
kernels and autograd. The bin rules are those of ``torchvision.ops.roi_pool``, stated in
:func:`detbench.layers.reference.roi_pool_reference`. ``roi_pool_backward`` is linear in
its gradient, so its own gradient (double backward) gathers at the argmax pixels.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from detbench import extension

from .roi_align import _pair, boxes_to_rois

__all__ = ["ROIPool", "roi_pool"]


def roi_pool(
    input: torch.Tensor,
    rois: torch.Tensor | list[torch.Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
) -> torch.Tensor:
    """Max-pools every RoI of ``rois`` from ``input`` into ``output_size`` bins.

    Args:
        input: features ``[N, C, H, W]`` (float32/float64; float16/bfloat16 on CUDA).
        rois: ``[K, 5]`` rows (batch index, x1, y1, x2, y2) in input-image coordinates,
            in the dtype of ``input``; or a list of N per-image boxes ``[Ki, 4]``.
        output_size: bins ``(height, width)``, or one int for both.
        spatial_scale: feature size / image size (e.g. 0.0625 for stride 16).

    Returns:
        ``[K, C, output_size[0], output_size[1]]``; an empty bin is 0.
    """
    extension.assert_has_ops()
    if not isinstance(rois, torch.Tensor):
        rois = boxes_to_rois(list(rois))
    height, width = _pair(output_size)
    return torch.ops.detbench.roi_pool(input, rois, spatial_scale, height, width)[0]


class ROIPool(nn.Module):
    """Module form of :func:`roi_pool`; ``forward(input, rois)``."""

    def __init__(self, output_size: int | Sequence[int], spatial_scale: float) -> None:
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = spatial_scale

    def forward(self, input: torch.Tensor, rois: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """``input [N, C, H, W]``, ``rois [K, 5]`` or N x ``[Ki, 4]`` -> ``[K, C, *output_size]``."""
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"


# Registrations for the dispatcher, made only when the extension loads.


def _fake_roi_pool(input, rois, spatial_scale, pooled_height, pooled_width):
    torch._check(input.dim() == 4, lambda: f"roi_pool: input must be [N, C, H, W], got {tuple(input.shape)}")
    torch._check(rois.dim() == 2 and rois.size(1) == 5, lambda: f"roi_pool: rois must be [K, 5], got {rois.shape}")
    torch._check(rois.dtype == input.dtype, lambda: f"roi_pool: rois dtype {rois.dtype} != input {input.dtype}")
    shape = (rois.size(0), input.size(1), pooled_height, pooled_width)
    return input.new_empty(shape), input.new_empty(shape, dtype=torch.int32)


def _fake_roi_pool_backward(grad, rois, argmax, spatial_scale, pooled_height, pooled_width, batch_size, channels,
                            height, width):
    torch._check(grad.dim() == 4, lambda: f"roi_pool_backward: grad must be 4-d, got {tuple(grad.shape)}")
    torch._check(argmax.dtype == torch.int32, lambda: "roi_pool_backward: argmax must be int32")
    return grad.new_empty((batch_size, channels, height, width))


def _setup_roi_pool(ctx, inputs, output):
    input, rois, spatial_scale, pooled_height, pooled_width = inputs
    ctx.save_for_backward(rois, output[1])
    ctx.args = (spatial_scale, pooled_height, pooled_width, *input.shape)
    ctx.mark_non_differentiable(output[1])


def _roi_pool_vjp(ctx, grad, _grad_argmax):
    rois, argmax = ctx.saved_tensors
    grad_input = torch.ops.detbench.roi_pool_backward(grad, rois, argmax, *ctx.args)
    return grad_input, None, None, None, None


def gather_at_argmax(values: torch.Tensor, rois: torch.Tensor, argmax: torch.Tensor) -> torch.Tensor:
    """``values [N, C, H, W]`` read at each bin's argmax pixel -> ``[K, C, PH, PW]`` (0 where argmax is -1).

    The adjoint of ``roi_pool_backward``: that operator adds bin gradients at the argmax pixels.
    """
    n, c, h, w = values.shape
    k = argmax.size(0)
    batch = rois[:, 0].long()
    planes = values.reshape(n, c, h * w)[batch]  # [K, C, H * W]
    index = argmax.reshape(k, c, -1).clamp(min=0).long()
    gathered = planes.gather(2, index) if h * w else values.new_zeros(index.shape)
    return gathered.reshape(argmax.shape).masked_fill(argmax < 0, 0)


def _setup_roi_pool_backward(ctx, inputs, output):
    _grad, rois, argmax, *_rest = inputs
    ctx.save_for_backward(rois, argmax)


def _roi_pool_backward_vjp(ctx, grad_grad_input):
    rois, argmax = ctx.saved_tensors
    return (gather_at_argmax(grad_grad_input, rois, argmax),) + (None,) * 9


def _register() -> None:
    torch.library.register_fake("detbench::roi_pool", _fake_roi_pool)
    torch.library.register_fake("detbench::roi_pool_backward", _fake_roi_pool_backward)
    torch.library.register_autograd("detbench::roi_pool", _roi_pool_vjp, setup_context=_setup_roi_pool)
    torch.library.register_autograd(
        "detbench::roi_pool_backward", _roi_pool_backward_vjp, setup_context=_setup_roi_pool_backward
    )
    if hasattr(torch.library, "register_autocast"):  # torch >= 2.5
        for device_type in ("cuda", "cpu"):
            torch.library.register_autocast("detbench::roi_pool", device_type, torch.float32)


if extension.has_ops():
    _register()
