"""Keypoints of the instances of one image; PersonKeypoints for the 17 COCO person keypoints.

Coordinates follow :class:`BoxList`: continuous pixel coordinates, ``size = (width, height)``.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from .bounding_box import FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM


class Keypoints:
    """``keypoints`` [N, K, 3]: for each of N instances, K rows (x, y, visibility).

    Visibility follows COCO: 0 = not labelled, 1 = labelled but occluded, 2 = visible;
    anything > 0 counts as a usable location. A keypoint with visibility 0 carries no
    location: every geometric operation returns it as (0, 0, 0). ``crop`` also sets to
    (0, 0, 0) the keypoints that fall outside the crop (x outside [0, crop width] or y
    outside [0, crop height], borders included as inside).

    Subclasses name the K keypoints in ``NAMES`` and give the left/right pairs in
    ``FLIP_MAP``, which a horizontal flip swaps.
    """

    NAMES: tuple[str, ...] = ()
    FLIP_MAP: dict[str, str] = {}

    def __init__(self, keypoints: Tensor | Sequence[Any], size: tuple[int, int]) -> None:
        keypoints = torch.as_tensor(keypoints)
        if not keypoints.is_floating_point():
            keypoints = keypoints.float()
        if keypoints.numel() == 0 and keypoints.dim() != 3:  # e.g. [] for an image without instances
            keypoints = keypoints.reshape(0, len(self.NAMES), 3)
        if keypoints.dim() != 3 or keypoints.size(-1) != 3:
            raise ValueError(f"keypoints must be [N, K, 3] (x, y, visibility), got {tuple(keypoints.shape)}")
        if self.NAMES and keypoints.size(1) != len(self.NAMES):
            raise ValueError(f"{type(self).__name__} needs {len(self.NAMES)} keypoints, got {keypoints.size(1)}")
        if len(size) != 2 or min(size) < 0:
            raise ValueError(f"size must be (width, height) with both >= 0, got {size}")
        self.keypoints = keypoints
        self.size = (size[0], size[1])

    def _new(self, keypoints: Tensor, size: tuple) -> Keypoints:
        """Same class with ``keypoints``; unlabelled ones (visibility 0) become (0, 0, 0)."""
        return type(self)(keypoints.masked_fill(keypoints[..., 2:] <= 0, 0.0), size)

    @classmethod
    def flip_indices(cls) -> list[int]:
        """For each keypoint, the index of its mirror image (itself when unpaired)."""
        pairs = {**cls.FLIP_MAP, **{v: k for k, v in cls.FLIP_MAP.items()}}
        return [cls.NAMES.index(pairs.get(name, name)) for name in cls.NAMES]

    # ---- geometry --------------------------------------------------------------------------

    def resize(self, size: tuple[int, int]) -> Keypoints:
        """Keypoints of the image resized to ``size = (width, height)`` (x scales by the width ratio)."""
        ratio = self.keypoints.new_tensor([size[0] / self.size[0], size[1] / self.size[1], 1.0])
        return self._new(self.keypoints * ratio, size)

    def transpose(self, method: int) -> Keypoints:
        """FLIP_LEFT_RIGHT maps x -> width - x and swaps left/right keypoints (``FLIP_MAP``);
        FLIP_TOP_BOTTOM maps y -> height - y (left and right stay)."""
        if method not in (FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM):
            raise ValueError(f"transpose supports FLIP_LEFT_RIGHT (0) and FLIP_TOP_BOTTOM (1), got {method!r}")
        axis = 0 if method == FLIP_LEFT_RIGHT else 1
        flipped = self.keypoints.clone()
        flipped[..., axis] = self.size[axis] - flipped[..., axis]
        if method == FLIP_LEFT_RIGHT and self.FLIP_MAP:
            flipped = flipped[:, self.flip_indices()]
        return self._new(flipped, self.size)

    def crop(self, box: Iterable[float] | Tensor) -> Keypoints:
        """Keypoints in the frame of ``box = (x1, y1, x2, y2)``; those outside become (0, 0, 0)."""
        left, top, right, bottom = box.tolist() if isinstance(box, Tensor) else box
        width, height = right - left, bottom - top
        if width <= 0 or height <= 0:
            raise ValueError(f"crop box must have x2 > x1 and y2 > y1, got {(left, top, right, bottom)}")
        shifted = self.keypoints - self.keypoints.new_tensor([left, top, 0.0])
        x, y = shifted[..., 0], shifted[..., 1]
        inside = (x >= 0) & (x <= width) & (y >= 0) & (y <= height)
        shifted[..., 2] = torch.where(inside, shifted[..., 2], torch.zeros_like(shifted[..., 2]))
        return self._new(shifted, (width, height))

    # ---- containers ------------------------------------------------------------------------

    def to(self, device: torch.device | str) -> Keypoints:
        return type(self)(self.keypoints.to(device), self.size)

    def __getitem__(self, item: int | slice | Tensor) -> Keypoints:
        """The selected instances; an int keeps the instance dimension ([1, K, 3])."""
        selected = self.keypoints[item]
        return type(self)(selected[None] if selected.dim() == 2 else selected, self.size)

    def __len__(self) -> int:
        return self.keypoints.size(0)

    @classmethod
    def cat(cls, items: Sequence[Keypoints]) -> Keypoints:
        """Concatenate the instances of Keypoints of one image size."""
        if any(tuple(k.size) != tuple(items[0].size) for k in items):
            raise ValueError(f"cannot concatenate keypoints of sizes {[k.size for k in items]}")
        return cls(torch.cat([k.keypoints for k in items]), items[0].size)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_instances={len(self)}, num_keypoints={self.keypoints.size(1)}, "
            f"image_width={self.size[0]}, image_height={self.size[1]})"
        )


class PersonKeypoints(Keypoints):
    """The 17 COCO person keypoints, in COCO's order."""

    NAMES = (
        "nose",
        "left_eye",
        "right_eye",
        "left_ear",
        "right_ear",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
    )
    FLIP_MAP = {
        "left_eye": "right_eye",
        "left_ear": "right_ear",
        "left_shoulder": "right_shoulder",
        "left_elbow": "right_elbow",
        "left_wrist": "right_wrist",
        "left_hip": "right_hip",
        "left_knee": "right_knee",
        "left_ankle": "right_ankle",
    }
