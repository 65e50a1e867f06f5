"""The generated shapes dataset: geometry, occlusion, exact COCO ground truth, determinism,
the cache folder and its marker, and the catalog names through build_dataset."""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from detbench.config import get_cfg
from detbench.data import build_dataset, make_data_loader
from detbench.data import catalog
from detbench.data.datasets import shapes
from detbench.structures import BoxList

SIZE = (72, 96)  # (height, width), not square, so a transposed mask cannot pass
NUM_IMAGES = 16


def _load_coco(ann_file: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(ann_file))


def _ann_to_mask(coco: COCO, ann: dict) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2 vs pycocotools' decode
        return coco.annToMask(ann).astype(bool)


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, Path]:
    return shapes.generate_shapes(tmp_path_factory.mktemp("shapes"), "train", NUM_IMAGES, SIZE)


# Expected areas are the continuous ones (radius 20); rasterisation adds a boundary band,
# hence the tolerance. Probes are (x, y) offsets from the centre in radii, inside or outside.
R = 20.0
GEOMETRY = {
    "circle": (math.pi * R**2, [((0.9, 0), True), ((0.75, 0.75), False)]),
    "ring": (math.pi * R**2 * (1 - 0.55**2), [((0, 0), False), ((0.8, 0), True), ((0, -0.8), True)]),
    # angle 0: vertices on the axes (a diamond), |x| + |y| <= r inside
    "square": (2 * R**2, [((0.9, 0), True), ((0, 0.9), True), ((0.6, 0.6), False)]),
    # vertex at angle 0; the opposite side is at x = -r / 2
    "triangle": (3 * math.sqrt(3) / 4 * R**2, [((0.9, 0), True), ((-0.4, 0), True), ((-0.6, 0), False)]),
    # outer vertex at angle 0, inner vertex (0.45 r) at 36 degrees
    "star": (5 * 0.45 * R**2 * math.sin(math.radians(36)),
             [((0.9, 0), True), ((0.8 * math.cos(math.radians(36)), 0.8 * math.sin(math.radians(36))), False)]),
}


@pytest.mark.parametrize("kind", shapes.CATEGORIES)
def test_shape_geometry(kind):
    cx, cy = 40.0, 30.0
    mask = shapes.shape_mask(kind, cx, cy, R, 0.0, (60, 80))
    assert mask.shape == (60, 80) and mask.dtype == bool
    area, probes = GEOMETRY[kind]
    assert abs(int(mask.sum()) - area) / area < 0.12, (int(mask.sum()), area)
    for (dx, dy), inside in probes:
        assert mask[round(cy + dy * R), round(cx + dx * R)] == inside, (dx, dy)


def test_shape_cut_by_the_border():
    mask = shapes.shape_mask("circle", 0.0, 0.0, 10.0, 0.0, (30, 30))
    assert mask[0, 0] and mask[:, 11:].sum() == 0 and mask[11:, :].sum() == 0
    assert abs(int(mask.sum()) - math.pi * 100 / 4) < 20  # a quarter disc


def test_visible_masks_hand_example():
    def box(r0, r1, c0, c1):
        m = np.zeros((10, 10), dtype=bool)
        m[r0:r1, c0:c1] = True
        return m

    hidden = box(3, 6, 3, 6)  # entirely under `middle`
    bottom = box(0, 5, 0, 5)  # 25 pixels, 9 of them under `middle`
    middle = box(2, 7, 2, 7)  # 25 pixels, nothing above it but `top`, which is dropped
    top = box(0, 2, 0, 2)  # 4 pixels < min_area: dropped, so it must not hide `bottom`
    got = shapes.visible_masks([hidden, bottom, middle, top], min_area=5)
    assert got[0] is None and got[3] is None
    np.testing.assert_array_equal(got[2], middle)
    np.testing.assert_array_equal(got[1], bottom & ~middle)
    assert got[1].sum() == 16 and got[1][0, 0]
    assert shapes.visible_masks([], min_area=5) == []


def test_json_matches_rendered_masks_exactly(generated):
    image_dir, ann_file = generated
    coco = _load_coco(ann_file)
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(shapes.CATEGORIES)
    assert sorted(coco.getImgIds()) == list(range(1, NUM_IMAGES + 1))
    num_anns = 0
    for img_id in coco.getImgIds():
        info = coco.imgs[img_id]
        assert (info["height"], info["width"]) == SIZE
        pixels, kept = shapes.render_scene(shapes.SPLIT_SEEDS["train"], img_id - 1, SIZE)
        # PNG is lossless: the file holds exactly the rendered image.
        np.testing.assert_array_equal(np.array(Image.open(image_dir / info["file_name"])), pixels)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert [a["category_id"] for a in anns] == [c for c, _, _ in kept]
        owners = np.zeros(SIZE, dtype=np.int64)
        for ann, (_, visible, _) in zip(anns, kept):
            mask = _ann_to_mask(coco, ann)
            np.testing.assert_array_equal(mask, visible)
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann["area"] == mask.sum() >= shapes.MIN_VISIBLE_AREA and ann["iscrowd"] == 0
            owners += mask
        assert owners.max() <= 1, f"image {img_id}: a pixel belongs to two instances"
        num_anns += len(anns)
    assert num_anns >= 2 * NUM_IMAGES  # about 3.5 kept shapes per image


