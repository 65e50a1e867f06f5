"""Property-based (hypothesis) tests of roi_align, nms and batched_nms on hostile inputs.

Random shapes (empty ones included), non-contiguous tensors, random scales, sampling
ratios and pixel models: the ops agree with :mod:`detbench.layers.reference` wherever
the result is defined (finite coordinates), and stay finite, bounded and fast on NaN,
inf and huge coordinates. Malformed arguments raise a Python exception; those cases
run in a child process, so that a segfault fails the test instead of killing pytest.
"""

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from detbench import extension
from detbench.layers.nms import batched_nms, nms
from detbench.layers.reference import batched_nms_reference, nms_reference, roi_align_reference
from detbench.layers.roi_align import roi_align

pytestmark = pytest.mark.skipif(not extension.has_ops(), reason="compiled ops not built (pip install -e .)")

# derandomize: the same examples on every run, so that CI is stable.
FUZZ = settings(deadline=None, max_examples=60, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

NON_FINITE = [math.nan, math.inf, -math.inf, 1e30, -1e30, 1e12, -1e12, 3e8]


def strided(t: torch.Tensor) -> torch.Tensor:
    """The same values as `t`, in a non-contiguous view (every other element of a wider buffer)."""
    wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
    wide[..., ::2] = t
    view = wide[..., ::2]
    assert view.numel() <= 1 or t.shape[-1] <= 1 or not view.is_contiguous()
    return view


@st.composite
def roi_cases(draw, coords=st.floats(-6.0, 14.0, width=32)):
    """Features [N, C, H, W] (float64, non-contiguous), rois [K, 5] and the op arguments."""
    n, c = draw(st.integers(1, 2)), draw(st.integers(0, 2))
    h, w = draw(st.integers(0, 6)), draw(st.integers(0, 6))
    k = draw(st.integers(0, 4))
    x = torch.rand(n, c, w, h, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))),
                   dtype=torch.float64).transpose(2, 3)
    boxes = draw(st.lists(st.lists(coords, min_size=4, max_size=4), min_size=k, max_size=k))
    batch = draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k))
    rois = torch.tensor([[float(b)] + box for b, box in zip(batch, boxes)], dtype=torch.float64).reshape(k, 5)
    args = dict(output_size=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                spatial_scale=draw(st.sampled_from([0.25, 0.5, 1.0, 1.5])),
                sampling_ratio=draw(st.integers(-1, 3)), aligned=draw(st.booleans()))
    return x, strided(rois), args


@FUZZ
@given(roi_cases())
def test_roi_align_forward_and_backward_match_reference(case):
    x, rois, args = case
    x = x.requires_grad_()
    out = roi_align(x, rois, **args)
    x_ref = x.detach().clone().requires_grad_()
    expected = roi_align_reference(x_ref, rois.contiguous(), **args)
    assert_close(out, expected)
    weight = torch.rand_like(expected)
    (grad,) = torch.autograd.grad((out * weight).sum(), x, allow_unused=True)
    if expected.numel() == 0 or not expected.requires_grad:  # nothing reached the map
        assert grad is None or not grad.any()
        return
    (grad_ref,) = torch.autograd.grad((expected * weight).sum(), x_ref)
    assert_close(grad, grad_ref)


@FUZZ
@given(roi_cases(coords=st.one_of(st.floats(-6.0, 14.0, width=32), st.sampled_from(NON_FINITE))),
       st.sampled_from([torch.float32, torch.float64]))
