"""roi_pool: against its reference and torchvision.ops, gradients, registrations, errors."""

import pytest
import torch
import torchvision
from torch.testing import assert_close

from detbench import extension
from detbench.layers import ROIPool, roi_pool
from detbench.layers.reference import roi_pool_reference

from test_roi_align import features, random_rois  # tests/layers is on sys.path (rootdir imports)

pytestmark = pytest.mark.skipif(not extension.has_ops(), reason="compiled ops not built (pip install -e .)")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def scatter_reference(grad: torch.Tensor, rois: torch.Tensor, argmax: torch.Tensor, shape) -> torch.Tensor:
    """grad_input by definition: each bin's gradient added at its argmax pixel."""
    out = torch.zeros(shape, dtype=grad.dtype)
    n, c, h, w = shape
    for k, roi in enumerate(rois.tolist()):
        for ch in range(c):
            for b, index in enumerate(argmax[k, ch].reshape(-1).tolist()):
                if index >= 0:
                    out[int(roi[0]), ch, index // w, index % w] += grad[k, ch].reshape(-1)[b]
    return out


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25])
@pytest.mark.parametrize("output_size", [(3, 4), (1, 1), (5, 2)])
def test_forward_and_backward_match_reference(scale, output_size):
    g = torch.Generator().manual_seed(int(scale * 8) + output_size[0])
    x = features(g, (3, 2, 9, 11)).requires_grad_()
    rois = random_rois(g, 12, batch=3, extent=11 / scale)
    rois_strided = torch.cat([rois, rois], dim=1)[:, :5]  # non-contiguous rows
    out, argmax = torch.ops.detbench.roi_pool(x, rois_strided, scale, *output_size)
    expected, expected_argmax = roi_pool_reference(x.detach(), rois, output_size, scale)
    assert expected.abs().sum() > 0 and (expected_argmax < 0).any()  # the case is not vacuous
    assert_close(out, expected)
    assert torch.equal(argmax, expected_argmax)
    grad = torch.rand(out.shape, generator=g, dtype=out.dtype)
    (grad_input,) = torch.autograd.grad(roi_pool(x, rois, output_size, scale), x, grad)
    assert_close(grad_input, scatter_reference(grad, rois, expected_argmax, x.shape))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [0.25, 0.0625])
def test_matches_torchvision(dtype, scale):
    g = torch.Generator().manual_seed(7)
    x = features(g, (2, 4, 20, 24), dtype)
    rois = random_rois(g, 40, batch=2, extent=24 / scale, dtype=dtype)
    ours_x, theirs_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, ours_argmax = torch.ops.detbench.roi_pool(ours_x, rois, scale, 5, 4)
    theirs, theirs_argmax = torch.ops.torchvision.roi_pool(theirs_x, rois, scale, 5, 4)
    assert_close(ours, theirs)
    assert torch.equal(ours_argmax, theirs_argmax)
    grad = torch.rand(ours.shape, generator=g, dtype=dtype)
    ours.backward(grad)
    theirs.backward(grad)
    assert_close(ours_x.grad, theirs_x.grad)


def test_ties_and_nan_pixels_follow_torchvision():
    x = torch.tensor([[[[1.0, 1.0, float("nan")], [0.5, 1.0, 2.0], [float("-inf"), 0.0, 2.0]]]])
    rois = torch.tensor([[0, 0.0, 0.0, 2.0, 2.0], [0, 0.0, 0.0, 1.0, 0.0]])
    ours = torch.ops.detbench.roi_pool(x, rois, 1.0, 2, 2)
    theirs = torch.ops.torchvision.roi_pool(x, rois, 1.0, 2, 2)
    assert_close(ours[0], theirs[0], equal_nan=True)
    assert torch.equal(ours[1], theirs[1])


def test_list_of_boxes_equals_tensor_rois():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 8, 8, generator=g)
    boxes = [torch.tensor([[0.0, 0.0, 5.0, 5.0]]), torch.tensor([[1.0, 2.0, 7.0, 6.0], [3.0, 3.0, 4.0, 4.0]])]
    rois = torch.tensor([[0, 0.0, 0.0, 5.0, 5.0], [1, 1.0, 2.0, 7.0, 6.0], [1, 3.0, 3.0, 4.0, 4.0]])
    assert_close(roi_pool(x, boxes, 3), roi_pool(x, rois, 3))
    assert_close(torchvision.ops.roi_pool(x, boxes, 3), roi_pool(x, rois, 3))


