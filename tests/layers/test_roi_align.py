"""roi_align: against its reference and torchvision, gradients, dispatcher registrations, errors."""

import os
import subprocess
import sys

import pytest
import torch
import torchvision
from torch.testing import assert_close

from detbench.layers.reference import roi_align_reference
from detbench.layers.roi_align import ROIAlign, roi_align

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def random_rois(g: torch.Generator, k: int, batch: int, extent: float, dtype=torch.float64) -> torch.Tensor:
    """[k, 5] RoIs on a square image of side `extent`: some cross the border, some lie
    entirely outside, some are empty (x1 == x2) or inverted (x2 < x1)."""
    corner = torch.rand(k, 2, generator=g, dtype=dtype) * 1.4 * extent - 0.2 * extent
    size = torch.rand(k, 2, generator=g, dtype=dtype) * 0.7 * extent
    boxes = torch.cat([corner, corner + size], dim=1)
    boxes[0::5, 2:] = boxes[0::5, :2]  # zero-size
    boxes[1::7, 2] = boxes[1::7, 0] - 1.5  # inverted
    boxes[2::9] += 2 * extent  # outside the image
    index = torch.randint(0, batch, (k, 1), generator=g).to(dtype)
    return torch.cat([index, boxes], dim=1)


def features(g: torch.Generator, shape, dtype=torch.float64) -> torch.Tensor:
    """Random [N, C, H, W] features that are not contiguous (a transposed buffer)."""
    n, c, h, w = shape
    x = torch.rand(n, c, w, h, generator=g, dtype=dtype).transpose(2, 3)
    assert not x.is_contiguous()
    return x


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25])
def test_forward_matches_reference(aligned, sampling_ratio, scale):
    g = torch.Generator().manual_seed(int(scale * 8) + 10 * sampling_ratio + aligned)
    x = features(g, (3, 2, 9, 11))
    rois = random_rois(g, 12, batch=3, extent=11 / scale)
    rois_strided = torch.cat([rois, rois], dim=1)[:, :5]  # non-contiguous rows
    expected = roi_align_reference(x, rois, (3, 4), scale, sampling_ratio, aligned)
    assert expected.abs().sum() > 0  # the case is not vacuous
    assert_close(roi_align(x, rois_strided, (3, 4), scale, sampling_ratio, aligned), expected)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 3])
