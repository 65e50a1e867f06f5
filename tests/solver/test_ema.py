"""ModelEMA: the average by hand, the decay ramp, swapping, checkpoints, and the training loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from detbench.config import ConfigError, load_config
from detbench.solver.ema import ModelEMA, build_ema


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(2))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))


def test_average_by_hand_and_integer_buffers_copied():
    net = Net()
    ema = ModelEMA(net, decay=0.5, ramp_iters=0)
    with torch.no_grad():
        net.w.fill_(3.0)
    net.count += 7
    ema.update(net)
    assert_close(ema.state["w"], torch.tensor([2.0, 2.0]))  # 0.5 * 1 + 0.5 * 3
    assert int(ema.state["count"]) == 7
    ema.update(net)
    assert_close(ema.state["w"], torch.tensor([2.5, 2.5]))


def test_decay_ramp():
    ema = ModelEMA(Net(), decay=0.9, ramp_iters=10)
    assert ema.current_decay() == pytest.approx(0.9 * (1 - math.exp(-1 / 10)))
    ema.updates = 1000
    assert ema.current_decay() == pytest.approx(0.9, abs=1e-12)


def test_swapped_into_restores_even_on_error():
    net = Net()
    ema = ModelEMA(net, decay=0.0, ramp_iters=0)
    with torch.no_grad():
        net.w.fill_(5.0)
    with pytest.raises(RuntimeError), ema.swapped_into(net):
        assert_close(net.w.detach(), torch.ones(2))  # the average (taken at w = 1)
        raise RuntimeError("evaluation failed")
    assert_close(net.w.detach(), torch.full((2,), 5.0))


def test_state_dict_is_weights_only_and_resumes(tmp_path):
    net = Net()
    ema = ModelEMA(net, decay=0.7, ramp_iters=3)
    for value in (2.0, 4.0):
        with torch.no_grad():
            net.w.fill_(value)
        ema.update(net)
    torch.save({"ema": ema.state_dict()}, tmp_path / "c.pth")
    restored = ModelEMA(Net(), decay=0.7, ramp_iters=3)
    restored.load_state_dict(torch.load(tmp_path / "c.pth", weights_only=True)["ema"])
    assert restored.updates == 2 and restored.current_decay() == ema.current_decay()
    assert_close(restored.state["w"], ema.state["w"])
    with pytest.raises(KeyError, match="differing keys"):
        ModelEMA(nn.Linear(1, 1)).load_state_dict(ema.state_dict())


def test_training_loop_updates_saves_and_ends_with_the_average(tmp_path):
    from detbench.engine.trainer import do_train
    from detbench.solver.lr_scheduler import WarmupMultiStepLR
    from detbench.structures import BoxList, to_image_list
    from detbench.utils.checkpoint import Checkpointer

    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(1))

        def forward(self, images, targets):
            return {"loss_w": (self.weight ** 2).sum()}

    model = Toy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = WarmupMultiStepLR(optimizer, milestones=[100], warmup_iters=0)
    ema = ModelEMA(model, decay=0.5, ramp_iters=0)
    batch = (to_image_list(torch.zeros(1, 3, 4, 4)), (BoxList(torch.zeros(0, 4), (4, 4)),), (0,))
    arguments = {"iteration": 0}
    do_train(model, [batch] * 3, optimizer, scheduler, Checkpointer(model, optimizer, scheduler, str(tmp_path)),
             torch.device("cpu"), checkpoint_period=2, arguments=arguments, output_dir=str(tmp_path), ema=ema)
    w, avg = 1.0, 1.0
    for _ in range(3):
        w -= 0.1 * 2 * w  # SGD on w^2
        avg = 0.5 * avg + 0.5 * w
    assert_close(model.weight.detach(), torch.tensor([avg]))  # the model ends as the average
    saved = torch.load(tmp_path / "model_0000002.pth", weights_only=True)
    assert saved["ema"]["updates"] == 2
    assert_close(saved["model"]["weight"], torch.tensor([0.64]))  # raw weights in periodic checkpoints
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert_close(final["model"]["weight"], torch.tensor([avg]))
    assert_close(final["weights_before_ema"]["weight"], torch.tensor([w]))  # for a longer schedule's resume


def test_config_keys():
    assert build_ema(load_config(None, []), Net()) is None
    assert isinstance(build_ema(load_config(None, ["MODEL_EMA.ENABLED", "True"]), Net()), ModelEMA)
    with pytest.raises(ConfigError, match=r"MODEL_EMA.DECAY = 1.0: must be a number in \[0, 1\)"):
        load_config(None, ["MODEL_EMA.DECAY", "1.0"])
