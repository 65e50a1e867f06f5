"""Mask targets and loss against torchvision's project_masks_on_boxes / maskrcnn_loss."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.testing import assert_close
from torchvision.models.detection.roi_heads import maskrcnn_loss, project_masks_on_boxes as tv_project

from detbench.modeling.roi_heads.mask_head.loss import mask_rcnn_loss, project_masks_on_boxes
from detbench.structures import BoxList
from detbench.structures.segmentation_mask import SegmentationMask

SIZE = (40, 30)  # width, height


def random_polygons(num: int, g: torch.Generator) -> list[list[list[float]]]:
    """``num`` instances, each one random quadrilateral (some vertices outside the image)."""
    centres = torch.rand(num, 1, 2, generator=g) * torch.tensor([40.0, 30.0])
    offsets = (torch.rand(num, 4, 2, generator=g) - 0.5) * 24
    return [[(c + o).flatten().tolist()] for c, o in zip(centres, offsets)]


def make_image(num_gt: int, num_pos: int, num_classes: int, g: torch.Generator, mode: str = "poly"):
    """One image: (targets BoxList with "labels" / "masks", positive proposals with
    "labels" / "matched_idxs", and the same in torchvision's form)."""
    masks = SegmentationMask(random_polygons(num_gt, g), SIZE)
    if mode == "mask":
        masks = masks.convert("mask")
    gt_labels = torch.randint(1, num_classes, (num_gt,), generator=g)
    targets = BoxList(torch.zeros(num_gt, 4), SIZE)
    targets.add_field("labels", gt_labels)
    targets.add_field("masks", masks)
    xy = torch.rand(num_pos, 2, generator=g) * 30
    boxes = torch.cat([xy, xy + 1 + torch.rand(num_pos, 2, generator=g) * 20], dim=1)
    matched = torch.randint(0, max(num_gt, 1), (num_pos,), generator=g)
    proposals = BoxList(boxes, SIZE)
    proposals.add_field("labels", gt_labels[matched] if num_gt else torch.zeros(0, dtype=torch.int64))
    proposals.add_field("matched_idxs", matched)
    return targets, proposals, (boxes, masks.get_mask_tensor(), gt_labels, matched)


def test_project_masks_on_boxes_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    gt = (torch.rand(3, 30, 40, generator=g) > 0.5).to(torch.uint8)
    xy = torch.rand(7, 2, generator=g) * 30
    boxes = torch.cat([xy, xy + torch.rand(7, 2, generator=g) * 15], dim=1)
    matched = torch.randint(0, 3, (7,), generator=g)
    got = project_masks_on_boxes(gt, boxes, matched, 14)
    assert got.shape == (7, 14, 14)
    assert_close(got, tv_project(gt, boxes, matched, 14))


@pytest.mark.parametrize("mode", ["poly", "mask"])
def test_loss_matches_torchvision(mode):
    g = torch.Generator().manual_seed(1)
    images = [make_image(3, 5, 4, g, mode), make_image(2, 0, 4, g, mode), make_image(4, 6, 4, g, mode)]
    logits = torch.randn(11, 4, 14, 14, generator=g, requires_grad=True)
    got = mask_rcnn_loss(logits, [p for _, p, _ in images], [t for t, _, _ in images])
    tv = [i[2] for i in images]
    expected = maskrcnn_loss(
        logits, [b for b, _, _, _ in tv], [m for _, m, _, _ in tv], [l for _, _, l, _ in tv], [i for _, _, _, i in tv]
    )
    assert_close(got, expected)
    (grad,) = torch.autograd.grad(got, logits)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    assert_close(grad, expected_grad)


def test_binarised_targets():
    g = torch.Generator().manual_seed(2)
    targets, proposals, (boxes, gt, _, matched) = make_image(2, 4, 3, g)
    logits = torch.randn(4, 3, 7, 7, generator=g)
    got = mask_rcnn_loss(logits, [proposals], [targets], target_threshold=0.5)
    labels = proposals.get_field("labels")
    binary = (tv_project(gt, boxes, matched, 7) > 0.5).float()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[torch.arange(4), labels], binary)
    assert_close(got, expected)


def test_no_positive_gives_a_connected_zero():
    g = torch.Generator().manual_seed(3)
    targets, proposals, _ = make_image(0, 0, 3, g)
    logits = torch.randn(0, 3, 7, 7, requires_grad=True)
    loss = mask_rcnn_loss(logits, [proposals], [targets])
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()
    assert logits.grad is not None


def test_aligned_targets_match_torchvision_roi_align_aligned():
    g = torch.Generator().manual_seed(2)
    gt = (torch.rand(3, 40, 50, generator=g) > 0.5).float()
    xy = torch.rand(6, 2, generator=g) * 30
    boxes = torch.cat([xy, xy + 3 + torch.rand(6, 2, generator=g) * 15], dim=1)
    matched = torch.tensor([0, 2, 1, 1, 0, 2])
    expected = torchvision.ops.roi_align(gt[:, None], torch.cat([matched[:, None].float(), boxes], 1), (14, 14), 1.0, 0, True)
    assert_close(project_masks_on_boxes(gt, boxes, matched, 14, aligned=True), expected[:, 0])
