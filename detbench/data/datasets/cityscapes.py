"""CityscapesDataset: the raw Cityscapes layout, ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
``gtFine/<split>/<city>/*_gtFine_polygons.json`` (mode "poly") or ``*_gtFine_instanceIds.png`` (mode "mask").

The ``cityscapes_{poly,mask}_instance_{train,val,minival}`` names of maskrcnn-benchmark. Targets
have "labels" (1..10, :data:`~detbench.data.catalog.CITYSCAPES_CLASSES`) and "masks": the
polygons of the json files (see :mod:`.cityscapes_format` for their coordinates; occluded parts
included, as annotated) or the bitmasks of the instanceIds files (visible pixels only; pixel
value = class id * 1000 + instance number, values below 1000 are crowds or stuff and are not
instances). Boxes are the boxes of the covered pixels, so both modes give the same boxes.
Crowd ("group") regions are not targets, as in maskrcnn-benchmark.
"""

from __future__ import annotations

import contextlib
import io
import logging
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from detbench.structures import BoxList, SegmentationMask

from ..catalog import CITYSCAPES_CLASSES
from .cityscapes_format import LABEL_IDS, read_polygon_file
from .coco import ImageLoadError, Transforms, image_size, load_image
from .coco_checks import DatasetError, listed_ids

logger = logging.getLogger(__name__)

MODES = {"poly": "_gtFine_polygons.json", "mask": "_gtFine_instanceIds.png"}
IMAGE_SUFFIX = "_leftImg8bit.png"