def test_backward_matches_reference(aligned, sampling_ratio):
    g = torch.Generator().manual_seed(sampling_ratio + 5 * aligned + 100)
    x = features(g, (2, 2, 8, 10)).requires_grad_()
    rois = random_rois(g, 8, batch=2, extent=10.0)
    weight = torch.rand(8, 2, 2, 3, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((roi_align(x, rois, (2, 3), 1.0, sampling_ratio, aligned) * weight).sum(), x)
    expected_out = roi_align_reference(x, rois, (2, 3), 1.0, sampling_ratio, aligned)
    (expected,) = torch.autograd.grad((expected_out * weight).sum(), x)
    assert expected.abs().sum() > 0
    assert_close(grad, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_matches_torchvision(dtype, aligned, sampling_ratio):
    g = torch.Generator().manual_seed(7)
    x = features(g, (2, 4, 20, 24), dtype)
    rois = random_rois(g, 40, batch=2, extent=96.0, dtype=dtype)
    ours_x, theirs_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = roi_align(ours_x, rois, (5, 4), 0.25, sampling_ratio, aligned)
    theirs = torchvision.ops.roi_align(theirs_x, rois, (5, 4), 0.25, sampling_ratio, aligned)
    assert_close(ours, theirs)
    grad = torch.rand(ours.shape, generator=g, dtype=dtype)
    ours.backward(grad)
    theirs.backward(grad)
    assert_close(ours_x.grad, theirs_x.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_channels_last_input_matches_torchvision(dtype, aligned, sampling_ratio):
    # Channels-last maps (what the CPU backbone produces) take their own forward kernel.
    g = torch.Generator().manual_seed(9)
    x = torch.rand(2, 5, 20, 24, generator=g, dtype=dtype).contiguous(memory_format=torch.channels_last)
    assert not x.is_contiguous()
    rois = random_rois(g, 40, batch=2, extent=96.0, dtype=dtype)
    ours_x, theirs_x = x.clone().requires_grad_(), x.contiguous().requires_grad_()
    ours = roi_align(ours_x, rois, (5, 4), 0.25, sampling_ratio, aligned)
    theirs = torchvision.ops.roi_align(theirs_x, rois, (5, 4), 0.25, sampling_ratio, aligned)
    assert ours.is_contiguous()
    assert_close(ours, theirs)
    grad = torch.rand(ours.shape, generator=g, dtype=dtype)
    ours.backward(grad)
    theirs.backward(grad)
    assert_close(ours_x.grad, theirs_x.grad)


def test_planes_larger_than_a_channel_block_match_torchvision():
    # The CPU kernels handle channels in blocks of about 2 MiB of planes: 1 MiB float64
    # planes make blocks of 2 channels, so 3 channels take a full and a partial block.
    g = torch.Generator().manual_seed(8)
    x = torch.rand(2, 3, 256, 512, generator=g, dtype=torch.float64)
    rois = random_rois(g, 30, batch=2, extent=512.0)
    ours_x, theirs_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = roi_align(ours_x, rois, (7, 7), 1.0, 2, True)
    theirs = torchvision.ops.roi_align(theirs_x, rois, (7, 7), 1.0, 2, True)
    assert ours.abs().sum() > 0
    assert_close(ours, theirs)
    grad = torch.rand(ours.shape, generator=g, dtype=torch.float64)
    ours.backward(grad)
    theirs.backward(grad)
    assert_close(ours_x.grad, theirs_x.grad)


def test_list_of_boxes_equals_tensor_rois():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 10, 10, generator=g)
    boxes = [torch.tensor([[1.0, 1.0, 6.0, 5.0]]), torch.tensor([[0.0, 2.0, 9.0, 9.0], [3.0, 3.0, 4.0, 8.0]])]
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 5.0], [1, 0.0, 2.0, 9.0, 9.0], [1, 3.0, 3.0, 4.0, 8.0]])
    expected = roi_align(x, rois, 3, 1.0, 2, True)
    assert_close(roi_align(x, boxes, 3, 1.0, 2, True), expected)
    assert_close(torchvision.ops.roi_align(x, boxes, 3, 1.0, 2, True), expected)


@pytest.mark.parametrize("aligned", [False, True])
def test_gradcheck_and_gradgradcheck(aligned):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.3, 0.7, 4.1, 3.6], [1, 1.2, 0.4, 5.3, 4.9], [1, -0.6, 2.2, 2.7, 6.1]],
                        dtype=torch.float64)

    def fn(t):
        return roi_align(t, rois, (2, 2), 1.0, 2, aligned)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_opcheck():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 7, 8, generator=g, requires_grad=True)
    rois = random_rois(g, 6, batch=2, extent=14.0, dtype=torch.float32)
    torch.library.opcheck(torch.ops.detbench.roi_align.default, (x, rois, 0.5, 3, 2, 2, True))
    # A channels-last map takes another kernel; its output must still match the fake kernel's.
    x_nhwc = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.library.opcheck(torch.ops.detbench.roi_align.default, (x_nhwc, rois, 0.5, 3, 2, 2, True))
    grad = torch.rand(6, 3, 3, 2, generator=g, requires_grad=True)
    torch.library.opcheck(torch.ops.detbench.roi_align_backward.default,
                          (grad, rois, 0.5, 3, 2, 2, 3, 7, 8, 2, False))


def test_torch_compile_forward_and_backward_match_eager():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 9, 9, generator=g)
    rois = random_rois(g, 5, batch=2, extent=18.0, dtype=torch.float32)

    def loss(t, r):
        return (roi_align(t, r, (3, 3), 0.5, 2, True) ** 2).sum()

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    x_eager, x_compiled = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected = loss(x_eager, rois)
    got = compiled(x_compiled, rois)
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
    out = roi_align(x, rois, (2, 3), 1.0, 2, False)
    assert out.shape == (num_rois, input_shape[1], 2, 3)
    assert_close(out, roi_align_reference(x, rois, (2, 3), 1.0, 2, False))
    assert torch.count_nonzero(out) == 0
    out.sum().backward()
    assert x.grad.shape == x.shape and torch.count_nonzero(x.grad) == 0


