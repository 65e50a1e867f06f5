"""The training loop: losses and learning rate logged, checkpoints, and the non-finite-loss stop."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from detbench.engine.trainer import MetricsFile, do_train
from detbench.solver.lr_scheduler import WarmupMultiStepLR
from detbench.structures import BoxList, to_image_list
from detbench.utils.checkpoint import Checkpointer


class ToyDetector(nn.Module):
    """Two loss terms; ``loss_b`` turns NaN from iteration ``nan_at`` on (counted per call)."""

    def __init__(self, nan_at: int | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.calls, self.nan_at = 0, nan_at

    def forward(self, images, targets):
        self.calls += 1
        loss_b = self.weight.sum() * 0.5
        if self.nan_at is not None and self.calls >= self.nan_at:
            loss_b = loss_b * float("nan")
        return {"loss_a": (self.weight**2).sum(), "loss_b": loss_b}


def _loader(n: int):
    batch = (to_image_list(torch.zeros(1, 3, 4, 4)), (BoxList(torch.zeros(0, 4), (4, 4)),), (0,))
    return [batch] * n


def _train(tmp_path, model, iterations, clip_gradients=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = WarmupMultiStepLR(optimizer, milestones=[100], warmup_iters=0)
    checkpointer = Checkpointer(model, optimizer, scheduler, str(tmp_path))
    arguments = {"iteration": 0}
    do_train(model, _loader(iterations), optimizer, scheduler, checkpointer, torch.device("cpu"),
             checkpoint_period=2, arguments=arguments, log_period=1, output_dir=str(tmp_path),
             clip_gradients=clip_gradients)
    return arguments


def test_gradient_clipping_before_each_step(tmp_path):
    """Clipped by value at 0.3: the gradient 2w + 0.5 (2.5 at w = 1) becomes 0.3 each step."""
    model = ToyDetector()
    seen = []

    def clip(params):
        params = list(params)
        seen.append([float(p.grad) for p in params])
        torch.nn.utils.clip_grad_value_(params, 0.3)

    _train(tmp_path, model, 3, clip_gradients=clip)
    assert seen[0] == [2.5] and len(seen) == 3
    torch.testing.assert_close(model.weight.detach(), torch.tensor([1.0 - 3 * 0.1 * 0.3]))


def test_trains_logs_and_checkpoints(tmp_path):
    model = ToyDetector()
    arguments = _train(tmp_path, model, 3)
    assert arguments["iteration"] == 3 and model.calls == 3
    # d/dw (w^2 + w/2) = 2w + 0.5; three SGD steps of lr 0.1 from w = 1.
    w = 1.0
    for _ in range(3):
        w -= 0.1 * (2 * w + 0.5)
    torch.testing.assert_close(model.weight.detach(), torch.tensor([w]))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3]
    assert {"loss", "loss_a", "loss_b", "lr", "time", "data", "memory_mb"} <= set(records[0])
    assert (tmp_path / "model_0000002.pth").is_file() and (tmp_path / "model_final.pth").is_file()


def test_non_finite_loss_names_term_and_iteration_and_keeps_checkpoint(tmp_path):
    model = ToyDetector(nan_at=3)
    with pytest.raises(FloatingPointError, match=r"loss_b = nan at iteration 3"):
        _train(tmp_path, model, 5)
    assert (tmp_path / "last_checkpoint").read_text().strip().endswith("model_0000002.pth")
    assert not (tmp_path / "model_final.pth").exists()


def test_append_eval_once_per_iteration(tmp_path):
    path = tmp_path / "metrics.jsonl"
    metrics = MetricsFile(tmp_path)
    path.write_text(json.dumps({"iteration": 10, "loss": 1.0}) + "\n")
    results = {"val": {"bbox": {"AP": 0.5}}}
    assert metrics.append_eval(10, results)
    assert not metrics.append_eval(10, results)  # already there (e.g. the trainer wrote it)
    assert not metrics.append_eval(20, {"val": {}})  # nothing evaluated
    assert [json.loads(line) for line in path.read_text().splitlines()][-1] == {"iteration": 10, "eval": results}
    assert len(path.read_text().splitlines()) == 2


class _Clock:
    """A stand-in for the trainer's ``time`` module: every perf_counter() call advances 1 ms."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 0.001
        return self.now


