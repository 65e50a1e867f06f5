"""The first training iterations on the CPU and on a GPU, side by side: same weights, same batches.

Both runs start from one model (built on the CPU with SEED, then copied), see the same
batches (drawn once from the training loader), and re-seed torch before the first
iteration; the RPN and ROI samplers draw on the CPU generator on every device, so both
devices sample the same anchors and proposals. What is left are the kernels' rounding
differences, which grow as the weights drift apart. A float16 (AMP) GPU run can be added.

    python tools/compare_devices.py --config-file configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml \
        --iters 10 --amp [KEY VALUE ...]
Prints one table (iteration, loss term, CPU, GPU, relative difference) and, with --json, writes it.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from tabulate import tabulate

from detbench.config import load_config
from detbench.data import make_data_loader
from detbench.modeling.detector import build_detection_model
from detbench.solver import make_lr_scheduler, make_optimizer


def first_batches(cfg, iters: int) -> list:
    """The first ``iters`` training batches ``(ImageList, targets, indices)`` of the loader."""
    batches = []
    for batch in make_data_loader(cfg, is_train=True):
        batches.append(batch)
        if len(batches) == iters:
            break
    return batches


def run_losses(cfg, model: torch.nn.Module, batches: list, device: torch.device, amp: bool) -> list[dict[str, float]]:
    """Train ``model`` on ``batches`` on ``device``; the loss terms of each iteration (before its step)."""
    model = model.to(device).train()
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    torch.manual_seed(max(cfg.SEED, 0))  # the samplers' draws (CPU generator on every device)
    history = []
    for images, targets, _ in batches:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss_dict = model(images.to(device), [t.to(device) for t in targets])
        losses = sum(loss_dict.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        history.append({"loss": float(losses.detach()), **{k: float(v.detach()) for k, v in loss_dict.items()}})
    return history


def compare_table(runs: dict[str, list[dict[str, float]]]) -> list[list]:
    """Rows (iteration, term, value per run..., |run - cpu| / |cpu| per non-CPU run)."""
    names = list(runs)
    rows = []
    for it, cpu in enumerate(runs["cpu"], 1):
        for term, ref in cpu.items():
            values = [runs[n][it - 1][term] for n in names]
            rel = [abs(v - ref) / max(abs(ref), 1e-12) for v in values[1:]]
            rows.append([it, term, *values, *rel])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--iters", type=int, default=10, help="training iterations compared")
    parser.add_argument("--amp", action="store_true", help="also a float16 autocast run on the GPU")
    parser.add_argument("--other", default="cuda", choices=["cuda", "cpu"],
                        help="the device compared with the CPU (cpu: a determinism check, and a dry run)")
    parser.add_argument("--json", default="", help="also write the rows to this file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    if args.other == "cuda" and not torch.cuda.is_available():
        print("compare_devices: no CUDA device visible (use --other cpu for a dry run)", file=sys.stderr)
        return 2
    if args.amp and args.other != "cuda":
        parser.error("--amp needs --other cuda")
    cfg = load_config(args.config_file, ["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", *args.opts])
    torch.manual_seed(max(cfg.SEED, 0))
    model = build_detection_model(cfg)  # on the CPU: the same initial weights for every run
    batches = first_batches(cfg, args.iters)
    runs = {"cpu": run_losses(cfg, copy.deepcopy(model), batches, torch.device("cpu"), amp=False),
            f"{args.other}_again" if args.other == "cpu" else "cuda":
                run_losses(cfg, copy.deepcopy(model), batches, torch.device(args.other), amp=False)}
    if args.amp:
        runs["cuda_amp"] = run_losses(cfg, copy.deepcopy(model), batches, torch.device("cuda"), amp=True)
    others = [n for n in runs if n != "cpu"]
    headers = ["iter", "term", *runs, *[f"rel {n}" for n in others]]
    rows = compare_table(runs)
    print(tabulate(rows, headers=headers, floatfmt=".6g"))
    if args.json:
        Path(args.json).write_text(json.dumps({"headers": headers, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
