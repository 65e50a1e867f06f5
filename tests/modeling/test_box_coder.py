"""BoxCoder: hand values, round trip, clipping, and equality with torchvision's BoxCoder."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

from detbench.modeling.box_coder import BoxCoder


def random_boxes(n: int, g: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 100
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 50 + 1
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def test_encode_hand_values():
    proposal = torch.tensor([[0.0, 0.0, 10.0, 10.0]])  # centre (5, 5), 10 x 10
    reference = torch.tensor([[5.0, 5.0, 15.0, 25.0]])  # centre (10, 15), 10 x 20
    deltas = BoxCoder((1.0, 1.0, 1.0, 1.0)).encode(reference, proposal)
    assert_close(deltas, torch.tensor([[0.5, 1.0, 0.0, math.log(2.0)]]))
    # The weights scale each delta: (10, 10, 5, 5) as in the Fast R-CNN box head.
    deltas = BoxCoder((10.0, 10.0, 5.0, 5.0)).encode(reference, proposal)
    assert_close(deltas, torch.tensor([[5.0, 10.0, 0.0, 5 * math.log(2.0)]]))


def test_decode_hand_values_and_clip():
    box = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10)
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    assert_close(coder.decode(torch.zeros(1, 4), box), box)
    # dx = 0.5 moves the centre by half a width; dw = log 2 doubles the width.
    got = coder.decode(torch.tensor([[0.5, 0.0, math.log(2.0), 0.0]]), box)
    assert_close(got, torch.tensor([[0.0, 0.0, 20.0, 20.0]]))
    # dw, dh far above the clip grow the box by exp(clip) = 1000 / 16 only.
    got = coder.decode(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), box)
    assert_close(got, torch.tensor([[5 - 312.5, 10 - 625.0, 5 + 312.5, 10 + 625.0]]))


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_round_trip(weights):
    g = torch.Generator().manual_seed(0)
    proposals, references = random_boxes(50, g, torch.float64), random_boxes(50, g, torch.float64)
    coder = BoxCoder(weights)
    assert_close(coder.decode(coder.encode(references, proposals), proposals), references)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_torchvision(weights, dtype):
    g = torch.Generator().manual_seed(1)
    proposals, references = random_boxes(40, g, dtype), random_boxes(40, g, dtype)
    ours, theirs = BoxCoder(weights), TVBoxCoder(weights)
    assert_close(ours.encode(references, proposals), theirs.encode_single(references, proposals), rtol=0, atol=0)
    # 3 boxes per row (class-specific regression), some deltas beyond the clip; non-contiguous.
    codes = torch.randn(12, 40, generator=g, dtype=torch.float64).to(dtype).t() * 3
    assert not codes.is_contiguous()
    assert_close(ours.decode(codes, proposals), theirs.decode_single(codes, proposals), rtol=0, atol=0)


def test_empty_inputs():
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    assert coder.encode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.decode(torch.zeros(0, 8), torch.zeros(0, 4)).shape == (0, 8)


def test_bad_weights():
    with pytest.raises(ValueError, match="4 weights"):
        BoxCoder((1.0, 1.0))