class _SlowCheckpointer(Checkpointer):
    """Saving takes 100 s on the fake clock: far longer than an iteration."""

    def __init__(self, clock: _Clock, *args) -> None:
        super().__init__(*args)
        self.clock = clock

    def save(self, name, **extra):
        self.clock.now += 100.0
        super().save(name, **extra)


class _EpochLoader(list):
    """A list of batches with a batch sampler that reports 4 batches per epoch, like the real loader's."""

    class _Sampler:
        batch_sampler = [[0]] * 4

    batch_sampler = _Sampler()


def test_log_says_where_it_is_and_eta_leaves_out_checkpoints(tmp_path, caplog, monkeypatch):
    from detbench.engine import trainer

    clock = _Clock()
    monkeypatch.setattr(trainer, "time", clock)
    model = ToyDetector()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = WarmupMultiStepLR(optimizer, milestones=[100], warmup_iters=0)
    checkpointer = _SlowCheckpointer(clock, model, optimizer, scheduler, str(tmp_path))

    def slow_eval(m):
        clock.now += 100.0
        return {"val": {"bbox": {"AP": 0.5}}}

    with caplog.at_level("INFO", logger="detbench.trainer"):
        do_train(model, _EpochLoader(_loader(6)), optimizer, scheduler, checkpointer, torch.device("cpu"),
                 checkpoint_period=1, arguments={"iteration": 0}, log_period=3, output_dir=str(tmp_path),
                 test_period=2, test_fn=slow_eval)
    lines = [r.getMessage() for r in caplog.records if "iter: " in r.getMessage()]
    assert "iter: 3/6  epoch: 0.75" in lines[0] and "iter: 6/6  epoch: 1.50" in lines[1]
    # 6 iterations of a few fake milliseconds each after 100 s saves and evaluations: the ETA of
    # the first log line (3 iterations left) is under a second, not minutes.
    assert lines[0].startswith("eta: 0:00:00  ")
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "eval" not in r]
    assert [r["epoch"] for r in train] == [0.75, 1.5]
    assert all(r["time"] < 1 and r["data"] < 1 for r in train), train  # no 100 s save or evaluation inside


class _ModeRecorder(ToyDetector):
    """A ToyDetector that records whether it was in training mode at each forward."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, images, targets):
        self.modes.append(self.training)
        return super().forward(images, targets)


def _periodic_eval_run(tmp_path, model, iterations, test_period, ema=None):
    """Train ``model`` for ``iterations`` with a test_fn that evaluates (in eval mode) every
    ``test_period``; returns [(iteration, weight seen by the evaluation)] and the arguments."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = WarmupMultiStepLR(optimizer, milestones=[100], warmup_iters=0)
    arguments = {"iteration": 0}
    seen = []

    def test_fn(m):
        m.eval()  # as inference() does
        seen.append((arguments["iteration"], float(m.weight.detach())))
        return {"val": {"bbox": {"AP": arguments["iteration"] / 10}}}

    do_train(model, _loader(iterations), optimizer, scheduler, Checkpointer(model, optimizer, scheduler, str(tmp_path)),
             torch.device("cpu"), checkpoint_period=100, arguments=arguments, log_period=100,
             output_dir=str(tmp_path), test_period=test_period, test_fn=test_fn, ema=ema)
    return seen, arguments


