"""Checkpointer: round trip, resume, atomic saves, safe loading, DDP prefixes, fine-tuning."""

import logging
import os
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from detbench.utils.checkpoint import POINTER, CheckpointError, Checkpointer, load_state_dict_flexible


class Tiny(nn.Module):
    """A conv + batch norm (buffers) "backbone" and a linear "predictor" sized by the class count."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.predictor = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.bn(self.conv(x)).mean((2, 3)))


def _parts(seed: int, num_classes: int = 5):
    torch.manual_seed(seed)
    model = Tiny(num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 4], gamma=0.5)
    return model, opt, sched


def _train(model, opt, sched, steps: int) -> list[float]:
    """A few steps whose inputs come from torch, NumPy and random, so resuming needs all three RNGs."""
    losses = []
    for _ in range(steps):
        x = torch.randn(2, 3, 6, 6) * float(np.random.rand() + random.random())
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def _assert_state_equal(a, b):
    """Nested dicts / lists of tensors and plain values, compared entry by entry."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_state_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_state_equal(x, y)
    elif isinstance(a, torch.Tensor):
        assert_close(a, b, rtol=0, atol=0)
    else:
        assert a == b


def test_round_trip_restores_model_optimizer_scheduler_and_extra(tmp_path):
    model, opt, sched = _parts(0)
    _train(model, opt, sched, 3)
    Checkpointer(model, opt, sched, tmp_path).save("model_0000003", iteration=3)
    assert (tmp_path / POINTER).read_text() == "model_0000003.pth"

    model2, opt2, sched2 = _parts(1)
    assert not torch.equal(model2.conv.weight, model.conv.weight)
    extra = Checkpointer(model2, opt2, sched2, tmp_path).load("ignored-when-a-checkpoint-exists.pth")
    assert extra == {"iteration": 3}
    _assert_state_equal(model2.state_dict(), model.state_dict())
    _assert_state_equal(opt2.state_dict(), opt.state_dict())
    _assert_state_equal(sched2.state_dict(), sched.state_dict())
    assert len(opt2.state_dict()["state"]) == 6  # momentum buffers exist for every parameter


def test_resumed_run_continues_like_an_uninterrupted_one(tmp_path):
    model, opt, sched = _parts(0)
    _train(model, opt, sched, 3)
    Checkpointer(model, opt, sched, tmp_path).save("model_0000003", iteration=3)
    uninterrupted = _train(model, opt, sched, 3)

    model2, opt2, sched2 = _parts(1)
    # Other seeds in every generator: only the restored states can reproduce the run.
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    Checkpointer(model2, opt2, sched2, tmp_path).load()
    resumed = _train(model2, opt2, sched2, 3)
    assert resumed == uninterrupted
    _assert_state_equal(model2.state_dict(), model.state_dict())


