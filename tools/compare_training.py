"""Train the same Mask R-CNN from scratch in detbench and in torchvision, at equal iterations,
and evaluate both with the same COCO evaluation (pycocotools) on the same images.

    DETBENCH_DATASETS=../shared/data python tools/compare_training.py [--iters N] [--threads T]
        [--sequential] [--output-dir DIR] [KEY VALUE ...]

detbench trains with ``tools/train_net.py`` from the YAML file (default
configs/compare/mask_rcnn_R_18_GN_FPN_pennfudan.yaml), torchvision with the loop of its
fine-tuning tutorial on the twin network tools/torchvision_twin.py builds from that same config
(same sizes, sampling, schedule, batch, flip and images). Both run as child processes with
``--threads`` threads each (OMP_NUM_THREADS): at the same time by default, so that both see the
same machine load, or one after the other with ``--sequential``. Time per iteration is each
loop's wall time over its iterations, data loading included, evaluation and the final save excluded.

Then, in this process: detbench's model_final and torchvision's trained weights are evaluated on
DATASETS.TEST (box and mask AP, AP50, AP75), and the cross-check loads torchvision's trained
state dict into detbench through MODEL.WEIGHT and evaluates detbench's forward of it, with
detbench's own resize and with torchvision's (INPUT.RESIZE_MODE "torchvision"). One table
is printed (tabulate) with both rows and detbench / torchvision ratios; ``--json`` saves it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this clone's detbench, before any installed one
sys.path.insert(0, str(ROOT / "tools"))

import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

from detbench.config import load_config  # noqa: E402
from detbench.data import build_dataset, make_data_loader  # noqa: E402
from detbench.data.datasets.evaluation import evaluate  # noqa: E402
from detbench.engine.inference import inference  # noqa: E402
from detbench.modeling.detector import build_detection_model  # noqa: E402
from detbench.utils.checkpoint import Checkpointer  # noqa: E402

import torchvision_twin as twin  # noqa: E402

CONFIG = ROOT / "configs" / "compare" / "mask_rcnn_R_18_GN_FPN_pennfudan.yaml"
METRICS = ("AP", "AP50", "AP75")
# detbench's own resize, then torchvision's (INPUT.RESIZE_MODE), for torchvision's trained weights.
CROSS_CHECK_MODES = ("pil", "torchvision")
TV_WEIGHTS, TV_TIMING = "torchvision_final.pth", "torchvision_timing.json"
_TOTAL_TIME = re.compile(r"Total training time: \S+ \(([0-9.]+) s / it\)")


def load_cfg(config: str | Path, output_dir: Path, iters: int | None, opts: list[str]):
    """The detbench config both sides use: MODEL.DEVICE cpu, OUTPUT_DIR <output_dir>/detbench."""
    extra = ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(output_dir / "detbench")]
    if iters is not None:
        extra += ["SOLVER.MAX_ITER", str(iters)]
    return load_config(config, [*opts, *extra])


def detbench_command(config: str | Path, cfg, opts: list[str]) -> list[str]:
    """tools/train_net.py on ``config`` with the overrides, without its final evaluation (done here)."""
    return [sys.executable, str(ROOT / "tools" / "train_net.py"), "--config-file", str(config), "--no-resume",
            "--skip-test", *opts, "MODEL.DEVICE", "cpu", "OUTPUT_DIR", cfg.OUTPUT_DIR,
            "SOLVER.MAX_ITER", str(cfg.SOLVER.MAX_ITER)]


def torchvision_command(args: argparse.Namespace, cfg) -> list[str]:
    """This script in --torchvision-run mode, with the same config and overrides."""
    return [sys.executable, str(Path(__file__).resolve()), "--torchvision-run", "--config-file", str(args.config_file),
            "--output-dir", str(args.output_dir), "--iters", str(cfg.SOLVER.MAX_ITER), *args.opts]


def run_torchvision(cfg, output_dir: Path) -> None:
    """Train the twin (seed SEED) and save its state dict and seconds per iteration in ``output_dir``."""
    torch.manual_seed(max(cfg.SEED, 0))
    model = twin.build_twin(cfg)
    dataset = twin.TwinDataset(build_dataset(cfg, cfg.DATASETS.TRAIN[0], is_train=True),
                               cfg.INPUT.HORIZONTAL_FLIP_PROB_TRAIN, seed=max(cfg.SEED, 0))
    seconds = twin.train(model, dataset, cfg, cfg.SOLVER.MAX_ITER, log=lambda line: print(line, flush=True),
                         seed=max(cfg.SEED, 0))
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), output_dir / TV_WEIGHTS)
    (output_dir / TV_TIMING).write_text(json.dumps({"seconds_per_iter": seconds, "iterations": cfg.SOLVER.MAX_ITER,
                                                    "threads": torch.get_num_threads()}))


def run_children(commands: dict[str, list[str]], threads: int, sequential: bool, log_dir: Path) -> None:
    """Run each command with ``threads`` threads, its output in ``<log_dir>/<name>.log``; all at
    once unless ``sequential``. Raises RuntimeError naming a child that failed."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log_dir.mkdir(parents=True, exist_ok=True)
    running = []
    for name, command in commands.items():
        log = open(log_dir / f"{name}.log", "w")
        running.append((name, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        if sequential:
            running[-1][1].wait()
    for name, process, log in running:
        process.wait()
        log.close()
        if process.returncode != 0:
            raise RuntimeError(f"{name} training failed (exit {process.returncode}); see {log_dir / name}.log")


def detbench_seconds_per_iter(log_file: Path) -> float:
    """The trainer's "Total training time: ... (X s / it)" from its log."""
    found = _TOTAL_TIME.findall(log_file.read_text())
    if not found:
        raise RuntimeError(f"{log_file}: no 'Total training time' line (did detbench's training finish?)")
    return float(found[-1])


def evaluate_detbench(cfg, weight: str | Path, resize_mode: str | None = None) -> dict[str, dict[str, float]]:
    """detbench's model of ``cfg`` with MODEL.WEIGHT ``weight`` (and INPUT.RESIZE_MODE ``resize_mode``
    when given) on DATASETS.TEST[0]: {"bbox", "segm"} metrics."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHT = str(weight)
    if resize_mode is not None:
        cfg.INPUT.RESIZE_MODE = resize_mode
    cfg.freeze()
    model = build_detection_model(cfg)
    Checkpointer(model).load(cfg.MODEL.WEIGHT)
    loader = make_data_loader(cfg, is_train=False)[0]
    return inference(model, loader, cfg.DATASETS.TEST[0], ("bbox", "segm"), "cpu")


def evaluate_torchvision(cfg, weight: str | Path) -> dict[str, dict[str, float]]:
    """torchvision's own forward of the twin with state dict ``weight``, the same evaluation."""
    model = twin.build_twin(cfg)
    model.load_state_dict(torch.load(weight, map_location="cpu", weights_only=True))
    dataset = build_dataset(cfg, cfg.DATASETS.TEST[0], is_train=False)
    return evaluate(dataset, twin.predict(model, dataset), iou_types=("bbox", "segm"), masks_pasted=True)


def run_evaluations(jobs: list[tuple[Callable, tuple]], processes: int) -> list:
    """``fn(*args)`` of each job, in order; in ``processes`` fresh processes (one thread each) when > 1."""
    if processes <= 1:
        return [fn(*fn_args) for fn, fn_args in jobs]
    context = multiprocessing.get_context("spawn")  # not fork: the parent's OpenMP threads are running
    with ProcessPoolExecutor(processes, mp_context=context, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        return [future.result() for future in [pool.submit(fn, *fn_args) for fn, fn_args in jobs]]


def _row(name: str, results: dict, seconds: float | None) -> list:
    return [name, *(results[t][m] for t in ("bbox", "segm") for m in METRICS), seconds]


def tables(tv: dict, db: dict, cross: dict[str, dict], tv_time: float, db_time: float) -> tuple[str, str]:
    """(the side-by-side table with a ratio row, the cross-check table: torchvision's forward and
    detbench's per INPUT.RESIZE_MODE in ``cross``, each with its difference), as tabulate text."""
    headers = ["", *(f"{kind} {m}" for kind in ("box", "mask") for m in METRICS), "s / it"]
    rows = [_row("torchvision", tv, tv_time), _row("detbench", db, db_time)]
    ratios = ["detbench / torchvision", *(d / t if t > 0 else float("nan") for d, t in zip(rows[1][1:], rows[0][1:]))]
    side = tabulate([*rows, ratios], headers=headers, floatfmt=".3f")
    reference = _row("torchvision forward", tv, None)[:-1]
    check = [reference]
    for mode, results in cross.items():
        row = _row(f"detbench forward, RESIZE_MODE {mode}", results, None)[:-1]
        check += [row, ["  difference", *(c - t for c, t in zip(row[1:], reference[1:]))]]
    return side, tabulate(check, headers=headers[:-1], floatfmt=".4f")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config-file", default=str(CONFIG), help="detbench YAML (default: %(default)s)")
    parser.add_argument("--iters", type=int, default=None, help="iterations of both trainings (default: SOLVER.MAX_ITER)")
    parser.add_argument("--threads", type=int, default=1, help="threads of each training (default: %(default)s)")
    parser.add_argument("--sequential", action="store_true", help="train one after the other, not at the same time")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "output" / "compare_training")
    parser.add_argument("--skip-train", action="store_true", help="evaluate the files a previous run left")
    parser.add_argument("--eval-jobs", type=int, default=1,
                        help="run the four evaluations in this many processes of one thread (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="also save the results here")
    parser.add_argument("--torchvision-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of the config (both sides)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    cfg = load_cfg(args.config_file, args.output_dir, args.iters, args.opts)
    if args.torchvision_run:
        run_torchvision(cfg, args.output_dir)
        return 0
    if not args.skip_train:
        start = time.perf_counter()
        run_children({"detbench": detbench_command(args.config_file, cfg, args.opts),
                      "torchvision": torchvision_command(args, cfg)}, args.threads, args.sequential, args.output_dir)
        print(f"trainings done in {time.perf_counter() - start:.0f} s "
              f"({'one after the other' if args.sequential else 'at the same time'}, {args.threads} thread(s) each)")
    db_time = detbench_seconds_per_iter(Path(cfg.OUTPUT_DIR) / "log.txt")
    tv_time = json.loads((args.output_dir / TV_TIMING).read_text())["seconds_per_iter"]
    jobs = [(evaluate_torchvision, (cfg, args.output_dir / TV_WEIGHTS)),
            (evaluate_detbench, (cfg, Path(cfg.OUTPUT_DIR) / "model_final.pth")),
            *((evaluate_detbench, (cfg, args.output_dir / TV_WEIGHTS, mode)) for mode in CROSS_CHECK_MODES)]
    tv, db, *crossed = run_evaluations(jobs, args.eval_jobs)
    cross = dict(zip(CROSS_CHECK_MODES, crossed))
    side, check = tables(tv, db, cross, tv_time, db_time)
    print(f"\n{cfg.SOLVER.MAX_ITER} iterations of {cfg.SOLVER.IMS_PER_BATCH} images, {args.threads} thread(s) each\n")
    print(side + "\n\nCross-check: torchvision's trained weights, evaluated by each library's forward\n\n" + check)
    if args.json:
        args.json.write_text(json.dumps({"torchvision": tv, "detbench": db, "cross_check_detbench": cross,
                                         "seconds_per_iter": {"torchvision": tv_time, "detbench": db_time},
                                         "iterations": cfg.SOLVER.MAX_ITER, "threads": args.threads,
                                         "sequential": args.sequential}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