def test_periodic_evaluation_at_multiples_of_test_period_then_back_to_training(tmp_path):
    """TEST_PERIOD 3, MAX_ITER 7: the loop evaluates at 3 and 6 (the tool evaluates the final
    model itself, see test_train_net.py), writes each result to metrics.jsonl and the TensorBoard
    events, and trains on in training mode."""
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    model = _ModeRecorder()
    seen, _ = _periodic_eval_run(tmp_path, model, 7, test_period=3)
    assert [i for i, _ in seen] == [3, 6]
    assert model.modes == [True] * 7  # iterations 4 and 7 follow an evaluation in eval mode
    assert model.training
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["eval"]) for r in records if "eval" in r] == [
        (3, {"val": {"bbox": {"AP": 0.3}}}), (6, {"val": {"bbox": {"AP": 0.6}}})]
    acc = event_accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("eval/val/bbox/AP")] == [(3, 0.3), (6, 0.6)]


def test_no_periodic_evaluation_without_test_fn_or_period(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    assert _periodic_eval_run(tmp_path / "a", ToyDetector(), 4, test_period=0)[0] == []
    assert _periodic_eval_run(tmp_path / "b", ToyDetector(), 4, test_period=5)[0] == []  # 5 > MAX_ITER


def test_periodic_evaluation_uses_the_ema_weights_and_trains_on_from_the_raw_ones(tmp_path):
    """With an EMA (decay 0.5) the evaluation at iteration 2 sees the average of the weights, and
    training continues from the raw weights: the final raw weight is plain SGD's."""
    from detbench.solver.ema import ModelEMA

    model = ToyDetector()
    ema = ModelEMA(model, decay=0.5, ramp_iters=0)
    seen, arguments = _periodic_eval_run(tmp_path, model, 4, test_period=2, ema=ema)
    raw, avg = [1.0], [1.0]  # by hand, after each iteration
    for _ in range(4):
        raw.append(raw[-1] - 0.1 * (2 * raw[-1] + 0.5))  # SGD on w^2 + w/2
        avg.append(0.5 * avg[-1] + 0.5 * raw[-1])
    assert seen == [(2, pytest.approx(avg[2], abs=1e-6))] and avg[2] != pytest.approx(raw[2], abs=1e-2)
    assert float(arguments["weights_before_ema"]["weight"]) == pytest.approx(raw[4], abs=1e-6)
    assert float(model.weight.detach()) == pytest.approx(avg[4], abs=1e-6)  # model_final: the average


class _RandomDrawer(ToyDetector):
    """Records one draw per forward from each global generator training code may use."""

    def __init__(self) -> None:
        super().__init__()
        self.draws: list[tuple[float, float, float]] = []

    def forward(self, images, targets):
        import random

        import numpy as np

        self.draws.append((float(torch.rand(())), random.random(), float(np.random.rand())))
        return super().forward(images, targets)


def test_periodic_evaluation_leaves_the_training_random_streams_alone(tmp_path):
    """An evaluation that draws from torch's, Python's and NumPy's global generators (as the test
    loader does with NUM_WORKERS 0) must not change what training draws afterwards."""
    import random

    import numpy as np

    def run(folder, test_period):
        folder.mkdir()
        torch.manual_seed(0), random.seed(0), np.random.seed(0)
        model = _RandomDrawer()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = WarmupMultiStepLR(optimizer, milestones=[100], warmup_iters=0)

        def test_fn(m):
            torch.rand(5), random.random(), np.random.rand(3)
            return {"val": {"bbox": {"AP": 0.5}}}

        do_train(model, _loader(5), optimizer, scheduler, Checkpointer(model, optimizer, scheduler, str(folder)),
                 torch.device("cpu"), checkpoint_period=100, arguments={"iteration": 0}, log_period=100,
                 output_dir=str(folder), test_period=test_period, test_fn=test_fn)
        return model.draws

    with_eval, without = run(tmp_path / "a", 2), run(tmp_path / "b", 0)
    assert len(with_eval) == 5 and with_eval == without
