"""ScaleJitterCrop and ColorJitter: the image and its boxes, masks and keypoints stay together;
draws come from the sample's generator (repeatable, global stream untouched); the config keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from detbench.config import ConfigError, get_cfg, load_config
from detbench.data.transforms import build_transforms
from detbench.data.transforms.augment import ColorJitter, ScaleJitterCrop
from detbench.data.transforms.random_draws import sample_generator, use_generator
from detbench.structures import BoxList, Keypoints, SegmentationMask

BOXES = [(40.0, 20.0, 120.0, 70.0), (150.0, 60.0, 190.0, 95.0)]


class Corners(Keypoints):
    NAMES = ("top_left", "bottom_right")


def _sample():
    """A 200 x 100 black image with two white rectangles, and their boxes, polygons and corners."""
    array = np.zeros((100, 200, 3), dtype=np.uint8)
    for x1, y1, x2, y2 in BOXES:
        array[int(y1):int(y2), int(x1):int(x2)] = 255
    target = BoxList(torch.tensor(BOXES), (200, 100))
    target.add_field("masks", SegmentationMask([[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in BOXES],
                                               (200, 100)))
    target.add_field("keypoints", Corners([[[x1, y1, 2], [x2, y2, 2]] for x1, y1, x2, y2 in BOXES], (200, 100)))
    target.add_field("labels", torch.tensor([1, 2]))
    return Image.fromarray(array), target


def _white_box(white: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(white)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.mark.parametrize("index", range(12))
def test_geometry_follows_the_pixels(index):
    transform = ScaleJitterCrop(target_size=128, min_scale=0.3, max_scale=2.0)
    image, target = _sample()
    with use_generator(sample_generator(7, 0, index)):
        image, target = transform(image, target)
    assert max(image.size) <= 128 and tuple(target.size) == image.size
    pixels = np.asarray(image)[..., 0] > 127
    masks = target.get_field("masks").get_mask_tensor().numpy().astype(bool)
    # Every white pixel lies on a kept instance's mask, up to one pixel of edge blur: nothing
    # visible was dropped.
    union = masks.any(axis=0) if len(target) else np.zeros_like(pixels)
    grown = union.copy()
    grown[1:] |= union[:-1]
    grown[:-1] |= union[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    assert not (pixels & ~grown).any()
    for k in range(len(target)):
        box = target.bbox[k].tolist()
        region = pixels & masks[k]
        if region.sum() < 4:
            continue  # a sliver: nothing to compare
        assert np.allclose(_white_box(region), box, atol=1.5), (box, _white_box(region))
        assert pixels[masks[k]].mean() > 0.8  # the mask lies on white pixels
        corners = target.get_field("keypoints").keypoints[k]
        for (x, y, v), corner in zip(corners.tolist(), ((box[0], box[1]), (box[2], box[3]))):
            if v > 0:
                assert abs(x - corner[0]) < 1e-3 and abs(y - corner[1]) < 1e-3


def test_instances_outside_the_window_are_dropped_with_their_fields():
    transform = ScaleJitterCrop(target_size=64, min_scale=2.0, max_scale=2.0)  # 2x the 64-px fit: 128 x 64
    kept = set()
    for index in range(20):
        image, target = _sample()
        with use_generator(sample_generator(0, 0, index)):
            image, target = transform(image, target)
        assert image.size == (64, 64)
        assert len(target.get_field("masks")) == len(target.get_field("keypoints")) == len(target)
        kept.add(tuple(target.get_field("labels").tolist()))
    # Scaled to 128 x 64, the rectangles span x 25.6-76.8 and 96-121.6: a window starting left of
    # 32 loses the second one; the first always reaches into the window (its right edge > 64).
    assert kept == {(1,), (1, 2)}


def test_draws_repeat_per_sample_and_leave_the_global_stream():
    def run(index):
        image, target = _sample()
        with use_generator(sample_generator(3, 5, index)):
            image, target = ColorJitter(0.4, 0.4, 0.4, 0.1)(*ScaleJitterCrop(96)(image, target))
        return np.asarray(image), target.bbox

    state = torch.get_rng_state()
    first, again, other = run(1), run(1), run(2)
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_color_jitter_changes_colours_only():
    whites = set()
    for index in range(8):
        image, target = _sample()
        with use_generator(sample_generator(0, 0, index)):
            out, same = ColorJitter(brightness=0.5)(image, target)
        assert same is target and out.size == image.size
        before, after = np.asarray(image).astype(int), np.asarray(out).astype(int)
        assert (after[before == 0] == 0).all()  # brightness scales: black stays black
        white = np.unique(after[before == 255])
        assert len(white) == 1 and 127 <= white[0] <= 255  # one factor in [0.5, 1.5] for the image
        whites.add(int(white[0]))
    assert len(whites) > 2  # the factor varies between samples


def test_config_builds_and_checks():
    cfg = get_cfg()
    assert "ScaleJitterCrop" not in repr(build_transforms(cfg, True).transforms)
    cfg.INPUT.SCALE_JITTER.ENABLED = True
    cfg.INPUT.COLOR_JITTER.BRIGHTNESS = 0.2
    names = [type(t).__name__ for t in build_transforms(cfg, True).transforms]
    assert names == ["ScaleJitterCrop", "RandomHorizontalFlip", "ColorJitter", "ToTensor", "Normalize"]
    assert [type(t).__name__ for t in build_transforms(cfg, False).transforms] == ["Resize", "ToTensor", "Normalize"]
    with pytest.raises(ConfigError, match="INPUT.SCALE_JITTER.MAX_SCALE = 0.5: must be >= MIN_SCALE"):
        load_config(None, ["INPUT.SCALE_JITTER.MIN_SCALE", "1.0", "INPUT.SCALE_JITTER.MAX_SCALE", "0.5"])
    with pytest.raises(ConfigError, match="INPUT.COLOR_JITTER.HUE = 0.7"):
        load_config(None, ["INPUT.COLOR_JITTER.HUE", "0.7"])