def test_result_does_not_depend_on_thread_count():
    # Large enough to split (the kernels' grain is 32768 bins): forward, 128 RoIs of
    # 64 channels x 16 bins; backward, one block of 64 channels on 1 thread and three
    # blocks of 22 on 3 threads (each channel must still add the RoIs in one order).
    g = torch.Generator().manual_seed(6)
    x = torch.rand(2, 64, 16, 16, generator=g)
    rois = random_rois(g, 128, batch=2, extent=16.0, dtype=torch.float32)
    grad = torch.rand(128, 64, 4, 4, generator=g)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            results.append((torch.ops.detbench.roi_align(x, rois, 1.0, 4, 4, 2, True),
                            torch.ops.detbench.roi_align_backward(grad, rois, 1.0, 4, 4, 2, 64, 16, 16, 2, True)))
    finally:
        torch.set_num_threads(threads)
    for one, many in zip(*results):
        assert torch.equal(one, many)


@pytest.mark.skipif(not hasattr(torch.library, "register_autocast"), reason="torch.library.register_autocast missing")
def test_autocast_cpu_runs_in_float32():
    g = torch.Generator().manual_seed(8)
    x = torch.rand(1, 2, 8, 8, generator=g)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 7.0]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = roi_align(x.bfloat16(), rois.bfloat16(), 2, 1.0, 2, True)
    assert out.dtype == torch.float32
    assert_close(out, roi_align(x.bfloat16().float(), rois, 2, 1.0, 2, True))


def test_module_forward_and_repr():
    module = ROIAlign((2, 3), spatial_scale=0.5, sampling_ratio=2, aligned=True)
    assert repr(module) == "ROIAlign(output_size=(2, 3), spatial_scale=0.5, sampling_ratio=2, aligned=True)"
    x = torch.rand(1, 2, 6, 6)
    rois = torch.tensor([[0, 0.0, 0.0, 8.0, 10.0]])
    assert_close(module(x, rois), roi_align(x, rois, (2, 3), 0.5, 2, True))


@pytest.mark.parametrize(
    "case",
    ["rois-k4", "dtype-mix", "batch-negative", "batch-too-large", "batch-nan", "pooled-zero", "input-3d",
     "int-dtype"],
)
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
        roi_align(**args)


def test_list_of_malformed_boxes_raises_value_error():
    with pytest.raises(ValueError, match=r"boxes\[0\]"):
        roi_align(torch.rand(1, 1, 4, 4), [torch.rand(3, 5)], 2)


def test_backward_op_rejects_mismatched_grad():
    rois = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0]])
    with pytest.raises(RuntimeError, match="grad must be"):
        torch.ops.detbench.roi_align_backward(torch.rand(1, 3, 2, 2), rois, 1.0, 2, 2, 1, 4, 6, 6, 2, False)
    with pytest.raises(RuntimeError, match="batch index"):
        torch.ops.detbench.roi_align_backward(torch.rand(1, 3, 2, 2), rois, 1.0, 2, 2, 0, 3, 6, 6, 2, False)


