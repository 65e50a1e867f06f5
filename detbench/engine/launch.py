"""What training and testing share (detbench.cli.train / .test): process setup, the test run.

Distributed runs are started by ``torchrun`` (never by detbench itself): when it sets
WORLD_SIZE > 1, the process group is initialised with NCCL on GPUs and gloo on CPUs,
with a timeout so that a dead rank makes the others fail instead of hanging.

The timeout is 10 minutes (DISTRIBUTED_TIMEOUT): long enough for rank 0 alone to save a
checkpoint or evaluate while the others wait in a collective. The environment variable
DETBENCH_DIST_TIMEOUT_S (seconds, a positive number) replaces it, e.g. a few seconds in
tests, or more for a long evaluation on one rank. A rank that dies usually makes gloo
fail at once (its sockets close) and torchrun stops the others; the timeout is for a
rank that is alive but stuck, or for processes started without torchrun.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
from pathlib import Path

import torch
from yacs.config import CfgNode

from detbench.config import ConfigError, load_config
from detbench.config.node import describe_device
from detbench.utils import comm
from detbench.utils.collect_env import collect_env
from detbench.utils.logger import setup_logger
from detbench.utils.miscellaneous import mkdir, save_config, set_seed

# Collective operations that take longer than this fail (a rank died or is stuck).
DISTRIBUTED_TIMEOUT = datetime.timedelta(minutes=10)
TIMEOUT_ENV = "DETBENCH_DIST_TIMEOUT_S"  # overrides DISTRIBUTED_TIMEOUT, in seconds


def distributed_timeout() -> datetime.timedelta:
    """DETBENCH_DIST_TIMEOUT_S seconds when that variable is set, else DISTRIBUTED_TIMEOUT."""
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    if not value:
        return DISTRIBUTED_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not (0 < seconds < float("inf")):  # also NaN
        raise ValueError(f"{TIMEOUT_ENV}={value!r}: expected a positive number of seconds")
    return datetime.timedelta(seconds=seconds)


def init_distributed(device: str) -> bool:
    """Join the process group described by the environment (torchrun's WORLD_SIZE, RANK,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT); True when there is more than one process.

    Collectives fail after :func:`distributed_timeout` instead of waiting forever.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return False
    timeout = distributed_timeout()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    on_gpu = device.startswith("cuda")
    if on_gpu:
        torch.cuda.set_device(local_rank)
    torch.distributed.init_process_group(backend="nccl" if on_gpu else "gloo", timeout=timeout)
    return True


def setup(args: argparse.Namespace, tool: str) -> tuple[CfgNode, bool, logging.Logger]:
    """Load and freeze the config, join the process group, log, save the config, seed."""
    cfg = load_config(args.config_file or None, args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but no GPU is visible; "
                          "use MODEL.DEVICE auto (the default) or cpu")
    distributed = init_distributed(cfg.MODEL.DEVICE)
    output_dir = cfg.OUTPUT_DIR
    if output_dir and comm.is_main_process():
        mkdir(output_dir)
    logger = setup_logger("detbench", output_dir, comm.get_rank())
    logger.info("%s: %d process(es); arguments: %s", tool, comm.get_world_size(), args)
    logger.info("Device: %s", describe_device(cfg))
    if comm.is_main_process():  # collect_env runs compilers; once is enough
        logger.info("Environment:\n%s", collect_env())
    logger.info("Config:\n%s", cfg.dump())
    if output_dir and comm.is_main_process():
        save_config(cfg, Path(output_dir) / "config.yaml")
    seed = set_seed(cfg.SEED, comm.get_rank())
    logger.info("Seed %d (rank offset included)", seed)
    return cfg, distributed, logger


def iou_types(cfg: CfgNode) -> tuple[str, ...]:
    """The COCO evaluations the model's outputs allow."""
    types = ("bbox",)
    if cfg.MODEL.MASK_ON:
        types += ("segm",)
    if cfg.MODEL.KEYPOINT_ON:
        types += ("keypoints",)
    return types


def run_test(cfg: CfgNode, model: torch.nn.Module, distributed: bool) -> dict:
    """Evaluate on every DATASETS.TEST entry (with test-time augmentation when TEST.BBOX_AUG.ENABLED);
    results by dataset name (filled on rank 0)."""
    from detbench.data import dataset_names
    from detbench.engine.bbox_aug import augmented_test_setup
    from detbench.engine.inference import inference

    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    results = {}
    # With TEST.BBOX_AUG.ENABLED: the model wrapped for test-time augmentation, fed original images.
    model, loaders = augmented_test_setup(cfg, model, distributed)
    for name, loader in zip(dataset_names(cfg, is_train=False), loaders):
        folder = Path(cfg.OUTPUT_DIR) / "inference" / name if cfg.OUTPUT_DIR else None
        if folder is not None and comm.is_main_process():
            mkdir(folder)
        results[name] = inference(model, loader, name, iou_types(cfg), cfg.MODEL.DEVICE, folder)
        comm.synchronize()
    return results


def check_final_results(cfg: CfgNode, results: dict) -> None:
    """TEST.EXPECTED_RESULTS on the final evaluation (main process; the others have no results):
    a failed check raises SystemExit with the failures, so the tool exits non-zero."""
    from detbench.engine.expected_results import ExpectedResultsError, assert_expected_results

    if not cfg.TEST.EXPECTED_RESULTS or not comm.is_main_process():
        return
    try:
        assert_expected_results(results, cfg.TEST.EXPECTED_RESULTS, cfg.TEST.EXPECTED_RESULTS_SIGMA_TOL)
    except ExpectedResultsError as exc:
        raise SystemExit(str(exc)) from None
