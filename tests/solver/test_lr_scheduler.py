"""WarmupMultiStepLR against learning rates derived by hand from maskrcnn-benchmark's formula.

lr(it) = base_lr * warmup(it) * gamma ** #{milestones <= it}, with
warmup(it) = factor * (1 - it / W) + it / W ("linear") or factor ("constant") for it < W.
"""

import pytest
import torch
from torch.testing import assert_close

from detbench.config import get_cfg
from detbench.solver import WarmupMultiStepLR, make_lr_scheduler


def _optimizer(lrs=(0.02,)) -> torch.optim.SGD:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0])


def _run(scheduler: WarmupMultiStepLR, iters: int) -> list[list[float]]:
    """Learning rates of every group used at iterations 0 .. iters-1 (step order as in the trainer)."""
    lrs = []
    for _ in range(iters):
        lrs.append([g["lr"] for g in scheduler.optimizer.param_groups])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs


def test_linear_warmup_then_steps():
    opt = _optimizer()
    sched = WarmupMultiStepLR(opt, milestones=(6, 8), gamma=0.1, warmup_factor=1 / 3, warmup_iters=4)
    # W = 4: warmup(1) = 1/3 * 3/4 + 1/4 = 1/2, warmup(2) = 1/6 + 1/2 = 2/3, warmup(3) = 1/12 + 3/4 = 5/6.
    expected = [0.02 / 3, 0.01, 0.02 * 2 / 3, 0.02 * 5 / 6, 0.02, 0.02, 0.002, 0.002, 0.0002, 0.0002]
    assert_close([lr[0] for lr in _run(sched, 10)], expected, rtol=1e-12, atol=0)


def test_constant_warmup():
    opt = _optimizer()
    sched = WarmupMultiStepLR(opt, milestones=(5,), warmup_factor=0.1, warmup_iters=3, warmup_method="constant")
    expected = [0.002, 0.002, 0.002, 0.02, 0.02, 0.002]
    assert_close([lr[0] for lr in _run(sched, 6)], expected, rtol=1e-12, atol=0)


def test_no_warmup_and_milestone_inside_warmup():
    no_warmup = WarmupMultiStepLR(_optimizer(), milestones=(2,), warmup_iters=0)
    assert_close([lr[0] for lr in _run(no_warmup, 3)], [0.02, 0.02, 0.002], rtol=1e-12, atol=0)
    # A step during the warm-up multiplies the warm-up value: it = 2 of W = 4 gives 2/3 * 0.1.
    early = WarmupMultiStepLR(_optimizer(), milestones=(2,), warmup_factor=1 / 3, warmup_iters=4)
    assert_close(_run(early, 3)[2][0], 0.02 * 2 / 3 * 0.1, rtol=1e-12, atol=0)


def test_every_group_scaled_from_its_own_base():
    sched = WarmupMultiStepLR(_optimizer((0.01, 0.02)), milestones=(3,), warmup_factor=0.5, warmup_iters=2)
    expected = [[0.005, 0.01], [0.0075, 0.015], [0.01, 0.02], [0.001, 0.002]]
    assert_close(_run(sched, 4), expected, rtol=1e-12, atol=0)


def test_repeated_milestone_applies_gamma_twice():
    sched = WarmupMultiStepLR(_optimizer(), milestones=(1, 1), warmup_iters=0)
    assert_close(_run(sched, 2)[1][0], 0.02 * 0.01, rtol=1e-12, atol=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"milestones": (10, 5)}, "increasing"),
    ({"milestones": (5,), "warmup_method": "cosine"}, "WARMUP_METHOD"),
    ({"milestones": (5,), "warmup_iters": -1}, "WARMUP_ITERS"),
])
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WarmupMultiStepLR(_optimizer(), **kwargs)


def test_state_dict_resumes_the_schedule():
    def make():
        return WarmupMultiStepLR(_optimizer(), milestones=(5,), warmup_factor=0.25, warmup_iters=4)

    first = make()
    _run(first, 3)
    second = make()
    # The current lr lives in the optimizer's param groups, so resuming restores both (as the Checkpointer does).
    second.optimizer.load_state_dict(first.optimizer.state_dict())
    second.load_state_dict(first.state_dict())
    assert_close(_run(second, 4), _run(first, 4), rtol=0, atol=0)


def test_make_lr_scheduler_reads_the_solver_keys():
    cfg = get_cfg()
    cfg.SOLVER.STEPS = (3,)
    cfg.SOLVER.GAMMA = 0.5
    cfg.SOLVER.WARMUP_FACTOR = 0.2
    cfg.SOLVER.WARMUP_ITERS = 2
    cfg.SOLVER.WARMUP_METHOD = "constant"
    sched = make_lr_scheduler(cfg, _optimizer((0.1,)))
    assert_close([lr[0] for lr in _run(sched, 4)], [0.02, 0.02, 0.1, 0.05], rtol=1e-12, atol=0)
