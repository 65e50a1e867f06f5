"""Per-category AP from an accumulated COCOeval, and its table for the log."""

from __future__ import annotations

import itertools
import math
from typing import Mapping

import numpy as np
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate


def per_category_ap(coco_eval: COCOeval, names: Mapping[int, str]) -> dict[str, float]:
    """{category name: AP in [0, 1]} over IoU 0.50:0.95, all areas, the largest maxDets;
    NaN for a category without ground truth. ``names`` maps json category ids to names."""
    # precision: [T IoU thresholds, R recall points, K categories, A area ranges, M maxDets];
    # -1 marks entries without ground truth. Area index 0 is "all", maxDets index -1 the largest.
    precision = coco_eval.eval["precision"]
    out = {}
    for k, cat_id in enumerate(coco_eval.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        out[names.get(cat_id, str(cat_id))] = float(np.mean(values)) if values.size else math.nan
    return out


def per_category_table(ap: Mapping[str, float], pairs_per_row: int = 3) -> str:
    """A table of (category, AP in percent) pairs, ``pairs_per_row`` pairs per row."""
    cells = [(name, f"{100 * value:.3f}") for name, value in ap.items()]
    flat = list(itertools.chain.from_iterable(cells))
    width = 2 * pairs_per_row
    rows = [flat[i : i + width] for i in range(0, len(flat), width)]
    headers = ["category", "AP"] * min(pairs_per_row, max(len(cells), 1))
    return tabulate(rows, headers=headers, tablefmt="pipe", stralign="left", disable_numparse=True)
