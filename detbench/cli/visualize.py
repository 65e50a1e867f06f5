"""``detbench-visualize`` (also ``python tools/visualize.py``): draw predictions or ground truth.

Ground truth is read through the dataset classes (as training reads it), so annotation
problems show. KEY VALUE overrides come last.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from detbench.config import ConfigError, load_config
from detbench.data.datasets.coco import ImageLoadError, load_image
from detbench.utils.checkpoint import Checkpointer
from detbench.utils.logger import setup_logger
from detbench.utils.visualizer import draw_instances

from .common import argument_parser, parse_args, run_tool

PROG = "detbench-visualize"
EXAMPLES = """\
  # predictions of the quickstart model (after detbench-train) on a folder of images
  detbench-visualize --config-file detbench://configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml \\
      --input photos/ --num-images 8 --output pictures/predictions
  # the ground truth of a dataset, to check its annotations
  detbench-visualize --config-file configs/pennfudan/mask_rcnn_R_18_FPN_scratch.yaml \\
      --dataset penn_fudan_test --output pictures/ground_truth
Predictions use MODEL.WEIGHT, or OUTPUT_DIR's last checkpoint when MODEL.WEIGHT is empty.
"""
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _parser():
    parser = argument_parser(PROG, "Draw a model's predictions on images, or a dataset's ground truth, as PNG files",
                             EXAMPLES)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="PATH", help="an image file or a folder of images")
    source.add_argument("--dataset", metavar="NAME", help="a dataset name (DATASETS.* / catalog) to draw")
    parser.add_argument("--output", metavar="DIR", required=True, help="folder for the PNG files")
    parser.add_argument("--confidence-threshold", type=float, default=0.5,
                        help="draw predictions scoring at least this (default 0.5)")
    parser.add_argument("--min-size", type=int, default=512, metavar="PIXELS",
                        help="enlarge smaller images by a whole factor until the shorter side is at least "
                             "this, so labels stay readable (default 512; 0 keeps the size)")
    parser.add_argument("--num-images", type=int, default=None,
                        help="draw only the first N images (default: 20 of a dataset, all of a folder)")
    return parser


def _image_files(path: Path) -> list[Path]:
    if not path.exists():
        raise SystemExit(f"visualize: input {path} does not exist")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"visualize: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}")
    return files


def _out_name(path: Path, used: set[str]) -> str:
    """``<stem>.png``, or ``<name>.png`` when two inputs share a stem (a.jpg, a.png)."""
    name = f"{path.stem}.png" if f"{path.stem}.png" not in used else f"{path.name}.png"
    used.add(name)
    return name


def draw_predictions(cfg, args, output: Path) -> int:
    """One PNG per input image; returns the number of images that could not be read."""
    from detbench.engine.predictor import Predictor

    files = _image_files(Path(args.input))[:args.num_images]  # None keeps every file
    if not cfg.MODEL.WEIGHT:
        last = Checkpointer(None, save_dir=cfg.OUTPUT_DIR, save_to_disk=False).get_checkpoint_file()
        if not last:
            raise SystemExit(f"visualize: no weights: set MODEL.WEIGHT or train into OUTPUT_DIR ({cfg.OUTPUT_DIR})")
        cfg.MODEL.WEIGHT = last
    setup_logger("detbench", None, 0)  # weight loading reports what it loaded and skipped
    predictor = Predictor(cfg)
    used: set[str] = set()
    failed = 0
    for path in files:
        try:
            image = load_image(path)
        except ImageLoadError as exc:
            print(f"visualize: skipped: {exc}", file=sys.stderr)
            failed += 1
            continue
        detections = predictor(image, score_threshold=args.confidence_threshold)
        drawn = draw_instances(image, detections, predictor.class_names, score_threshold=args.confidence_threshold,
                               min_size=args.min_size)
        target = output / _out_name(path, used)
        drawn.save(target)
        print(f"{path}: {len(detections)} detection(s) -> {target}")
    return failed


def draw_ground_truth(cfg, args, output: Path) -> int:
    """The first ``--num-images`` images of the dataset with their targets; returns the
    number of images that could not be read."""
    from detbench.data.build import build_dataset

    setup_logger("detbench", None, 0)  # the dataset reports dropped annotations
    dataset = build_dataset(cfg, args.dataset, is_train=False)
    names = ["__background__", *(dataset.categories[i] for i in sorted(dataset.categories))]
    failed = 0
    count = 20 if args.num_images is None else args.num_images
    for index in range(min(count, len(dataset))):
        try:
            image, target, _ = dataset[index]
        except ImageLoadError as exc:
            print(f"visualize: skipped: {exc}", file=sys.stderr)
            failed += 1
            continue
        info = dataset.get_img_info(index)
        stem = Path(str(info.get("file_name", index))).stem
        target_file = output / f"{args.dataset}_{stem}.png"
        draw_instances(image, target, names, min_size=args.min_size).save(target_file)
        print(f"{args.dataset}[{index}]: {len(target)} instance(s) -> {target_file}")
    return failed


def _main(argv: list[str] | None) -> None:
    args = parse_args(_parser(), argv)
    cfg = load_config(args.config_file or None, args.opts)
    cfg.defrost()  # MODEL.WEIGHT may be filled in from OUTPUT_DIR
    if args.input and cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but no GPU is visible; use MODEL.DEVICE auto or cpu")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    failed = draw_predictions(cfg, args, output) if args.input else draw_ground_truth(cfg, args, output)
    print(f"Wrote the images to {output}")
    if failed:
        raise SystemExit(f"visualize: {failed} image(s) could not be read (see above)")



def main(argv: list[str] | None = None) -> None:
    """Console entry point ``detbench-visualize``."""
    run_tool(PROG, lambda: _main(argv))
