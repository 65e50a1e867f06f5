"""CUDA roi_align on huge boxes with adaptive sampling: bounded work, same result as the CPU kernel.

With ``sampling_ratio <= 0`` a bin takes ceil(bin size) samples per axis, so a box of
1e9 pixels asks for ~1e8 x 1e8 samples per bin. The CUDA kernels visit only the samples
that can land on the map (found by bisection, as the CPU kernel does); these tests check
that the restriction changes no result (CPU kernel as the oracle, ordinary and huge boxes)
and that huge boxes finish: they run in a child process with a generous limit, so that a
kernel that loops over every sample fails the test instead of hanging the suite.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.testing import assert_close

from detbench import extension

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and extension.has_ops()),
                                reason="needs a GPU and the compiled ops")

OPS = torch.ops.detbench
# Each row: batch index, x1, y1, x2, y2 on a 12 x 16 map (scale 1).
HUGE_ROIS = [
    [0, -1e9, -1e9, 1e9, 1e9],  # ~1.4e8 samples per bin axis, ~16 of them on the map
    [1, -1e12, -1e12, 1e12, 1e12],  # the 2^30 cap
    [0, 3.0, 2.0, 1e9, 7.0],  # huge in x only, starts on the map
    [1, -5e8, 4.0, 9.0, 11.0],  # huge in x only, ends on the map
    [0, 1e9, 1e9, -1e9, -1e9],  # inverted (bins of negative size when aligned)
    [1, -math.inf, 0.0, math.inf, 8.0],  # inf: NaN positions read nothing
    [0, 2.0, 2.0, 9.0, 10.0],  # an ordinary box among them
]
ARGS = dict(spatial_scale=1.0, pooled_height=7, pooled_width=7, sampling_ratio=-1)
# float64: only the summation order differs from the CPU kernel; float32 samples the same
# positions but sums up to ~(map size) terms in another order.
TOL = {torch.float64: dict(rtol=1e-9, atol=1e-30), torch.float32: dict(rtol=1e-4, atol=1e-30)}


def _cpu(x: torch.Tensor, rois: torch.Tensor, grad: torch.Tensor, aligned: bool):
    a = ARGS
    out = OPS.roi_align(x, rois, a["spatial_scale"], a["pooled_height"], a["pooled_width"], a["sampling_ratio"],
                        aligned)
    grad_in = OPS.roi_align_backward(grad, rois, a["spatial_scale"], a["pooled_height"], a["pooled_width"],
                                     *x.shape, a["sampling_ratio"], aligned)
    return out, grad_in


def _inputs(dtype: torch.dtype, rois: list[list[float]]):
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 12, 16, generator=g, dtype=dtype)
    r = torch.tensor(rois, dtype=dtype)
    grad = torch.rand(len(rois), 3, 7, 7, generator=g, dtype=dtype)
    return x, r, grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
def test_adaptive_sampling_matches_cpu_on_ordinary_boxes(dtype, aligned):
    # Boxes partly off the map, inverted and tiny ones: the visited range must not drop a sample.
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(40, 2, generator=g, dtype=torch.float64) * 30 - 8
    wh = torch.rand(40, 2, generator=g, dtype=torch.float64) * 30 - 4  # some negative: inverted
    rois = torch.cat([torch.randint(0, 2, (40, 1), generator=g).double(), xy, xy + wh], dim=1)
    x, r, grad = _inputs(dtype, rois.tolist())
    out, grad_in = _cpu(x, r, grad, aligned)
    got = OPS.roi_align(x.cuda(), r.cuda(), 1.0, 7, 7, -1, aligned)
    got_grad = OPS.roi_align_backward(grad.cuda(), r.cuda(), 1.0, 7, 7, *x.shape, -1, aligned)
    assert_close(got.cpu(), out, **TOL[dtype])
    assert_close(got_grad.cpu(), grad_in, **TOL[dtype])


CHILD = """
import sys, torch
from detbench import extension
extension.assert_has_ops()
x, rois, grad, aligned = torch.load(sys.argv[1])
ops = torch.ops.detbench
out = ops.roi_align(x.cuda(), rois.cuda(), 1.0, 7, 7, -1, aligned)
grad_in = ops.roi_align_backward(grad.cuda(), rois.cuda(), 1.0, 7, 7, *x.shape, -1, aligned)
torch.cuda.synchronize()
torch.save((out.cpu(), grad_in.cpu()), sys.argv[2])
"""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
def test_huge_boxes_finish_and_match_cpu(tmp_path, dtype, aligned):
    x, rois, grad = _inputs(dtype, HUGE_ROIS)
    torch.save((x, rois, grad, aligned), tmp_path / "in.pt")
    # Without the bound the first box alone is ~1e16 loop steps per thread: the limit
    # only turns such a hang into a failure, it is no timing requirement.
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD), str(tmp_path / "in.pt"),
                             str(tmp_path / "out.pt")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got, got_grad = torch.load(tmp_path / "out.pt")
    out, grad_in = _cpu(x, rois, grad, aligned)
    assert torch.isfinite(got).all() and torch.isfinite(got_grad).all()
    assert_close(got, out, **TOL[dtype])
    assert_close(got_grad, grad_in, **TOL[dtype])
    assert out[-1].abs().sum() > 0  # the ordinary box really read the map
