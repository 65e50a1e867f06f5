"""Keypoint heatmap encoding and decoding against torchvision, and the encode/decode round trip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from torchvision.models.detection.roi_heads import heatmaps_to_keypoints as tv_heatmaps_to_keypoints
from torchvision.models.detection.roi_heads import keypoints_to_heatmap as tv_keypoints_to_heatmap

from detbench.modeling.roi_heads.keypoint_head import inference
from detbench.modeling.roi_heads.keypoint_head.inference import KeypointPostProcessor, heatmaps_to_keypoints
from detbench.modeling.roi_heads.keypoint_head.loss import keypoints_to_heatmap
from detbench.structures import BoxList
from detbench.structures.keypoint import PersonKeypoints

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_rois(num: int, g: torch.Generator, tiny: int = 3, min_height: float = 10.0) -> torch.Tensor:
    """Person-like boxes (width 0.3 to 0.8 of the height) plus ``tiny`` boxes under 2 pixels
    (clamped to 1 when decoding)."""
    xy = torch.rand(num, 2, generator=g) * 200
    heights = min_height + torch.rand(num, generator=g) * 150
    wh = torch.stack([heights * (0.3 + 0.5 * torch.rand(num, generator=g)), heights], dim=1)
    wh[:tiny] = torch.rand(tiny, 2, generator=g) * 2
    return torch.cat([xy, xy + wh], dim=1)


def test_keypoints_to_heatmap_hand_derived():
    rois = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # 4 cells: 5 px wide, 10 px high each
    keypoints = torch.tensor(
        [[[10.0, 20.0, 2], [29.9, 59.9, 1], [30.0, 60.0, 2], [17.0, 41.0, 2], [9.9, 30.0, 2], [15.0, 30.0, 0]]]
    )
    targets, valid = keypoints_to_heatmap(keypoints, rois, 4)
    # (col, row): (0, 0), (3, 3), the closed right/bottom border -> (3, 3), (1, 2); outside; invisible.
    assert valid.tolist() == [[True, True, True, True, False, False]]
    assert targets[0, :4].tolist() == [0, 15, 15, 2 * 4 + 1]


def test_keypoints_to_heatmap_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    rois = random_rois(20, g, tiny=0)
    # Keypoints around and on the boxes, with random visibility; some exactly on x2 / y2.
    rel = torch.rand(20, 17, 2, generator=g) * 1.4 - 0.2
    xy = rois[:, None, :2] + rel * (rois[:, None, 2:] - rois[:, None, :2])
    xy[:, 0] = rois[:, 2:]  # keypoint 0 sits on the closed bottom-right corner
    keypoints = torch.cat([xy, torch.randint(0, 3, (20, 17, 1), generator=g).float()], dim=2)
    targets, valid = keypoints_to_heatmap(keypoints, rois, 56)
    tv_targets, tv_valid = tv_keypoints_to_heatmap(keypoints, rois, 56)
    assert torch.equal(valid, tv_valid.bool())
    assert torch.equal(targets, tv_targets)


def reference_upsampled_value(maps: torch.Tensor, roi: torch.Tensor, k: int, col: int, row: int) -> float:
    """The value of keypoint k's map, resized as torchvision does, at (col, row)."""
    w = int((roi[2] - roi[0]).clamp(min=1).ceil())
    h = int((roi[3] - roi[1]).clamp(min=1).ceil())
    return float(F.interpolate(maps[None, k : k + 1], size=(h, w), mode="bicubic", align_corners=False)[0, 0, row, col])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("chunk_values", [1 << 24, 20000])
