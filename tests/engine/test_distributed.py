"""Distributed training on CPU (gloo): two processes train like one, and a rank that dies
or hangs makes the others fail instead of waiting forever.

The subprocess tests start ``tools/train_net.py`` or ``_dist_worker.py`` (a toy DDP
training run whose rank 1 fails on purpose) with one thread each.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import BatchSampler

from detbench.data.datasets.shapes import ensure_shapes
from detbench.data.samplers import DistributedSampler, GroupedBatchSampler, IterationBasedBatchSampler
from detbench.engine import launch

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("_dist_worker.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
LIMIT = 120  # seconds; only turns a hang into a failure (all of these finish in seconds)


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}


# ----------------------------------------------------------------------------- data split
def _batches(world: int, rank: int, per_rank: int, grouped: bool, groups: list[int], size: int) -> list[list[int]]:
    """The training batches of one rank, composed as detbench.data.build._train_loader does."""
    sampler = DistributedSampler(size, world, rank, shuffle=True, seed=4, pad=True)
    batches = GroupedBatchSampler(sampler, groups, per_rank) if grouped else BatchSampler(sampler, per_rank, False)
    return list(IterationBasedBatchSampler(batches, 15))


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("world", [2, 3])
def test_ranks_share_the_single_process_global_batches(world, grouped):
    # 24 images: a multiple of every world size, so the padding of DistributedSampler
    # (intentional: the last images of an epoch repeated) plays no part; 15 iterations
    # span several epochs and, grouped, incomplete leftover batches.
    size, per_rank = 24, 2
    groups = [int(i % 3 == 0 or i % 7 == 0) for i in range(size)]  # two aspect groups, unequal sizes
    single = _batches(1, 0, per_rank * world, grouped, groups, size)
    parts = [_batches(world, r, per_rank, grouped, groups, size) for r in range(world)]
    for k, batch in enumerate(single):
        ranks = [p[k] for p in parts]
        assert all(ranks) and len({len(b) for b in ranks}) == 1, f"iteration {k}: uneven split {ranks}"
        # Same images (a leftover batch smaller than the world repeats some, never adds others).
        assert sorted(set(sum(ranks, []))) == sorted(batch), f"iteration {k}: {ranks} vs {batch}"
        if grouped:
            assert len({groups[i] for i in sum(ranks, [])}) == 1, f"iteration {k} mixes groups"
        if len(batch) == per_rank * world:  # a full batch is split without repeats
            assert sorted(sum(ranks, [])) == sorted(batch)


# ----------------------------------------------------------------------------- 2 processes = 1
def _train_options(data: tuple[Path, Path], init: Path) -> list[str]:
    """Faster R-CNN R-18-FPN on 64x64 shapes images: settings under which one process with 4
    images per batch and two with 2 each compute the same losses (see the test's docstring)."""
    images, ann = data
    return [
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHT", str(init),
        # ResNet-18 with frozen BatchNorm (no batch statistics), every stage trained.
        "MODEL.BACKBONE.CONV_BODY", "R-18-FPN", "MODEL.BACKBONE.FREEZE_CONV_BODY_AT", "0",
        "MODEL.RESNETS.TRANS_FUNC", "BasicBlockWithFixedBatchNorm", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
        "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", "64",
        "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "6",
        # RPN: every anchor visible and sampled, none ignored.
        "MODEL.RPN.STRADDLE_THRESH", "-1", "MODEL.RPN.FG_IOU_THRESHOLD", "0.5", "MODEL.RPN.BG_IOU_THRESHOLD", "0.5",
        "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "4096", "MODEL.RPN.PRE_NMS_TOP_N_TRAIN", "200",
        "MODEL.RPN.POST_NMS_TOP_N_TRAIN", "200",
        # Box head: 32 proposals per image, all sampled, none ignored.
        "MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN", "32", "MODEL.RPN.FPN_POST_NMS_PER_BATCH", "False",
        "MODEL.ROI_HEADS.ADD_GT_PROPOSALS", "False", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "512",
        "MODEL.ROI_HEADS.FG_IOU_THRESHOLD", "0.5", "MODEL.ROI_HEADS.BG_IOU_THRESHOLD", "0.5",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.HORIZONTAL_FLIP_PROB_TRAIN", "0.0",
        "DATASETS.CUSTOM", repr((("tiny_shapes", str(images), str(ann)),)),
        "DATASETS.TRAIN", "('tiny_shapes',)", "DATASETS.TEST", "('tiny_shapes',)", "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "3", "SOLVER.BASE_LR", "0.01", "SOLVER.WARMUP_ITERS", "0",
        "SOLVER.STEPS", "(100,)", "SOLVER.CHECKPOINT_PERIOD", "1000", "SOLVER.LOG_PERIOD", "1", "SEED", "0",
    ]


CONFIG = "configs/e2e_faster_rcnn_R_50_FPN_1x.yaml"  # made tiny by _train_options


def _initial_weights(path: Path, options: list[str]) -> Path:
    """A checkpoint of the freshly built model, so that both runs start from the same weights."""
    from detbench.config import load_config
    from detbench.modeling.detector import build_detection_model

    torch.manual_seed(0)
    cfg = load_config(ROOT / CONFIG, [*options, "MODEL.WEIGHT", ""])  # the last value of a key wins
    torch.save({"model": build_detection_model(cfg).state_dict()}, path)
    return path


def _losses(output: Path) -> list[dict[str, float]]:
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k.startswith("loss")} for r in records]


