"""BatchCollator: a list of dataset items -> (ImageList, targets, indices)."""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from detbench.structures import ImageList, to_image_list


class BatchCollator:
    """Collate ``(image [3, H, W], target, index)`` items into ``(images, targets, indices)``:
    ``images`` an ImageList zero-padded at the bottom/right to the batch's largest height and
    width, each rounded up to a multiple of ``size_divisibility`` (0: no rounding);
    ``targets`` and ``indices`` tuples in batch order."""

    def __init__(self, size_divisibility: int = 0) -> None:
        self.size_divisibility = size_divisibility

    def __call__(self, batch: Sequence[tuple[Tensor, Any, int]]) -> tuple[ImageList, tuple, tuple[int, ...]]:
        images, targets, indices = zip(*batch)
        return to_image_list(list(images), self.size_divisibility), tuple(targets), tuple(indices)
