"""Sigmoid focal loss (RetinaNet, Lin et al. 2017) as a compiled operator.

``torch.ops.detbench.sigmoid_focal_loss(logits, targets, gamma, alpha)`` computes the
element-wise loss in one pass (CPU and CUDA kernels in ``csrc/``; the formula is in
``csrc/cpu/sigmoid_focal_loss_common.h`` and
:func:`detbench.layers.reference.sigmoid_focal_loss_reference`). This module registers
its fake kernel and autograd (gradient in ``logits`` through
``sigmoid_focal_loss_backward``; targets are labels and are not differentiated), and
provides:

* :func:`sigmoid_focal_loss`: ``torchvision.ops.sigmoid_focal_loss``'s arguments and
  result (float targets of the logits' shape, reduction "none" | "mean" | "sum");
* :class:`SigmoidFocalLoss`: maskrcnn-benchmark's module, integer class labels per row
  (0 background, c >= 1 the logit column c - 1, -1 ignored), summed.
"""

from __future__ import annotations

import torch
from torch import nn

from detbench import extension

__all__ = ["SigmoidFocalLoss", "sigmoid_focal_loss"]

REDUCTIONS = ("none", "mean", "sum")


def sigmoid_focal_loss(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> torch.Tensor:
    """Focal loss of ``inputs`` (logits, any shape) against ``targets`` (same shape, in [0, 1]).

    Args:
        inputs: logits, float32/float64 (also float16/bfloat16 on CUDA).
        targets: binary (or soft) targets of the shape and dtype of ``inputs``; not
            differentiated (a target that requires grad is refused).
        alpha: weight of the positives in [0, 1] (negatives get 1 - alpha); < 0: no weighting.
        gamma: focusing exponent >= 0 (0 gives the binary cross-entropy).
        reduction: "none" (element-wise, the shape of ``inputs``), "mean" or "sum".
    """
    extension.assert_has_ops()
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if targets.requires_grad:
        raise ValueError("sigmoid_focal_loss does not differentiate its targets; pass targets.detach()")
    if targets.dtype != inputs.dtype:
        targets = targets.to(inputs.dtype)
    loss = torch.ops.detbench.sigmoid_focal_loss(inputs, targets, float(gamma), float(alpha))
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def labels_to_targets(labels: torch.Tensor, num_columns: int, like: torch.Tensor) -> torch.Tensor:
    """Integer labels ``[N]`` (0 background, c >= 1 class c) -> one-hot ``[N, num_columns]`` in
    the dtype of ``like``; column c - 1 is class c, background rows are all zero."""
    targets = like.new_zeros((labels.numel(), num_columns + 1))
    targets.scatter_(1, labels.long().clamp(min=0).view(-1, 1), 1)
    return targets[:, 1:]


class SigmoidFocalLoss(nn.Module):
    """Summed focal loss of logits ``[N, C]`` against integer labels ``[N]``, maskrcnn-benchmark's module.

    Label 0 is the background (every column a negative), c in [1, C] makes column c - 1
    the positive and the others negatives, and -1 ignores the row. Labels above C are refused.
    """

    def __init__(self, gamma: float, alpha: float) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"SigmoidFocalLoss: gamma must be >= 0, got {gamma}")
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``logits [N, C]``, ``labels [N]`` (int) -> scalar sum over the rows not ignored."""
        if logits.dim() != 2 or labels.dim() != 1 or labels.numel() != logits.size(0):
            raise ValueError(f"SigmoidFocalLoss: logits must be [N, C] and labels [N], got "
                             f"{tuple(logits.shape)} and {tuple(labels.shape)}")
        keep = labels >= 0
        logits, labels = logits[keep], labels[keep]
        if not torch.compiler.is_compiling() and labels.numel() and int(labels.max()) > logits.size(1):
            raise ValueError(f"SigmoidFocalLoss: label {int(labels.max())} exceeds the {logits.size(1)} classes")
        targets = labels_to_targets(labels, logits.size(1), logits)
        return sigmoid_focal_loss(logits, targets, self.alpha, self.gamma, reduction="sum")

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha}"


# Registrations for the dispatcher, made only when the extension loads.


def _fake_focal(logits, targets, gamma, alpha):
    torch._check(logits.shape == targets.shape,
                 lambda: f"sigmoid_focal_loss: targets {tuple(targets.shape)} != logits {tuple(logits.shape)}")
    torch._check(logits.dtype == targets.dtype, lambda: "sigmoid_focal_loss: targets dtype differs from logits")
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _fake_focal_backward(grad, logits, targets, gamma, alpha):
    torch._check(grad.shape == logits.shape, lambda: "sigmoid_focal_loss_backward: grad shape differs from logits")
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _setup_focal(ctx, inputs, output):
    logits, targets, gamma, alpha = inputs
    ctx.save_for_backward(logits, targets)
    ctx.args = (gamma, alpha)


def _focal_vjp(ctx, grad):
    logits, targets = ctx.saved_tensors
    grad_logits = torch.ops.detbench.sigmoid_focal_loss_backward(grad, logits, targets, *ctx.args)
    return grad_logits, None, None, None


def _register() -> None:
    torch.library.register_fake("detbench::sigmoid_focal_loss", _fake_focal)
    torch.library.register_fake("detbench::sigmoid_focal_loss_backward", _fake_focal_backward)
    torch.library.register_autograd("detbench::sigmoid_focal_loss", _focal_vjp, setup_context=_setup_focal)
    if hasattr(torch.library, "register_autocast"):  # torch >= 2.5
        for device_type in ("cuda", "cpu"):
            torch.library.register_autocast("detbench::sigmoid_focal_loss", device_type, torch.float32)


if extension.has_ops():
    _register()
