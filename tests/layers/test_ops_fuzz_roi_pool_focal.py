"""Property-based (hypothesis) tests of roi_pool and sigmoid_focal_loss.

Random shapes (empty ones included), non-contiguous tensors and random arguments: the ops
agree with :mod:`detbench.layers.reference` and with ``torchvision.ops`` wherever the
result is defined (finite coordinates), and stay finite on NaN, inf and huge values.
"""


import pytest
import torch
import torchvision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from detbench import extension
from detbench.layers.reference import roi_pool_reference, sigmoid_focal_loss_reference
from detbench.layers.roi_pool import roi_pool
from detbench.layers.sigmoid_focal_loss import sigmoid_focal_loss
from test_ops_fuzz import NON_FINITE, roi_cases  # tests/layers is on sys.path (rootdir imports)

pytestmark = pytest.mark.skipif(not extension.has_ops(), reason="compiled ops not built (pip install -e .)")

FUZZ = settings(deadline=None, max_examples=25, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(roi_cases())
def test_roi_pool_matches_reference_and_torchvision(case):
    x, rois, args = case
    size, scale = args["output_size"], args["spatial_scale"]
    out, argmax = torch.ops.detbench.roi_pool(x, rois, scale, *size)
    expected, expected_argmax = roi_pool_reference(x, rois.contiguous(), size, scale)
    assert_close(out, expected)
    assert torch.equal(argmax, expected_argmax)
    if x.numel():  # torchvision's kernel reads a plane even when it is empty
        theirs, theirs_argmax = torch.ops.torchvision.roi_pool(x, rois, scale, *size)
        assert_close(out, theirs)
        assert torch.equal(argmax, theirs_argmax)
    x = x.clone().requires_grad_()
    grad = torch.rand(out.shape, dtype=out.dtype)
    (grad_input,) = torch.autograd.grad(roi_pool(x, rois, size, scale), x, grad, allow_unused=True)
    # Each bin's gradient lands on its argmax pixel: the sums agree.
    assert_close(grad_input.sum(), (grad * (argmax >= 0)).sum())


@FUZZ
@given(roi_cases(coords=st.one_of(st.floats(-6.0, 14.0, width=32), st.sampled_from(NON_FINITE))),
       st.sampled_from([torch.float32, torch.float64]))
def test_roi_pool_non_finite_and_huge_boxes(case, dtype):
    x, rois, args = case
    x, rois = x.to(dtype), rois.to(dtype)
    out, argmax = torch.ops.detbench.roi_pool(x, rois, args["spatial_scale"], *args["output_size"])
    assert torch.isfinite(out).all()
    assert ((argmax >= -1) & (argmax < max(x.size(2) * x.size(3), 1))).all()
    nan_roi = torch.isnan(rois[:, 1:]).any(dim=1)
    assert (argmax[nan_roi] == -1).all() and (out[nan_roi] == 0).all()
    # A value is a pixel of the map (or 0 for an empty bin).
    taken = argmax >= 0
    assert (out[~taken] == 0).all()


@st.composite
def focal_cases(draw, values=st.floats(-30.0, 30.0, width=32)):
    n, c = draw(st.integers(0, 5)), draw(st.integers(0, 4))
    logits = torch.tensor(draw(st.lists(values, min_size=n * c, max_size=n * c)), dtype=torch.float64)
    targets = torch.tensor(draw(st.lists(st.sampled_from([0.0, 1.0, 0.3]), min_size=n * c, max_size=n * c)),
                           dtype=torch.float64)
    logits, targets = logits.reshape(c, n).t(), targets.reshape(n, c)  # logits non-contiguous
    gamma = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.5]))
    alpha = draw(st.sampled_from([-1.0, 0.0, 0.25, 1.0]))
    return logits, targets, gamma, alpha


@FUZZ
@given(focal_cases())
def test_focal_loss_matches_reference_and_torchvision(case):
    logits, targets, gamma, alpha = case
    x, x_ref, x_tv = (logits.clone().requires_grad_() for _ in range(3))
    out = sigmoid_focal_loss(x, targets, alpha, gamma)
    expected = sigmoid_focal_loss_reference(x_ref, targets, gamma, alpha)
    assert_close(out, expected)
    assert_close(out, torchvision.ops.sigmoid_focal_loss(x_tv, targets, alpha, gamma))
    if not out.numel():
        return
    weight = torch.rand_like(out)
    (grad,) = torch.autograd.grad((out * weight).sum(), x)
    (grad_ref,) = torch.autograd.grad((expected * weight).sum(), x_ref)
    # The reference's m ** (gamma - 1) is inf at a saturated logit for gamma < 1 (0 * inf);
    # the kernel takes the limit 0 there. Compare where the reference is finite.
    finite = torch.isfinite(grad_ref)
    assert_close(grad[finite], grad_ref[finite])
    assert torch.isfinite(grad).all()


@FUZZ
@given(focal_cases(values=st.one_of(st.floats(-30.0, 30.0, width=32), st.sampled_from(NON_FINITE))))
def test_focal_loss_non_finite_logits(case):
    logits, targets, gamma, alpha = case
    x = logits.clone().requires_grad_()
    out = sigmoid_focal_loss(x, targets, alpha, gamma)
    nan = torch.isnan(logits)
    assert torch.isnan(out[nan]).all()
    finite = torch.isfinite(logits)
    assert torch.isfinite(out[finite]).all() and (out[finite] >= 0).all()
    if out.numel():
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert torch.isfinite(grad[finite]).all()