def test_missing_extension_gives_build_hint():
    code = (
        "import torch\n"
        "from detbench.extension import MissingExtensionError\n"
        "from detbench.layers.roi_align import roi_align\n"
        "try:\n"
        "    roi_align(torch.rand(1, 1, 4, 4), torch.zeros(1, 5), 2)\n"
        "except MissingExtensionError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "DETBENCH_DISABLE_EXTENSION": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pip install -e ." in result.stdout


@CUDA
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10), (torch.float16, 2e-2),
                                        (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("aligned", [False, True])
def test_cuda_matches_cpu(dtype, tol, aligned):
    g = torch.Generator().manual_seed(9)
    x = torch.rand(2, 5, 16, 20, generator=g, dtype=torch.float64)
    rois = random_rois(g, 30, batch=2, extent=20.0)
    grad = torch.rand(30, 5, 3, 3, generator=g, dtype=torch.float64)
    args = (1.0, 3, 3, 2, aligned)
    # The CPU float64 result of the inputs rounded to dtype is the target.
    x_q, rois_q, grad_q = x.to(dtype).double(), rois.to(dtype).double(), grad.to(dtype).double()
    expected = torch.ops.detbench.roi_align(x_q, rois_q, *args)
    got = torch.ops.detbench.roi_align(x.to(dtype).cuda(), rois.to(dtype).cuda(), *args)
    assert got.dtype == dtype
    assert_close(got.cpu().double(), expected, atol=tol, rtol=tol)
    expected_grad = torch.ops.detbench.roi_align_backward(grad_q, rois_q, 1.0, 3, 3, 2, 5, 16, 20, 2, aligned)
    got_grad = torch.ops.detbench.roi_align_backward(grad.to(dtype).cuda(), rois.to(dtype).cuda(), 1.0, 3, 3,
                                                     2, 5, 16, 20, 2, aligned)
    assert_close(got_grad.cpu().double(), expected_grad, atol=tol * 4, rtol=tol)


@CUDA
def test_cuda_errors():
    x = torch.rand(1, 2, 6, 6, device="cuda")
    rois = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0]], device="cuda")
    with pytest.raises(RuntimeError, match="batch index"):
        roi_align(x, rois + torch.tensor([1.0, 0, 0, 0, 0], device="cuda"), 2)
    with pytest.raises(RuntimeError, match="device|cuda|cpu"):
        roi_align(x, rois.cpu(), 2)
    empty = roi_align(x, rois[:0], 2)
    assert empty.shape == (0, 2, 2, 2) and empty.is_cuda


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("channels", [1, 5, 67])
def test_channels_last_backward_equals_the_nchw_one(aligned, channels):
    # channels_last=True writes the same gradient into channels-last memory (its own CPU kernel);
    # 67 channels split unevenly between threads.
    g = torch.Generator().manual_seed(11)
    rois = random_rois(g, 30, batch=2, extent=80.0)
    grad = torch.rand(30, channels, 4, 3, generator=g, dtype=torch.float64)
    args = (rois, 0.25, 4, 3, 2, channels, 18, 21, -1, aligned)
    nchw = torch.ops.detbench.roi_align_backward(grad, *args)
    nhwc = torch.ops.detbench.roi_align_backward(grad, *args, True)
    assert nchw.is_contiguous() and nhwc.is_contiguous(memory_format=torch.channels_last)
    assert_close(nhwc, nchw, rtol=1e-12, atol=1e-12)
    torch.library.opcheck(torch.ops.detbench.roi_align_backward.default, (grad.requires_grad_(), *args, True))


def test_gradient_reaches_a_channels_last_map_channels_last():
    # Autograd asks for the forward input's layout, so the gradient adds to the map's other
    # (channels-last) gradients without a layout change; the values are torchvision's.
    g = torch.Generator().manual_seed(12)
    x = torch.rand(2, 6, 16, 20, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    rois = random_rois(g, 25, batch=2, extent=64.0)
    seen = []
    leaf = x.clone().requires_grad_()
    feature = leaf * 1.0  # a non-leaf map, like a backbone output
    feature.register_hook(lambda grad: seen.append(grad))
    out = roi_align(feature, rois, (3, 3), 0.25, 2, True)
    grad = torch.rand(out.shape, generator=g, dtype=torch.float64)
    out.backward(grad)
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()
    theirs_x = x.contiguous().requires_grad_()
    torchvision.ops.roi_align(theirs_x, rois, (3, 3), 0.25, 2, True).backward(grad)
    assert_close(seen[0], theirs_x.grad)
    assert torch.autograd.gradgradcheck(lambda t: roi_align(t, rois[:4], (2, 2), 0.25, 2, True),
                                        (x[:, :2].contiguous(memory_format=torch.channels_last).requires_grad_(),))
