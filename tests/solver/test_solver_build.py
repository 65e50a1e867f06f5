"""make_optimizer: parameter groups, frozen parameters, and one SGD step computed by hand."""

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from detbench.config import get_cfg
from detbench.solver import make_optimizer


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.norm = nn.BatchNorm1d(2)
        self.bias_scale = nn.Parameter(torch.ones(2))  # a weight whose name merely contains "bias"
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def _cfg():
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.BIAS_LR_FACTOR = 2.0
    cfg.SOLVER.WEIGHT_DECAY = 0.01
    cfg.SOLVER.WEIGHT_DECAY_BIAS = 0.0
    cfg.SOLVER.MOMENTUM = 0.9
    return cfg


def test_groups_follow_the_solver_keys():
    net = Net()
    opt = make_optimizer(_cfg(), net)
    weights, biases = opt.param_groups
    assert {id(p) for p in weights["params"]} == {id(net.fc.weight), id(net.norm.weight), id(net.bias_scale)}
    assert {id(p) for p in biases["params"]} == {id(net.fc.bias), id(net.norm.bias)}
    assert (weights["lr"], weights["weight_decay"], weights["momentum"]) == (0.1, 0.01, 0.9)
    assert (biases["lr"], biases["weight_decay"], biases["momentum"]) == (0.2, 0.0, 0.9)


def test_model_without_biases_has_one_group():
    opt = make_optimizer(_cfg(), nn.Linear(3, 2, bias=False))
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["lr"] == 0.1


def test_fully_frozen_model_is_an_error():
    with pytest.raises(ValueError, match="requires_grad"):
        make_optimizer(_cfg(), nn.Linear(3, 2).requires_grad_(False))


def test_one_step_matches_hand_computation():
    cfg = _cfg()
    cfg.SOLVER.MOMENTUM = 0.0
    cfg.SOLVER.WEIGHT_DECAY_BIAS = 0.5
    net = nn.Linear(2, 1)
    w0, b0 = net.weight.detach().clone(), net.bias.detach().clone()
    opt = make_optimizer(cfg, net)
    x = torch.tensor([[1.0, 2.0]])
    net(x).sum().backward()  # d/dw = x, d/db = 1
    opt.step()
    # SGD with L2 decay: p <- p - lr * (grad + wd * p)
    assert_close(net.weight.detach(), w0 - 0.1 * (x + 0.01 * w0))
    assert_close(net.bias.detach(), b0 - 0.2 * (1.0 + 0.5 * b0))
