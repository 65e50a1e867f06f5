"""RoIAlign (Mask R-CNN): bilinear pooling of box regions into fixed-size bins.

The compiled kernels (``csrc/cpu``, ``csrc/cuda``) implement the two operators
``torch.ops.detbench.roi_align`` and ``roi_align_backward``; this module registers
what the dispatcher needs from Python when the extension is loaded:

* fake (meta) kernels, for ``torch.compile`` and other shape-only tracing;
* autograd: the gradient of ``roi_align`` is ``roi_align_backward``, and since that
  operator is linear in its gradient input, its own gradient is ``roi_align`` of
  the incoming gradient (so double backward and ``gradgradcheck`` work);
* autocast (CUDA and CPU): inputs are cast to float32 and the output is float32.

The sampling rules (pixel model of ``aligned``, ``sampling_ratio``, samples outside
the map) are stated in :func:`detbench.layers.reference.roi_align_reference`; they
are those of ``torchvision.ops.roi_align``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from detbench import extension

__all__ = ["ROIAlign", "roi_align"]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ValueError(f"output_size must be an int or (height, width), got {size}")
    return int(size[0]), int(size[1])


def boxes_to_rois(boxes: list[torch.Tensor]) -> torch.Tensor:
    """Per-image boxes ``[Ki, 4]`` -> rois ``[sum Ki, 5]`` with the image index in column 0."""
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.size(1) != 4:
            raise ValueError(f"boxes[{i}] must be [K, 4] (x1, y1, x2, y2), got {tuple(b.shape)}")
    if not boxes:
        raise ValueError("boxes is an empty list; pass a [0, 5] tensor for no RoI")
    cat = torch.cat(boxes, dim=0)
    index = torch.cat([torch.full((len(b), 1), i, dtype=cat.dtype, device=cat.device) for i, b in enumerate(boxes)])
    return torch.cat([index, cat], dim=1)


def roi_align(
    input: torch.Tensor,
    rois: torch.Tensor | list[torch.Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """Pools every RoI of ``rois`` from ``input`` into ``output_size`` bins.

    Args:
        input: features ``[N, C, H, W]`` (float32/float64; float16/bfloat16 on CUDA).
        rois: ``[K, 5]`` rows (batch index, x1, y1, x2, y2) in input-image coordinates,
            in the dtype of ``input``; or a list of N per-image boxes ``[Ki, 4]``.
        output_size: bins ``(height, width)``, or one int for both.
        spatial_scale: feature size / image size (e.g. 0.25 for stride 4).
        sampling_ratio: samples per bin along each axis; <= 0: ceil(roi size / bins).
        aligned: shift boxes by -0.5 pixel (Detectron2 pixel model); False keeps the
            legacy model, which also forces every RoI to at least 1x1 pixel.

    Returns:
        ``[K, C, output_size[0], output_size[1]]``.

    Raises:
        RuntimeError: malformed arguments, or a batch index outside [0, N) (on CUDA
            this check copies one flag to the host, i.e. synchronises).
    """
    extension.assert_has_ops()
    if not isinstance(rois, torch.Tensor):
        rois = boxes_to_rois(list(rois))
    height, width = _pair(output_size)
    return torch.ops.detbench.roi_align(input, rois, spatial_scale, height, width, sampling_ratio, aligned)


class ROIAlign(nn.Module):
    """Module form of :func:`roi_align`; ``forward(input, rois)``."""

    def __init__(
        self,
        output_size: int | Sequence[int],
        spatial_scale: float,
        sampling_ratio: int,
        aligned: bool = False,
    ) -> None:
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: torch.Tensor, rois: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """``input [N, C, H, W]``, ``rois [K, 5]`` or N x ``[Ki, 4]`` -> ``[K, C, *output_size]``."""
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )


# Registrations for the dispatcher. They need the compiled schemas, so they are made
# only when the extension loads (the wrappers above raise the build hint otherwise).


def _fake_roi_align(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    torch._check(input.dim() == 4, lambda: f"roi_align: input must be [N, C, H, W], got {tuple(input.shape)}")
    torch._check(rois.dim() == 2 and rois.size(1) == 5, lambda: f"roi_align: rois must be [K, 5], got {rois.shape}")
    torch._check(rois.dtype == input.dtype, lambda: f"roi_align: rois dtype {rois.dtype} != input {input.dtype}")
    return input.new_empty((rois.size(0), input.size(1), pooled_height, pooled_width))


def _fake_roi_align_backward(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels,
                             height, width, sampling_ratio, aligned, channels_last=False):
    torch._check(rois.dim() == 2 and rois.size(1) == 5, lambda: "roi_align_backward: rois must be [K, 5]")
    torch._check(grad.dim() == 4, lambda: f"roi_align_backward: grad must be 4-d, got {tuple(grad.shape)}")
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty((batch_size, channels, height, width), dtype=grad.dtype, device=grad.device,
                       memory_format=layout)


def _setup_roi_align(ctx, inputs, output):
    input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.pooled = (spatial_scale, pooled_height, pooled_width)
    ctx.sizes = tuple(input.shape)
    # The gradient in the input's layout: a channels-last map's other gradients are channels-last,
    # and adding an NCHW tensor to them is several times slower than adding a matching one.
    channels_last = not input.is_contiguous() and input.is_contiguous(memory_format=torch.channels_last)
    ctx.sampling = (sampling_ratio, aligned, channels_last)


def _roi_align_vjp(ctx, grad):
    (rois,) = ctx.saved_tensors
    grad_input = torch.ops.detbench.roi_align_backward(grad, rois, *ctx.pooled, *ctx.sizes, *ctx.sampling)
    return grad_input, None, None, None, None, None, None


def _setup_roi_align_backward(ctx, inputs, output):
    # (grad, rois, spatial_scale, pooled_height, pooled_width, 4 sizes, sampling_ratio, aligned
    # [, channels_last]): the layout flag may be left to its default.
    _, rois, spatial_scale, pooled_height, pooled_width = inputs[:5]
    sampling_ratio, aligned = inputs[9:11]
    ctx.save_for_backward(rois)
    ctx.args = (spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)
    ctx.num_args = len(inputs)


def _roi_align_backward_vjp(ctx, grad_grad_input):
    # roi_align is x -> A x for a sampling matrix A fixed by the rois, and
    # roi_align_backward is g -> A^T g, so the product of its Jacobian with v is A v.
    (rois,) = ctx.saved_tensors
    grad_grad = torch.ops.detbench.roi_align(grad_grad_input, rois, *ctx.args)
    return (grad_grad,) + (None,) * (ctx.num_args - 1)


def _register() -> None:
    torch.library.register_fake("detbench::roi_align", _fake_roi_align)
    torch.library.register_fake("detbench::roi_align_backward", _fake_roi_align_backward)
    torch.library.register_autograd("detbench::roi_align", _roi_align_vjp, setup_context=_setup_roi_align)
    torch.library.register_autograd(
        "detbench::roi_align_backward", _roi_align_backward_vjp, setup_context=_setup_roi_align_backward
    )
    if hasattr(torch.library, "register_autocast"):  # torch >= 2.5
        for device_type in ("cuda", "cpu"):
            torch.library.register_autocast("detbench::roi_align", device_type, torch.float32)


if extension.has_ops():
    _register()