def test_heatmaps_to_keypoints_matches_torchvision(device, chunk_values, monkeypatch):
    monkeypatch.setattr(inference, "_DECODE_CHUNK_VALUES", chunk_values)  # 20000: many chunks
    g = torch.Generator().manual_seed(1)
    rois = random_rois(12, g)
    maps = torch.randn(12, 5, 14, 14, generator=g)
    keypoints, scores = heatmaps_to_keypoints(maps.to(device), rois.to(device))
    keypoints, scores = keypoints.cpu(), scores.cpu()
    tv_keypoints, tv_scores = tv_heatmaps_to_keypoints(maps, rois)
    assert keypoints.shape == (12, 5, 3) and keypoints.dtype == torch.float32
    assert_close(scores, tv_scores, atol=1e-4, rtol=1e-5)
    assert_close(keypoints[..., 2], torch.ones(12, 5))
    # float32 rounding of the two resize implementations may differ by ~1e-5, so an exact
    # tie-break may differ: then our pick must be (near) as high on torchvision's map.
    differs = (keypoints != tv_keypoints).any(dim=2).nonzero().tolist()
    assert len(differs) <= 1
    for i, k in differs:
        w_corr = ((rois[i, 2] - rois[i, 0]).clamp(min=1) / (rois[i, 2] - rois[i, 0]).clamp(min=1).ceil()).item()
        h_corr = ((rois[i, 3] - rois[i, 1]).clamp(min=1) / (rois[i, 3] - rois[i, 1]).clamp(min=1).ceil()).item()
        col = round((keypoints[i, k, 0].item() - rois[i, 0].item()) / w_corr - 0.5)
        row = round((keypoints[i, k, 1].item() - rois[i, 1].item()) / h_corr - 0.5)
        assert reference_upsampled_value(maps[i], rois[i], k, col, row) >= tv_scores[i, k].item() - 1e-4


def test_heatmaps_to_keypoints_empty():
    keypoints, scores = heatmaps_to_keypoints(torch.zeros(0, 17, 56, 56), torch.zeros(0, 4))
    assert keypoints.shape == (0, 17, 3) and scores.shape == (0, 17)


def test_encode_decode_round_trip():
    # A keypoint encoded into its heatmap cell, decoded from a peak at that cell, comes back
    # within one cell (box size / 56) of where it was. Decoding resamples the heatmap to the
    # box's pixels, so this needs boxes of at least 56 pixels (cells of at least 1 pixel);
    # the decoded point is then within half a cell plus half a pixel of the keypoint.
    g = torch.Generator().manual_seed(2)
    rois = random_rois(10, g, tiny=0, min_height=56 / 0.3)
    rel = 0.02 + torch.rand(10, 17, 2, generator=g) * 0.96
    xy = rois[:, None, :2] + rel * (rois[:, None, 2:] - rois[:, None, :2])
    keypoints = torch.cat([xy, torch.full((10, 17, 1), 2.0)], dim=2)
    targets, valid = keypoints_to_heatmap(keypoints, rois, 56)
    assert valid.all()
    logits = torch.zeros(10 * 17, 56 * 56)
    logits[torch.arange(10 * 17), targets.view(-1)] = 10.0
    decoded, _ = heatmaps_to_keypoints(logits.view(10, 17, 56, 56), rois)
    cell = (rois[:, 2:] - rois[:, :2]) / 56
    assert ((decoded[..., :2] - xy).abs() <= cell[:, None]).all()


def test_post_processor_fields():
    g = torch.Generator().manual_seed(3)
    rois = random_rois(5, g)
    detections = [BoxList(rois[:3], (400, 400)), BoxList(rois[3:], (400, 400))]
    for d in detections:
        d.add_field("labels", torch.ones(len(d), dtype=torch.int64))
    logits = torch.randn(5, 17, 56, 56, generator=g)
    result = KeypointPostProcessor()(logits, detections)
    expected, expected_scores = heatmaps_to_keypoints(logits, rois)
    kps = result[1].get_field("keypoints")
    assert isinstance(kps, PersonKeypoints) and kps.size == (400, 400)
    assert_close(kps.keypoints, expected[3:])
    assert_close(result[0].get_field("keypoints_scores"), expected_scores[:3])
    assert result[0].has_field("labels") and not detections[0].has_field("keypoints")
