"""Crash-safe training: SIGINT / SIGTERM save the current iteration, kill -9 loses nothing.

The in-process tests raise signals from inside a toy model's forward pass. The
subprocess tests drive ``do_train`` through a small script (written to a temporary
folder) whose model has dropout, momentum SGD and a warmup + step learning rate, so
that a resumed run matches an uninterrupted one only if weights, optimizer,
scheduler and RNG states all come back from the checkpoint.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from detbench.engine.trainer import do_train
from detbench.solver.lr_scheduler import WarmupMultiStepLR
from detbench.structures import BoxList, to_image_list
from detbench.utils.checkpoint import Checkpointer

POSIX = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


# ----------------------------------------------------------------------------- in process
class SignalingModel(nn.Module):
    """Raises ``signals`` (in order) during the forward pass of iteration ``at``."""

    def __init__(self, at: int, signals: tuple[int, ...]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.at, self.signals, self.calls = at, signals, 0

    def forward(self, images, targets):
        self.calls += 1
        if self.calls == self.at:
            for signum in self.signals:
                signal.raise_signal(signum)
        return {"loss_w": (self.weight**2).sum()}


@pytest.fixture
def sentinel_handlers():
    """Harmless handlers for SIGINT/SIGTERM during the test (a missed signal must not kill pytest)."""
    received: list[int] = []

    def sentinel(signum, frame):
        received.append(signum)

    previous = {s: signal.signal(s, sentinel) for s in (signal.SIGINT, signal.SIGTERM)}
    yield sentinel, received
    for s, handler in previous.items():
        signal.signal(s, handler)


def _train(tmp_path: Path, model: nn.Module, iterations: int, checkpoint_period: int) -> dict:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = WarmupMultiStepLR(optimizer, milestones=[100], warmup_iters=0)
    checkpointer = Checkpointer(model, optimizer, scheduler, str(tmp_path))
    batch = (to_image_list(torch.zeros(1, 3, 4, 4)), (BoxList(torch.zeros(0, 4), (4, 4)),), (0,))
    arguments = {"iteration": 0}
    do_train(model, [batch] * iterations, optimizer, scheduler, checkpointer, torch.device("cpu"),
             checkpoint_period=checkpoint_period, arguments=arguments, log_period=100)
    return arguments


def _pointer(folder: Path) -> str:
    return (folder / "last_checkpoint").read_text().strip()


@POSIX
def test_sigterm_finishes_iteration_saves_it_and_exits_143(tmp_path, sentinel_handlers):
    sentinel, received = sentinel_handlers
    model = SignalingModel(at=3, signals=(signal.SIGTERM,))
    with pytest.raises(SystemExit) as info:
        _train(tmp_path, model, iterations=6, checkpoint_period=4)
    assert info.value.code == 143 and model.calls == 3
    assert _pointer(tmp_path) == "model_0000003.pth"
    saved = torch.load(tmp_path / "model_0000003.pth", weights_only=True)
    assert saved["iteration"] == 3
    # The iteration was finished: three SGD steps on w^2 (gradient 2w) from w = 1 give 0.8^3.
    torch.testing.assert_close(saved["model"]["weight"], torch.tensor([0.8**3]))
    torch.testing.assert_close(model.weight.detach(), torch.tensor([0.8**3]))
    assert signal.getsignal(signal.SIGTERM) is sentinel and signal.getsignal(signal.SIGINT) is sentinel
    assert received == []  # the trainer's handler, not the previous one, took the signal


@POSIX
def test_sigint_raises_keyboard_interrupt_without_saving_twice(tmp_path, sentinel_handlers, caplog):
    sentinel, _ = sentinel_handlers
    caplog.set_level(logging.INFO)
    model = SignalingModel(at=2, signals=(signal.SIGINT,))
    with pytest.raises(KeyboardInterrupt, match="SIGINT"):
        _train(tmp_path, model, iterations=6, checkpoint_period=2)
    assert _pointer(tmp_path) == "model_0000002.pth" and model.calls == 2
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["model_0000002.pth"]
    assert sum("Saving checkpoint" in r.getMessage() for r in caplog.records) == 1
    assert any("SIGINT received: stopped after iteration 2" in r.getMessage() for r in caplog.records)
    assert signal.getsignal(signal.SIGINT) is sentinel


@POSIX
def test_second_signal_stops_at_once(tmp_path, sentinel_handlers):
    model = SignalingModel(at=2, signals=(signal.SIGINT, signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, model, iterations=6, checkpoint_period=100)
    assert model.calls == 2 and not list(tmp_path.glob("*.pth"))  # iteration 2 aborted, no save
    torch.testing.assert_close(model.weight.detach(), torch.tensor([0.8]))  # iteration 1's step only
    assert signal.getsignal(signal.SIGINT) is sentinel_handlers[0]


@POSIX
def test_ignored_signal_stays_ignored(tmp_path, sentinel_handlers):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job of a shell script
    model = SignalingModel(at=2, signals=(signal.SIGINT,))
    arguments = _train(tmp_path, model, iterations=4, checkpoint_period=100)
    assert arguments["iteration"] == 4 and _pointer(tmp_path) == "model_final.pth"
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_outside_main_thread_leaves_handlers_alone(tmp_path, sentinel_handlers):
    seen, errors = [], []

    class Probe(SignalingModel):
        def forward(self, images, targets):
            seen.append(signal.getsignal(signal.SIGTERM))
            return super().forward(images, targets)

    def run():
        try:
            _train(tmp_path, Probe(at=0, signals=()), iterations=2, checkpoint_period=100)
        except BaseException as e:  # reported to the main thread below
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert errors == [] and seen == [sentinel_handlers[0]] * 2
    assert _pointer(tmp_path) == "model_final.pth"


# ----------------------------------------------------------------------------- subprocesses
# Prints "forward N" at the start of each iteration; with PAUSE_AT=N it waits there for a signal
# (polling, since a signal that came before a blocking wait would be missed).
SCRIPT = r'''
import os, signal, sys, time
import torch
from torch import nn
from detbench.engine.trainer import do_train
from detbench.solver.lr_scheduler import WarmupMultiStepLR
from detbench.structures import BoxList, to_image_list
from detbench.utils.checkpoint import Checkpointer

out_dir, max_iter, period = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pause_at, sleep = int(os.environ.get("PAUSE_AT", "0")), float(os.environ.get("SLEEP", "0"))
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
torch.manual_seed(0)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.drop, self.fc = nn.Conv2d(3, 4, 3), nn.Dropout(0.5), nn.Linear(4, 2)
        # Makes each save take a while, so that a kill often lands inside one.
        self.register_buffer("ballast", torch.zeros(2**20))
        self.iteration = 0

    def forward(self, images, targets):
        self.iteration += 1
        print("forward", self.iteration, flush=True)
        if self.iteration == pause_at:  # wait until the trainer's handler has seen a signal
            stop = signal.getsignal(signal.SIGTERM).__self__  # the trainer's StopOnSignal
            while not stop.signum:
                time.sleep(0.005)
        time.sleep(sleep)
        x = self.fc(self.drop(self.conv(images.tensors).relu().mean((2, 3))))
        target = images.tensors.mean((1, 2, 3)).unsqueeze(1).expand(-1, 2)
        return {"loss_fit": ((x - target) ** 2).mean(), "loss_l1": 0.01 * x.abs().mean()}


def batch(index):
    g = torch.Generator().manual_seed(index)  # batch i depends on i only, as with a real sampler
    return (to_image_list(torch.randn(2, 3, 8, 8, generator=g)),
            tuple(BoxList(torch.zeros(0, 4), (8, 8)) for _ in range(2)), (index,))


model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
scheduler = WarmupMultiStepLR(optimizer, milestones=[max_iter // 2], warmup_iters=5)
checkpointer = Checkpointer(model, optimizer, scheduler, out_dir)
arguments = {"iteration": 0}
arguments.update(checkpointer.load())
model.iteration = arguments["iteration"]
loader = [batch(i) for i in range(arguments["iteration"], max_iter)]
do_train(model, loader, optimizer, scheduler, checkpointer, torch.device("cpu"), period, arguments,
         log_period=1000)
'''
MAX_ITER = 24
TIMEOUT = 120


def _start(script: Path, out_dir: Path, period: int, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), str(out_dir), str(MAX_ITER), str(period)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})


def _run(script: Path, out_dir: Path, period: int) -> list[str]:
    """Run to completion; the "forward N" lines it printed."""
    proc = _start(script, out_dir, period)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    return out.split("\n")


def _wait_for(proc: subprocess.Popen, line: str) -> None:
    """Read the child's stdout until ``line``."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        got = proc.stdout.readline()
        if got.strip() == line:
            return
        if not got:  # the child exited
            break
    proc.kill()
    pytest.fail(f"never saw {line!r}: {proc.communicate()[1]}")


