"""sigmoid_focal_loss: against its reference and torchvision.ops, gradients, registrations, errors."""

import pytest
import torch
import torchvision
from torch.testing import assert_close

from detbench import extension
from detbench.layers import SigmoidFocalLoss, sigmoid_focal_loss
from detbench.layers.reference import sigmoid_focal_loss_reference

pytestmark = pytest.mark.skipif(not extension.has_ops(), reason="compiled ops not built (pip install -e .)")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
GAMMAS = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0]


def case(g: torch.Generator, shape=(40, 6), dtype=torch.float64, soft: bool = False):
    """Logits spread over [-12, 12] (saturated ones included), 0/1 (or soft) targets; non-contiguous logits."""
    logits = (torch.randn(shape[::-1], generator=g, dtype=dtype) * 5).clamp(-12, 12).t()
    assert not logits.is_contiguous()
    targets = torch.rand(shape, generator=g, dtype=dtype)
    return logits, targets if soft else (targets > 0.7).to(dtype)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", [0.25, 0.5, -1.0])
@pytest.mark.parametrize("soft", [False, True])
def test_forward_and_backward_match_reference(gamma, alpha, soft):
    g = torch.Generator().manual_seed(int(gamma * 10) + int(alpha * 4) + 50 * soft)
    logits, targets = case(g, soft=soft)
    x, x_ref = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    out = sigmoid_focal_loss(x, targets, alpha, gamma)
    expected = sigmoid_focal_loss_reference(x_ref, targets, gamma, alpha)
    assert_close(out, expected)
    weight = torch.rand(out.shape, generator=g, dtype=out.dtype)
    (grad,) = torch.autograd.grad((out * weight).sum(), x)
    (grad_ref,) = torch.autograd.grad((expected * weight).sum(), x_ref)
    assert_close(grad, grad_ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("gamma, alpha", [(2.0, 0.25), (0.0, -1.0), (1.5, 0.75)])
def test_matches_torchvision(dtype, reduction, gamma, alpha):
    g = torch.Generator().manual_seed(3)
    logits, targets = case(g, (64, 9), dtype)
    ours_x, theirs_x = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = sigmoid_focal_loss(ours_x, targets, alpha, gamma, reduction)
    theirs = torchvision.ops.sigmoid_focal_loss(theirs_x, targets, alpha, gamma, reduction)
    assert_close(ours, theirs)
    (ours.sum() if reduction == "none" else ours).backward()
    (theirs.sum() if reduction == "none" else theirs).backward()
    assert_close(ours_x.grad, theirs_x.grad)


def test_extreme_logits_stay_finite():
    x = torch.tensor([[-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4]], dtype=torch.float32).repeat(2, 1)
    t = torch.tensor([[0.0] * 7, [1.0] * 7])
    x.requires_grad_()
    out = sigmoid_focal_loss(x, t, 0.25, 2.0)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    # A confident right answer costs ~0, a confident wrong one ~alpha_t * |x|.
    assert out[0, 0] == 0 and out[1, -1] == 0
    assert_close(out[1, 0], torch.tensor(0.25 * 1e4))
    assert_close(out[0, -1], torch.tensor(0.75 * 1e4))


def test_gradcheck():
    g = torch.Generator().manual_seed(4)
    logits, targets = case(g, (5, 3), soft=True)
    for gamma in (0.0, 1.0, 2.0, 2.5):
        assert torch.autograd.gradcheck(lambda x: sigmoid_focal_loss(x, targets, 0.25, gamma),
                                        (logits.clone().requires_grad_(),))


def test_opcheck():
    g = torch.Generator().manual_seed(5)
    logits, targets = case(g, (12, 4), torch.float32)
    torch.library.opcheck(torch.ops.detbench.sigmoid_focal_loss.default,
                          (logits.clone().requires_grad_(), targets, 2.0, 0.25))
    grad = torch.rand(12, 4, generator=g)
    torch.library.opcheck(torch.ops.detbench.sigmoid_focal_loss_backward.default,
                          (grad, logits, targets, 1.5, -1.0))


def test_torch_compile_fullgraph_matches_eager():
    g = torch.Generator().manual_seed(6)
    logits, targets = case(g, (20, 5), torch.float32)

    def loss(x, t):
        return sigmoid_focal_loss(x * 2, t, 0.25, 2.0, "sum")

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    x_eager, x_compiled = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    expected, got = loss(x_eager, targets), compiled(x_compiled, targets)
    expected.backward()
    got.backward()
    assert_close(got, expected)
    assert_close(x_compiled.grad, x_eager.grad)


@pytest.mark.parametrize("shape", [(0, 80), (7, 0), (0,), (3, 4, 5)])
def test_empty_and_other_shapes(shape):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    t = (torch.rand(shape, dtype=torch.float64) > 0.5).double()
    out = sigmoid_focal_loss(x, t)
    assert out.shape == x.shape
    assert_close(out, sigmoid_focal_loss_reference(x, t))
    out.sum().backward()
    assert x.grad.shape == x.shape


def test_result_does_not_depend_on_thread_count():
    g = torch.Generator().manual_seed(7)
    logits, targets = case(g, (3000, 80), torch.float32)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            results.append(sigmoid_focal_loss(logits, targets))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(*results)


@pytest.mark.skipif(not hasattr(torch.library, "register_autocast"), reason="torch.library.register_autocast missing")
def test_autocast_cpu_runs_in_float32():
    x, t = torch.randn(4, 3), (torch.rand(4, 3) > 0.5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sigmoid_focal_loss(x.bfloat16(), t.bfloat16())
    assert out.dtype == torch.float32


def test_module_takes_integer_labels_as_maskrcnn_benchmark():
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 4, -1, 2, 0, 3, -1, 1])
    module = SigmoidFocalLoss(gamma=2.0, alpha=0.25)
    assert repr(module) == "SigmoidFocalLoss(gamma=2.0, alpha=0.25)"
    got = module(logits, labels)
    # Hand-built one-hot targets: column c - 1 for label c, nothing for 0; rows with -1 dropped.
    keep = labels >= 0
    onehot = torch.zeros(9, 4, dtype=torch.float64)
    for row, label in enumerate(labels.tolist()):
        if label > 0:
            onehot[row, label - 1] = 1
    expected = sigmoid_focal_loss_reference(logits[keep], onehot[keep], 2.0, 0.25).sum()
    assert_close(got, expected)
    with pytest.raises(ValueError, match="exceeds"):
        module(logits, torch.full((9,), 5))
    with pytest.raises(ValueError, match="gamma"):
        SigmoidFocalLoss(gamma=-1.0, alpha=0.25)


