"""Draw the training curves of a run: loss terms, learning rate and evaluation AP.

    detbench-plot OUTPUT_DIR [--output FILE]

Reads OUTPUT_DIR/metrics.jsonl and writes OUTPUT_DIR/training_curves.png (or FILE).
"""

from __future__ import annotations

import argparse

from detbench.utils.plot_metrics import plot_metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="detbench-plot", description="Plot OUTPUT_DIR/metrics.jsonl as a PNG of line charts",
        epilog="examples:\n  detbench-plot output/quickstart\n  detbench-plot output/quickstart --output curves.png",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="a training run's OUTPUT_DIR")
    parser.add_argument("--output", metavar="FILE", default=None,
                        help="PNG to write (default: OUTPUT_DIR/training_curves.png)")
    args = parser.parse_args(argv)
    try:
        path = plot_metrics(args.output_dir, args.output)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"plot_metrics: {exc}") from None
    print(f"Wrote {path}")