def test_roi_align_non_finite_and_huge_boxes_stay_bounded(case, dtype):
    # No oracle here (the reference's sample grid of a 1e12-pixel box is not computable);
    # the defined part: every bin is a weighted mean of at most count samples, each a
    # convex combination of pixels, so |out| <= max |x|, and a NaN sample reads nothing.
    x, rois, args = case
    x = x.to(dtype).requires_grad_()
    out = roi_align(x, rois.to(dtype), **args)
    assert out.shape == (rois.size(0), x.size(1), *args["output_size"])
    assert torch.isfinite(out).all()
    bound = x.detach().abs().max() if x.numel() else 0.0
    assert (out.abs() <= bound * (1 + 1e-5)).all()
    (grad,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
    assert grad is None or torch.isfinite(grad).all()


def test_roi_align_huge_box_is_cheap_and_reads_the_map():
    # A box of ~2e12 pixels asks for ~1e11 samples per bin (capped at 2^30): the kernel
    # only visits those that land on the map, so this returns at once. The few samples
    # that hit the 4x4 map are divided by 2^60 samples.
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    rois = torch.tensor([[0.0, -1e12, -1e12, 1e12, 1e12]], dtype=torch.float64)
    for aligned in (False, True):
        out = roi_align(x, rois, 1, 1.0, -1, aligned)
        assert 0 <= out.item() < 1e-12


@st.composite
def box_sets(draw, values=st.floats(-5.0, 15.0, width=32)):
    """boxes [N, 4] (some empty or inverted), scores [N] with ties, idxs [N]; non-contiguous."""
    n = draw(st.integers(0, 24))
    boxes = draw(st.lists(st.lists(values, min_size=4, max_size=4), min_size=n, max_size=n))
    boxes = torch.tensor(boxes, dtype=torch.float64).reshape(n, 4)
    grow = draw(st.booleans())  # mostly proper boxes, as (x1, y1, x1 + |dx|, y1 + |dy|)
    if grow and n:
        boxes[:, 2:] = boxes[:, :2] + boxes[:, 2:].abs().nan_to_num(0.0) / 2
    scores = torch.tensor(draw(st.lists(st.sampled_from([0.1, 0.5, 0.5, 0.9, 0.3, 0.7]), min_size=n, max_size=n)),
                          dtype=torch.float64)
    idxs = torch.tensor(draw(st.lists(st.integers(-1, 2), min_size=n, max_size=n)), dtype=torch.int64)
    threshold = draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))
    return strided(boxes), strided(scores.reshape(1, n))[0], idxs, threshold


@FUZZ
@given(box_sets(), st.sampled_from([torch.float32, torch.float64]))
def test_nms_and_batched_nms_match_reference(case, dtype):
    boxes, scores, idxs, threshold = case
    boxes, scores = boxes.to(dtype), scores.to(dtype)
    torch.testing.assert_close(nms(boxes, scores, threshold), nms_reference(boxes, scores, threshold),
                               rtol=0, atol=0)
    torch.testing.assert_close(batched_nms(boxes, scores, strided(idxs.reshape(1, -1))[0], threshold),
                               batched_nms_reference(boxes, scores, idxs, threshold), rtol=0, atol=0)


@FUZZ
@given(box_sets(values=st.one_of(st.floats(-5.0, 15.0, width=32), st.sampled_from(NON_FINITE))),
       st.lists(st.sampled_from([math.nan, math.inf, -math.inf]), max_size=3))
def test_nms_non_finite_boxes_and_scores(case, bad_scores):
    # Defined by the nms docstring: NaN scores first, a NaN IoU suppresses nothing. The
    # reference states the same rule, so they agree exactly here as well.
    boxes, scores, idxs, threshold = case
    scores = scores.clone()
    scores[: len(bad_scores)] = torch.tensor(bad_scores[: scores.numel()], dtype=scores.dtype)
    keep = nms(boxes, scores, threshold)
    assert_close(keep, nms_reference(boxes, scores, threshold), rtol=0, atol=0)
    assert_close(batched_nms(boxes, scores, idxs, threshold), batched_nms_reference(boxes, scores, idxs, threshold),
                 rtol=0, atol=0)
    nan_box = torch.isnan(boxes).any(dim=1)
    assert set(torch.nonzero(nan_box)[:, 0].tolist()) <= set(keep.tolist())  # NaN boxes are always kept


