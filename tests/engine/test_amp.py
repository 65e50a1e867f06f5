"""Mixed precision (DTYPE float16): the trainer's autocast + GradScaler path, its checkpointed
scaler state, and the refusal of float16 on a CPU.

The training loop itself is device-agnostic (``torch.autocast`` and ``torch.amp.GradScaler`` of
the device type), so its scaler logic runs here on the CPU too, where ``detbench-train`` refuses
DTYPE float16; the same test runs on CUDA when a GPU is visible, plus a real detector there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from detbench.config import ConfigError, load_config
from detbench.engine.trainer import do_train
from detbench.solver.lr_scheduler import WarmupMultiStepLR
from detbench.structures import BoxList, to_image_list
from detbench.utils.checkpoint import Checkpointer

ROOT = Path(__file__).resolve().parents[2]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
INITIAL_SCALE = 2.0**16  # GradScaler's default init_scale


class LinearToy(nn.Module):
    """One Linear layer (autocast runs it in float16); the gradient is made infinite at the
    forward calls listed in ``inf_grad_at`` (1-based), while the loss itself stays finite."""

    def __init__(self, inf_grad_at: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 1)
        self.calls, self.inf_grad_at, self.dtypes = 0, inf_grad_at, []

    def forward(self, images, targets):
        self.calls += 1
        out = self.fc(torch.ones(2, 4, device=self.fc.weight.device))
        self.dtypes.append(out.dtype)
        if self.calls in self.inf_grad_at:
            out.register_hook(lambda grad: grad * float("inf"))
        # Small enough that 2**16 times its gradient stays finite in float16 (no backoff at iteration 1).
        return {"loss_fc": (out.float() ** 2).mean() * 1e-3}


def _run(tmp_path, model, device, iterations, arguments):
    """``iterations`` more iterations with amp from ``arguments`` (a checkpoint's extras when resuming)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scheduler = WarmupMultiStepLR(optimizer, milestones=[100], warmup_iters=0)
    checkpointer = Checkpointer(model, optimizer, scheduler, str(tmp_path))
    if arguments["iteration"]:
        arguments = {**arguments, **checkpointer.load(use_latest=True)}
    batch = (to_image_list(torch.zeros(1, 3, 4, 4)), (BoxList(torch.zeros(0, 4), (4, 4)),), (0,))
    do_train(model, [batch] * iterations, optimizer, scheduler, checkpointer, torch.device(device),
             checkpoint_period=2, arguments=arguments, log_period=100, output_dir=str(tmp_path), amp=True)
    return arguments


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")
@pytest.mark.parametrize("device", DEVICES)
def test_amp_steps_skips_infinite_gradients_and_resumes_the_scaler(tmp_path, device):
    """Iteration 2's gradient is infinite: the scaler skips that step (weights unchanged) and
    halves its scale; the checkpoint of iteration 2 holds the halved scale, and a resumed run
    continues from it instead of a fresh scaler's 2**16."""
    torch.manual_seed(0)
    model = LinearToy(inf_grad_at=(2,)).to(device)
    start = model.fc.weight.detach().clone()
    weights = []
    model.fc.weight.register_hook(lambda grad: weights.append(model.fc.weight.detach().clone()))
    _run(tmp_path, model, device, 3, {"iteration": 0})
    assert model.dtypes == [torch.float16] * 3  # autocast was on
    # weights[i] is the weight before iteration i + 1's step: 1 changed it, 2 was skipped.
    assert not torch.equal(weights[1], start) and torch.equal(weights[2], weights[1])
    assert not torch.equal(model.fc.weight.detach(), weights[2])  # iteration 3 stepped again
    saved = torch.load(tmp_path / "model_0000002.pth", weights_only=True)
    assert saved["grad_scaler"]["scale"] == INITIAL_SCALE / 2 and saved["iteration"] == 2

    resumed = LinearToy(inf_grad_at=(2,)).to(device)  # its 2nd call is iteration 4: skipped, scale / 4
    (tmp_path / "last_checkpoint").write_text("model_0000002.pth")
    _run(tmp_path, resumed, device, 3, {"iteration": 2})
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert final["iteration"] == 5 and final["grad_scaler"]["scale"] == INITIAL_SCALE / 4
    assert torch.isfinite(final["model"]["fc.weight"]).all()


def test_float16_on_a_cpu_is_refused_before_building_anything(tmp_path):
    from detbench.cli.train import train

    cfg = load_config(None, ["DTYPE", "float16", "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path)])
    with pytest.raises(ConfigError, match="DTYPE 'float16'.*CUDA.*MODEL.DEVICE is 'cpu'"):
        train(cfg, False, logging.getLogger("test"))
    assert list(tmp_path.iterdir()) == []  # refused before any model, loader or checkpoint


@CUDA
def test_real_detector_trains_with_float16_on_cuda(tmp_path, monkeypatch):
    """A small Mask R-CNN, 4 iterations under DTYPE float16 on the GPU: finite losses, updated
    weights, and the GradScaler's state in the checkpoints."""
    from detbench.cli.train import train
    from detbench.data.datasets.shapes import generate_shapes

    images, ann = generate_shapes(tmp_path / "data", "train", 4, (64, 64))
    cfg = load_config(ROOT / "configs" / "tests" / "shapes_regression.yaml", [
        "MODEL.DEVICE", "cuda", "DTYPE", "float16", "DATASETS.CUSTOM", repr((("tiny", str(images), str(ann)),)),
        "DATASETS.TRAIN", "('tiny',)", "DATASETS.TEST", "('tiny',)", "SOLVER.MAX_ITER", "4",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.CHECKPOINT_PERIOD", "2", "OUTPUT_DIR", str(tmp_path / "out")])
    model, last = train(cfg, False, logging.getLogger("test"))
    assert last == 4
    saved = torch.load(tmp_path / "out" / "model_0000002.pth", weights_only=True)
    final = torch.load(tmp_path / "out" / "model_final.pth", weights_only=True)
    assert 0 < final["grad_scaler"]["scale"] <= INITIAL_SCALE
    assert all(torch.isfinite(v).all() for v in final["model"].values() if v.is_floating_point())
    changed = [k for k, v in final["model"].items() if v.is_floating_point() and not torch.equal(v, saved["model"][k])]
    assert changed, "no weight changed between iterations 2 and 4"
