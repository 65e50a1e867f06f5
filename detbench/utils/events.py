"""TensorBoard event files beside ``metrics.jsonl``: every record the trainer writes, as scalars.

Training records ``{"iteration": i, "loss": ..., "loss_<term>": ..., "lr": ..., "time": ...,
"data": ..., "memory_mb": ...}`` become ``train/<name>`` scalars at step i; evaluation records
``{"iteration": i, "eval": {dataset: {iou_type: {metric: value}}}}`` become
``eval/<dataset>/<iou_type>/<metric>`` (AP, AP50, AP75, APs, APm, APl; COCO's -1 "no ground
truth" is left out). Written by the main process only, with ``torch.utils.tensorboard``;
``tensorboard --logdir OUTPUT_DIR`` shows them.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterator, Mapping

from . import comm

logger = logging.getLogger(__name__)


def scalars(record: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """(tag, value) pairs of one metrics.jsonl record; non-numbers and non-finite values are left out."""
    for key, value in record.items():
        if key == "iteration":
            continue
        if key == "eval" and isinstance(value, Mapping):
            yield from _eval_scalars(value, "eval")
        elif _finite(value):
            yield f"train/{key}", float(value)


def _eval_scalars(tree: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, float]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _eval_scalars(value, f"{prefix}/{key}")
        elif _finite(value) and value >= 0:
            yield f"{prefix}/{key}", float(value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class EventWriter:
    """Writes metrics records to TensorBoard event files in ``output_dir`` (main process only).

    The writer is created on the first record. Without the ``tensorboard`` package, one warning
    is logged and records are only kept in metrics.jsonl.
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir) if output_dir else None
        self._writer = None
        self._disabled = self.output_dir is None or not comm.is_main_process()

    def write(self, record: Mapping[str, Any]) -> None:
        """Add the record's scalars at step ``record["iteration"]`` and flush them to disk."""
        writer = self._get_writer()
        if writer is None:
            return
        step = int(record["iteration"])
        for tag, value in scalars(record):
            writer.add_scalar(tag, value, step)
        writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _get_writer(self):
        if self._writer is None and not self._disabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # the package is in requirements.txt, but a lean install may lack it
                logger.warning("No TensorBoard event files (%s); metrics.jsonl has the same values", exc)
                self._disabled = True
                return None
            self._writer = SummaryWriter(log_dir=str(self.output_dir))
        return self._writer