def test_gradcheck_and_gradgradcheck():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 2, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)  # no ties
    rois = torch.tensor([[0, 0.3, 0.7, 4.1, 3.6], [1, 1.2, 0.4, 5.3, 4.9], [1, -0.6, 2.2, 2.7, 6.1]],
                        dtype=torch.float64)

    def fn(t):
        return roi_pool(t, rois, (2, 3), 1.0)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_opcheck():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 7, 8, generator=g, requires_grad=True)
    rois = random_rois(g, 6, batch=2, extent=14.0, dtype=torch.float32)
    torch.library.opcheck(torch.ops.detbench.roi_pool.default, (x, rois, 0.5, 3, 2))
    _, argmax = torch.ops.detbench.roi_pool(x.detach(), rois, 0.5, 3, 2)
    grad = torch.rand(6, 3, 3, 2, generator=g, requires_grad=True)
    torch.library.opcheck(torch.ops.detbench.roi_pool_backward.default,
                          (grad, rois, argmax, 0.5, 3, 2, 2, 3, 7, 8))


def test_torch_compile_fullgraph_matches_eager():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 9, 9, generator=g)
    rois = random_rois(g, 5, batch=2, extent=18.0, dtype=torch.float32)

    def loss(t, r):
        return (roi_pool(t, r, (3, 3), 0.5) ** 2).sum()

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    x_eager, x_compiled = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected, got = loss(x_eager, rois), compiled(x_compiled, rois)
    expected.backward()
    got.backward()
    assert_close(got, expected)
    assert_close(x_compiled.grad, x_eager.grad)


@pytest.mark.parametrize(
    "input_shape, num_rois",
    [((2, 3, 6, 6), 0), ((2, 0, 6, 6), 4), ((2, 3, 0, 6), 4), ((2, 3, 6, 0), 4)],
    ids=["no-roi", "no-channel", "zero-height", "zero-width"],
)
def test_empty_inputs(input_shape, num_rois):
    g = torch.Generator().manual_seed(5)
    x = torch.rand(input_shape, generator=g, dtype=torch.float64, requires_grad=True)
    rois = random_rois(g, num_rois, batch=2, extent=6.0)
    out = roi_pool(x, rois, (2, 3))
    assert out.shape == (num_rois, input_shape[1], 2, 3)
    assert_close(out, roi_pool_reference(x.detach(), rois, (2, 3))[0])
    assert torch.count_nonzero(out) == 0
    out.sum().backward()
    assert x.grad.shape == x.shape and torch.count_nonzero(x.grad) == 0


def test_result_does_not_depend_on_thread_count():
    g = torch.Generator().manual_seed(6)
    x = torch.rand(2, 64, 16, 16, generator=g)
    rois = random_rois(g, 128, batch=2, extent=16.0, dtype=torch.float32)
    grad = torch.rand(128, 64, 4, 4, generator=g)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            out, argmax = torch.ops.detbench.roi_pool(x, rois, 1.0, 4, 4)
            results.append((out, argmax, torch.ops.detbench.roi_pool_backward(grad, rois, argmax, 1.0, 4, 4, 2, 64,
                                                                               16, 16)))
    finally:
        torch.set_num_threads(threads)
    for one, many in zip(*results):
        assert torch.equal(one, many)


def test_module_forward_and_repr():
    module = ROIPool((2, 3), spatial_scale=0.5)
    assert repr(module) == "ROIPool(output_size=(2, 3), spatial_scale=0.5)"
    x = torch.rand(1, 2, 6, 6)
    rois = torch.tensor([[0, 0.0, 0.0, 8.0, 10.0]])
    assert_close(module(x, rois), torchvision.ops.roi_pool(x, rois, (2, 3), 0.5))


@pytest.mark.parametrize("case", ["rois-k4", "dtype-mix", "batch-negative", "batch-too-large", "batch-nan",
                                  "pooled-zero", "input-3d", "int-dtype"])