def test_two_processes_train_like_one_with_the_same_total_batch(tmp_path):
    """3 iterations of 4 images: 1 process x 4 images vs torchrun 2 processes x 2 images.

    What may differ, and why it cannot here:

    * the images: rank r gets its part of the single process's global batch (the data
      split test above); 8 images of one size (64 x 64, no resize, no padding), no flip;
    * per-process loss normalisation, while DDP averages gradients over the ranks: the
      RPN divides by the anchors sampled in the process's images and the box head by its
      sampled proposals. With every anchor visible and sampled and none ignored
      (FG = BG threshold), and exactly 32 proposals per image (per-image top-n, no ground
      truth added), all sampled, every image contributes the same count, so the mean of
      the two 2-image losses is the 4-image loss. (A Mask R-CNN would not do: the mask
      loss divides by the positives, whose number varies per image.) With the usual
      settings instead (256 sampled anchors per image, ground truth added to the
      proposals) the weights differed by up to 1.3e-3 after 3 iterations (46 of 130
      tensors outside the tolerance below);
    * random sampling from per-rank RNG streams: everything is sampled, so no choice is
      left; no dropout; frozen BatchNorm (no batch statistics);
    * initial weights: the same checkpoint (MODEL.WEIGHT) in both runs.

    What remains is the order of float32 sums (batch of 2 vs 4 in the convolutions, the
    all-reduce). Measured: max |difference| 2.2e-8 over all weights (2.3e-6 relative to
    max(|w|, 1e-3)), on weights that training moved by up to 0.1. Tolerance: atol 1e-6,
    rtol 1e-5, about 40x the measured difference, and far below the weight changes
    (asserted), so a wrong batch split or normalisation fails.
    """
    data = ensure_shapes(tmp_path / "shapes", "train", num_images=8, image_size=(64, 64), seed=3)
    options = _train_options(data, tmp_path / "init.pth")
    init = _initial_weights(tmp_path / "init.pth", options)
    runs = {}
    for name, launcher in (("one", [sys.executable]), ("two", TORCHRUN)):
        command = [*launcher, "tools/train_net.py", "--config-file", CONFIG, "--skip-test", *options,
                   "OUTPUT_DIR", str(tmp_path / name)]
        # Started together: each uses one thread, and the runs do not depend on each other.
        runs[name] = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
    for name, proc in runs.items():
        log = proc.communicate(timeout=LIMIT)[0]
        assert proc.returncode == 0, f"{name}: {log[-3000:]}"
        assert f"train_net: {1 if name == 'one' else 2} process(es)" in log

    one = torch.load(tmp_path / "one" / "model_final.pth", weights_only=True)["model"]
    two = torch.load(tmp_path / "two" / "model_final.pth", weights_only=True)["model"]
    start = torch.load(init, weights_only=True)["model"]
    assert one.keys() == two.keys() and len(one) > 50
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")
    moved = max((one[k] - start[k]).abs().max().item() for k in one if one[k].is_floating_point())
    assert moved > 1e-3  # >> atol: the comparison above is not between nearly untrained weights
    # Rank 0 logs the losses averaged over the ranks: the same per-iteration values.
    losses_one, losses_two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(losses_one) == len(losses_two) == 3
    for a, b in zip(losses_one, losses_two):
        assert a.keys() == b.keys()
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- timeout setting
def test_timeout_defaults_to_ten_minutes_and_is_configurable(monkeypatch):
    monkeypatch.delenv(launch.TIMEOUT_ENV, raising=False)
    assert launch.distributed_timeout() == launch.DISTRIBUTED_TIMEOUT == datetime.timedelta(minutes=10)
    monkeypatch.setenv(launch.TIMEOUT_ENV, "2.5")
    assert launch.distributed_timeout() == datetime.timedelta(seconds=2.5)
    for bad in ("0", "-3", "nan", "inf", "ten"):
        monkeypatch.setenv(launch.TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=launch.TIMEOUT_ENV):
            launch.distributed_timeout()


