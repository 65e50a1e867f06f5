"""BoxList: the boxes of one image together with named per-box fields."""

from __future__ import annotations

import operator
from typing import Any, Iterable

import torch
from torch import Tensor

# Same values as PIL's Image.Transpose members, so a flag can be passed to both.
FLIP_LEFT_RIGHT = 0
FLIP_TOP_BOTTOM = 1

_MODES = ("xyxy", "xywh")


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"unknown box mode {mode!r}; expected one of {_MODES}")


def _to_xyxy(bbox: Tensor, mode: str) -> Tensor:
    """[N, 4] boxes in ``mode`` -> [N, 4] (x1, y1, x2, y2)."""
    if mode == "xyxy":
        return bbox
    return torch.cat((bbox[:, :2], bbox[:, :2] + bbox[:, 2:]), dim=1)


def _from_xyxy(xyxy: Tensor, mode: str) -> Tensor:
    """[N, 4] (x1, y1, x2, y2) -> [N, 4] boxes in ``mode``."""
    if mode == "xyxy":
        return xyxy
    return torch.cat((xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]), dim=1)


class BoxList:
    """The N boxes of one image, its size, and named per-box fields (labels, scores, masks...).

    Geometry conventions (the single place they are stated; tests/structures guards them):

    * Coordinates are continuous pixel coordinates: pixel (i, j) covers [i, i+1) x [j, j+1),
      so an image of width W spans x in [0, W].
    * ``mode="xyxy"``: rows are (x1, y1, x2, y2) corners and width = x2 - x1, height = y2 - y1
      (no "+1", unlike maskrcnn-benchmark's legacy ``TO_REMOVE = 1``; this matches torchvision
      and detectron2). ``mode="xywh"``: rows are (x1, y1, width, height), so x2 = x1 + width.
    * ``size`` is ``(width, height)`` (PIL order), the reverse of a tensor's ``(H, W)``.
    * A horizontal flip maps x -> W - x (a vertical flip y -> H - y), so a flipped box is
      (W - x2, y1, W - x1, y2).
    * Clipping clamps x to [0, W] and y to [0, H].
    * A box is empty when x2 <= x1 or y2 <= y1.

    ``bbox`` is a floating [N, 4] tensor (N may be 0) whose dtype and device every operation
    keeps. Tensor fields must have N rows and are indexed with the boxes. Other field objects
    take part in geometry when they define the matching method: ``resize(size)``,
    ``transpose(method)``, ``crop(box)``, ``to(device)``, ``__getitem__``; otherwise they
    are carried unchanged. Operations return new BoxLists and never modify ``self``; fields
    that an operation does not change are shared, not copied.
    """

    def __init__(self, bbox: Tensor, image_size: tuple[int, int], mode: str = "xyxy") -> None:
        if not isinstance(bbox, Tensor):
            raise TypeError(f"bbox must be a torch.Tensor of shape [N, 4], got {type(bbox).__name__}")
        if bbox.dim() != 2 or bbox.size(1) != 4:
            raise ValueError(f"bbox must have shape [N, 4], got {tuple(bbox.shape)}")
        if not bbox.is_floating_point():
            raise TypeError(f"bbox must be a floating point tensor, got {bbox.dtype}")
        _check_mode(mode)
        if len(image_size) != 2 or min(image_size) < 0:
            raise ValueError(f"image_size must be (width, height) with both >= 0, got {image_size}")
        self.bbox = bbox
        self.size = (image_size[0], image_size[1])
        self.mode = mode
        self.extra_fields: dict[str, Any] = {}

    # ---- fields ----------------------------------------------------------------------------

    def add_field(self, field: str, field_data: Any) -> None:
        """Attach ``field_data`` (a tensor with N rows, or a field object) under ``field``."""
        if isinstance(field_data, Tensor) and (field_data.dim() == 0 or field_data.size(0) != len(self)):
            raise ValueError(
                f"field {field!r} has shape {tuple(field_data.shape)}; a tensor field needs "
                f"one row per box ({len(self)})"
            )
        self.extra_fields[field] = field_data

    def get_field(self, field: str) -> Any:
        if field not in self.extra_fields:
            raise KeyError(f"BoxList has no field {field!r}; it has {self.fields()}")
        return self.extra_fields[field]

    def has_field(self, field: str) -> bool:
        return field in self.extra_fields

    def fields(self) -> list[str]:
        return list(self.extra_fields.keys())

    def copy_with_fields(self, fields: str | Iterable[str], skip_missing: bool = False) -> BoxList:
        """Same boxes with only ``fields``; a missing one raises KeyError unless ``skip_missing``."""
        if isinstance(fields, str):
            fields = [fields]
        out = BoxList(self.bbox, self.size, self.mode)
        for field in fields:
            if self.has_field(field):
                out.extra_fields[field] = self.extra_fields[field]
            elif not skip_missing:
                raise KeyError(f"BoxList has no field {field!r}; it has {self.fields()}")
        return out

    def _new(self, bbox: Tensor, size: tuple, method: str | None = None, *args, **kwargs) -> BoxList:
        """A BoxList with ``bbox`` (in ``self.mode``) and ``size``; every non-tensor field
        that has ``method`` is replaced by ``field.method(*args, **kwargs)``."""
        out = BoxList(bbox, size, self.mode)
        for name, value in self.extra_fields.items():
            if method is not None and not isinstance(value, Tensor) and hasattr(value, method):
                value = getattr(value, method)(*args, **kwargs)
            out.extra_fields[name] = value
        return out

    # ---- geometry --------------------------------------------------------------------------

    def convert(self, mode: str) -> BoxList:
        """The same boxes in ``mode`` ("xyxy" or "xywh"); returns ``self`` if already there."""
        _check_mode(mode)
        if mode == self.mode:
            return self
        out = BoxList(_from_xyxy(_to_xyxy(self.bbox, self.mode), mode), self.size, mode)
        out.extra_fields = dict(self.extra_fields)
        return out

    def resize(self, size: tuple[int, int], *args, **kwargs) -> BoxList:
        """Boxes for the image resized to ``size = (width, height)``; x scales by
        new_width / width, y by new_height / height. Extra arguments go to fields' ``resize``."""
        if len(size) != 2:
            raise ValueError(f"size must be (width, height), got {size}")
        ratio_w = float(size[0]) / float(self.size[0])
        ratio_h = float(size[1]) / float(self.size[1])
        # The same per-column scale is right in both modes: widths scale like x, heights like y.
        scale = torch.tensor([ratio_w, ratio_h, ratio_w, ratio_h], dtype=self.bbox.dtype, device=self.bbox.device)
        return self._new(self.bbox * scale, tuple(size), "resize", size, *args, **kwargs)

    def transpose(self, method: int) -> BoxList:
        """Flip the image: FLIP_LEFT_RIGHT maps x -> W - x, FLIP_TOP_BOTTOM maps y -> H - y."""
        if method not in (FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM):
            raise ValueError(f"transpose supports FLIP_LEFT_RIGHT (0) and FLIP_TOP_BOTTOM (1), got {method!r}")
        x1, y1, x2, y2 = _to_xyxy(self.bbox, self.mode).unbind(1)
        width, height = self.size
        if method == FLIP_LEFT_RIGHT:
            # The old right edge becomes the new left edge.
            flipped = torch.stack((width - x2, y1, width - x1, y2), dim=1)
        else:
            flipped = torch.stack((x1, height - y2, x2, height - y1), dim=1)
        return self._new(_from_xyxy(flipped, self.mode), self.size, "transpose", method)

    def crop(self, box: Iterable[float] | Tensor) -> BoxList:
        """Boxes in the frame of the region ``box = (x1, y1, x2, y2)``: shifted by (-x1, -y1)
        and clamped to [0, x2 - x1] x [0, y2 - y1], which becomes the new size. Boxes that
        fall outside become empty but are kept (``clip_to_image`` removes them)."""
        left, top, right, bottom = box.tolist() if isinstance(box, Tensor) else box
        width, height = right - left, bottom - top
        if width <= 0 or height <= 0:
            raise ValueError(f"crop box must have x2 > x1 and y2 > y1, got {(left, top, right, bottom)}")
        xyxy = _to_xyxy(self.bbox, self.mode)
        offset = xyxy.new_tensor([left, top, left, top])
        upper = xyxy.new_tensor([width, height, width, height])
        cropped = torch.minimum((xyxy - offset).clamp(min=0), upper)
        return self._new(_from_xyxy(cropped, self.mode), (width, height), "crop", box)

    def clip_to_image(self, remove_empty: bool = True) -> BoxList:
        """Clamp x to [0, W] and y to [0, H]; then drop empty boxes if ``remove_empty``."""
        xyxy = _to_xyxy(self.bbox, self.mode)
        width, height = self.size
        upper = xyxy.new_tensor([width, height, width, height])
        clipped = torch.minimum(xyxy.clamp(min=0), upper)
        out = self._new(_from_xyxy(clipped, self.mode), self.size)
        if not remove_empty:
            return out
        keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        return out[keep]

    def area(self) -> Tensor:
        """[N] width * height; negative for inverted xyxy boxes (as torchvision's box_area)."""
        if self.mode == "xyxy":
            return (self.bbox[:, 2] - self.bbox[:, 0]) * (self.bbox[:, 3] - self.bbox[:, 1])
        return self.bbox[:, 2] * self.bbox[:, 3]

    # ---- containers ------------------------------------------------------------------------

    def to(self, device: torch.device | str) -> BoxList:
        """Boxes and every field that has ``to`` moved to ``device``."""
        out = BoxList(self.bbox.to(device), self.size, self.mode)
        for name, value in self.extra_fields.items():
            out.extra_fields[name] = value.to(device) if hasattr(value, "to") else value
        return out

    def _normalize_index(self, item: Any) -> slice | Tensor:
        n = len(self)
        if isinstance(item, Tensor) and item.dim() == 0 and item.dtype != torch.bool:
            item = item.item()  # a 0-d index tensor means one box, like an int
        if not isinstance(item, (slice, Tensor)) and not isinstance(item, bool):
            try:
                item = operator.index(item)  # ints, numpy ints
            except TypeError:
                pass
        if isinstance(item, bool) or not isinstance(item, (int, slice, Tensor)):
            raise TypeError(f"BoxList index must be an int, slice, bool mask or index tensor, got {item!r}")
        if isinstance(item, int):
            if not -n <= item < n:
                raise IndexError(f"index {item} is out of range for a BoxList of {n} boxes")
            start = item % n  # a negative int counts from the end
            return slice(start, start + 1)  # a slice keeps the [1, 4] shape
        if isinstance(item, Tensor):
            if item.dim() != 1 or item.dtype.is_floating_point:
                raise TypeError(f"index tensor must be 1-D bool or integer, got {item.dtype} {tuple(item.shape)}")
            if item.dtype == torch.bool and item.numel() != n:
                raise IndexError(f"bool mask has {item.numel()} entries for a BoxList of {n} boxes")
        return item

    def __getitem__(self, item: int | slice | Tensor) -> BoxList:
        """Select boxes (and every field the same way) by int, slice, bool mask or index tensor."""
        item = self._normalize_index(item)
        out = BoxList(self.bbox[item], self.size, self.mode)
        for name, value in self.extra_fields.items():
            out.extra_fields[name] = value[item]
        return out

    def __len__(self) -> int:
        return self.bbox.size(0)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_boxes={len(self)}, image_width={self.size[0]}, "
            f"image_height={self.size[1]}, mode={self.mode})"
        )
