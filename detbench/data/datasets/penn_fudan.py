"""PennFudanDataset: the raw Penn-Fudan pedestrian folder (PNGImages/, PedMasks/), and its download.

Each PedMasks/<name>_mask.png holds one integer id per pedestrian (0 is background). Boxes
come from the instance masks: a mask covering pixel columns a..b and rows c..d gives the box
(a, c, b + 1, d + 1), the tight box around those pixels in BoxList's continuous coordinates.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from torch import Tensor

from detbench.structures import BoxList, SegmentationMask

from ..catalog import PENN_FUDAN_CLASSES
from .coco import ImageLoadError, Transforms, image_size, load_image

logger = logging.getLogger(__name__)

URL = "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip"
NUM_IMAGES = 170  # the official release: 170 images, 423 pedestrians


def boxes_from_masks(masks: Tensor) -> Tensor:
    """[N, H, W] 0/1 masks (each non-empty) -> [N, 4] float32 xyxy tight boxes (see the module doc)."""
    if masks.numel() == 0:
        return torch.zeros((masks.shape[0], 4))
    cols, rows = masks.any(dim=1), masks.any(dim=2)  # [N, W], [N, H]
    width, height = cols.shape[1], rows.shape[1]
    x1 = cols.int().argmax(dim=1)
    y1 = rows.int().argmax(dim=1)
    # Last covered column + 1 = width - (index of the first covered column from the right).
    x2 = width - cols.flip(1).int().argmax(dim=1)
    y2 = height - rows.flip(1).int().argmax(dim=1)
    return torch.stack((x1, y1, x2, y2), dim=1).float()


class PennFudanDataset(torch.utils.data.Dataset):
    """Penn-Fudan pedestrians: targets with "labels" (1 = person) and bitmask "masks".

    The images sorted by file name are split deterministically: the last ``num_test`` form
    ``split="test"``, the others ``split="train"``. Image ids are the 1-based positions in
    that sorted list, so they are unique across both splits. Like COCODataset it exposes
    ``ids``, ``categories``, the category id maps, ``get_groundtruth`` and ``coco`` (a
    pycocotools COCO of this split's ground truth built in memory, for evaluation).
    """

    def __init__(
        self, root: str | Path, split: str = "train", num_test: int = 50, transforms: Transforms | None = None
    ) -> None:
        self.root, self.transforms = Path(root), transforms
        if split not in ("train", "test"):
            raise ValueError(f"Penn-Fudan split must be 'train' or 'test', got {split!r}")
        images = sorted((self.root / "PNGImages").glob("*.png"))
        if not images:
            raise FileNotFoundError(f"no Penn-Fudan images in {self.root / 'PNGImages'} (see penn_fudan.download)")
        if not 0 <= num_test <= len(images):
            raise ValueError(f"num_test = {num_test} must be in [0, {len(images)}] (the number of images)")
        first = len(images) - num_test if split == "test" else 0
        last = len(images) if split == "test" else len(images) - num_test
        self.files = [(p, self.root / "PedMasks" / f"{p.stem}_mask.png") for p in images[first:last]]
        self.ids = list(range(first + 1, last + 1))
        self.split = split
        self.categories = dict(enumerate(PENN_FUDAN_CLASSES, start=1))
        self.json_category_id_to_contiguous_id = {1: 1}
        self.contiguous_category_id_to_json_id = {1: 1}
        self._sizes = [image_size(p) for p, _ in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def get_img_info(self, index: int) -> dict:
        width, height = self._sizes[index]
        return {"height": height, "width": width, "file_name": self.files[index][0].name, "id": self.ids[index]}

    def instance_masks(self, index: int) -> Tensor:
        """uint8 [N, H, W]: one 0/1 mask per pedestrian, in increasing id order."""
        path = self.files[index][1]
        if not path.is_file():
            raise ImageLoadError(f"mask file not found: {path}")
        with Image.open(path) as image:
            ids_map = np.array(image, dtype=np.int64)
        if tuple(ids_map.shape[::-1]) != self._sizes[index]:
            raise ImageLoadError(
                f"{path} is {tuple(ids_map.shape[::-1])} (width, height), its image {self._sizes[index]}"
            )
        ids = np.flatnonzero(np.bincount(ids_map.ravel()))  # ids present, sorted (a counting pass, no sort)
        ids = torch.from_numpy(ids[ids != 0])  # 0 is background
        return (torch.from_numpy(ids_map)[None] == ids[:, None, None]).to(torch.uint8)

    def get_groundtruth(self, index: int) -> BoxList:
        """The untransformed target of image ``index`` in its original size."""
        masks = self.instance_masks(index)
        size = self._sizes[index]
        target = BoxList(boxes_from_masks(masks), size, mode="xyxy")
        target.add_field("labels", torch.ones(len(masks), dtype=torch.int64))
        target.add_field("masks", SegmentationMask(masks, size, mode="mask"))
        return target

    def __getitem__(self, index: int) -> tuple[Any, BoxList, int]:
        image = load_image(self.files[index][0])
        target = self.get_groundtruth(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target, index

    @cached_property
    def coco(self) -> COCO:
        """pycocotools COCO of this split (boxes xywh, RLE masks, areas = mask pixel counts)."""
        images, annotations = [], []
        for index in range(len(self)):
            info = self.get_img_info(index)
            images.append(info)
            masks = self.instance_masks(index)
            for box, mask in zip(boxes_from_masks(masks).tolist(), masks.numpy()):
                rle = coco_mask.encode(np.asfortranarray(mask))
                rle["counts"] = rle["counts"].decode("ascii")  # str, so the dict is JSON-serialisable
                x1, y1, x2, y2 = box
                annotations.append({
                    "id": len(annotations) + 1, "image_id": info["id"], "category_id": 1, "iscrowd": 0,
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(mask.sum()), "segmentation": rle,
                })
        coco = COCO()
        coco.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
            coco.createIndex()
        return coco

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root}, split={self.split}, {len(self)} images)"


def _check_layout(folder: Path, expected_images: int | None) -> None:
    """PNGImages and PedMasks exist with one mask per image (and ``expected_images`` of them)."""
    images = sorted((folder / "PNGImages").glob("*.png"))
    masks = {p.name for p in (folder / "PedMasks").glob("*_mask.png")}
    missing = [p.name for p in images if f"{p.stem}_mask.png" not in masks]
    if not images or missing:
        raise RuntimeError(
            f"{folder}: incomplete Penn-Fudan folder ({len(images)} images, masks missing for {missing[:5]})"
        )
    if expected_images is not None and len(images) != expected_images:
        raise RuntimeError(f"{folder}: {len(images)} images, expected {expected_images}")


def _safe_extract(archive: zipfile.ZipFile, dest: Path) -> None:
    """Extract every member, refusing names that would land outside ``dest``."""
    dest = dest.resolve()
    for member in archive.namelist():
        target = (dest / member).resolve()
        if dest not in target.parents and target != dest:
            raise RuntimeError(f"zip member {member!r} would be extracted outside {dest}")
    archive.extractall(dest)


def _fetch(url: str, path: Path, progress: bool) -> str | None:
    """Download ``url`` to ``path``, with a progress line on stderr when ``progress``; returns
    the server's Content-Length, if it sent one."""
    with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as out:
        expected = response.headers.get("Content-Length")
        total, done = (int(expected) if expected else None), 0
        while chunk := response.read(1 << 20):
            out.write(chunk)
            done += len(chunk)
            if progress:
                of = f" of {total / 2**20:.1f} MB ({100 * done // total} %)" if total else ""
                print(f"\r{path.name}: {done / 2**20:.1f} MB{of}", end="", file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)
    return expected


def download(
    root: str | Path, url: str = URL, sha256: str | None = None, expected_images: int | None = NUM_IMAGES,
    progress: bool = True,
) -> Path:
    """Download and unpack Penn-Fudan into ``root/PennFudanPed``. An existing folder is
    returned as it is if complete; if incomplete, an error asks to remove it first.

    Shows a progress bar (``progress``) and logs the archive's sha256. Checks: the byte count
    against the server's Content-Length, ``sha256`` when given (tools: ``--sha256``), every zip
    member's CRC, no member outside ``root``, and the unpacked layout (one mask per
    image, ``expected_images`` images). Returns the dataset folder.
    """
    root = Path(root)
    folder = root / "PennFudanPed"
    if folder.exists():
        _check_layout(folder, expected_images)  # raises if incomplete: never overwrite a user's folder
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".penn_fudan_") as tmp:
        archive_path = Path(tmp) / "PennFudanPed.zip"
        logger.info("downloading %s", url)
        expected = _fetch(url, archive_path, progress)
        size = archive_path.stat().st_size
        if size == 0 or (expected is not None and int(expected) != size):
            raise RuntimeError(f"download of {url} is incomplete: {size} bytes, expected {expected}")
        digest = hashlib.sha256(archive_path.read_bytes()).hexdigest()
        if sha256 is not None and digest != sha256.lower():
            raise RuntimeError(f"{url}: sha256 mismatch: got {digest}, expected {sha256}")
        logger.info("%s: %d bytes, sha256 %s%s", url, size, digest, "" if sha256 is None else " (as expected)")
        if not zipfile.is_zipfile(archive_path):
            raise RuntimeError(f"{url} did not return a zip file ({size} bytes)")
        with zipfile.ZipFile(archive_path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise RuntimeError(f"{url}: corrupt zip member {bad}")
            _safe_extract(archive, Path(tmp) / "unpacked")
        unpacked = Path(tmp) / "unpacked" / "PennFudanPed"
        _check_layout(unpacked, expected_images)
        shutil.move(str(unpacked), folder)
    return folder
