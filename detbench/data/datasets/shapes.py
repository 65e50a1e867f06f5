"""Shapes: a procedurally generated instance-segmentation dataset that ships as code.

Each image shows 2-6 shapes of five classes (circle, square, triangle, star, ring) with a
random size (a diameter of a tenth to half of the shorter image side), rotation, colour and texture
(solid, stripes, noise, gradient) over a cluttered, noisy background. Shapes overlap and
may be cut by the image border. Generation is deterministic: the same arguments give the
same bytes on the same numpy / Pillow / zlib versions.

The ground truth is exact. Shapes are painted back to front, so each annotation is the
shape's *visible* part: its rasterised mask minus everything painted over it, stored as a
COCO RLE of that pixel set (polygons would be re-rasterised differently by pycocotools). A
shape whose visible part is smaller than ``MIN_VISIBLE_AREA`` pixels is not painted at all,
so no unlabelled fragment remains in the image. Boxes are the tight boxes of the visible
masks: pixel columns a..b and rows c..d give the COCO box [a, c, b - a + 1, d - c + 1].

:func:`ensure_shapes` generates a split once into a cache folder named after its parameters
and a hash of them, and returns its (image folder, annotation json).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask

from ..catalog import SHAPES_CLASSES, datasets_root

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump whenever the drawing changes, so cached folders are regenerated
CATEGORIES = SHAPES_CLASSES  # json category ids 1..5, as the catalog names them
TEXTURES = ("solid", "stripes", "noise", "gradient")
SPLIT_SEEDS = {"train": 1, "val": 2}
DEFAULT_NUM_IMAGES = {"train": 1000, "val": 200}
DEFAULT_IMAGE_SIZE = (128, 128)  # (height, width)
SHAPES_PER_IMAGE = (2, 6)  # inclusive range
RADIUS_RANGE = (0.05, 0.25)  # circumradius as a fraction of the shorter image side
MIN_VISIBLE_AREA = 24  # pixels; smaller visible parts are dropped (and not painted)
MIN_CONTRAST = 120  # least L1 distance (sum over RGB) between a shape's colour and the background mean
MARKER = "COMPLETE"  # written last into a finished cache folder

Size = tuple[int, int]


def _regular_polygon(cx: float, cy: float, radii: list[float], angle: float) -> list[tuple[float, float]]:
    """Vertices at equal angular steps from ``angle``, the k-th at distance radii[k] from the centre."""
    step = 2 * math.pi / len(radii)
    return [(cx + r * math.cos(angle + k * step), cy + r * math.sin(angle + k * step)) for k, r in enumerate(radii)]


def shape_mask(kind: str, cx: float, cy: float, radius: float, angle: float, size: Size) -> np.ndarray:
    """The [H, W] bool mask of one shape of circumradius ``radius`` centred at pixel (cx, cy).

    Drawn without anti-aliasing into its own Pillow "1" image; pixels outside the image are cut.
    """
    height, width = size
    canvas = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if kind == "circle":
        draw.ellipse(box, fill=1)
    elif kind == "ring":
        draw.ellipse(box, fill=1)
        inner = radius * 0.55  # a hole wide enough to see through, a band wide enough to detect
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    elif kind == "square":
        draw.polygon(_regular_polygon(cx, cy, [radius] * 4, angle), fill=1)
    elif kind == "triangle":
        draw.polygon(_regular_polygon(cx, cy, [radius] * 3, angle), fill=1)
    elif kind == "star":
        # Five points: outer vertices alternate with inner ones at 0.45 of the radius.
        draw.polygon(_regular_polygon(cx, cy, [radius, radius * 0.45] * 5, angle), fill=1)
    else:
        raise ValueError(f"unknown shape {kind!r}; known: {', '.join(CATEGORIES)}")
    return np.array(canvas, dtype=bool)


def visible_masks(masks: list[np.ndarray], min_area: int = MIN_VISIBLE_AREA) -> list[np.ndarray | None]:
    """Visible parts of [H, W] bool masks painted in list order (the last one on top).

    Walks from the top down: a mask's visible part is what no kept mask above covers. A part
    smaller than ``min_area`` pixels gives None (the shape is dropped and does not cover the
    ones below). The kept results are pairwise disjoint.
    """
    covered = np.zeros_like(masks[0]) if masks else None
    result: list[np.ndarray | None] = [None] * len(masks)
    for i in range(len(masks) - 1, -1, -1):
        visible = masks[i] & ~covered
        if int(visible.sum()) >= min_area:
            result[i] = visible
            covered |= visible
    return result


def _colour(rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    """A random RGB colour (float [3]) at least MIN_CONTRAST away from ``avoid``."""
    for _ in range(20):
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - avoid).sum() >= MIN_CONTRAST:
            break
    return colour  # after 20 misses (very rare) the last draw is used as is


def _texture(
    rng: np.random.Generator, kind: str, colour: np.ndarray, centre: tuple[float, float], radius: float, size: Size
) -> np.ndarray:
    """An [H, W, 3] float image of one texture around ``colour``, over the whole image."""
    height, width = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0, math.pi)
    # Signed distance along a random direction through the shape's centre, in pixels.
    along = (xs - centre[0]) * math.cos(theta) + (ys - centre[1]) * math.sin(theta)
    second = np.clip(colour + rng.choice([-1, 1], 3) * rng.uniform(60, 120, 3), 0, 255)
    if kind == "solid":
        return np.broadcast_to(colour, (height, width, 3))
    if kind == "stripes":
        period = rng.uniform(3, max(4, radius))
        on = (np.floor(along / (period / 2)) % 2 == 0)[..., None]  # half a period per colour
        return np.where(on, colour, second)
    if kind == "noise":
        return colour + rng.normal(0, 35, (height, width, 1))  # grey noise, same on every channel
    if kind == "gradient":
        t = np.clip(along / (2 * radius) + 0.5, 0, 1)[..., None]  # 0 on one side of the shape, 1 on the other
        return colour * (1 - t) + second * t
    raise ValueError(f"unknown texture {kind!r}; known: {', '.join(TEXTURES)}")


def _background(rng: np.random.Generator, size: Size) -> np.ndarray:
    """An [H, W, 3] float background: a gradient between two muted colours, noise and clutter."""
    height, width = size
    first, second = rng.uniform(30, 200, 3), rng.uniform(30, 200, 3)
    t = np.linspace(0, 1, width if rng.random() < 0.5 else height)
    ramp = t[None, :, None] if t.size == width else t[:, None, None]
    image = np.broadcast_to(first * (1 - ramp) + second * ramp, (height, width, 3)).copy()
    clutter = Image.new("RGB", (width, height))
    keep = Image.new("1", (width, height), 0)
    draw, draw_keep = ImageDraw.Draw(clutter), ImageDraw.Draw(keep)
    for _ in range(int(rng.integers(3, 9))):  # thin lines and specks: clutter no shape resembles
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0, x1, y1 = rng.uniform(0, 1, 4) * [width, height, width, height]
        if rng.random() < 0.5:
            line_width = int(rng.integers(1, 3))
            draw.line((x0, y0, x1, y1), fill=colour, width=line_width)
            draw_keep.line((x0, y0, x1, y1), fill=1, width=line_width)
        else:
            draw.ellipse((x0 - 1.5, y0 - 1.5, x0 + 1.5, y0 + 1.5), fill=colour)
            draw_keep.ellipse((x0 - 1.5, y0 - 1.5, x0 + 1.5, y0 + 1.5), fill=1)
    on = np.array(keep, dtype=bool)
    image[on] = np.array(clutter, dtype=np.float64)[on]
    return image + rng.normal(0, 6, (height, width, 3))


Instance = tuple[int, np.ndarray, np.ndarray]  # json category id, visible mask, whole mask ([H, W] bool)


def render_scene(seed: int, index: int, size: Size) -> tuple[np.ndarray, list[Instance]]:
    """Image ``index`` of the split seeded ``seed``: an [H, W, 3] uint8 RGB image and, bottom to
    top, (json category id, visible mask, whole mask before occlusion) of its kept shapes."""
    rng = np.random.default_rng([seed, index])  # one stream per image: images are independent
    height, width = size
    background = _background(rng, size)
    bg_mean = background.mean(axis=(0, 1))
    shortest = min(height, width)
    drawn = []
    for _ in range(int(rng.integers(SHAPES_PER_IMAGE[0], SHAPES_PER_IMAGE[1] + 1))):
        category = int(rng.integers(len(CATEGORIES)))
        # Log-uniform radius, so small and large shapes are equally common.
        radius = shortest * math.exp(rng.uniform(math.log(RADIUS_RANGE[0]), math.log(RADIUS_RANGE[1])))
        # Centres at least half a radius inside the image, so most of each shape stays in view.
        cx, cy = rng.uniform(radius / 2, width - radius / 2), rng.uniform(radius / 2, height - radius / 2)
        mask = shape_mask(CATEGORIES[category], cx, cy, radius, rng.uniform(0, 2 * math.pi), size)
        texture_kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
        texture = _texture(rng, texture_kind, _colour(rng, bg_mean), (cx, cy), radius, size)
        drawn.append((category + 1, mask, texture))
    image = background
    kept = []
    for (category_id, whole, texture), visible in zip(drawn, visible_masks([m for _, m, _ in drawn])):
        if visible is not None:
            image[visible] = texture[visible]
            kept.append((category_id, visible, whole))
    image += rng.normal(0, 3, image.shape)  # sensor noise over everything
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), kept


def _annotation(ann_id: int, image_id: int, category_id: int, mask: np.ndarray) -> dict:
    """The COCO annotation of one visible [H, W] bool mask (compressed RLE, tight integer box)."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    x, y = int(cols[0]), int(rows[0])
    # Inclusive pixel ranges -> [x, y, w, h]: last index - first index + 1 pixels.
    bbox = [x, y, int(cols[-1]) - x + 1, int(rows[-1]) - y + 1]
    segmentation = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "segmentation": segmentation,
            "area": int(mask.sum()), "bbox": bbox, "iscrowd": 0}


