"""SegmentationMask: the instance masks of one image, as polygons or as bitmasks.

Coordinates follow :class:`BoxList`: continuous pixel coordinates where pixel (i, j)
covers [j, j+1) x [i, i+1), and ``size`` is ``(width, height)``. A bitmask tensor is
``[N, height, width]``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as coco_mask
from torch import Tensor

from .bounding_box import FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM

_MODES = ("poly", "mask")


def _ranges(starts: Tensor, lengths: Tensor) -> Tensor:
    """Concatenation of ``arange(s, s + l)`` for each (s, l): [sum(lengths)] int64."""
    offsets = torch.cumsum(lengths, 0) - lengths
    total = int(lengths.sum())
    return torch.repeat_interleave(starts - offsets, lengths, output_size=total) + torch.arange(
        total, device=starts.device
    )


def _round_half_up(value: float) -> int:
    """Nearest integer, halves rounded up (Python's round() sends 0.5 to 0 and 2.5 to 2)."""
    return math.floor(value + 0.5)


def _pack_polygons(instances: Sequence[Sequence[Any]]) -> tuple[Tensor, Tensor, Tensor]:
    """Nested per-instance lists of flat [x0, y0, x1, y1, ...] polygons -> packed tensors
    (points [V, 2] float64, so that rasterising matches pycocotools on the json values; vertices per polygon [P], polygons per instance [N]).

    Polygons with fewer than 3 vertices enclose no area and are dropped (pycocotools would
    read a 4-number list as a box).
    """
    points, poly_sizes, inst_sizes = [], [], []
    for polygons in instances:
        if isinstance(polygons, dict):
            raise TypeError("SegmentationMask takes polygons, not RLE dicts (filter out crowd annotations)")
        kept = 0
        for poly in polygons:
            flat = torch.as_tensor(poly, dtype=torch.float64).reshape(-1)
            if flat.numel() % 2:
                raise ValueError(f"a polygon needs an even number of coordinates, got {flat.numel()}")
            if flat.numel() >= 6:
                points.append(flat.view(-1, 2))
                poly_sizes.append(flat.numel() // 2)
                kept += 1
        inst_sizes.append(kept)
    packed = torch.cat(points) if points else torch.zeros((0, 2), dtype=torch.float64)
    return packed, torch.tensor(poly_sizes, dtype=torch.int64), torch.tensor(inst_sizes, dtype=torch.int64)


def _as_bitmasks(instances: Tensor | Sequence[Tensor], size: tuple[int, int]) -> Tensor:
    """[N, H, W] tensor or list of [H, W] tensors -> uint8 0/1 [N, height, width]."""
    width, height = int(size[0]), int(size[1])
    if not isinstance(instances, Tensor):
        instances = torch.stack(list(instances)) if len(instances) else torch.zeros((0, height, width))
    if instances.dim() != 3 or tuple(instances.shape[1:]) != (height, width):
        raise ValueError(
            f"bitmasks must be [N, height, width] = [N, {height}, {width}] for size {size}, "
            f"got {tuple(instances.shape)}"
        )
    return (instances != 0).to(torch.uint8)


def _row_runs(row: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of the runs of nonzero pixels of a 1-D row, end exclusive."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], (row != 0).astype(np.int8), [0]))))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Polygons ``[x0, y0, x1, y1, ...]`` whose union is exactly the [H, W] bitmask ``mask``.

    Each polygon is an axis-aligned rectangle on pixel corners (pixel (x, y) covers
    [x, x + 1] x [y, y + 1]): a run of pixels in a row, extended down over the rows that have
    the same run. pycocotools rasterises such rectangles to exactly their pixels, so holes and
    thin parts survive a round trip (contour tracing, maskrcnn-benchmark's cv2 way, fills holes).
    """
    rectangles: list[list[float]] = []
    open_runs: dict[tuple[int, int], int] = {}  # run -> first row
    height = mask.shape[0]
    for y in range(height + 1):
        runs = set(_row_runs(mask[y])) if y < height else set()
        for (x0, x1), top in list(open_runs.items()):
            if (x0, x1) not in runs:
                rectangles.append([float(v) for v in (x0, top, x1, top, x1, y, x0, y)])
                del open_runs[(x0, x1)]
        for run in sorted(runs):
            open_runs.setdefault(run, y)
    return rectangles


class SegmentationMask:
    """N instance masks of an image of ``size = (width, height)``.

    ``mode="poly"``: ``instances`` is a list (one entry per instance) of lists of flat
    polygons ``[x0, y0, x1, y1, ...]`` in pixel coordinates; an instance may have several
    polygons (their union is the mask) or none (an empty mask); polygons of fewer than 3
    vertices enclose nothing and are dropped. ``mode="mask"``:
    ``instances`` is a [N, height, width] tensor (or a list of [height, width] tensors),
    nonzero = inside.

    Geometry never changes the polygons' shape: ``resize`` scales the coordinates,
    a horizontal flip maps x -> width - x, ``crop`` shifts by the crop's corner and keeps
    vertices outside it (clipping happens when rasterising). Bitmasks use tensor ops
    (nearest resize, flip, slicing); their crop box is rounded to whole pixels.
    Polygons are stored packed (all vertices in one [V, 2] tensor), so geometry is one
    tensor op whatever the number of instances.
    """

    def __init__(self, instances: Any, size: tuple[int, int], mode: str = "poly") -> None:
        if mode not in _MODES:
            raise ValueError(f"unknown mask mode {mode!r}; expected one of {_MODES}")
        if len(size) != 2 or min(size) < 0:
            raise ValueError(f"size must be (width, height) with both >= 0, got {size}")
        self.size = (size[0], size[1])
        self.mode = mode
        if mode == "mask":
            self._masks = _as_bitmasks(instances, size)
        elif isinstance(instances, Tensor):
            raise TypeError("a tensor of bitmasks needs mode='mask'; mode='poly' takes lists of polygons")
        else:
            self._points, self._poly_sizes, self._inst_sizes = _pack_polygons(instances)

    @classmethod
    def _from_packed(cls, points: Tensor, poly_sizes: Tensor, inst_sizes: Tensor, size: tuple) -> SegmentationMask:
        out = cls.__new__(cls)
        out.size, out.mode = (size[0], size[1]), "poly"
        out._points, out._poly_sizes, out._inst_sizes = points, poly_sizes, inst_sizes
        return out

    @classmethod
    def _from_masks(cls, masks: Tensor, size: tuple) -> SegmentationMask:
        out = cls.__new__(cls)
        out.size, out.mode, out._masks = (size[0], size[1]), "mask", masks
        return out

    # ---- inspection ------------------------------------------------------------------------

    @property
    def polygons(self) -> list[list[Tensor]]:
        """Per instance, its flat float64 polygons [2 * vertices] (poly mode only)."""
        if self.mode != "poly":
            raise ValueError("polygons are only defined in 'poly' mode")
        flat = self._points.cpu().split(self._poly_sizes.tolist())
        per_poly = [p.reshape(-1) for p in flat]
        out, start = [], 0
        for count in self._inst_sizes.tolist():
            out.append(per_poly[start : start + count])
            start += count
        return out

    def __len__(self) -> int:
        return self._masks.size(0) if self.mode == "mask" else self._inst_sizes.numel()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_instances={len(self)}, image_width={self.size[0]}, "
            f"image_height={self.size[1]}, mode={self.mode})"
        )

    # ---- geometry --------------------------------------------------------------------------

    def resize(self, size: tuple[int, int]) -> SegmentationMask:
        """Masks of the image resized to ``size = (width, height)``: polygon x scales by
        new_width / width (y likewise); bitmasks use nearest-neighbour resampling."""
        width, height = size
        if self.mode == "poly":
            ratio = self._points.new_tensor([width / self.size[0], height / self.size[1]])
            return self._from_packed(self._points * ratio, self._poly_sizes, self._inst_sizes, size)
        if len(self) == 0:
            return self._from_masks(self._masks.new_zeros((0, int(height), int(width))), size)
        resized = F.interpolate(self._masks[None].float(), size=(int(height), int(width)), mode="nearest")
        return self._from_masks(resized[0].to(torch.uint8), size)

    def transpose(self, method: int) -> SegmentationMask:
        """FLIP_LEFT_RIGHT maps x -> width - x, FLIP_TOP_BOTTOM maps y -> height - y."""
        if method not in (FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM):
            raise ValueError(f"transpose supports FLIP_LEFT_RIGHT (0) and FLIP_TOP_BOTTOM (1), got {method!r}")
        if self.mode == "mask":
            # Bitmask dims are (N, H, W): a left-right flip reverses the last one.
            return self._from_masks(self._masks.flip(-1 if method == FLIP_LEFT_RIGHT else -2), self.size)
        axis = 0 if method == FLIP_LEFT_RIGHT else 1
        points = self._points.clone()
        points[:, axis] = self.size[axis] - points[:, axis]
        return self._from_packed(points, self._poly_sizes, self._inst_sizes, self.size)

    def crop(self, box: Iterable[float] | Tensor) -> SegmentationMask:
        """Masks in the frame of ``box = (x1, y1, x2, y2)``, whose size (x2 - x1, y2 - y1)
        becomes the new size. Polygons are shifted by (-x1, -y1) and kept whole; bitmasks
        are cut at the box rounded to whole pixels, zero where it leaves the image."""
        left, top, right, bottom = box.tolist() if isinstance(box, Tensor) else box
        if right <= left or bottom <= top:
            raise ValueError(f"crop box must have x2 > x1 and y2 > y1, got {(left, top, right, bottom)}")
        if self.mode == "poly":
            points = self._points - self._points.new_tensor([left, top])
            return self._from_packed(points, self._poly_sizes, self._inst_sizes, (right - left, bottom - top))
        left, top, right, bottom = (_round_half_up(v) for v in (left, top, right, bottom))
        height, width = self._masks.shape[-2:]
        out = self._masks.new_zeros((len(self), bottom - top, right - left))
        # The part of the crop inside the image: source rows [y0, y1), cols [x0, x1).
        x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
        if x1 > x0 and y1 > y0:
            out[:, y0 - top : y1 - top, x0 - left : x1 - left] = self._masks[:, y0:y1, x0:x1]
        return self._from_masks(out, (right - left, bottom - top))

    # ---- containers ------------------------------------------------------------------------

    def to(self, device: torch.device | str) -> SegmentationMask:
        if self.mode == "mask":
            return self._from_masks(self._masks.to(device), self.size)
        return self._from_packed(
            self._points.to(device), self._poly_sizes.to(device), self._inst_sizes.to(device), self.size
        )

    def _index_tensor(self, item: Any) -> Tensor:
        """Any supported index -> 1-D int64 instance indices."""
        n = len(self)
        device = self._masks.device if self.mode == "mask" else self._inst_sizes.device
        if isinstance(item, Tensor) and item.dim() == 0 and item.dtype != torch.bool:
            item = int(item)
        if isinstance(item, int) and not isinstance(item, bool):
            if not -n <= item < n:
                raise IndexError(f"index {item} is out of range for {n} instances")
            return torch.tensor([item % n], device=device)
        if isinstance(item, slice):
            return torch.arange(n, device=device)[item]
        if isinstance(item, Tensor) and item.dim() == 1 and not item.dtype.is_floating_point:
            if item.dtype == torch.bool:
                if item.numel() != n:
                    raise IndexError(f"bool mask has {item.numel()} entries for {n} instances")
                return torch.nonzero(item.to(device)).view(-1)
            return item.to(device=device, dtype=torch.int64)  # negative entries count from the end
        raise TypeError(f"SegmentationMask index must be an int, slice, bool mask or index tensor, got {item!r}")

    def __getitem__(self, item: int | slice | Tensor) -> SegmentationMask:
        """The selected instances (an int selects one and keeps a length-1 SegmentationMask)."""
        idx = self._index_tensor(item)
        if self.mode == "mask":
            return self._from_masks(self._masks[idx], self.size)
        poly_start = torch.cumsum(self._inst_sizes, 0) - self._inst_sizes  # first polygon of each instance
        poly_idx = _ranges(poly_start[idx], self._inst_sizes[idx])
        vert_start = torch.cumsum(self._poly_sizes, 0) - self._poly_sizes  # first vertex of each polygon
        vert_idx = _ranges(vert_start[poly_idx], self._poly_sizes[poly_idx])
        return self._from_packed(
            self._points[vert_idx], self._poly_sizes[poly_idx], self._inst_sizes[idx], self.size
        )

    @classmethod
    def cat(cls, masks: Sequence[SegmentationMask]) -> SegmentationMask:
        """Concatenate the instances of SegmentationMasks of one image size and mode."""
        first = masks[0]
        if any(tuple(m.size) != tuple(first.size) or m.mode != first.mode for m in masks):
            raise ValueError(f"cannot concatenate masks of sizes/modes {[(m.size, m.mode) for m in masks]}")
        if first.mode == "mask":
            return cls._from_masks(torch.cat([m._masks for m in masks]), first.size)
        return cls._from_packed(
            torch.cat([m._points for m in masks]),
            torch.cat([m._poly_sizes for m in masks]),
            torch.cat([m._inst_sizes for m in masks]),
            first.size,
        )

    # ---- conversion ------------------------------------------------------------------------

    def convert(self, mode: str) -> SegmentationMask:
        """The same masks in ``mode``: "poly" -> "mask" rasterises (see :meth:`get_mask_tensor`);
        "mask" -> "poly" gives each instance the exact polygons of :func:`mask_to_polygons`, so
        converting back gives the same bitmasks (holes included)."""
        if mode not in _MODES:
            raise ValueError(f"unknown mask mode {mode!r}; expected one of {_MODES}")
        if mode == self.mode:
            return self
        if mode == "poly":
            masks = self._masks.cpu().numpy()
            out = SegmentationMask([mask_to_polygons(m) for m in masks], self.size, "poly")
            return out.to(self._masks.device)
        return self._from_masks(self.get_mask_tensor(), self.size)

    def get_mask_tensor(self) -> Tensor:
        """uint8 0/1 [N, height, width], on the masks' device.

        Polygons are rasterised with pycocotools, the rasteriser of COCO's own evaluation
        (an instance's polygons are merged by union). A non-integer
        size (after a crop at fractional coordinates) is rounded to whole pixels.
        """
        if self.mode == "mask":
            return self._masks
        width, height = _round_half_up(self.size[0]), _round_half_up(self.size[1])
        device = self._points.device
        out = torch.zeros((len(self), height, width), dtype=torch.uint8)
        if self._poly_sizes.numel() == 0 or width == 0 or height == 0:
            return out.to(device)
        flat = self._points.cpu().double().numpy().reshape(-1)
        # Vertex counts -> coordinate offsets of each polygon in the flat array.
        bounds = np.cumsum([0] + [2 * s for s in self._poly_sizes.tolist()])
        rles = coco_mask.frPyObjects([flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])], height, width)
        start = 0
        merged, owners = [], []
        for i, count in enumerate(self._inst_sizes.tolist()):  # pycocotools merges one instance at a time
            if count:
                merged.append(coco_mask.merge(rles[start : start + count]))
                owners.append(i)
            start += count
        with warnings.catch_warnings():
            # pycocotools' Cython decode trips a numpy 2 DeprecationWarning (copy=False) internally.
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = coco_mask.decode(merged)  # [height, width, len(merged)], Fortran order
        out[owners] = torch.from_numpy(np.ascontiguousarray(decoded.transpose(2, 0, 1)))
        return out.to(device)
