"""BoxList <-> a dict of tensors and plain values, which ``torch.load(weights_only=True)`` reads.

``{"bbox": Tensor[N, 4], "size": [width, height], "mode": "xyxy" | "xywh", "fields": {name:
value}}``, where a field value is a tensor, or for a keypoint structure ``{"type":
"PersonKeypoints", "keypoints": Tensor[N, K, 3]}``. Any other field type is refused by
name, so nothing is ever written that only an unsafe pickle load could read back.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .bounding_box import BoxList
from .keypoint import Keypoints, PersonKeypoints

KEYPOINT_TYPES = {cls.__name__: cls for cls in (Keypoints, PersonKeypoints)}


def _field_to_plain(name: str, value: Any) -> Tensor | dict[str, Any]:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, Keypoints) and type(value).__name__ in KEYPOINT_TYPES:
        return {"type": type(value).__name__, "keypoints": value.keypoints.detach().cpu()}
    raise TypeError(f"BoxList field {name!r} is a {type(value).__name__}; only tensors and "
                    f"{', '.join(KEYPOINT_TYPES)} can be stored")


def boxlist_to_dict(boxlist: BoxList) -> dict[str, Any]:
    """The BoxList as tensors and plain values (on the CPU)."""
    return {
        "bbox": boxlist.bbox.detach().cpu(),
        "size": [int(boxlist.size[0]), int(boxlist.size[1])],
        "mode": boxlist.mode,
        "fields": {name: _field_to_plain(name, boxlist.get_field(name)) for name in boxlist.fields()},
    }


def boxlist_from_dict(data: dict[str, Any]) -> BoxList:
    """Inverse of :func:`boxlist_to_dict`; a malformed entry raises ValueError saying what is wrong."""
    try:
        boxlist = BoxList(data["bbox"], tuple(data["size"]), mode=data["mode"])
        fields = data["fields"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a stored BoxList (needs bbox, size, mode, fields): {exc}") from exc
    for name, value in fields.items():
        if isinstance(value, dict):
            cls = KEYPOINT_TYPES.get(value.get("type"))
            if cls is None:
                raise ValueError(f"field {name!r}: unknown keypoint type {value.get('type')!r}")
            value = cls(value["keypoints"], boxlist.size)
        elif not isinstance(value, Tensor):
            raise ValueError(f"field {name!r} is a {type(value).__name__}, expected a tensor")
        boxlist.add_field(name, value)
    return boxlist
