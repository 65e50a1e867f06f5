"""maskrcnn-benchmark's checkpoint API: DetectronCheckpointer, tag_last_checkpoint, and
model_serialization.load_state_dict (suffix matching)."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from detbench.config import load_config
from detbench.utils.checkpoint import CheckpointError, Checkpointer, DetectronCheckpointer
from detbench.utils.model_serialization import load_state_dict


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential()
        self.backbone.add_module("body", nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
        self.head = nn.Linear(4, 2)
        self.bn_head = nn.Linear(4, 2)


def test_maskrcnn_benchmark_script_round_trip(tmp_path):
    # maskrcnn-benchmark's train_net: DetectronCheckpointer(cfg, model, optimizer, scheduler, dir, save_to_disk)
    cfg = load_config(None, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.head(torch.ones(2, 4)).sum().backward()
    optimizer.step()  # momentum buffers: an optimizer state worth restoring
    saver = DetectronCheckpointer(cfg, model, optimizer, None, str(tmp_path), True)
    assert not saver.has_checkpoint() and saver.get_checkpoint_file() == ""
    saver.save("model_0000010", iteration=10)
    saver.save("model_0000020", iteration=20)
    assert saver.get_checkpoint_file() == str(tmp_path / "model_0000020.pth")
    saver.tag_last_checkpoint(str(tmp_path / "model_0000010.pth"))  # a path that includes save_dir
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000010.pth"
    fresh = Net()
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    extra = DetectronCheckpointer(cfg, fresh, fresh_opt, None, str(tmp_path)).load(cfg.MODEL.WEIGHT)
    assert extra == {"iteration": 10}
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert fresh_opt.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()


def test_loading_stays_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran code",))

    torch.save({"model": {}, "payload": Evil()}, tmp_path / "evil.pth")
    cfg = load_config(None, ["MODEL.DEVICE", "cpu"])
    with pytest.raises(CheckpointError, match="weights_only=True"):
        DetectronCheckpointer(cfg, Net()).load(str(tmp_path / "evil.pth"))


def test_catalog_names_say_what_to_use_instead():
    cfg = load_config(None, ["MODEL.DEVICE", "cpu"])
    with pytest.raises(CheckpointError, match="torchvision://resnet50"):
        DetectronCheckpointer(cfg, Net()).load("catalog://ImageNetPretrained/MSRA/R-50")


def test_tag_last_checkpoint_elsewhere_keeps_an_absolute_path(tmp_path):
    other = tmp_path / "elsewhere" / "w.pth"
    other.parent.mkdir()
    torch.save(Net().state_dict(), other)
    checkpointer = Checkpointer(Net(), save_dir=tmp_path / "run")
    checkpointer.tag_last_checkpoint(other)
    assert checkpointer.get_checkpoint_file() == str(other)
    Checkpointer(Net(), save_dir=tmp_path / "ro", save_to_disk=False).tag_last_checkpoint(other)
    assert not (tmp_path / "ro").exists()


def test_load_state_dict_matches_suffixes_and_logs(caplog):
    torch.manual_seed(1)
    source = Net()
    # Saved from the backbone alone, plus a head under a prefix and a wrongly shaped entry.
    loaded = {f"body.{k}": v for k, v in source.backbone.body.state_dict().items()}
    loaded["module_head.weight"] = source.head.weight.detach().clone()  # not a dot-aligned suffix
    loaded["head.bias"] = torch.zeros(3)  # wrong shape: skipped
    target = Net()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="detbench.utils.model_serialization"):
        matched = load_state_dict(target, loaded)
    assert matched == {f"backbone.body.{k}": f"body.{k}" for k in source.backbone.body.state_dict()}
    for key in matched:
        torch.testing.assert_close(target.state_dict()[key], source.state_dict()[key])
    for key in ("head.weight", "head.bias", "bn_head.weight", "bn_head.bias"):
        torch.testing.assert_close(target.state_dict()[key], before[key])
    text = caplog.text
    assert "backbone.body.0.weight" in text and "loaded from body.0.weight of shape (4, 3, 3, 3)" in text
    assert "Skipped head.bias" in text and "module_head.weight" in text