def test_occlusion_removes_covered_pixels():
    occluded = 0
    for index in range(NUM_IMAGES):
        _, kept = shapes.render_scene(shapes.SPLIT_SEEDS["train"], index, SIZE)
        for k, (_, visible, whole) in enumerate(kept):
            assert not (visible & ~whole).any()
            above = np.zeros(SIZE, dtype=bool)
            for _, _, upper in kept[k + 1:]:
                above |= upper
            np.testing.assert_array_equal(visible, whole & ~above)
            occluded += bool((whole & above).any())
    assert occluded >= 3  # the sample really exercises occlusion


def test_generation_is_deterministic(tmp_path):
    first = shapes.generate_shapes(tmp_path / "a", "val", 6, SIZE)
    second = shapes.generate_shapes(tmp_path / "b", "val", 6, SIZE)
    digests = _digests(tmp_path / "a")
    assert len(digests) == 7 and digests == _digests(tmp_path / "b")
    assert first[1].read_bytes() == second[1].read_bytes()
    other = shapes.generate_shapes(tmp_path / "c", "val", 6, SIZE, seed=99)
    assert other[1].read_bytes() != first[1].read_bytes()
    with pytest.raises(ValueError, match="seed"):
        shapes.generate_shapes(tmp_path / "d", "extra", 1, SIZE)


def test_cache_marker_and_parameter_hash(tmp_path, monkeypatch):
    calls = []
    real = shapes.generate_shapes
    monkeypatch.setattr(shapes, "generate_shapes", lambda *a, **k: calls.append(a) or real(*a, **k))
    images, ann_file = shapes.ensure_shapes(tmp_path, "val", num_images=3, image_size=SIZE)
    folder = ann_file.parent
    assert (folder / shapes.MARKER).is_file() and len(list(images.iterdir())) == 3
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temporary folder left
    assert shapes.ensure_shapes(tmp_path, "val", num_images=3, image_size=SIZE) == (images, ann_file)
    assert len(calls) == 1  # the second call found the marker

    (folder / shapes.MARKER).unlink()  # as if the run had died before finishing
    shapes.ensure_shapes(tmp_path, "val", num_images=3, image_size=SIZE)
    assert len(calls) == 2 and (folder / shapes.MARKER).is_file()

    changed = shapes.ensure_shapes(tmp_path, "val", num_images=4, image_size=SIZE)
    assert changed[1].parent != folder and len(calls) == 3


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    def broken(out_dir, *args):
        (Path(out_dir) / "images").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes, "generate_shapes", broken)
    with pytest.raises(KeyboardInterrupt):
        shapes.ensure_shapes(tmp_path, "train", num_images=2, image_size=SIZE)
    assert list(tmp_path.iterdir()) == []


def test_catalog_names_and_build_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv(catalog.ENV_ROOT, str(tmp_path))
    monkeypatch.setattr(shapes, "DEFAULT_NUM_IMAGES", {"train": 4, "val": 3})
    assert {"shapes_train", "shapes_val"} <= set(catalog.known_names())
    assert catalog.get("shapes_val").args == {"root": tmp_path / "shapes", "split": "val"}
    cfg = get_cfg()
    train = build_dataset(cfg, "shapes_train", is_train=True)
    val = build_dataset(cfg, "shapes_val", is_train=False)
    assert len(val) == 3 and 0 < len(train) <= 4
    assert len(list((tmp_path / "shapes").iterdir())) == 2  # one cache folder per split
    assert train.categories == dict(enumerate(shapes.CATEGORIES, start=1))
    image, target, _ = train[0]
    assert isinstance(target, BoxList) and image.size == target.size == shapes.DEFAULT_IMAGE_SIZE[::-1]
    masks = target.get_field("masks").get_mask_tensor().reshape(len(target), *image.size[::-1])
    assert len(target) > 0 and masks.flatten(1).sum(1).min() >= shapes.MIN_VISIBLE_AREA
    assert target.get_field("labels").min() >= 1 and target.get_field("labels").max() <= len(shapes.CATEGORIES)
    # Each box is the tight box of its mask.
    ys, xs = torch.nonzero(masks[0], as_tuple=True)
    expected = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
    torch.testing.assert_close(target.convert("xyxy").bbox[0], expected)


def test_train_loader_on_shapes(tmp_path, monkeypatch):
    monkeypatch.setenv(catalog.ENV_ROOT, str(tmp_path))
    monkeypatch.setattr(shapes, "DEFAULT_NUM_IMAGES", {"train": 4, "val": 3})
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ("shapes_train",)
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (96,), 160
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER = 2, 1
    images, targets, _ = next(iter(make_data_loader(cfg, is_train=True)))
    assert images.tensors.shape[0] == 2
    for (h, w), target in zip(images.image_sizes, targets):
        assert (h, w) == (96, 96) and target.has_field("masks") and len(target) > 0