def test_malformed_arguments_raise(case):
    x = torch.rand(2, 3, 6, 6)
    rois = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0], [1, 0.0, 0.0, 2.0, 3.0]])
    args = {"input": x, "rois": rois, "output_size": (2, 2)}
    if case == "rois-k4":
        args["rois"] = rois[:, 1:]
    elif case == "dtype-mix":
        args["rois"] = rois.double()
    elif case.startswith("batch"):
        args["rois"] = rois.clone()
        args["rois"][1, 0] = {"batch-negative": -1.0, "batch-too-large": 2.0, "batch-nan": float("nan")}[case]
    elif case == "pooled-zero":
        args["output_size"] = (0, 2)
    elif case == "input-3d":
        args["input"] = x[0]
    elif case == "int-dtype":
        args["input"], args["rois"] = (x * 10).long(), rois.long()
    with pytest.raises(RuntimeError):
        roi_pool(**args)


def test_backward_op_rejects_bad_arguments():
    rois = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0]])
    argmax = torch.zeros(1, 3, 2, 2, dtype=torch.int32)
    op = torch.ops.detbench.roi_pool_backward
    with pytest.raises(RuntimeError, match="grad must be"):
        op(torch.rand(1, 3, 2, 2), rois, argmax, 1.0, 2, 2, 1, 4, 6, 6)
    with pytest.raises(RuntimeError, match="int32"):
        op(torch.rand(1, 3, 2, 2), rois, argmax.long(), 1.0, 2, 2, 1, 3, 6, 6)
    with pytest.raises(RuntimeError, match="outside"):
        op(torch.rand(1, 3, 2, 2), rois, argmax + 36, 1.0, 2, 2, 1, 3, 6, 6)
    with pytest.raises(RuntimeError, match="batch index"):
        op(torch.rand(1, 3, 2, 2), rois, argmax, 1.0, 2, 2, 0, 3, 6, 6)


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    g = torch.Generator().manual_seed(9)
    x = torch.rand(2, 5, 16, 20, generator=g, dtype=torch.float64)
    rois = random_rois(g, 30, batch=2, extent=20.0)
    grad = torch.rand(30, 5, 3, 3, generator=g, dtype=torch.float64)
    # The CPU float64 result of the inputs rounded to dtype is the target: max is exact.
    x_q, rois_q, grad_q = x.to(dtype).double(), rois.to(dtype).double(), grad.to(dtype).double()
    expected, expected_argmax = torch.ops.detbench.roi_pool(x_q, rois_q, 1.0, 3, 3)
    got, argmax = torch.ops.detbench.roi_pool(x.to(dtype).cuda(), rois.to(dtype).cuda(), 1.0, 3, 3)
    assert got.dtype == dtype
    assert_close(got.cpu().double(), expected, atol=0, rtol=0)
    if dtype in (torch.float32, torch.float64):  # ties after rounding to half may pick another pixel
        assert torch.equal(argmax.cpu(), expected_argmax)
    expected_grad = torch.ops.detbench.roi_pool_backward(grad_q, rois_q, argmax.cpu(), 1.0, 3, 3, 2, 5, 16, 20)
    got_grad = torch.ops.detbench.roi_pool_backward(grad.to(dtype).cuda(), rois.to(dtype).cuda(), argmax, 1.0, 3,
                                                    3, 2, 5, 16, 20)
    tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2}.get(dtype, 1e-6)
    assert_close(got_grad.cpu().double(), expected_grad, atol=tol, rtol=tol)
    tv, tv_argmax = torch.ops.torchvision.roi_pool(x.float().cuda(), rois.float().cuda(), 1.0, 3, 3)
    ours, ours_argmax = torch.ops.detbench.roi_pool(x.float().cuda(), rois.float().cuda(), 1.0, 3, 3)
    assert_close(ours, tv)
    assert torch.equal(ours_argmax, tv_argmax)


@CUDA
def test_cuda_errors():
    x = torch.rand(1, 2, 6, 6, device="cuda")
    rois = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0]], device="cuda")
    with pytest.raises(RuntimeError, match="batch index"):
        roi_pool(x, rois + torch.tensor([1.0, 0, 0, 0, 0], device="cuda"), 2)
    with pytest.raises(RuntimeError, match="device|cuda|cpu"):
        roi_pool(x, rois.cpu(), 2)
    empty = roi_pool(x, rois[:0], 2)
    assert empty.shape == (0, 2, 2, 2) and empty.is_cuda
