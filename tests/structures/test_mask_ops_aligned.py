"""The aligned pixel model of masks (MODEL.ROI_MASK_HEAD.ALIGNED_MASKS): pasting against
``grid_sample`` (detectron2's way of pasting), targets against hand-derived values, and the
round trip ground truth -> 28 x 28 target -> pasted mask, which the torchvision model cannot close."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from detbench.modeling.roi_heads.mask_head.loss import project_masks_on_boxes
from detbench.structures import mask_ops
from detbench.structures.mask_ops import Masker, full_size_masks, paste_masks_in_image, paste_masks_in_image_dense
from detbench.structures import BoxList

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def grid_sample_paste(masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The reference: each pixel centre mapped into its box, bilinear, zero outside (float64)."""
    x0, y0, x1, y1 = boxes.double().unbind(1)
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    ys = torch.arange(height, dtype=torch.float64) + 0.5
    gx = (xs[None] - x0[:, None]) / (x1 - x0)[:, None] * 2 - 1  # [K, W] in grid units
    gy = (ys[None] - y0[:, None]) / (y1 - y0)[:, None] * 2 - 1  # [K, H]
    grid = torch.stack([gx[:, None, :].expand(-1, height, -1), gy[:, :, None].expand(-1, -1, width)], dim=3)
    return F.grid_sample(masks.double(), grid, align_corners=False, padding_mode="zeros")


def random_case(num: int, height: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks [num, 1, 28, 28] and boxes that partly leave the image, some under 2 pixels."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(num, 1, 28, 28, generator=g)
    corner = torch.rand(num, 2, generator=g) * torch.tensor([width, height]) * 1.2 - 8
    sizes = torch.rand(num, 2, generator=g) * 50 + 0.5
    sizes[: num // 5] = torch.rand(num // 5, 2, generator=g) * 2 + 0.05
    return masks, torch.cat([corner, corner + sizes], dim=1)


@pytest.mark.parametrize("device", DEVICES)
def test_aligned_paste_matches_grid_sample(device):
    masks, boxes = random_case(60, 41, 67, seed=3)
    expected = grid_sample_paste(masks, boxes, 41, 67)
    got = paste_masks_in_image(masks.to(device), boxes.to(device), (41, 67), aligned=True)
    assert got.shape == (60, 1, 41, 67) and got.dtype == masks.dtype
    assert_close(got.cpu().double(), expected, atol=1e-5, rtol=0)


def test_aligned_paste_across_chunks_and_dense(monkeypatch):
    masks, boxes = random_case(30, 29, 33, seed=4)
    expected = grid_sample_paste(masks, boxes, 29, 33)
    dense = paste_masks_in_image_dense(masks, boxes, torch.tensor(29), torch.tensor(33), aligned=True)
    assert_close(dense.double(), expected, atol=1e-5, rtol=0)
    monkeypatch.setattr(mask_ops, "_PASTE_CHUNK_PIXELS", 300)  # many small chunks
    assert_close(paste_masks_in_image(masks, boxes, (29, 33), aligned=True).double(), expected, atol=1e-5, rtol=0)


def test_hand_derived_constant_mask_fills_its_box():
    # A mask of ones over the box (2, 3)-(10, 7), whose edges lie on pixel borders: every pixel
    # centre inside lies 0.5 px inside, more than half a cell (8/28 by 4/28 px), so it reads 1
    # with no interpolation against the zeros outside; every centre outside is 0.5 px out: 0.
    got = paste_masks_in_image(torch.ones(1, 1, 28, 28), torch.tensor([[2.0, 3.0, 10.0, 7.0]]), (12, 14), aligned=True)
    expected = torch.zeros(12, 14)
    expected[3:7, 2:10] = 1
    assert_close(got[0, 0], expected)


def test_degenerate_and_empty_boxes_give_zeros_not_nans():
    boxes = torch.tensor([[5.0, 5.0, 5.0, 9.0], [-30.0, -30.0, -20.0, -20.0]])
    got = paste_masks_in_image(torch.ones(2, 1, 28, 28), boxes, (16, 16), aligned=True)
    assert torch.isfinite(got).all() and got.sum() == 0
    assert paste_masks_in_image(torch.ones(0, 1, 28, 28), torch.zeros(0, 4), (16, 16), aligned=True).shape == (0, 1, 16, 16)


def test_masker_and_full_size_masks_pass_aligned_on():
    masks, boxes = random_case(8, 20, 24, seed=5)
    result = BoxList(boxes, (24, 20))
    expected = paste_masks_in_image(masks, boxes, (20, 24), aligned=True)
    assert torch.equal(Masker(threshold=0.5, aligned=True)(masks, result), expected > 0.5)
    assert_close(full_size_masks(masks, result, aligned=True), expected)
    assert not torch.equal(full_size_masks(masks, result), expected)


def test_aligned_targets_hand_derived():
    # Ground truth: columns 0..3 of an 8-pixel-wide image are 1 (continuous x in [0, 4)).
    # Box x in [0, 8), 8 cells: cell c is centred at x = c + 0.5, i.e. on pixel c, so the aligned
    # target is exactly the mask; torchvision's reads x = c + 0.5 as between pixels c and c + 1.
    gt = torch.zeros(1, 8, 8)
    gt[0, :, :4] = 1
    box = torch.tensor([[0.0, 0.0, 8.0, 8.0]])
    aligned = project_masks_on_boxes(gt, box, torch.zeros(1, dtype=torch.long), 8, aligned=True)
    assert_close(aligned[0, 0], torch.tensor([1, 1, 1, 1, 0, 0, 0, 0], dtype=torch.float32))
    legacy = project_masks_on_boxes(gt, box, torch.zeros(1, dtype=torch.long), 8)
    assert_close(legacy[0, 0], torch.tensor([1, 1, 1, 0.5, 0, 0, 0, 0], dtype=torch.float32))


def disc(height: int, width: int, cx: float, cy: float, r: float) -> torch.Tensor:
    """bool [H, W]: pixels whose centre lies within r of (cx, cy)."""
    ys = torch.arange(height, dtype=torch.float64)[:, None] + 0.5
    xs = torch.arange(width, dtype=torch.float64)[None, :] + 0.5
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= r**2


def round_trip_iou(aligned: bool) -> float:
    """Mean IoU of small discs (radius 6-12 px) after target (28 x 28) and paste."""
    ious = []
    for i in range(12):
        cx, cy, r = 20.3 + 1.37 * i, 19.8 + 0.91 * i, 6 + 0.5 * i
        gt = disc(64, 64, cx, cy, r)
        box = torch.tensor([[cx - r, cy - r, cx + r, cy + r]])
        target = project_masks_on_boxes(gt[None].float(), box, torch.zeros(1, dtype=torch.long), 28, aligned)
        pasted = paste_masks_in_image(target[:, None], box, (64, 64), aligned=aligned)[0, 0] > 0.5
        ious.append(((pasted & gt).sum() / (pasted | gt).sum()).item())
    return sum(ious) / len(ious)


def test_round_trip_of_a_perfect_mask():
    # Measured: 0.9994 aligned against 0.905 for torchvision's pixel model on these discs.
    assert round_trip_iou(aligned=True) > 0.995
    assert round_trip_iou(aligned=False) < 0.93
