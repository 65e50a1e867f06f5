"""Download what detbench cannot generate: the Penn-Fudan dataset, torchvision's weights.

    detbench-download penn_fudan [--root DIR]      # into $DETBENCH_DATASETS (./datasets)
    detbench-download weights torchvision://maskrcnn_resnet50_fpn_coco [...]

Penn-Fudan lands in ``<root>/PennFudanPed`` where ``penn_fudan_train`` / ``penn_fudan_test``
look for it; the archive's size, zip CRCs, member paths and layout are checked, and a
complete existing folder is left as it is. Weights go into the torch hub cache (checked
against the hash in their file name), where ``MODEL.WEIGHT torchvision://NAME`` finds
them: useful to fetch them once on a machine with network access.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from detbench.data.catalog import datasets_root
from detbench.data.datasets import penn_fudan
from detbench.utils import torchvision_weights

EXAMPLES = """examples:
  detbench-download penn_fudan                    # into $DETBENCH_DATASETS (default ./datasets)
  detbench-download penn_fudan --root /data
  detbench-download weights torchvision://maskrcnn_resnet50_fpn_coco
"""


def _penn_fudan(args: argparse.Namespace) -> None:
    root = Path(args.root) if args.root else datasets_root()
    folder = penn_fudan.download(root, url=args.url, sha256=args.sha256 or None)
    print(f"Penn-Fudan is in {folder}")
    if args.root:  # elsewhere than the catalog's root
        print(f"point the catalog at it: export DETBENCH_DATASETS={root.resolve()}")


def _weights(args: argparse.Namespace) -> None:
    import torch

    for name in args.names:
        state = torchvision_weights.load_by_name(name, progress=True)
        print(f"{name}: {len(state)} tensors in {torch.hub.get_dir()}/checkpoints/")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="detbench-download", description=__doc__.split("\n")[0],
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    pf = sub.add_parser("penn_fudan", help="the Penn-Fudan pedestrian dataset (about 50 MB)")
    pf.add_argument("--root", default="", help="dataset root (default: $DETBENCH_DATASETS or ./datasets)")
    pf.add_argument("--url", default=penn_fudan.URL, help="archive URL (default: the official one)")
    pf.add_argument("--sha256", default="", help="refuse the archive unless its SHA-256 is this (the log shows it)")
    pf.set_defaults(run=_penn_fudan)
    wt = sub.add_parser("weights", help="torchvision weights, by their torchvision://NAME")
    wt.add_argument("names", nargs="+", metavar="NAME", help=", ".join(torchvision_weights.known_names()))
    wt.set_defaults(run=_weights)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args.run(args)
    except (RuntimeError, OSError, torchvision_weights.TorchvisionWeightsError) as e:
        sys.exit(f"download failed: {e}")