@pytest.mark.parametrize("case_name", ["shape", "dtype", "int", "gamma"])
def test_malformed_arguments_raise(case_name):
    x, t = torch.randn(4, 3), torch.rand(4, 3)
    args = {"shape": (x, t[:, :2], 2.0), "dtype": (x, t.double(), 2.0), "int": (x.long(), t.long(), 2.0),
            "gamma": (x, t, -1.0)}[case_name]
    with pytest.raises(RuntimeError):
        torch.ops.detbench.sigmoid_focal_loss(*args, 0.25)


def test_wrapper_errors():
    x, t = torch.randn(4, 3), torch.rand(4, 3)
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(x, t, reduction="average")
    with pytest.raises(ValueError, match="targets"):
        sigmoid_focal_loss(x, t.requires_grad_())


@CUDA
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10), (torch.float16, 2e-2),
                                        (torch.bfloat16, 5e-2)])
def test_cuda_matches_cpu(dtype, tol):
    g = torch.Generator().manual_seed(9)
    logits, targets = case(g, (300, 20))
    grad = torch.rand(300, 20, generator=g, dtype=torch.float64)
    x_q, t_q, g_q = logits.to(dtype).double(), targets.to(dtype).double(), grad.to(dtype).double()
    expected = torch.ops.detbench.sigmoid_focal_loss(x_q, t_q, 2.0, 0.25)
    got = torch.ops.detbench.sigmoid_focal_loss(logits.to(dtype).cuda(), targets.to(dtype).cuda(), 2.0, 0.25)
    assert got.dtype == dtype
    assert_close(got.cpu().double(), expected, atol=tol, rtol=tol)
    expected_grad = torch.ops.detbench.sigmoid_focal_loss_backward(g_q, x_q, t_q, 2.0, 0.25)
    got_grad = torch.ops.detbench.sigmoid_focal_loss_backward(grad.to(dtype).cuda(), logits.to(dtype).cuda(),
                                                              targets.to(dtype).cuda(), 2.0, 0.25)
    assert_close(got_grad.cpu().double(), expected_grad, atol=tol, rtol=tol)
    assert_close(sigmoid_focal_loss(logits.cuda(), targets.cuda(), 0.25, 1.5, "sum").cpu(),
                 torchvision.ops.sigmoid_focal_loss(logits, targets, 0.25, 1.5, "sum"))