@pytest.mark.parametrize("setting, expected", [(None, datetime.timedelta(minutes=10)),
                                               ("7", datetime.timedelta(seconds=7))])
def test_init_distributed_passes_the_timeout_to_init_process_group(monkeypatch, setting, expected):
    calls = []
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setenv("WORLD_SIZE", "2")
    if setting is None:
        monkeypatch.delenv(launch.TIMEOUT_ENV, raising=False)
    else:
        monkeypatch.setenv(launch.TIMEOUT_ENV, setting)
    assert launch.init_distributed("cpu") is True
    assert calls == [{"backend": "gloo", "timeout": expected}]


def test_init_distributed_alone_does_nothing(monkeypatch):
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda **kwargs: pytest.fail("called"))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launch.init_distributed("cpu") is False


# ----------------------------------------------------------------------------- a rank fails
def test_torchrun_rank_dies_mid_training_and_the_run_fails(tmp_path):
    result = subprocess.run([*TORCHRUN, str(WORKER)], cwd=ROOT, capture_output=True, text=True, timeout=LIMIT,
                            env=_env(FAIL_MODE="exit", FAIL_AT="2"))
    assert result.returncode != 0, result.stdout + result.stderr[-3000:]
    assert "iteration 2 rank 0" in result.stdout  # rank 0 was inside the iteration in which rank 1 died
    assert "finished" not in result.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _plain_pair(mode: str, timeout_s: str) -> tuple[subprocess.CompletedProcess, subprocess.Popen]:
    """Ranks 0 and 1 as two plain processes joined through env:// (no torchrun to stop them)."""
    common = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2", FAIL_MODE=mode,
                  FAIL_AT="2", **{launch.TIMEOUT_ENV: timeout_s})
    rank1 = subprocess.Popen([sys.executable, str(WORKER)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=_env(RANK="1", LOCAL_RANK="1", **common))
    try:
        rank0 = subprocess.run([sys.executable, str(WORKER)], cwd=ROOT, capture_output=True, text=True,
                               timeout=LIMIT, env=_env(RANK="0", LOCAL_RANK="0", **common))
    finally:
        if mode == "hang":
            rank1.kill()  # SIGKILL: the trainer's SIGTERM handler would wait for the iteration to end
        rank1.communicate(timeout=LIMIT)
    return rank0, rank1


def test_plain_processes_rank_dies_and_the_other_raises():
    # The 10-minute default stays in force: the closed connection alone must end rank 0's wait.
    rank0, rank1 = _plain_pair("exit", timeout_s="600")
    assert rank1.returncode == 3
    assert rank0.returncode != 0 and "iteration 2 rank 0" in rank0.stdout
    assert "RuntimeError" in rank0.stderr and "finished" not in rank0.stdout


def test_plain_processes_rank_hangs_and_the_other_times_out():
    # Rank 1 stays alive but never joins iteration 2's collectives: only the timeout ends the wait.
    rank0, _ = _plain_pair("hang", timeout_s="3")
    assert rank0.returncode != 0 and "iteration 2 rank 0" in rank0.stdout
    assert "Timed out" in rank0.stderr or "timeout" in rank0.stderr.lower(), rank0.stderr[-3000:]