def _assert_same_state(resumed: Path, reference: Path) -> None:
    a = torch.load(resumed, weights_only=True)
    b = torch.load(reference, weights_only=True)
    assert a["iteration"] == b["iteration"] == MAX_ITER
    assert a["model"].keys() == b["model"].keys()
    for key in b["model"]:  # bitwise: the resumed run must replay exactly the same arithmetic
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    torch.testing.assert_close(a["optimizer"]["state"], b["optimizer"]["state"], rtol=0, atol=0)


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("crash") / "train_toy.py"
    path.write_text(SCRIPT)
    return path


@pytest.fixture(scope="module")
def reference(script, tmp_path_factory) -> Path:
    """``model_final.pth`` of an uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    _run(script, out, period=1000)
    return out / "model_final.pth"


@POSIX
def test_sigterm_mid_run_saves_iteration_and_resume_continues(script, reference, tmp_path):
    stop_at = 7  # not a multiple of the checkpoint period: the signal alone causes this save
    proc = _start(script, tmp_path, period=5, PAUSE_AT=str(stop_at))
    _wait_for(proc, f"forward {stop_at}")
    proc.send_signal(signal.SIGTERM)  # arrives while iteration 7 waits inside its forward pass
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 143, err
    assert f"forward {stop_at + 1}" not in out  # stopped right after the iteration it was in
    assert "SIGTERM received: stopped after iteration 7" in err
    assert _pointer(tmp_path) == "model_0000007.pth"
    assert torch.load(tmp_path / "model_0000007.pth", weights_only=True)["iteration"] == stop_at

    lines = _run(script, tmp_path, period=5)
    assert lines[0] == f"forward {stop_at + 1}"  # resumed from the saved iteration
    _assert_same_state(tmp_path / "model_final.pth", reference)


@POSIX
def test_kill_9_at_random_iteration_then_resume_matches_uninterrupted_run(script, reference, tmp_path):
    rng = random.Random()
    kill_at, delay = rng.randint(4, MAX_ITER - 2), rng.uniform(0.0, 0.03)
    context = f"killed at iteration {kill_at} + {delay:.3f} s"  # to reproduce a failure
    proc = _start(script, tmp_path, period=3, SLEEP="0.01")
    _wait_for(proc, f"forward {kill_at}")  # a checkpoint exists from iteration 3 on
    time.sleep(delay)  # anywhere in the iteration or in the save that may follow it
    proc.kill()
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL, context

    files = sorted(tmp_path.glob("*.pth"))
    assert files, context
    for path in files:  # atomic writes: never a truncated checkpoint under its final name
        assert "model" in torch.load(path, weights_only=True), f"{path.name}: {context}"
    pointed = tmp_path / _pointer(tmp_path)
    assert pointed in files, context
    # Only the temporary files of an interrupted save may remain besides the checkpoints.
    others = {p.name for p in tmp_path.iterdir()} - {p.name for p in files} - {"last_checkpoint"}
    assert all(n.startswith(".") and n.endswith(".tmp") for n in others), f"{others}: {context}"

    start = torch.load(pointed, weights_only=True)["iteration"]
    lines = _run(script, tmp_path, period=3)
    assert lines[0] == f"forward {start + 1}", context
    _assert_same_state(tmp_path / "model_final.pth", reference)
