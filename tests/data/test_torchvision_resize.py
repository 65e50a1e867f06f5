"""INPUT.RESIZE_MODE "torchvision": the sizes, pixels and boxes of torchvision's GeneralizedRCNNTransform."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch.testing import assert_close
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from detbench.config import get_cfg
from detbench.data.transforms import build_transforms
from detbench.data.transforms.torchvision_resize import TorchvisionResize, torchvision_size
from detbench.structures import BoxList, SegmentationMask

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.mark.parametrize("image_size, expected", [
    ((559, 536), (333, 320)),    # 320 / 536 = 0.597..., 559 * 0.597 = 333.7 -> 333 (floored)
    ((300, 700), (219, 512)),    # capped: 512 / 700 = 0.731..., 300 * 0.731 = 219.4 -> 219
    ((480, 320), (480, 320)),    # already there
    ((1000, 200), (512, 102)),   # 512 / 1000 = 0.512, 200 * 0.512 = 102.4 -> 102
])
def test_sizes_by_hand(image_size, expected):
    assert torchvision_size(image_size, 320, 512) == expected


def _torchvision_resize(image: torch.Tensor, boxes: torch.Tensor, min_size: int, max_size: int):
    transform = GeneralizedRCNNTransform(min_size, max_size, [0.0] * 3, [1.0] * 3).eval()
    return transform.resize(image, {"boxes": boxes})


@pytest.mark.parametrize("width, height", [(559, 536), (311, 700), (700, 311), (480, 320), (200, 170)])
def test_same_pixels_and_boxes_as_torchvision(width, height):
    g = torch.Generator().manual_seed(width)
    image = torch.rand(3, height, width, generator=g)
    boxes = torch.tensor([[10.0, 20.0, 100.5, 150.0], [0.0, 0.0, width, height]])
    theirs, target = _torchvision_resize(image, boxes, 320, 512)
    mine, resized = TorchvisionResize(320, 512)(image, BoxList(boxes, (width, height)))
    assert mine.shape == theirs.shape and resized.size == (theirs.shape[-1], theirs.shape[-2])
    assert_close(mine, theirs, atol=0, rtol=0)
    assert_close(resized.bbox, target["boxes"], atol=1e-4, rtol=0)


def test_build_transforms_torchvision_mode_matches_its_model_transform():
    """The whole test pipeline: torchvision normalises then resizes, detbench resizes then
    normalises (the same up to float rounding: both are linear per pixel)."""
    cfg = get_cfg()
    cfg.merge_from_list(["INPUT.RESIZE_MODE", "torchvision", "INPUT.MIN_SIZE_TEST", "320", "INPUT.MAX_SIZE_TEST", "512",
                         "INPUT.PIXEL_MEAN", str(MEAN), "INPUT.PIXEL_STD", str(STD), "INPUT.TO_BGR255", "False"])
    pixels = torch.randint(0, 256, (536, 559, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    image = Image.fromarray(pixels.numpy())
    mine, _ = build_transforms(cfg, is_train=False)(image)
    transform = GeneralizedRCNNTransform(320, 512, MEAN, STD).eval()
    theirs = transform.resize(transform.normalize(pixels.permute(2, 0, 1).float() / 255), None)[0]
    assert mine.shape == theirs.shape == (3, 320, 333)
    assert_close(mine, theirs, atol=1e-5, rtol=0)
    # The default resize (PIL's antialiasing filter on 8-bit pixels) gives other pixels here,
    # and other sizes when the longer side caps the scale (300 x 700: 219 x 511, torchvision 219 x 512).
    cfg.INPUT.RESIZE_MODE = "pil"
    pil = build_transforms(cfg, is_train=False)(image)[0]
    assert pil.shape == mine.shape and (pil - mine).abs().max() > 0.1
    assert build_transforms(cfg, is_train=False)(Image.new("RGB", (300, 700)))[0].shape == (3, 511, 219)


def test_training_pipeline_resizes_masks_with_the_image():
    cfg = get_cfg()
    cfg.merge_from_list(["INPUT.RESIZE_MODE", "torchvision", "INPUT.MIN_SIZE_TRAIN", "(100,)", "INPUT.MAX_SIZE_TRAIN", "300",
                         "INPUT.HORIZONTAL_FLIP_PROB_TRAIN", "0.0"])
    masks = torch.zeros(1, 50, 80, dtype=torch.uint8)
    masks[0, 10:30, 20:60] = 1
    target = BoxList(torch.tensor([[20.0, 10.0, 60.0, 30.0]]), (80, 50))
    target.add_field("masks", SegmentationMask(masks, (80, 50), mode="mask"))
    image, out = build_transforms(cfg, is_train=True)(Image.new("RGB", (80, 50)), target)
    assert image.shape == (3, 100, 160) and out.size == (160, 100)
    assert_close(out.bbox, torch.tensor([[40.0, 20.0, 120.0, 60.0]]))
    assert out.get_field("masks").get_mask_tensor()[0, 20:60, 40:120].all()


def test_bad_mode_and_scale_jitter_are_refused():
    cfg = get_cfg()
    cfg.INPUT.RESIZE_MODE = "cv2"
    with pytest.raises(ValueError, match="INPUT.RESIZE_MODE 'cv2'"):
        build_transforms(cfg, is_train=False)
    cfg.INPUT.RESIZE_MODE = "torchvision"
    cfg.INPUT.SCALE_JITTER.ENABLED = True
    with pytest.raises(ValueError, match="SCALE_JITTER.ENABLED needs INPUT.RESIZE_MODE 'pil'"):
        build_transforms(cfg, is_train=True)
    with pytest.raises(TypeError, match="after ToTensor"):
        TorchvisionResize(320, 512)(Image.new("RGB", (10, 10)))


def test_export_refuses_the_torchvision_resize():
    from detbench.export import export_problems

    cfg = get_cfg()
    assert not any("RESIZE_MODE" in p for p in export_problems(cfg))
    cfg.INPUT.RESIZE_MODE = "torchvision"
    assert "INPUT.RESIZE_MODE is 'torchvision': the export reproduces the 'pil' resize only" in export_problems(cfg)
