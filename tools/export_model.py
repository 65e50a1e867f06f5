"""Export a trained detector as one ONNX or TorchScript file for deployment.

    python tools/export_model.py --config-file configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml \\
        --format onnx --output model.onnx [--sample-image photo.jpg] [KEY VALUE ...]

Weights: MODEL.WEIGHT, or else the last checkpoint in OUTPUT_DIR. The file takes one RGB
uint8 image [H, W, 3] of any size (the config's test-time resize and normalisation are in
the graph) and returns boxes [N, 4], scores [N], labels [N] (+ masks [N, 1, H, W],
keypoints [N, K, 3]) in the image's pixels; see detbench/export/__init__.py. The sample
image only drives the trace; any image gives the same graph. ONNX needs
``pip install onnx onnxruntime`` (the ``export`` extra).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from detbench.config import load_config
from detbench.engine.predictor import as_rgb_image
from detbench.export import FORMATS, check_exportable, export_model
from detbench.utils.logger import setup_logger


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    parser.add_argument("--format", required=True, choices=FORMATS, help="the file format")
    parser.add_argument("--output", required=True, metavar="FILE", help="the file to write")
    parser.add_argument("--sample-image", metavar="IMG", help="an image to trace on (default: a random one)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. MODEL.WEIGHT output/model_final.pth")
    return parser.parse_args(argv)


def _read_image(path: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(as_rgb_image(image))
    except OSError as exc:
        raise SystemExit(f"--sample-image {path}: cannot read it as an image ({exc})") from exc


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    setup_logger("detbench", None, 0)
    cfg = load_config(args.config_file, args.opts)
    try:
        check_exportable(cfg)  # before loading weights or images
    except ValueError as exc:
        raise SystemExit(f"{args.config_file}: {exc}") from exc
    if args.format == "onnx":
        try:
            import onnx  # noqa: F401  (the exporter writes through it)
        except ImportError as exc:
            raise SystemExit("--format onnx needs the onnx package: pip install onnx onnxruntime") from exc
    image = _read_image(args.sample_image) if args.sample_image else None
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    path = export_model(cfg, args.format, args.output, image)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