def _mini(paths: list[Path], mini: int | None) -> list[Path]:
    """About ``mini`` paths spread over the whole list (every (len // mini + 1)-th, as maskrcnn-benchmark)."""
    return paths if mini is None else paths[:: len(paths) // mini + 1]


def boxes_of_values(ids_map: np.ndarray, values: list[int]) -> torch.Tensor:
    """[N, 4] float32 xyxy boxes of the pixels of each of ``values`` (sorted, each present) in
    the [H, W] map: pixel columns a..b, rows c..d give (a, c, b + 1, d + 1), as
    :func:`~.penn_fudan.boxes_from_masks` of their masks, in one pass over the map."""
    if not values:
        return torch.zeros((0, 4))
    ys, xs = np.nonzero(np.isin(ids_map, values))
    which = torch.from_numpy(np.searchsorted(np.asarray(values), ids_map[ys, xs]))
    xs, ys = torch.from_numpy(xs), torch.from_numpy(ys)
    count = len(values)
    low = [torch.full((count,), 1 << 30).scatter_reduce(0, which, c, "amin") for c in (xs, ys)]
    high = [torch.full((count,), -1).scatter_reduce(0, which, c, "amax") + 1 for c in (xs, ys)]
    return torch.stack((low[0], low[1], high[0], high[1]), dim=1).float()


class CityscapesDataset(torch.utils.data.Dataset):
    """Cityscapes ``split`` ("train", "val", "test") read from ``img_dir`` (leftImg8bit) and
    ``ann_dir`` (gtFine) in ``mode`` "poly" or "mask"; see the module doc.

    Images are sorted by path; ``mini`` keeps about that many of them (maskrcnn-benchmark's
    "minival": 10 of val). A missing split folder or annotation file raises DatasetError
    naming it. With ``remove_images_without_annotations`` every annotation is read once when
    the dataset is built and images without instances are dropped. ``ids`` are 1-based
    positions; ``coco`` is the ground truth as a pycocotools COCO for evaluation.
    """

    def __init__(
        self, img_dir: str | Path, ann_dir: str | Path, split: str, mode: str = "poly",
        transforms: Transforms | None = None, mini: int | None = None, remove_images_without_annotations: bool = False,
    ) -> None:
        if split not in ("train", "val", "test"):
            raise ValueError(f"Cityscapes split must be 'train', 'val' or 'test', got {split!r}")
        if mode not in MODES:
            raise ValueError(f"Cityscapes mode must be one of {tuple(MODES)}, got {mode!r}")
        self.split, self.mode, self.transforms = split, mode, transforms
        self.img_dir, self.ann_dir = Path(img_dir) / split, Path(ann_dir) / split
        for folder in (self.img_dir, self.ann_dir):
            if not folder.is_dir():
                raise DatasetError(f"Cityscapes folder not found: {folder}")
        images = _mini(sorted(self.img_dir.glob(f"*/*{IMAGE_SUFFIX}")), mini)
        if not images:
            raise DatasetError(f"no Cityscapes images (*/*{IMAGE_SUFFIX}) in {self.img_dir}")
        self.files = [(p, self._annotation_path(p)) for p in images]
        missing = [str(a) for _, a in self.files if not a.is_file()]
        if missing:
            raise DatasetError(f"{len(missing)} Cityscapes annotation file(s) missing: {listed_ids(missing)}")
        self.categories = dict(enumerate(CITYSCAPES_CLASSES, start=1))
        self.json_category_id_to_contiguous_id = {i: i for i in self.categories}
        self.contiguous_category_id_to_json_id = dict(self.json_category_id_to_contiguous_id)
        self._label_of_class_id = {LABEL_IDS[name]: i for i, name in self.categories.items()}
        self._logged: set[Path] = set()
        self._sizes = [image_size(p) for p, _ in self.files]
        if remove_images_without_annotations:
            keep = [i for i in range(len(self.files)) if self._has_instances(i)]
            logger.info("%s: %d of %d images have instances", self.ann_dir, len(keep), len(self.files))
            self.files, self._sizes = [self.files[i] for i in keep], [self._sizes[i] for i in keep]
        self.ids = list(range(1, len(self.files) + 1))

    def _annotation_path(self, image: Path) -> Path:
        stem = image.name[: -len(IMAGE_SUFFIX)]
        return self.ann_dir / image.parent.name / f"{stem}{MODES[self.mode]}"

    def __len__(self) -> int:
        return len(self.files)

    def get_img_info(self, index: int) -> dict:
        """{"height", "width", "file_name" (the image's path), "id"} of image ``index``."""
        width, height = self._sizes[index]
        return {"height": height, "width": width, "file_name": str(self.files[index][0]), "id": self.ids[index]}

    def _log_dropped(self, path: Path, dropped: dict[str, list[str]]) -> None:
        """Log the objects dropped from ``path``, once per file."""
        if dropped and path not in self._logged:
            self._logged.add(path)
            for reason, objects in sorted(dropped.items()):
                logger.warning("%s: dropped %d object(s): %s: %s", path, len(objects), reason, listed_ids(objects))

    def _check_size(self, path: Path, size: tuple[int, int], index: int) -> None:
        if size != self._sizes[index]:
            raise DatasetError(f"{path} is for a {size} (width, height) image, {self.files[index][0].name} "
                               f"is {self._sizes[index]}")

    def _polygon_target(self, index: int) -> BoxList:
        path = self.files[index][1]
        parsed = read_polygon_file(path)
        self._check_size(path, (parsed.width, parsed.height), index)
        self._log_dropped(path, parsed.dropped)
        objects = [o for o in parsed.objects if not o.is_group]
        size = self._sizes[index]
        boxes = torch.tensor([o.box for o in objects], dtype=torch.float32).reshape(-1, 4)
        target = BoxList(boxes, size, mode="xyxy")
        labels = [self._label_of_class_id[LABEL_IDS[o.label]] for o in objects]
        target.add_field("labels", torch.tensor(labels, dtype=torch.int64))
        target.add_field("masks", SegmentationMask([[list(o.polygon)] for o in objects], size, mode="poly"))
        return target

    def _instances(self, index: int) -> tuple[np.ndarray, list[int], list[int]]:
        """The instanceIds map [H, W] of image ``index``, its instance values (sorted) and their labels."""
        path = self.files[index][1]
        try:
            with Image.open(path) as image:
                ids_map = np.array(image, dtype=np.int32)
        except OSError as exc:
            raise ImageLoadError(f"cannot read instance file {path}: {exc}") from exc
        self._check_size(path, (ids_map.shape[1], ids_map.shape[0]), index)
        found = np.unique(ids_map[ids_map >= 1000]).tolist()  # below 1000: crowds and stuff, not instances
        kept = [v for v in found if v // 1000 in self._label_of_class_id]
        unknown = [f"instance id {v}" for v in found if v // 1000 not in self._label_of_class_id]
        self._log_dropped(path, {"class id (instance id // 1000) without instances": unknown} if unknown else {})
        return ids_map, kept, [self._label_of_class_id[v // 1000] for v in kept]

    def _mask_target(self, index: int) -> BoxList:
        ids_map, values, labels = self._instances(index)
        masks = (torch.from_numpy(ids_map)[None] == torch.tensor(values, dtype=torch.int32)[:, None, None])
        masks = masks.to(torch.uint8)  # [N, H, W]
        size = self._sizes[index]
        target = BoxList(boxes_of_values(ids_map, values), size, mode="xyxy")
        target.add_field("labels", torch.tensor(labels, dtype=torch.int64))
        target.add_field("masks", SegmentationMask(masks, size, mode="mask"))
        return target

    def _has_instances(self, index: int) -> bool:
        """Whether image ``index`` has a target, without building its masks."""
        if self.mode == "mask":
            return bool(self._instances(index)[1])
        return any(not o.is_group for o in read_polygon_file(self.files[index][1]).objects)

    def get_groundtruth(self, index: int) -> BoxList:
        """The untransformed target of image ``index`` in its original size."""
        return self._polygon_target(index) if self.mode == "poly" else self._mask_target(index)

    def __getitem__(self, index: int) -> tuple[Any, BoxList, int]:
        image = load_image(self.files[index][0])
        target = self.get_groundtruth(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target, index

    def _annotations(self, index: int, first_id: int) -> list[dict]:
        """COCO annotation dicts of image ``index`` (polygons, or RLEs in mask mode)."""
        target = self.get_groundtruth(index)
        width, height = target.size
        masks = target.get_field("masks")
        if len(target) == 0:
            return []
        if self.mode == "poly":
            segmentations = [[p.tolist() for p in instance] for instance in masks.polygons]
            rles = [coco_mask.merge(coco_mask.frPyObjects(s, height, width)) for s in segmentations]
        else:
            rles = coco_mask.encode(np.asfortranarray(masks.get_mask_tensor().permute(1, 2, 0).numpy()))
            segmentations = [{"size": r["size"], "counts": r["counts"].decode("ascii")} for r in rles]
        out = []
        boxes, labels = target.convert("xywh").bbox.tolist(), target.get_field("labels").tolist()
        for k, (box, label) in enumerate(zip(boxes, labels)):
            out.append({"id": first_id + k, "image_id": self.ids[index], "category_id": label, "iscrowd": 0,
                        "bbox": box, "area": float(coco_mask.area(rles[k])), "segmentation": segmentations[k]})
        return out

    @cached_property
    def coco(self) -> COCO:
        """pycocotools COCO of this split's ground truth (built once, for evaluation)."""
        images, annotations = [], []
        for index in range(len(self)):
            info = self.get_img_info(index)
            images.append({**info, "file_name": Path(info["file_name"]).name})
            annotations += self._annotations(index, len(annotations) + 1)
        coco = COCO()
        coco.dataset = {"images": images, "annotations": annotations,
                        "categories": [{"id": i, "name": n} for i, n in self.categories.items()]}
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
            coco.createIndex()
        return coco

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.img_dir}, mode={self.mode}, {len(self)} images)"
