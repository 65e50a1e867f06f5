"""Time per image of a detector without and with test-time augmentation, measured side by side.

    python tools/time_bbox_aug.py --config-file configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml \\
        --images 64 --setting "flip=TEST.BBOX_AUG.H_FLIP True" \\
        --setting "flip+192=TEST.BBOX_AUG.H_FLIP True TEST.BBOX_AUG.SCALES (192,) TEST.BBOX_AUG.SCALE_H_FLIP True" \\
        MODEL.WEIGHT output/quickstart/model_final.pth

The first ``--images`` images of the first DATASETS.TEST dataset are run in batches of
TEST.IMS_PER_BATCH, after one untimed batch per setting. For each batch every setting runs once, in turn (the plain model first), so
a machine whose load changes during the run slows all settings alike; the table gives each
setting's seconds per image (the whole call: resizing, the model, the merge) and its ratio to the
plain model. A setting is a name and KEY VALUE overrides applied on top of the config, with
TEST.BBOX_AUG.ENABLED True added. Accuracy is not measured here: use tools/test_net.py.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this clone's detbench, before any installed one

import torch  # noqa: E402

from detbench.config import load_config  # noqa: E402
from detbench.data import dataset_names  # noqa: E402
from detbench.data.build import build_dataset  # noqa: E402
from detbench.engine.predictor import Predictor  # noqa: E402


def _settings(cli: list[str]) -> list[tuple[str, list[str]]]:
    """``NAME=KEY VALUE ...`` strings -> [(name, overrides)], the plain model first."""
    out = [("plain", [])]
    for text in cli:
        name, sep, opts = text.partition("=")
        if not sep or not name:
            raise SystemExit(f"--setting needs NAME=KEY VALUE ..., got {text!r}")
        out.append((name, ["TEST.BBOX_AUG.ENABLED", "True", *shlex.split(opts)]))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--images", type=int, default=64, help="images timed (the first of DATASETS.TEST)")
    parser.add_argument("--setting", action="append", default=[], help="NAME=KEY VALUE ... (repeatable)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every setting")
    args = parser.parse_args(argv)
    settings = _settings(args.setting)
    predictors = {name: Predictor(load_config(args.config_file, [*args.opts, *opts])) for name, opts in settings}
    cfg = predictors["plain"].cfg
    names = dataset_names(cfg, is_train=False)
    if not names:
        raise SystemExit("DATASETS.TEST is empty: name the dataset whose images are timed")
    dataset = build_dataset(cfg, names[0], False, None)
    count = min(args.images, len(dataset))
    images = [dataset[i][0] for i in range(count)]
    batch = cfg.TEST.IMS_PER_BATCH
    for predictor in predictors.values():  # untimed warm-up: first-call costs (allocator, kernels' set-up)
        predictor(images[:batch])
    seconds = dict.fromkeys(predictors, 0.0)
    for start in range(0, count, batch):
        for name, predictor in predictors.items():
            tic = time.perf_counter()
            predictor(images[start:start + batch])
            seconds[name] += time.perf_counter() - tic
    print(f"{count} images of {names[0]}, batches of {batch}, {torch.get_num_threads()} threads")
    print(f"{'setting':<16} {'views':>5} {'s / image':>10} {'x plain':>8}")
    for name, predictor in predictors.items():
        views = len(predictor.augmented.views) if predictor.augmented is not None else 1
        per_image = seconds[name] / count
        print(f"{name:<16} {views:>5} {per_image:>10.4f} {seconds[name] / seconds['plain']:>8.2f}")


if __name__ == "__main__":
    main()