def _failing_save(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a zip file")
    raise OSError("simulated: disk full")


def test_failed_save_keeps_previous_checkpoint_and_pointer(tmp_path, monkeypatch):
    model, opt, sched = _parts(0)
    ckpt = Checkpointer(model, opt, sched, tmp_path)
    ckpt.save("model_0000001", iteration=1)
    ckpt.save("model_final", iteration=1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    monkeypatch.setattr(torch, "save", _failing_save)
    for name in ("model_0000002", "model_final"):  # a new name, and overwriting an existing file
        with pytest.raises(CheckpointError, match=f"could not write .*{name}.pth .*disk full.*unchanged") as info:
            ckpt.save(name, iteration=2)
        assert isinstance(info.value.__cause__, OSError)
        # Same files with the same bytes: the pointer did not move, no partial or temporary file is left.
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    monkeypatch.undo()
    assert Checkpointer(Tiny(), save_dir=tmp_path).load() == {"iteration": 1}


class RunsCode:
    """Unpickling this object calls os.mkdir(path): a stand-in for a malicious payload."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "payload_ran"
    torch.save({"model": Tiny().state_dict(), "iteration": RunsCode(marker)}, tmp_path / "evil.pth")
    (tmp_path / POINTER).write_text("evil.pth")
    with pytest.raises(CheckpointError, match=r"weights_only=True"):
        Checkpointer(Tiny(), save_dir=tmp_path).load()
    assert not marker.exists()
    # Control: the unsafe loader does run the payload, so the check above can fail.
    torch.load(tmp_path / "evil.pth", weights_only=False)
    assert marker.exists()


def test_state_dict_with_ddp_prefix_loads(tmp_path):
    source = Tiny()
    torch.save({"module." + k: v for k, v in source.state_dict().items()}, tmp_path / "ddp.pth")
    target = Tiny()
    assert Checkpointer(target).load(tmp_path / "ddp.pth") == {}
    _assert_state_equal(target.state_dict(), source.state_dict())


def test_wrapped_model_saves_and_loads_without_prefix(tmp_path):
    wrapped = nn.DataParallel(Tiny())  # stands for DDP: both keep the model in .module
    Checkpointer(wrapped, save_dir=tmp_path).save("model_final")
    saved = torch.load(tmp_path / "model_final.pth", weights_only=True)["model"]
    assert all(not k.startswith("module.") for k in saved)
    target = nn.DataParallel(Tiny())
    Checkpointer(target, save_dir=tmp_path).load()
    _assert_state_equal(target.module.state_dict(), wrapped.module.state_dict())


def test_fine_tuning_skips_other_class_count_and_logs_names(tmp_path, caplog):
    source, opt, sched = _parts(0, num_classes=81)
    Checkpointer(source, opt, sched, tmp_path / "pretrain").save("model_final", iteration=90)
    torch.manual_seed(5)
    target = Tiny(num_classes=2)
    init_predictor = target.predictor.weight.detach().clone()
    new_opt = torch.optim.SGD(target.parameters(), lr=0.01)
    with caplog.at_level(logging.INFO):
        extra = Checkpointer(target, new_opt, save_dir=tmp_path / "finetune").load(
            tmp_path / "pretrain" / "model_final.pth")
    assert extra == {}  # weights only: no iteration, optimizer untouched
    assert new_opt.param_groups[0]["lr"] == 0.01 and not new_opt.state
    assert_close(target.conv.weight, source.conv.weight, rtol=0, atol=0)
    assert_close(target.predictor.weight.detach(), init_predictor, rtol=0, atol=0)
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipped")]
    assert skipped == ["Skipped predictor.weight: shape (81, 4) in the checkpoint, (2, 4) in the model",
                       "Skipped predictor.bias: shape (81,) in the checkpoint, (2,) in the model"]


def test_missing_and_unexpected_keys_are_reported(caplog):
    model = Tiny()
    state = {k: v for k, v in Tiny().state_dict().items() if not k.startswith("bn.")}
    state["old_head.weight"] = torch.zeros(3)
    with caplog.at_level(logging.WARNING):
        report = load_state_dict_flexible(model, state)
    assert sorted(report.missing) == sorted(k for k in model.state_dict() if k.startswith("bn."))
    assert report.unexpected == ["old_head.weight"] and report.skipped == []
    assert "bn.running_mean" in caplog.text and "old_head.weight" in caplog.text


def test_no_checkpoint_and_no_weight_keeps_initialisation(tmp_path):
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert Checkpointer(model, save_dir=tmp_path).load("") == {}
    _assert_state_equal(model.state_dict(), before)


@pytest.mark.parametrize("name", ["catalog://ImageNetPretrained/MSRA/R-50", "https://example.com/model.pth"])
def test_weight_names_that_are_not_files(name):
    with pytest.raises(CheckpointError, match="not supported"):
        Checkpointer(Tiny()).load(name)


def test_unusable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Checkpointer(Tiny()).load(tmp_path / "absent.pth")
    (tmp_path / "R-50.pkl").write_bytes(b"caffe2")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    for name, message in (("R-50.pkl", r"\.pkl"), ("junk.pth", "not a file written by torch.save"),
                          ("list.pth", "unknown weight format")):
        with pytest.raises(CheckpointError, match=message):
            Checkpointer(Tiny()).load(tmp_path / name)


def test_absolute_pointer_and_explicit_resume(tmp_path):
    model, opt, sched = _parts(0)
    _train(model, opt, sched, 1)
    Checkpointer(model, opt, sched, tmp_path / "a").save("model_0000001", iteration=1)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / POINTER).write_text(str(tmp_path / "a" / "model_0000001.pth"))  # maskrcnn-benchmark style
    assert Checkpointer(Tiny(), save_dir=tmp_path / "b").load() == {"iteration": 1}
    # A checkpoint given by path resumes only when asked to.
    _, opt2, _ = _parts(1)
    ckpt = Checkpointer(Tiny(), opt2)
    assert ckpt.load(tmp_path / "a" / "model_0000001.pth", resume=True) == {"iteration": 1}
    _assert_state_equal(opt2.state_dict(), opt.state_dict())


def test_nothing_written_without_save_dir_or_on_other_ranks(tmp_path):
    Checkpointer(Tiny(), save_dir=tmp_path, save_to_disk=False).save("model_final")
    Checkpointer(Tiny(), save_dir="").save("model_final")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="optimizer"):
        Checkpointer(Tiny(), save_dir=tmp_path).save("model_final", optimizer=1)
