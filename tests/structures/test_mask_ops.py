"""paste_masks_in_image and Masker against torchvision's per-detection paste_masks_in_image."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste_masks_in_image

from detbench.structures import mask_ops
from detbench.structures.mask_ops import Masker, paste_masks_in_image, size_sorted_chunks
from detbench.structures import BoxList

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_case(num: int, height: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks [num, 1, 28, 28] and boxes whose centres lie in the image: large ones stick out
    of it, and the first quarter are tiny (under 1.5 pixels)."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(num, 1, 28, 28, generator=g)
    centres = torch.rand(num, 2, generator=g) * torch.tensor([width, height])
    sizes = torch.rand(num, 2, generator=g) * torch.tensor([width, height]) * 0.8
    sizes[: num // 4] = torch.rand(num // 4, 2, generator=g) * 1.5
    return masks, torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("padding", [1, 0, 2])
def test_matches_torchvision(device, padding):
    masks, boxes = random_case(40, 37, 53, seed=padding)
    expected = tv_paste_masks_in_image(masks, boxes, (37, 53), padding=padding)
    got = paste_masks_in_image(masks.to(device), boxes.to(device), (37, 53), padding=padding)
    assert got.shape == (40, 1, 37, 53) and got.dtype == masks.dtype
    assert_close(got.cpu(), expected, atol=1e-5, rtol=0)


def test_matches_torchvision_across_chunks(monkeypatch):
    # A tiny chunk budget forces many chunks of sorted, differently sized boxes.
    monkeypatch.setattr(mask_ops, "_PASTE_CHUNK_PIXELS", 500)
    masks, boxes = random_case(30, 40, 30, seed=7)
    expected = tv_paste_masks_in_image(masks, boxes, (40, 30))
    assert_close(paste_masks_in_image(masks, boxes, (40, 30)), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_half_precision_masks_keep_float32_geometry(device):
    # In a 700-pixel-wide image float16 coordinates are 0.5 pixel apart; the result must
    # still follow the float32 paste up to float16 rounding of the values.
    masks, boxes = random_case(8, 300, 700, seed=11)
    got = paste_masks_in_image(masks.half().to(device), boxes.to(device), (300, 700))
    assert got.dtype == torch.float16
    assert_close(got.float().cpu(), tv_paste_masks_in_image(masks.half().float(), boxes, (300, 700)), atol=2e-3, rtol=0)


def test_hand_derived_constant_mask():
    # A 2 x 2 mask of ones on the box [2, 2, 4, 4] with padding 1: the scale 4 / 2 = 2 grows
    # the box to [1, 1, 5, 5], i.e. pixels 1..5, and the padded mask [0, 1, 1, 0] (per axis)
    # is resized from 4 to 5 samples: output u samples 0.8 * (u + 0.5) - 0.5 =
    # -0.1 (clamped to 0), 0.7, 1.5, 2.3, 3.1 -> values 0, 0.7, 1, 0.7, 0.
    profile = torch.tensor([0.0, 0.0, 0.7, 1.0, 0.7, 0.0, 0.0, 0.0])
    got = paste_masks_in_image(torch.ones(1, 1, 2, 2), torch.tensor([[2.0, 2.0, 4.0, 4.0]]), (8, 8))
    assert_close(got[0, 0], profile[:, None] * profile[None, :])


def test_boxes_outside_the_image_and_empty_input():
    masks = torch.ones(3, 1, 4, 4)
    boxes = torch.tensor([[-20.0, -20.0, -10.0, -10.0], [30.0, 0.0, 40.0, 5.0], [0.0, 0.0, 4.0, 4.0]])
    got = paste_masks_in_image(masks, boxes, (10, 12))
    assert got[:2].abs().sum() == 0 and got[2].sum() > 0
    assert paste_masks_in_image(masks[:0], boxes[:0], (10, 12)).shape == (0, 1, 10, 12)


def test_size_sorted_chunks_respect_the_budget():
    widths = torch.tensor([10, 1, 30, 2, 10, 5])
    heights = torch.tensor([10, 1, 1, 50, 10, 5])
    chunks = size_sorted_chunks(widths, heights, budget=200)
    assert sorted(torch.cat(chunks).tolist()) == list(range(6))
    for chunk in chunks:
        cost = len(chunk) * widths[chunk].max() * heights[chunk].max()
        assert len(chunk) == 1 or cost <= 200


def test_masker_thresholds_and_handles_lists():
    masks, boxes = random_case(6, 20, 30, seed=3)
    boxlist = BoxList(boxes, (30, 20))
    probs = Masker(threshold=-1)(masks, boxlist)
    assert_close(probs, tv_paste_masks_in_image(masks, boxes, (20, 30)), atol=1e-5, rtol=0)
    binary = Masker(threshold=0.5)([masks, masks[:2]], [boxlist, boxlist[:2]])
    assert binary[0].dtype == torch.bool and binary[1].shape == (2, 1, 20, 30)
    assert torch.equal(binary[0], probs > 0.5)