def _default(table: dict[str, int], split: str, what: str) -> int:
    """``table[split]``, or a ValueError that says which argument to pass instead."""
    if split not in table:
        raise ValueError(f"no default {what} for split {split!r} (known: {', '.join(table)}); pass {what}=")
    return table[split]


def generate_shapes(
    out_dir: str | Path, split: str, num_images: int, image_size: Size = DEFAULT_IMAGE_SIZE, seed: int | None = None
) -> tuple[Path, Path]:
    """Write ``num_images`` PNGs of ``image_size`` (height, width) to ``out_dir/images`` and
    their COCO instances json to ``out_dir/instances.json``; returns (image folder, json).

    ``seed`` defaults to the split's entry in SPLIT_SEEDS. Image ids are 1..num_images.
    """
    seed = _default(SPLIT_SEEDS, split, "seed") if seed is None else seed
    height, width = image_size
    image_dir = Path(out_dir) / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        pixels, kept = render_scene(seed, index, image_size)
        name = f"{split}_{index:06d}.png"
        Image.fromarray(pixels).save(image_dir / name, format="PNG", compress_level=1)
        images.append({"id": index + 1, "file_name": name, "height": height, "width": width})
        for category_id, mask, _ in kept:
            annotations.append(_annotation(len(annotations) + 1, index + 1, category_id, mask))
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CATEGORIES)]
    info = {"description": f"detbench shapes, {split}", "version": str(GENERATOR_VERSION), "seed": seed}
    ann_file = Path(out_dir) / "instances.json"
    data = {"info": info, "images": images, "annotations": annotations, "categories": categories}
    ann_file.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
    return image_dir, ann_file


