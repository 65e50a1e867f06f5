"""make_optimizer: parameter groups, frozen parameters, and one SGD step computed by hand."""

import math

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


# ---- the recipe options: AdamW, norm weight decay, cosine schedule, gradient clipping ----------------------


class NormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 1)
        self.gn = nn.GroupNorm(2, 4)


def test_weight_decay_norm_puts_norm_layers_in_their_own_groups():
    cfg = _cfg()
    net = NormNet()
    assert len(make_optimizer(cfg, net).param_groups) == 2  # default (negative): as other weights / biases
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    groups = make_optimizer(cfg, net).param_groups
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert ids == [{id(net.conv.weight)}, {id(net.conv.bias)}, {id(net.gn.weight)}, {id(net.gn.bias)}]
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(0.1, 0.01), (0.2, 0.0), (0.1, 0.0), (0.2, 0.0)]


def test_adamw_first_step_by_hand():
    """Step 1 of AdamW: p <- p (1 - lr wd) - lr g / (|g| + eps) (bias corrections cancel)."""
    cfg = _cfg()
    cfg.SOLVER.OPTIMIZER = "AdamW"
    cfg.SOLVER.BETAS = (0.8, 0.99)
    net = nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -2.0]]))
        net.bias.fill_(0.5)
    opt = make_optimizer(cfg, net)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.8, 0.99)
    net(torch.tensor([[3.0, -1.0]])).sum().backward()  # grads: weight (3, -1), bias 1
    opt.step()
    eps = 1e-8
    w = torch.tensor([[1.0, -2.0]]) * (1 - 0.1 * 0.01) - 0.1 * torch.tensor([[3 / (3 + eps), -1 / (1 + eps)]])
    assert_close(net.weight.detach(), w)
    assert_close(net.bias.detach(), torch.tensor([0.5 - 0.2 * 1 / (1 + eps)]))  # bias lr 0.2, no decay


def test_cosine_schedule_by_hand():
    from detbench.solver import WarmupCosineLR, make_lr_scheduler

    cfg = _cfg()
    cfg.SOLVER.LR_SCHEDULER, cfg.SOLVER.MAX_ITER, cfg.SOLVER.BASE_LR_END = "WarmupCosineLR", 100, 0.01
    cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR = 10, 0.5
    opt = make_optimizer(cfg, Net())  # groups: lr 0.1 and bias lr 0.2
    sched = make_lr_scheduler(cfg, opt)
    assert isinstance(sched, WarmupCosineLR)
    lrs = []
    for _ in range(120):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    cos = lambda it: 0.01 + (0.1 - 0.01) * (1 + math.cos(math.pi * it / 100)) / 2  # noqa: E731
    assert_close(lrs[0], [0.5 * 0.1, 0.5 * 0.2])  # warm-up factor at iteration 0 (cosine still 1)
    assert_close(lrs[5][0], (0.5 * 0.5 + 0.5) * cos(5))  # linear warm-up halfway
    assert_close(lrs[50], [0.055, 0.11])  # half-way down, the bias group at twice the rate
    assert_close(lrs[100], [0.01, 0.02])
    assert_close(lrs[119], [0.01, 0.02])  # stays at the end value


def test_gradient_clipping_by_value_and_norm():
    from detbench.solver import make_gradient_clipper

    cfg = _cfg()
    assert make_gradient_clipper(cfg) is None
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    p = nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, -0.5])
    make_gradient_clipper(cfg)([p])
    assert_close(p.grad, torch.tensor([1.0, -0.5]))
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    q = nn.Parameter(torch.zeros(1))
    p.grad, q.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])  # norm 5 over both
    make_gradient_clipper(cfg)([p, q])
    assert_close(torch.cat([p.grad, q.grad]), torch.tensor([0.6, 0.0, 0.8]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("key, value, message", [
    ("SOLVER.OPTIMIZER", "Adam", "SOLVER.OPTIMIZER = 'Adam': must be one of"),
    ("SOLVER.LR_SCHEDULER", "Cosine", "SOLVER.LR_SCHEDULER = 'Cosine'"),
    ("SOLVER.BETAS", "(0.9, 1.0)", "SOLVER.BETAS"),
    ("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "full_model", "CLIP_TYPE = 'full_model'"),
    ("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "0.0", "CLIP_VALUE = 0.0"),
], ids=["optimizer", "scheduler", "betas", "clip-type", "clip-value"])
def test_bad_recipe_options_are_named_at_load_time(key, value, message):
    from detbench.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(None, [key, value])


def test_cosine_end_above_base_lr_is_refused():
    from detbench.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="BASE_LR_END = 0.5: must be <= BASE_LR"):
        load_config(None, ["SOLVER.LR_SCHEDULER", "WarmupCosineLR", "SOLVER.BASE_LR", "0.1", "SOLVER.BASE_LR_END", "0.5"])


def _steps_against_the_loop(name: str, channels_last_grads: bool):
    """Five steps of make_optimizer's optimizer and of torch's per-tensor loop on twin models."""
    cfg = _cfg()
    cfg.SOLVER.OPTIMIZER = name
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(144, 2))
    twin = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(144, 2))
    twin.load_state_dict(model.state_dict())
    for m in (model, twin):  # a channels-last weight, as CPU detectors keep their convolutions'
        m[0].weight.data = m[0].weight.data.contiguous(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model)
    assert all(group["fused"] for group in optimizer.param_groups)
    # The same groups, with torch's per-tensor loop.
    reference = type(optimizer)([dict(g, params=[dict(twin.named_parameters())[n] for n in names], fused=None,
                                      foreach=False)
                                 for g, names in zip(optimizer.param_groups, _group_names(model, optimizer))])
    for _ in range(5):
        x = torch.randn(4, 3, 8, 8)
        for m, opt in ((model, optimizer), (twin, reference)):
            opt.zero_grad()
            m(x).square().mean().backward()
            if not channels_last_grads:  # a gradient set by other code, in another layout than its weight
                m[0].weight.grad = m[0].weight.grad.contiguous()
            opt.step()
    return model, twin


@pytest.mark.parametrize("name", ["SGD", "AdamW"])
@pytest.mark.parametrize("channels_last_grads", [True, False])
def test_fused_steps_match_the_per_tensor_loop(name, channels_last_grads):
    """Within float32 rounding of torch's loop, also when a gradient's strides are not its weight's
    (the fused kernels alone would pair the wrong elements: differences of 0.2 to 0.5)."""
    model, twin = _steps_against_the_loop(name, channels_last_grads)
    for (name_, a), (_, b) in zip(model.named_parameters(), twin.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name_)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def _group_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups]