# Each case must raise one of the allowed exceptions; the child prints one line per case.
MALFORMED = textwrap.dedent(
    """
    import math, torch
    from detbench.layers.nms import batched_nms, nms
    from detbench.layers.roi_align import roi_align
    op = torch.ops.detbench
    x, r = torch.rand(2, 3, 5, 5), torch.tensor([[0.0, 0, 0, 3, 3]])
    b, s, i = torch.rand(4, 4), torch.rand(4), torch.zeros(4, dtype=torch.long)
    cases = {
        "input 3-d": lambda: roi_align(x[0], r, 2),
        "input 5-d": lambda: roi_align(x[None], r, 2),
        "rois [K, 4]": lambda: roi_align(x, r[:, 1:], 2),
        "rois 1-d": lambda: roi_align(x, r[0], 2),
        "rois float64": lambda: roi_align(x, r.double(), 2),
        "int64 input": lambda: roi_align(x.long(), r.long(), 2),
        "half input on cpu": lambda: roi_align(x.half(), r.half(), 2),
        "batch index 2 of 2": lambda: roi_align(x, torch.tensor([[2.0, 0, 0, 3, 3]]), 2),
        "batch index 1e30": lambda: roi_align(x, torch.tensor([[1e30, 0, 0, 3, 3]]), 2),
        "batch index -1": lambda: roi_align(x, torch.tensor([[-1.0, 0, 0, 3, 3]]), 2),
        "batch index nan": lambda: roi_align(x, torch.tensor([[math.nan, 0, 0, 3, 3]]), 2),
        "batch index inf": lambda: roi_align(x, torch.tensor([[math.inf, 0, 0, 3, 3]]), 2),
        "pooled 0": lambda: roi_align(x, r, (0, 2)),
        "pooled -3": lambda: roi_align(x, r, -3),
        "output_size 3 values": lambda: roi_align(x, r, (1, 2, 3)),
        "box list [K, 5]": lambda: roi_align(x, [torch.rand(2, 5)], 2),
        "backward grad shape": lambda: op.roi_align_backward(torch.rand(1, 3, 2, 1), r, 1.0, 2, 2, 2, 3, 5, 5, -1, False),
        "backward negative size": lambda: op.roi_align_backward(torch.rand(1, 3, 2, 2), r, 1.0, 2, 2, 2, 3, -5, 5, -1, False),
        "backward batch index": lambda: op.roi_align_backward(torch.rand(1, 3, 2, 2), r + torch.tensor([1.0, 0, 0, 0, 0]), 1.0, 2, 2, 1, 3, 5, 5, -1, True),
        "backward rois dtype": lambda: op.roi_align_backward(torch.rand(1, 3, 2, 2), r.double(), 1.0, 2, 2, 2, 3, 5, 5, 0, True),
        "nms boxes [N, 5]": lambda: nms(torch.rand(4, 5), s, 0.5),
        "nms boxes 1-d": lambda: nms(torch.rand(4), s, 0.5),
        "nms scores too long": lambda: nms(b, torch.rand(5), 0.5),
        "nms scores 2-d": lambda: nms(b, s[None], 0.5),
        "nms dtype mismatch": lambda: nms(b, s.double(), 0.5),
        "nms int boxes": lambda: nms(b.long(), s.long(), 0.5),
        "nms half boxes on cpu": lambda: nms(b.half(), s.half(), 0.5),
        "nms [0, 5] boxes": lambda: nms(torch.rand(0, 5), torch.rand(0), 0.5),
        "batched idxs too short": lambda: batched_nms(b, s, i[:3], 0.5),
        "batched idxs 2-d": lambda: batched_nms(b, s, i[None], 0.5),
        "batched idxs float": lambda: batched_nms(b, s, i.float(), 0.5),
        "batched idxs bool": lambda: batched_nms(b, s, i.bool(), 0.5),
        "batched [3, 0] boxes": lambda: batched_nms(torch.rand(3, 0), torch.rand(3), i[:3], 0.5),
        "batched [0, 5] boxes": lambda: batched_nms(torch.rand(0, 5), torch.rand(0), i[:0], 0.5),
        "batched op idxs int32": lambda: op.batched_nms(b, s, i.int(), 0.5),
        "batched op idxs short": lambda: op.batched_nms(b, s, i[:2], 0.5),
    }
    if torch.cuda.is_available():
        cases["roi_align rois on cpu, input on cuda"] = lambda: roi_align(x.cuda(), r, 2)
        cases["nms scores on cpu, boxes on cuda"] = lambda: nms(b.cuda(), s, 0.5)
        cases["batched idxs on cpu"] = lambda: batched_nms(b.cuda(), s.cuda(), i, 0.5)
    for name, case in cases.items():
        print("CASE", name, flush=True)
        try:
            case()
        except (RuntimeError, ValueError, IndexError, TypeError, NotImplementedError) as e:
            print("RAISED", type(e).__name__, flush=True)
        else:
            print("NO ERROR", flush=True)
    print("DONE", flush=True)
    """
)


def test_malformed_arguments_raise_never_crash():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", MALFORMED], capture_output=True, text=True, timeout=120, env=env)
    log = proc.stdout.splitlines()
    assert proc.returncode == 0 and log[-1:] == ["DONE"], f"child died (rc {proc.returncode}) after:\n" + "\n".join(
        log[-3:]) + proc.stderr[-2000:]
    silent = [log[k - 1] for k, line in enumerate(log) if line == "NO ERROR"]
    assert not silent, f"malformed arguments accepted: {silent}"
    assert sum(line.startswith("RAISED") for line in log) >= 36