def cache_name(split: str, num_images: int, image_size: Size, seed: int) -> str:
    """The cache folder name: readable parameters plus a hash of them and GENERATOR_VERSION."""
    params = {"version": GENERATOR_VERSION, "split": split, "num_images": num_images,
              "image_size": list(image_size), "seed": seed}
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return f"{split}_{num_images}x{image_size[0]}x{image_size[1]}_seed{seed}_{digest}"


def ensure_shapes(
    root: str | Path | None = None,
    split: str = "train",
    num_images: int | None = None,
    image_size: Size = DEFAULT_IMAGE_SIZE,
    seed: int | None = None,
) -> tuple[Path, Path]:
    """(image folder, annotation json) of a shapes split, generated on first use.

    ``root`` defaults to ``$DETBENCH_DATASETS/shapes``; ``num_images`` to DEFAULT_NUM_IMAGES
    and ``seed`` to SPLIT_SEEDS of the split. The split is generated into a hidden temporary
    folder next to its cache folder, the MARKER file is written into it last, and the folder
    is then renamed into place, so processes that generate the same split at once (several
    ranks) do not corrupt it. A cache folder without the marker (an interrupted or hand-made
    one) is deleted and regenerated.
    """
    if root is None:
        root = datasets_root() / "shapes"
    num_images = _default(DEFAULT_NUM_IMAGES, split, "num_images") if num_images is None else num_images
    seed = _default(SPLIT_SEEDS, split, "seed") if seed is None else seed
    final = Path(root) / cache_name(split, num_images, tuple(image_size), seed)
    if (final / MARKER).is_file():
        return final / "images", final / "instances.json"
    if final.exists():
        logger.warning("%s has no %s marker (interrupted generation?): regenerating it", final, MARKER)
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    partial = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        generate_shapes(partial, split, num_images, image_size, seed)
        _write_atomic(partial / MARKER, f"{final.name}\n")
    except BaseException:  # Ctrl-C included; only a hard kill leaves a hidden .partial- folder
        shutil.rmtree(partial, ignore_errors=True)
        raise
    try:
        os.rename(partial, final)
    except OSError:
        # Another process (e.g. another rank) finished the same folder first: keep its copy.
        shutil.rmtree(partial)
        if not (final / MARKER).is_file():
            raise
    logger.info("generated %d shapes images (%s) into %s in %.1f s", num_images, split, final,
                time.perf_counter() - start)
    return final / "images", final / "instances.json"


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
